"""Helpers for the template's tests (fixtures stay in conftest.py)."""
