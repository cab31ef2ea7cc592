"""JAX backend: model, one epoch of training, evaluation, and the full training state.

Randomness is explicit: one key from the seed, split per epoch (shuffle, dropout) and folded in per
step. The key lives in the checkpoint, so a resumed run draws exactly what an uninterrupted one would.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import mlflow.pyfunc
import numpy as np
import optax

from . import distributed
from .config import Config
from .contract import FrameworkVersions
from .data import Split
from .world import SINGLE, World

FRAMEWORK = "jax"
MODEL_FILE = "model.npz"
DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"

Params = list[tuple[jax.Array, jax.Array]]


def _deterministic_ops(enabled: bool) -> None:
    """Add or remove XLA's GPU deterministic-ops flag, keeping every other flag in XLA_FLAGS."""
    flags = [flag for flag in os.environ.get("XLA_FLAGS", "").split() if flag != DETERMINISTIC_XLA_FLAG]
    if enabled:
        flags.append(DETERMINISTIC_XLA_FLAG)
    os.environ["XLA_FLAGS"] = " ".join(flags)


def seed_framework(seed: int, deterministic: bool) -> dict[str, bool | int | str]:
    """JAX has no global seed (see Trainer); on GPU, XLA needs its deterministic-ops flag."""
    # XLA reads XLA_FLAGS once, when the backend starts (the first computation or jax.devices() call): a run
    # seeds first, so the flag holds for it. Importing this module leaves XLA_FLAGS alone (a notebook's own stay).
    _deterministic_ops(deterministic)
    return {"XLA_FLAGS": os.environ["XLA_FLAGS"], "jax.random.key": seed}


def framework_versions() -> FrameworkVersions:
    device = jax.devices()[0]
    on_gpu = device.platform == "gpu"
    return {
        "framework": FRAMEWORK,
        "framework_version": jax.__version__,
        "cuda": getattr(device.client, "platform_version", None) if on_gpu else None,
        "cudnn": None,
        "device": device.device_kind if on_gpu else "cpu",
        "vector_isa": None,  # XLA compiles for the host CPU and does not report which SIMD extensions it used
        "threads": None,  # XLA sizes its CPU thread pool from the core count (cpu_count in run.json)
    }


def start_world(config: Config) -> World:
    if not config.distributed.enabled:
        return SINGLE
    return distributed.join(config)


def _init_params(key: jax.Array, sizes: list[int]) -> Params:
    params = []
    for fan_in, fan_out, layer_key in zip(sizes[:-1], sizes[1:], jax.random.split(key, len(sizes) - 1), strict=True):
        limit = np.sqrt(6.0 / (fan_in + fan_out))  # Glorot uniform, as Keras' Dense layers
        weights = jax.random.uniform(layer_key, (fan_in, fan_out), minval=-limit, maxval=limit)
        params.append((weights, jnp.zeros(fan_out)))
    return params


def _forward(params: Params, features: jax.Array, dropout: float, key: jax.Array | None) -> jax.Array:
    hidden = features
    for index, (weights, bias) in enumerate(params[:-1]):
        hidden = jax.nn.relu(hidden @ weights + bias)
        if key is not None and dropout > 0:
            keep = jax.random.bernoulli(jax.random.fold_in(key, index), 1.0 - dropout, hidden.shape)
            hidden = jnp.where(keep, hidden / (1.0 - dropout), 0.0)
    weights, bias = params[-1]
    return hidden @ weights + bias


def _optimizer(name: str, learning_rate: float, weight_decay: float) -> optax.GradientTransformation:
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    # Like torch's Adam and SGD: weight decay as an L2 term added to the gradient.
    inner = optax.adam(learning_rate) if name == "adam" else optax.sgd(learning_rate, momentum=0.9)
    return optax.chain(optax.add_decayed_weights(weight_decay), inner)


class _Compiled(NamedTuple):
    optimizer: optax.GradientTransformation
    step: Callable[..., Any]
    scores: Callable[..., Any]


def _mean(values: jax.Array, valid: jax.Array | None) -> jax.Array:
    """The mean over a batch's rows; with `valid`, over its rows that are not padding."""
    return values.mean() if valid is None else jnp.where(valid, values, 0).sum() / valid.sum()


@functools.cache
def _compiled(
    dropout: float, optimizer_name: str, learning_rate: float, weight_decay: float, replicated: Any = None
) -> _Compiled:
    """Jitted step and evaluation, cached per hyper-parameters so every run in a process reuses them.

    With a `replicated` sharding (data parallel), every input batch is split over the replicas and comes with its
    `valid` rows; parameters, optimizer state and scores stay copied on every device.
    """
    optimizer = _optimizer(optimizer_name, learning_rate, weight_decay)
    jit = jax.jit if replicated is None else functools.partial(jax.jit, out_shardings=replicated)

    def loss(params: Params, features: jax.Array, labels: jax.Array, key: jax.Array | None, valid: Any) -> Any:
        logits = _forward(params, features, dropout, key)
        return _mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels), valid), logits

    @jit
    def step(
        params: Params, opt_state: Any, features: jax.Array, labels: jax.Array, key: jax.Array, valid: Any = None
    ) -> Any:
        (value, logits), grads = jax.value_and_grad(loss, has_aux=True)(params, features, labels, key, valid)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        hits = logits.argmax(axis=1) == labels
        correct = (hits if valid is None else hits & valid).sum()
        return optax.apply_updates(params, updates), opt_state, value, correct

    @jit
    def scores(params: Params, features: jax.Array, labels: jax.Array, valid: Any = None) -> Any:
        value, logits = loss(params, features, labels, None, valid)
        return value, _mean(logits.argmax(axis=1) == labels, valid)

    return _Compiled(optimizer, step, scores)


def _params(arrays: list[np.ndarray]) -> Params:
    """Arrays (weights, bias, weights, ...) as the model's parameters; host arrays land on the default device."""
    leaves = [jnp.asarray(array) for array in arrays]
    return list(zip(leaves[::2], leaves[1::2], strict=True))


def _logits(params: Params, features: np.ndarray) -> np.ndarray:
    # Not jitted, so training's compiled code plays no part: the served model runs exactly these ops.
    return np.asarray(_forward(params, jnp.asarray(features), 0.0, None))


class ServedModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc of a trained model: the forward pass without dropout, weights from model.npz."""

    # MLflow would wrap predict to validate inputs against its type hints (and warn at import about them);
    # the logged model has an explicit signature instead.
    _skip_type_hint_validation = True

    def load_context(self, context: Any) -> None:
        arrays = np.load(context.artifacts["weights"])
        self.params = _params([arrays[f"arr_{index}"] for index in range(len(arrays.files))])

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> np.ndarray:
        return _logits(self.params, np.asarray(model_input, dtype=np.float32))


class Trainer:
    """Owns parameters, optimizer state and the PRNG key, so a checkpoint can restore all of them.

    In a data_parallel `world` they are copied on every device of the run, every process draws the same shuffle
    and dropout key, and each device trains on its slice of every batch (distributed.py).
    """

    def __init__(self, config: Config, num_features: int, num_classes: int, world: World = SINGLE) -> None:
        self.world = world
        self.config = config
        self.parallel = distributed.DataParallel() if world.strategy == distributed.STRATEGY else None
        init_key, self.key = jax.random.split(jax.random.key(config.seed))
        self.params = _init_params(init_key, [num_features, *config.model.hidden_sizes, num_classes])
        training = config.training
        self.compiled = _compiled(
            config.model.dropout, training.optimizer, training.learning_rate, training.weight_decay,
            None if self.parallel is None else self.parallel.replicated,
        )  # fmt: skip
        self.opt_state = self.compiled.optimizer.init(self.params)
        if self.parallel is not None:
            self.load_state(self.state())  # drawn on this process's device as on one, then copied to all

    def train_epoch(self, split: Split) -> dict[str, float]:
        self.key, shuffle_key, dropout_key = jax.random.split(self.key, 3)
        order = np.asarray(jax.random.permutation(shuffle_key, len(split.labels)))
        batch_size = self.config.training.batch_size
        total_loss, correct = 0.0, 0
        for step, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start : start + batch_size]
            features, labels, valid = self._placed(split.features[batch], split.labels[batch])
            self.params, self.opt_state, loss, hits = self.compiled.step(
                self.params, self.opt_state, features, labels, jax.random.fold_in(dropout_key, step), valid
            )
            total_loss += float(loss) * len(batch)
            correct += int(hits)
        return {"loss": total_loss / len(order), "accuracy": correct / len(order)}

    def evaluate(self, split: Split) -> dict[str, float]:
        loss, accuracy = self.compiled.scores(self.params, *self._placed(split.features, split.labels))
        return {"loss": float(loss), "accuracy": float(accuracy)}

    def _placed(self, features: np.ndarray, labels: np.ndarray) -> tuple[Any, Any, Any]:
        """A batch as the compiled code takes it: as is on one device; with replicas, padded to a multiple of
        them (padding repeats rows that then count for nothing) and split over them, with its valid rows."""
        if self.parallel is None:
            return features, labels, None
        valid = self.parallel.valid_rows(len(labels))
        rows = np.resize(np.arange(len(labels)), len(valid))
        return self.parallel.shard(features[rows]), self.parallel.shard(labels[rows]), self.parallel.shard(valid)

    def state(self) -> dict[str, Any]:
        """Everything that decides the next epoch, as NumPy values (see checkpoint.py); copied on every device
        when distributed, so each process holds all of it."""
        return {
            "params": self.weights(),
            "opt_state": [np.asarray(leaf) for leaf in jax.tree.leaves(self.opt_state)],
            "key": np.asarray(jax.random.key_data(self.key)),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if self.parallel is not None:
            state = {part: self.parallel.replicate(state[part]) for part in ("params", "opt_state", "key")}
        self.params = _params(state["params"])
        structure = jax.tree.structure(self.compiled.optimizer.init(self.params))
        self.opt_state = jax.tree.unflatten(structure, [jnp.asarray(leaf) for leaf in state["opt_state"]])
        self.key = jax.random.wrap_key_data(jnp.asarray(state["key"]))

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Logits, computed as the logged MLflow model computes them (see ServedModel), on this process alone."""
        return _logits(_params(self.weights()), features)

    def log_model(self, **options: Any) -> None:
        """Log the model as an MLflow pyfunc (`options`: name, signature, input_example); the weights are an artifact.

        Loading it imports this package's engine module, so serve it from the project's environment.
        """
        pinned = [f"{module.__name__}=={module.__version__}" for module in (jax, np, mlflow)]
        with tempfile.TemporaryDirectory() as folder:
            weights = self.save_model(Path(folder))
            mlflow.pyfunc.log_model(
                python_model=ServedModel(), artifacts={"weights": str(weights)}, pip_requirements=pinned, **options
            )

    def save_model(self, directory: Path) -> Path:
        path = directory / MODEL_FILE
        np.savez(path, *self.weights())
        return path

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(array) for layer in self.params for array in layer]
