"""Command-line tools the tests run: those installed next to the running Python (the test venv) first."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from filelock import FileLock

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

    def present() -> bool:
        return all(Path(command).exists() if command.startswith("/") else shutil.which(command) for command in commands)

    if present():
        return 0.0
    # The suite's worker processes (pytest-xdist) may need the same packages at once; dpkg allows one apt at a time.
    with FileLock(Path(tempfile.gettempdir()) / "ml-template-apt.lock"):
        return 0.0 if present() else _apt_install(packages, commands)


def _apt_install(packages: list[str], commands: tuple[str, ...]) -> float:
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
