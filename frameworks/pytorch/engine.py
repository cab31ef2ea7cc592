"""PyTorch backend: model, one epoch of training, evaluation, and the full training state."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

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
    """Owns the model, optimizer and the loader's RNG, so a checkpoint can restore all of them.

    With a distributed world, the model trains wrapped in DistributedDataParallel (which starts every replica
    from rank 0's weights) on a DistributedSampler's slice of each epoch; `self.model` stays the plain module.
    """

    def __init__(self, config: Config, num_features: int, num_classes: int, world: World = SINGLE) -> None:
        self.world = world
        self.config = config
        # The current device: torchrun's LOCAL_RANK picked it (distributed.join); cuda:0 in a one-process run.
        self.device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
        self.model = _mlp(num_features, config.model.hidden_sizes, config.model.dropout, num_classes).to(self.device)
        self.optimizer = _optimizer(config, self.model.parameters())
        self.loss = nn.CrossEntropyLoss()
        self.generator = torch.Generator().manual_seed(config.seed)
        self.epochs_trained = 0  # the DistributedSampler's epoch: it decides that epoch's shuffle
        self.trained: nn.Module = self.model
        if world.strategy == distributed.STRATEGY:
            on_gpu = self.device.type == "cuda"
            self.trained = DistributedDataParallel(self.model, device_ids=[self.device] if on_gpu else None)
            torch.manual_seed(distributed.rank_seed(config.seed, world.process_index))  # this replica's dropout

    def _loader(self, split: Split, shuffle: bool) -> DataLoader:
        dataset = TensorDataset(torch.from_numpy(split.features), torch.from_numpy(split.labels))
        sampler = None
        if shuffle and self.trained is not self.model:
            sampler = DistributedSampler(
                dataset, self.world.replicas, self.world.process_index, shuffle=True, seed=self.config.seed
            )
            sampler.set_epoch(self.epochs_trained)
        return DataLoader(
            dataset,
            batch_size=self.config.training.batch_size // (self.world.replicas if sampler else 1),
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=self.generator if shuffle and sampler is None else None,
            num_workers=self.config.data.num_workers,
            worker_init_fn=_seed_worker,
        )

    def train_epoch(self, split: Split) -> dict[str, float]:
        self.trained.train()
        total_loss, correct, seen = 0.0, 0, 0
        for features, labels in self._loader(split, shuffle=True):
            features, labels = features.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.trained(features)
            loss = self.loss(logits, labels)
            loss.backward()
            self.optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += int((logits.argmax(dim=1) == labels).sum())
            seen += len(labels)
        self.epochs_trained += 1
        if self.trained is not self.model:  # every replica reports the scores of all of them
            total_loss, correct, seen = distributed.sum_over_replicas(total_loss, correct, seen)
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
        """Everything that decides the next epoch, as NumPy values (see checkpoint.py); with replicas, a
        collective: each one's dropout RNG is gathered, so the chief's state restores every one of them."""
        rng = _to_numpy(
            {
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            }
        )
        if self.trained is not self.model:
            rng["replica_rng"] = distributed.gathered(dict(rng))
        return {
            **_to_numpy({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}),
            **rng,
            "loader_rng": _to_numpy(self.generator.get_state()),
            "epochs_trained": self.epochs_trained,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        restored = _to_torch(state)
        self.model.load_state_dict(restored["model"])
        self.optimizer.load_state_dict(restored["optimizer"])
        rng = restored["replica_rng"][self.world.process_index] if "replica_rng" in restored else restored
        torch.set_rng_state(rng["torch_rng"])
        if rng["cuda_rng"]:
            torch.cuda.set_rng_state_all(rng["cuda_rng"])
        self.generator.set_state(restored["loader_rng"])
        self.epochs_trained = int(restored.get("epochs_trained", 0))

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
