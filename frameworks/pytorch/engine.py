"""PyTorch backend: model, one epoch of training, evaluation, and the full training state."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from . import distributed
from .config import Config
from .contract import FrameworkVersions
from .data import Split
from .world import SINGLE, World

FRAMEWORK = "pytorch"
MODEL_FILE = "model.pt"


def seed_framework(seed: int, deterministic: bool) -> dict[str, bool | int | str]:
    """Seed torch (CPU and every GPU) and switch deterministic kernels on or off."""
    # cuBLAS reads this when CUDA initialises; Dockerfile/compose/Makefile set it too.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    return {
        "torch.use_deterministic_algorithms": deterministic,
        "torch.backends.cudnn.benchmark": not deterministic,
        "CUBLAS_WORKSPACE_CONFIG": os.environ["CUBLAS_WORKSPACE_CONFIG"],
    }


def framework_versions() -> FrameworkVersions:
    cuda = torch.cuda.is_available()
    return {
        "framework": FRAMEWORK,
        "framework_version": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",
        "vector_isa": torch.backends.cpu.get_cpu_capability(),  # the SIMD kernels torch picked: AVX2, AVX512...
        "threads": {"intra_op": torch.get_num_threads(), "inter_op": torch.get_num_interop_threads()},
    }


def start_world(config: Config) -> World:
    if not config.distributed.enabled:
        return SINGLE
    return distributed.join(config)


def _seed_worker(worker_id: int) -> None:
    # Each DataLoader worker derives its seed from the loader's generator (PyTorch reproducibility notes).
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def _mlp(num_features: int, hidden_sizes: list[int], dropout: float, num_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = num_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _optimizer(config: Config, params: Any) -> torch.optim.Optimizer:
    training = config.training
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, lr=training.learning_rate, momentum=0.9, weight_decay=training.weight_decay)
    kind = torch.optim.AdamW if training.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=training.learning_rate, weight_decay=training.weight_decay)


def _to_numpy(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {key: _to_numpy(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(value) for value in tree)
    return tree


def _to_torch(tree: Any) -> Any:
    if isinstance(tree, np.ndarray):
        return torch.from_numpy(tree.copy())
    if isinstance(tree, dict):
        return {key: _to_torch(value) for key, value in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(value) for value in tree)
    return tree


class Trainer:
    """Owns the model, optimizer and the loader's RNG, so a checkpoint can restore all of them."""

    def __init__(self, config: Config, num_features: int, num_classes: int, world: World = SINGLE) -> None:
        self.world = world
        self.config = config
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = _mlp(num_features, config.model.hidden_sizes, config.model.dropout, num_classes).to(self.device)
        self.optimizer = _optimizer(config, self.model.parameters())
        self.loss = nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(config.seed)

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        dataset = TensorDataset(torch.from_numpy(split.features), torch.from_numpy(split.labels))
        return DataLoader(
            dataset,
            batch_size=self.config.training.batch_size,
            shuffle=shuffle,
            generator=self.generator if shuffle else None,
            num_workers=self.config.data.num_workers,
            worker_init_fn=_seed_worker,
        )

    def train_epoch(self, split: Split) -> dict[str, float]:
        self.model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for features, labels in self._loader(split, shuffle=True):
            features, labels = features.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.model(features)
            loss = self.loss(logits, labels)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
        return {"loss": total_loss / seen, "accuracy": correct / seen}

    @torch.no_grad()
    def evaluate(self, split: Split) -> dict[str, float]:
        self.model.eval()
        features = torch.from_numpy(split.features).to(self.device)
        labels = torch.from_numpy(split.labels).to(self.device)
        logits = self.model(features)
        return {
            "loss": float(self.loss(logits, labels)),
            "accuracy": float((logits.argmax(dim=1) == labels).float().mean()),
        }

    def state(self) -> dict[str, Any]:
        """Everything that decides the next epoch, as NumPy values (see checkpoint.py)."""
        return _to_numpy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "loader_rng": self.generator.get_state(),
            }
        )

    def load_state(self, state: dict[str, Any]) -> None:
        restored = _to_torch(state)
        self.model.load_state_dict(restored["model"])
        self.optimizer.load_state_dict(restored["optimizer"])
        torch.set_rng_state(restored["torch_rng"])
        if restored["cuda_rng"]:
            torch.cuda.set_rng_state_all(restored["cuda_rng"])
        self.generator.set_state(restored["loader_rng"])

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> np.ndarray:
        """Logits, computed as the logged MLflow model computes them."""
        self.model.eval()
        return self.model(torch.from_numpy(features).to(self.device)).cpu().numpy()

    def log_model(self, **options: Any) -> None:
        """Log the model with MLflow's PyTorch flavour (`options`: name, signature, input_example)."""
        import mlflow.pytorch

        self.model.eval()  # saved in inference mode: dropout off
        pinned = mlflow.pytorch.get_default_pip_requirements()  # skips MLflow's slow import-tracing inference
        mlflow.pytorch.log_model(self.model, pip_requirements=pinned, **options)

    def save_model(self, directory: Path) -> Path:
        path = directory / MODEL_FILE
        torch.save(self.model.state_dict(), path)
        return path

    def weights(self) -> list[np.ndarray]:
        """Model weights as arrays, for comparing two runs bit for bit."""
        return [tensor.detach().cpu().numpy() for tensor in self.model.state_dict().values()]
