"""TensorFlow backend: model, one epoch of training, evaluation, and the full training state.

Every random draw is keyed by the config's seed: initial weights by (seed, layer), the shuffle by
(seed, epoch) and dropout masks by (seed, epoch, step) through stateless ops. A resumed run therefore
needs no hidden RNG state: the epoch counter in the checkpoint is enough to draw the same numbers.

With `distributed.enabled`, the variables are mirrored by a tf.distribute strategy (distributed.py): every
process walks the same seeded order, each replica trains on its slice of every global batch with its own dropout
seeds (seed, epoch, step, replica), and the scores are summed across all replicas, so every process reports the
same numbers. Nothing the chief does alone (predict, save, log the model) touches the mirrored variables.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from . import distributed
from .config import Config
from .contract import FrameworkVersions
from .data import Split
from .world import SINGLE, World

FRAMEWORK = "tensorflow"
MODEL_FILE = "model.keras"
keras = tf.keras

# Tags that keep the seed streams for weights, shuffles and dropout apart.
_INIT, _SHUFFLE, _DROPOUT = 0, 1, 2

# enable_op_determinism() cannot be undone in a process; remember it so the recorded flag stays true.
_op_determinism = False


def seed_framework(seed: int, deterministic: bool) -> dict[str, bool | int | str]:
    """Seed Python, NumPy and TF's global RNGs (for user code) and make TF's ops deterministic."""
    global _op_determinism
    keras.utils.set_random_seed(seed)
    if deterministic and not _op_determinism:
        # Ops without a deterministic kernel then raise instead of varying.
        tf.config.experimental.enable_op_determinism()
        _op_determinism = True
    return {"tf.config.experimental.enable_op_determinism": _op_determinism}


def framework_versions() -> FrameworkVersions:
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return {
        "framework": FRAMEWORK,
        "framework_version": tf.__version__,
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "device": details.get("device_name", "gpu") if gpus else "cpu",
        "vector_isa": None,  # TensorFlow does not report which SIMD kernels oneDNN/Eigen picked
        # 0 means "TensorFlow picks from the core count" (cpu_count in run.json).
        "threads": {
            "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        },
    }


def start_world(config: Config) -> World:
    if not config.distributed.enabled:
        return SINGLE
    return distributed.join(config)


def _seeds(*key: int, count: int) -> np.ndarray:
    """`count` 32-bit seeds hashed from `key`: distinct keys give independent seeds."""
    return np.random.SeedSequence(list(key)).generate_state(count)


def _mlp(config: Config, num_features: int, num_classes: int) -> keras.Sequential:
    """Dense layers with explicitly seeded initialisers, so the weights do not depend on global RNG state."""
    sizes = [*config.model.hidden_sizes, num_classes]
    seeds = _seeds(config.seed, _INIT, count=len(sizes))
    layers = [
        keras.layers.Dense(
            size,
            activation="relu" if index < len(sizes) - 1 else None,
            kernel_initializer=keras.initializers.GlorotUniform(seed=int(seed)),
        )
        for index, (size, seed) in enumerate(zip(sizes, seeds, strict=True))
    ]
    return keras.Sequential([keras.Input((num_features,)), *layers])


def _optimizer(config: Config) -> keras.optimizers.Optimizer:
    training = config.training
    if training.optimizer == "adamw":
        return keras.optimizers.AdamW(training.learning_rate, weight_decay=training.weight_decay)
    if training.optimizer == "sgd":
        return keras.optimizers.SGD(training.learning_rate, momentum=0.9)
    return keras.optimizers.Adam(training.learning_rate)


class Trainer:
    """Owns the model, the optimizer and the epoch counter that keys every random draw."""

    def __init__(self, config: Config, num_features: int, num_classes: int, world: World = SINGLE) -> None:
        self.world = world
        self.config = config
        self.epoch = 0
        self.strategy = distributed.strategy(world)
        with self.strategy.scope() if self.strategy else contextlib.nullcontext():
            self.model = _mlp(config, num_features, num_classes)
            self.optimizer = _optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
        self.hidden, self.output = self.model.layers[:-1], self.model.layers[-1]
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        # Added to the gradient as an L2 term, as torch's Adam and SGD do; AdamW decays the weights itself.
        self.l2 = 0.0 if config.training.optimizer == "adamw" else config.training.weight_decay
        # One trace for every batch size (the last batch is smaller): traces cost seconds, steps milliseconds.
        batch = [tf.TensorSpec([None, num_features], tf.float32), tf.TensorSpec([None], tf.int64)]
        seeds = tf.TensorSpec([len(self.hidden), 2], tf.int64)
        if self.strategy is None:
            self._step = tf.function(self._train_step, input_signature=[*batch, seeds])
        else:
            replicas = tf.TensorSpec([world.replicas, *seeds.shape], tf.int64)
            self._step = tf.function(self._replicated_train_step, input_signature=[*batch, replicas])
            self._scores = tf.function(self._replicated_scores, input_signature=batch)

    def _forward(self, features: tf.Tensor, dropout_seeds: tf.Tensor | None) -> tf.Tensor:
        hidden, rate = features, self.config.model.dropout
        for index, layer in enumerate(self.hidden):
            hidden = layer(hidden)
            if dropout_seeds is not None and rate > 0:
                hidden = tf.nn.experimental.stateless_dropout(hidden, rate, seed=dropout_seeds[index])
        return self.output(hidden)

    def _train_step(self, features: tf.Tensor, labels: tf.Tensor, seeds: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            logits = self._forward(features, seeds)
            loss = self.loss(labels, logits)
        self._apply(tape.gradient(loss, self.model.trainable_variables), self.l2)
        return loss, _correct(labels, logits)

    def _apply(self, grads: list[tf.Tensor], l2: float) -> None:
        variables = self.model.trainable_variables
        if l2:
            grads = [grad + l2 * variable for grad, variable in zip(grads, variables, strict=True)]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))

    def _replicated_train_step(
        self, features: tf.Tensor, labels: tf.Tensor, seeds: tf.Tensor
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """One global batch over all replicas: its mean loss and correct count, the same on every process."""

        def replica_step(features: tf.Tensor, labels: tf.Tensor, seeds: tf.Tensor) -> tf.Tensor:
            size = tf.shape(features)[0]
            replica, (features, labels) = _replica_slice(features, labels)
            with tf.GradientTape() as tape:
                logits = self._forward(features, seeds[replica])
                per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
                # Scaled by the global batch: the optimizer sums the replicas' gradients into the batch's mean.
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=size)
            # Each replica adds its share of the L2 term, so the summed gradient carries it once.
            self._apply(tape.gradient(loss, self.model.trainable_variables), self.l2 / self.world.replicas)
            return _totals(loss, labels, logits)

        totals = self._sum_replicas(replica_step, features, labels, seeds)
        return totals[0], tf.cast(totals[1], tf.int64)

    def _replicated_scores(self, features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
        """Summed loss and correct count over all replicas' slices of (features, labels), without dropout."""

        def replica_scores(features: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            _, (features, labels) = _replica_slice(features, labels)
            logits = self._forward(features, None)
            per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
            return _totals(tf.reduce_sum(per_example), labels, logits)

        return self._sum_replicas(replica_scores, features, labels)

    def _sum_replicas(self, replica_fn: Callable[..., tf.Tensor], *args: tf.Tensor) -> tf.Tensor:
        assert self.strategy is not None
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, self.strategy.run(replica_fn, args=args), axis=None)

    def _dropout_seeds(self, step: int) -> np.ndarray:
        """One stateless seed pair per hidden layer for this (epoch, step); with replicas, one set per replica id."""
        key, count = (self.config.seed, _DROPOUT, self.epoch, step), len(self.hidden)
        if self.strategy is None:
            return _seeds(*key, count=2 * count).reshape(count, 2).astype(np.int64)
        per_replica = [_seeds(*key, replica, count=2 * count) for replica in range(self.world.replicas)]
        return np.stack(per_replica).reshape(self.world.replicas, count, 2).astype(np.int64)

    @distributed.peers_reachable()
    def train_epoch(self, split: Split) -> dict[str, float]:
        shuffle = np.random.default_rng(np.random.SeedSequence([self.config.seed, _SHUFFLE, self.epoch]))
        order = shuffle.permutation(len(split.labels))
        batch_size = self.config.training.batch_size
        total_loss, correct = 0.0, 0
        for step, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start : start + batch_size]
            loss, hits = self._step(split.features[batch], split.labels[batch], self._dropout_seeds(step))
            total_loss += float(loss) * len(batch)
            correct += int(hits)
        self.epoch += 1
        return {"loss": total_loss / len(order), "accuracy": correct / len(order)}

    @distributed.peers_reachable()
    def evaluate(self, split: Split) -> dict[str, float]:
        if self.strategy is not None:
            loss, correct = self._scores(split.features, split.labels).numpy() / len(split.labels)
            return {"loss": float(loss), "accuracy": float(correct)}
        logits = self._forward(tf.constant(split.features), None)
        accuracy = tf.reduce_mean(tf.cast(tf.argmax(logits, axis=1) == split.labels, tf.float32))
        return {"loss": float(self.loss(split.labels, logits)), "accuracy": float(accuracy)}

    def state(self) -> dict[str, Any]:
        """Everything that decides the next epoch, as NumPy values (see checkpoint.py)."""
        return {
            "weights": self.weights(),
            "optimizer": [np.array(variable) for variable in self.optimizer.variables],
            "epoch": self.epoch,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.set_weights(state["weights"])
        for variable, value in zip(self.optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)
        self.epoch = state["epoch"]

    def _standalone(self) -> keras.Sequential:
        """The trained model outside any strategy, for what the chief does alone.

        Keras predicts with a model built in a strategy's scope through that strategy: under
        MultiWorkerMirroredStrategy, collectives every worker must join (the chief alone would wait forever).
        TensorFlow's saving rule (every worker saves, each to its own path) is for saves that aggregate variables
        across workers; this copy of the weights, built outside the scope, holds no distributed variable, so the
        chief alone saves and logs it.
        """
        if self.strategy is None:
            return self.model
        standalone = keras.models.clone_model(self.model)
        standalone.set_weights(self.model.get_weights())
        return standalone

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Logits, computed as the logged MLflow model computes them (Keras' predict, in its batches)."""
        return self._standalone().predict(features, verbose=0)

    def log_model(self, **options: Any) -> None:
        """Log the Keras model with MLflow's TensorFlow flavour (`options`: name, signature, input_example)."""
        import mlflow.tensorflow

        pinned = mlflow.tensorflow.get_default_pip_requirements()  # skips MLflow's slow import-tracing inference
        mlflow.tensorflow.log_model(self._standalone(), pip_requirements=pinned, **options)

    def save_model(self, directory: Path) -> Path:
        path = directory / MODEL_FILE
        self._standalone().save(path)
        return path

    def weights(self) -> list[np.ndarray]:
        """Model weights as arrays, for comparing two runs bit for bit."""
        return [np.array(array) for array in self.model.get_weights()]


def _correct(labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1) == labels, tf.int64))


def _totals(loss: tf.Tensor, labels: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """[loss, correct count] in float64: summed over replicas, in the same order on every process."""
    return tf.stack([tf.cast(loss, tf.float64), tf.cast(_correct(labels, logits), tf.float64)])


def _replica_slice(*batch: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """This replica's id and its contiguous slice of a global batch (slices differ by one example at most)."""
    context = tf.distribute.get_replica_context()
    replica, replicas = context.replica_id_in_sync_group, context.num_replicas_in_sync
    size = tf.shape(batch[0])[0]
    begin, end = size * replica // replicas, size * (replica + 1) // replicas
    return replica, [tensor[begin:end] for tensor in batch]
