"""Checkpoints that survive kills, full disks and bit rot, and never run code when loaded.

Each epoch writes `epoch-NNNNNN.npz`: NumPy's zip of plain arrays plus the rest of the state (numbers, strings,
lists, the RNG states) as JSON, loaded with `allow_pickle=False`. Beside it, `epoch-NNNNNN.npz.sha256`. The file
is written to a temporary name, fsynced and renamed, so a kill leaves the previous checkpoint intact; the last
two are kept, and `load` falls back to the older one when the newer fails its digest.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError

KEEP = 2
PATTERN = re.compile(r"epoch-(\d{6})\.npz")
LEGACY = "last.pkl"  # the pickled checkpoint of template releases before 0.2.0
_STATE = "__state__.json"
_TAGS = {"__array__", "__tuple__", "__items__"}  # JSON objects that stand for something else


class CheckpointError(UserError):
    """No checkpoint can be used; the message names each one and why."""


class DiskFullError(UserError):
    """The disk filled while writing; what was written before is intact, so the run can resume."""

    exit_code = 75  # EX_TEMPFAIL (sysexits.h): a temporary failure, try again once space is freed


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temporary file in the same directory, fsync it, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        _raise_if_disk_full(error, path, len(payload))
        raise
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(error, OSError):
            _raise_if_disk_full(error, path, len(payload))
        raise


def _raise_if_disk_full(error: OSError, path: Path, needed: int) -> None:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        free = shutil.disk_usage(path.parent).free
        raise DiskFullError(
            f"no space left on the device of {path}: {needed} bytes needed, {free} free; the previous files are "
            "intact: free space, then run the same command with --resume"
        ) from None


def encode(state: dict[str, Any]) -> bytes:
    """The npz bytes of `state`: arrays (NumPy scalars too, with their dtype) as members, the rest as JSON."""
    arrays: dict[str, np.ndarray] = {}

    def plain(value: Any) -> Any:
        if isinstance(value, np.ndarray | np.generic):
            name = f"a{len(arrays)}"
            arrays[name] = np.asarray(value)
            return {"__array__": name, "scalar": isinstance(value, np.generic)}
        if isinstance(value, tuple):
            return {"__tuple__": [plain(item) for item in value]}
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, dict):
            if all(isinstance(key, str) for key in value) and not _TAGS & value.keys():
                return {key: plain(item) for key, item in value.items()}
            return {"__items__": [[plain(key), plain(item)] for key, item in value.items()]}
        if value is None or isinstance(value, bool | int | float | str):
            return value
        raise TypeError(f"a checkpoint holds arrays and plain values only, not {type(value).__name__}")

    document = json.dumps(plain(state), allow_nan=True).encode()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays, **{_STATE: np.frombuffer(document, dtype=np.uint8)})
    return buffer.getvalue()


def decode(payload: bytes) -> dict[str, Any]:
    """The state `encode` wrote. Nothing is unpickled: arrays load with allow_pickle=False."""
    with np.load(io.BytesIO(payload), allow_pickle=False) as members:
        arrays = {name: members[name] for name in members.files}
    document = json.loads(arrays.pop(_STATE).tobytes())

    def restore(value: Any) -> Any:
        if isinstance(value, list):
            return [restore(item) for item in value]
        if not isinstance(value, dict):
            return value
        if "__array__" in value:
            array = arrays[value["__array__"]]
            return array[()] if value["scalar"] else array
        if "__tuple__" in value:
            return tuple(restore(item) for item in value["__tuple__"])
        if "__items__" in value:
            return {restore(key): restore(item) for key, item in value["__items__"]}
        return {key: restore(item) for key, item in value.items()}

    return restore(document)


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def checkpoints(directory: Path) -> list[Path]:
    """The checkpoint files in `directory`, newest first."""
    if not directory.is_dir():
        return []
    found = [path for path in directory.iterdir() if PATTERN.fullmatch(path.name)]
    return sorted(found, key=lambda path: path.name, reverse=True)


def save(directory: Path, state: dict[str, Any], epoch: int) -> Path:
    """Save `state` as epoch `epoch`'s checkpoint (digest first, then the file), then drop all but the last KEEP."""
    payload = encode(state)
    path = directory / f"epoch-{epoch:06d}.npz"
    digest = path.with_name(path.name + ".sha256")
    atomic_write_bytes(digest, f"{_digest(payload)}  {path.name}\n".encode())
    try:
        atomic_write_bytes(path, payload)
    except BaseException:
        digest.unlink(missing_ok=True)
        raise
    for old in checkpoints(directory)[KEEP:]:
        old.unlink(missing_ok=True)
        old.with_name(old.name + ".sha256").unlink(missing_ok=True)
    return path


def _read_verified(path: Path) -> dict[str, Any]:
    """The state in `path`; ValueError naming the problem when it is damaged."""
    payload = path.read_bytes()
    digest_file = path.with_name(path.name + ".sha256")
    expected = digest_file.read_text().split()[0] if digest_file.exists() else None
    if expected != _digest(payload):
        raise ValueError("digest mismatch" if expected else "no digest beside it")
    try:
        return decode(payload)
    except (OSError, ValueError, KeyError) as error:  # a valid digest of a file this version cannot read
        raise ValueError(f"unreadable ({error})") from None


def load(directory: Path) -> dict[str, Any] | None:
    """The newest checkpoint in `directory` that passes its digest, or None if there is none at all.

    A damaged newest checkpoint falls back to the previous one with a warning (one epoch is retrained);
    CheckpointError (one line) when checkpoints exist and none is usable.
    """
    if (directory / LEGACY).exists() and not checkpoints(directory):
        raise CheckpointError(
            f"{directory / LEGACY} is a pickled checkpoint of an older template release, which is never loaded "
            "(unpickling can run code); start a new run, or resume an old release's run with that release"
        )
    problems = []
    for path in checkpoints(directory):
        try:
            state = _read_verified(path)
        except (OSError, ValueError) as error:
            problems.append(f"{path.name}: {error}")
            continue
        if problems:
            print(f"warning: damaged checkpoint skipped ({'; '.join(problems)}); using {path.name}", file=sys.stderr)
        return state
    if problems:
        raise CheckpointError(f"no usable checkpoint in {directory}: {'; '.join(problems)}")
    return None
