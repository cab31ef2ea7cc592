"""What every framework's engine.py provides: the calls runner, tracking, evaluate and seeding make.

Swapping the framework means writing an engine that keeps this contract; tests/test_engine_contract.py
checks engine.py against it (names, parameters and types), so a renamed parameter fails there first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, TypedDict, runtime_checkable

import numpy as np

from .config import Config
from .data import Split
from .world import SINGLE, World


class FrameworkVersions(TypedDict):
    """The framework, its build and the device it runs on, as run.json records them (None: not reported)."""

    framework: str
    framework_version: str
    cuda: str | None
    cudnn: int | str | None
    device: str  # "cpu", or the GPU's name
    vector_isa: str | None  # the SIMD kernels picked (AVX2, AVX512...)
    threads: dict[str, int] | None  # intra_op / inter_op thread pools


@runtime_checkable
class Engine(Protocol):
    """The engine module itself (a module satisfies a protocol: its functions are the methods, without self).

    Its `Trainer` class keeps the `Trainer` protocol below and is built as
    `Trainer(config, num_features, num_classes, world)`.
    """

    MODEL_FILE: str  # the file name save_model writes in a run folder

    def seed_framework(self, seed: int, deterministic: bool) -> dict[str, bool | int | str]:
        """Seed the framework and switch its deterministic kernels on or off; returns the flags run.json records.

        Called before the framework's first computation in a run: some flags (XLA's) are read only then.
        """

    def framework_versions(self) -> FrameworkVersions:
        """Asks the framework for its devices: call it after seed_framework (see there)."""

    def start_world(self, config: Config) -> World:
        """This process's place in the run: `SINGLE` unless `config.distributed.enabled`, else joined through the
        framework's own launcher environment (a WorldError in one line when there is none). Call it after
        seed_framework and before the framework's first computation."""


@runtime_checkable
class Trainer(Protocol):
    """Owns the model, its optimizer and every random state that decides the next epoch, so that a checkpoint
    of `state()` restores a run exactly (a resumed run matches an uninterrupted one bit for bit)."""

    def __init__(self, config: Config, num_features: int, num_classes: int, world: World = SINGLE) -> None: ...

    def train_epoch(self, split: Split) -> dict[str, float]:
        """One pass over `split` in a seeded order: the epoch's mean `loss` and `accuracy`. With several replicas,
        each trains on its slice of every batch, and the scores are those of all replicas together (the same on
        every process)."""

    def evaluate(self, split: Split) -> dict[str, float]:
        """`loss` and `accuracy` on `split`, without dropout; changes no state."""

    def state(self) -> dict[str, Any]:
        """Everything that decides the next epoch, as NumPy arrays, numbers, lists and dicts (checkpoint.py).

        Every process calls it (it may gather from all replicas); only the chief writes it. `load_state` of that
        one state, on every process, restores all of them."""

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what `state()` returned, into a Trainer built from the same config."""

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Logits, computed exactly as the logged MLflow model computes them."""

    def log_model(self, **options: Any) -> None:
        """Log the model to the active MLflow run (`options`: name, signature, input_example)."""

    def save_model(self, directory: Path) -> Path:
        """Write the model into `directory` as MODEL_FILE; returns its path."""

    def weights(self) -> list[np.ndarray]:
        """The model's weights as arrays, for comparing two runs bit for bit."""
