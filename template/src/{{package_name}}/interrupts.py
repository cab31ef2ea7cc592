"""Ctrl-C and SIGTERM stop a run by raising (so it is closed as KILLED), but never inside a critical section.

An exception raised at an arbitrary point can leave a lock held (MLflow's asynchronous logging queue, for
one): the process would then hang at exit. Inside `deferred()` a signal is only noted, and raised when the
section ends.
"""

from __future__ import annotations

import contextlib
import functools
import signal
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from .errors import Terminated

_state = {"depth": 0, "pending": 0}


def _raise_for(signum: int) -> None:
    if signum == signal.SIGTERM:
        raise Terminated(signum)
    raise KeyboardInterrupt


def _handle(signum: int, frame: FrameType | None) -> None:
    if _state["depth"]:
        _state["pending"] = signum
        return
    _raise_for(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends."""
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        if not _state["depth"] and _state["pending"]:
            signum, _state["pending"] = _state["pending"], 0
            _raise_for(signum)


def critical(method: Callable[..., None]) -> Callable[..., None]:
    """`method` runs whole: a signal during it is raised when it returns."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        with deferred():
            method(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for SIGINT and SIGTERM for the block (main thread only), then restore the previous."""
    previous = {signum: signal.signal(signum, _handle) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
