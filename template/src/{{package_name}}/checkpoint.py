"""Atomic checkpoints: a kill at any moment leaves the previous checkpoint intact, never a torn one."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

LATEST = "last.pkl"


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same directory, fsync it, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save(directory: Path, state: dict[str, Any]) -> Path:
    """Save `state` (plain Python and NumPy values only) as the latest checkpoint."""
    path = directory / LATEST
    atomic_write_bytes(path, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def load(directory: Path) -> dict[str, Any] | None:
    """The latest checkpoint in `directory`, or None if there is none.

    Checkpoints are pickles this project wrote itself; never load one from an untrusted source.
    """
    path = directory / LATEST
    if not path.exists():
        return None
    with path.open("rb") as stream:
        return pickle.load(stream)  # noqa: S301 - our own file, see docstring
