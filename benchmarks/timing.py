"""The one timing helper the benchmarks share (standard library only: it also runs in a project's venv)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(action: Callable[[], object], runs: int, warm_up: bool = False) -> float:
    """Median wall time of `runs` calls of `action`, after one untimed call when `warm_up`."""
    if warm_up:
        action()
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)
