"""Fail at start, in one line, when a folder the run writes to is not writable (e.g. a bind mount owned by root)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import UserError


class NotWritableError(UserError):
    """A folder the run must write to cannot be written by this user; the message names it and the fix."""


def ensure_writable(folder: Path, what: str) -> None:
    """Create and delete a file in `folder`, or in its nearest existing parent when it does not exist yet.

    Trying is the only reliable test: permission bits say nothing about read-only mounts or root squashing.
    """
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise NotWritableError(
            f"{what} {existing} is not writable by uid {os.getuid()} ({error.strerror}); make it writable, e.g. "
            "chown a bind-mounted folder to HOST_UID:HOST_GID (README, Docker and compose)"
        ) from None
