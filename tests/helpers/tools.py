"""Command-line tools the tests run: those installed next to the running Python (the test venv) first."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A command-line tool installed next to the running Python (the test venv), else on PATH."""
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run the README's test command, which installs it")
    return found
