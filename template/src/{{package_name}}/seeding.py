"""Seeding and RNG state capture shared by every framework (the framework part is in engine.py)."""

from __future__ import annotations

import os
import random
import warnings
from typing import Any

import numpy as np

from . import engine


def seed_everything(seed: int, deterministic: bool) -> dict[str, Any]:
    """Seed Python, NumPy and the framework; return the determinism flags to record."""
    _warn_if_hash_seed_unset()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    flags = engine.seed_framework(seed, deterministic)
    return {"seed": seed, "deterministic": deterministic, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED"), **flags}


def _warn_if_hash_seed_unset() -> None:
    # PYTHONHASHSEED only works when set before the interpreter starts, so it cannot be set here.
    # Makefile, Dockerfile and compose set it; a bare `python train.py` gets this warning.
    if os.environ.get("PYTHONHASHSEED") is None:
        warnings.warn(
            "PYTHONHASHSEED is not set: set-iteration order may vary between runs "
            "(use `make train`, or export PYTHONHASHSEED=0)",
            stacklevel=3,
        )


def capture_rng() -> dict[str, Any]:
    """Python and NumPy global RNG states, for a checkpoint."""
    return {"python": random.getstate(), "numpy": np.random.get_state()}


def restore_rng(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
