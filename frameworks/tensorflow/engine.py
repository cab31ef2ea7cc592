"""TensorFlow backend: model, one epoch of training, evaluation, and the full training state.

Shuffles and dropout masks come from stateless ops keyed by (seed, epoch, step), so a resumed run
needs no hidden RNG state: the epoch counter in the checkpoint is enough to draw the same numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from .config import Config
from .data import Split

FRAMEWORK = "tensorflow"
MODEL_FILE = "model.keras"
keras = tf.keras


def seed_framework(seed: int, deterministic: bool) -> dict[str, Any]:
    """Seed Python, NumPy and TF (keras does all three) and make TF's ops deterministic."""
    keras.utils.set_random_seed(seed)
    if deterministic:
        # Irreversible for the process; ops without a deterministic kernel then raise instead of varying.
        tf.config.experimental.enable_op_determinism()
    return {"tf.config.experimental.enable_op_determinism": deterministic}


def framework_versions() -> dict[str, Any]:
    build = tf.sysconfig.get_build_info()
    gpus = tf.config.list_physical_devices("GPU")
    details = tf.config.experimental.get_device_details(gpus[0]) if gpus else {}
    return {
        "framework": FRAMEWORK,
        "framework_version": tf.__version__,
        "cuda": build.get("cuda_version"),
        "cudnn": build.get("cudnn_version"),
        "device": details.get("device_name", "gpu") if gpus else "cpu",
    }


def _optimizer(config: Config) -> keras.optimizers.Optimizer:
    training = config.training
    if training.optimizer == "adamw":
        return keras.optimizers.AdamW(training.learning_rate, weight_decay=training.weight_decay)
    if training.optimizer == "sgd":
        return keras.optimizers.SGD(training.learning_rate, momentum=0.9)
    return keras.optimizers.Adam(training.learning_rate)


class Trainer:
    """Owns the model, the optimizer and the epoch counter that keys every random draw."""

    def __init__(self, config: Config, num_features: int, num_classes: int) -> None:
        self.config = config
        self.epoch = 0
        self.hidden = [keras.layers.Dense(size, activation="relu") for size in config.model.hidden_sizes]
        self.output = keras.layers.Dense(num_classes)
        self.model = keras.Sequential([keras.Input((num_features,)), *self.hidden, self.output])
        self.optimizer = _optimizer(config)
        self.optimizer.build(self.model.trainable_variables)
        self.loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        # L2 added to the gradient, as torch's Adam/SGD do; AdamW decays weights itself.
        self.l2 = 0.0 if config.training.optimizer == "adamw" else config.training.weight_decay
        self._step = tf.function(self._train_step, reduce_retracing=True)

    def _forward(self, features: tf.Tensor, dropout_seed: tf.Tensor | None) -> tf.Tensor:
        hidden = features
        for index, layer in enumerate(self.hidden):
            hidden = layer(hidden)
            if dropout_seed is not None and self.config.model.dropout > 0:
                seed = tf.stack([dropout_seed[0], dropout_seed[1] * 1000 + index])
                hidden = tf.nn.experimental.stateless_dropout(hidden, self.config.model.dropout, seed=seed)
        return self.output(hidden)

    def _train_step(self, features: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            logits = self._forward(features, seed)
            loss = self.loss(labels, logits)
        variables = self.model.trainable_variables
        grads = tape.gradient(loss, variables)
        if self.l2:
            grads = [grad + self.l2 * variable for grad, variable in zip(grads, variables, strict=True)]
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        correct = tf.reduce_sum(tf.cast(tf.argmax(logits, axis=1) == labels, tf.int64))
        return loss, correct

    def train_epoch(self, split: Split) -> dict[str, float]:
        order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(split.labels))
        batch_size = self.config.training.batch_size
        total_loss, correct = 0.0, 0
        for step, start in enumerate(range(0, len(order), batch_size)):
            batch = order[start : start + batch_size]
            seed = tf.constant([self.config.seed, self.epoch * 100_000 + step], dtype=tf.int64)
            loss, hits = self._step(split.features[batch], split.labels[batch], seed)
            total_loss += float(loss) * len(batch)
            correct += int(hits)
        self.epoch += 1
        return {"loss": total_loss / len(order), "accuracy": correct / len(order)}

    def evaluate(self, split: Split) -> dict[str, float]:
        logits = self._forward(tf.constant(split.features), None)
        accuracy = tf.reduce_mean(tf.cast(tf.argmax(logits, axis=1) == split.labels, tf.float32))
        return {"loss": float(self.loss(split.labels, logits)), "accuracy": float(accuracy)}

    def state(self) -> dict[str, Any]:
        """Everything that decides the next epoch, as NumPy values (see checkpoint.py)."""
        return {
            "weights": self.weights(),
            "optimizer": [np.asarray(variable) for variable in self.optimizer.variables],
            "epoch": self.epoch,
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.set_weights(state["weights"])
        for variable, value in zip(self.optimizer.variables, state["optimizer"], strict=True):
            variable.assign(value)
        self.epoch = state["epoch"]

    def save_model(self, directory: Path) -> Path:
        path = directory / MODEL_FILE
        self.model.save(path)
        return path

    def weights(self) -> list[np.ndarray]:
        return [np.asarray(array) for array in self.model.get_weights()]
