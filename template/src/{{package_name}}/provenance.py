"""run.json: everything needed to tell how a result was produced, for the first start and each resume."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from .config import Config

# The dependency lock of each manager, looked up in the folder training starts from (the project root).
LOCK_FILES = ("requirements.txt", "uv.lock", "poetry.lock", "conda-lock.yml")


def _output(*command: str) -> str | None:
    """A command's stripped stdout, or None when it is missing, fails or hangs."""
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _git_commit() -> str | None:
    """HEAD of the checkout; in an image (no .git) the GIT_COMMIT the Dockerfile sets from --build-arg REVISION."""
    commit = _output("git", "rev-parse", "HEAD") or os.environ.get("GIT_COMMIT")
    return None if commit in (None, "", "unknown") else commit


def lock_file(root: Path) -> dict[str, str] | None:
    """The lock file the environment was installed from, with its SHA-256, or None if there is none."""
    for name in LOCK_FILES:
        path = root / name
        if path.is_file():
            return {"file": name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return None


def cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or None


def gpu_driver() -> str | None:
    versions = _output("nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader")
    return versions.splitlines()[0].strip() if versions else None


def start(argv: list[str]) -> dict[str, Any]:
    """This process: when, how and where it started (each resume may run on another machine or commit)."""
    status = _output("git", "status", "--porcelain")
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": [Path(sys.executable).name, *argv],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "gpu_driver": gpu_driver(),
        "numpy": np.__version__,
        **engine.framework_versions(),
        "git_commit": _git_commit(),
        "git_dirty": None if status is None else bool(status),
        "lock": lock_file(Path.cwd()),
    }


def collect(config: Config, flags: dict[str, Any], argv: list[str], data: dict[str, str]) -> dict[str, Any]:
    """Provenance of a new run: its first start, config and data. Holds no secrets: settings are not part of it."""
    return {
        **start(argv),
        "config_hash": config.digest(),
        "seed": config.seed,
        "determinism": flags,
        "data": data,
        "resumes": [],
    }


def add_resume(run_info: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """run.json of a resumed run: the first start stays, this start is appended to `resumes`."""
    return {**run_info, "resumes": [*run_info.get("resumes", []), start(argv)]}
