"""Datasets that need no download, split deterministically from the seed, or the splits `prepare` wrote.

Training reads `paths.data_dir`/processed (DATA_DIR overrides `paths.data_dir`) when `prepare` wrote it
for the same dataset, seed and split fractions, so a change to prepare.py reaches training; otherwise
it builds the same splits in memory. To train on your own data, read it in prepare.py (or add a branch
to `load_dataset` that returns float32 features and int64 labels, and a name for it in
`DataConfig.dataset`). Everything downstream works on the `Dataset` arrays.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import Config, DataConfig

PROCESSED = "processed"
SPLITS = ("train", "val", "test")
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Split:
    features: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class Dataset:
    train: Split
    val: Split
    test: Split
    num_features: int
    num_classes: int


def _raw(name: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # sklearn.datasets is imported here, not at the top: it costs seconds and "synthetic" does not need it.
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.data / 16.0, bunch.target
    return _synthetic(seed)


def _synthetic(seed: int, samples: int = 600, features: int = 16, classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian clusters: learnable, but not perfectly, so metrics move with the seed."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.5, size=(classes, features))
    labels = rng.integers(classes, size=samples)
    return centres[labels] + rng.normal(size=(samples, features)), labels


def load_dataset(config: DataConfig, seed: int) -> Dataset:
    """Load `config.dataset` and split it train/val/test with stratification, from `seed`."""
    # Imported here: the serve image has no scikit-learn, and serving a JAX model imports this module.
    from sklearn.model_selection import train_test_split

    features, labels = _raw(config.dataset, seed)
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    splits = config.splits
    x_train, x_rest, y_train, y_rest = train_test_split(
        features, labels, train_size=splits.train, random_state=seed, stratify=labels
    )
    val_share = splits.val / (splits.val + splits.test)
    x_val, x_test, y_val, y_test = train_test_split(
        x_rest, y_rest, train_size=val_share, random_state=seed, stratify=y_rest
    )
    return Dataset(
        train=Split(x_train, y_train),
        val=Split(x_val, y_val),
        test=Split(x_test, y_test),
        num_features=features.shape[1],
        num_classes=int(labels.max()) + 1,
    )


def source(config: Config) -> dict[str, Any]:
    """What decides the splits: recorded by `prepare` in its manifest, compared by `load_training_data`."""
    return {"dataset": config.data.dataset, "seed": config.seed, "splits": config.data.splits.model_dump()}


def digest(dataset: Dataset) -> str:
    """SHA-256 of every split's arrays (dtype, shape and bytes): the data a run actually trained on."""
    sha = hashlib.sha256()
    for name in SPLITS:
        split: Split = getattr(dataset, name)
        for array in (split.features, split.labels):
            sha.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
            sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


def read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def load_prepared(folder: Path) -> Dataset:
    """The splits `prepare.save` wrote (plain arrays: np.load never unpickles here)."""
    manifest = read_manifest(folder) or {}
    splits = {
        name: Split(np.load(folder / f"{name}_features.npy"), np.load(folder / f"{name}_labels.npy")) for name in SPLITS
    }
    return Dataset(**splits, num_features=manifest["num_features"], num_classes=manifest["num_classes"])


def load_training_data(config: Config) -> tuple[Dataset, str]:
    """The dataset to train on and where it came from: the prepared splits when they match the config."""
    folder = Path(config.paths.data_dir) / PROCESSED
    manifest = read_manifest(folder)
    wanted = source(config)
    if manifest is not None and all(manifest.get(key) == value for key, value in wanted.items()):
        return load_prepared(folder), str(folder)
    if manifest is not None:
        warnings.warn(
            f"{folder} was prepared for another dataset, seed or split; splitting {config.data.dataset} in memory",
            stacklevel=2,
        )
    return load_dataset(config.data, config.seed), f"{config.data.dataset} (split in memory)"
