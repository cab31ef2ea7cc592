"""Datasets that need no download, split deterministically from the seed.

To train on your own data, add a branch to `load_dataset` that returns float32 features and
int64 labels (for example read from `config.paths.data_dir`), and a name for it in
`DataConfig.dataset`. Everything downstream works on the `Dataset` arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from .config import DataConfig


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
