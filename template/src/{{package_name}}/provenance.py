"""run.json: everything needed to tell how a result was produced."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import engine
from .config import Config


def _git(*args: str) -> str | None:
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def collect(config: Config, flags: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    """Provenance of this run. Holds no secrets: settings are not part of it."""
    status = _git("status", "--porcelain")
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": [Path(sys.executable).name, *argv],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        **engine.framework_versions(),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "config_hash": config.digest(),
        "seed": config.seed,
        "determinism": flags,
    }
