"""Command-line tools the tests run: those installed next to the running Python (the test venv) first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


def debian_packages(packages: list[str], *commands: str) -> float:
    """Debian's `packages` when one of `commands` (a name on PATH or an absolute path) is missing: installed with
    apt-get, which needs root, as in CI (elsewhere the test fails naming the command to run). The seconds apt took."""
    if all(Path(command).exists() if command.startswith("/") else shutil.which(command) for command in commands):
        return 0.0
    line = f"apt-get install --no-install-recommends {' '.join(packages)}"
    if os.geteuid() != 0:
        pytest.fail(f"{', '.join(commands)} missing: {line}")
    started = time.monotonic()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
        check=True, env=env, timeout=900, capture_output=True,
    )  # fmt: skip
    return time.monotonic() - started
