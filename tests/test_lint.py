"""The template's own Python (tests, scripts, benchmarks, framework engines) is ruff-clean (ruff.toml)."""

from __future__ import annotations

import subprocess

import pytest

from helpers.tools import tool
from matrix import REPO


@pytest.mark.parametrize("command", [["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]])
def test_template_code_is_ruff_clean(command: list[str]) -> None:
    result = subprocess.run([tool("ruff"), *command], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
