"""Runs inside a generated project's environment; see train_overhead.py."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from pathlib import Path

from timing import median_seconds

project, runs, epochs = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
package = next(path.parent.name for path in (project / "src").glob("*/cli.py"))
os.environ["HOME"] = tempfile.mkdtemp()
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{os.environ['HOME']}/mlflow.db"
config_module = importlib.import_module(f"{package}.config")
runner = importlib.import_module(f"{package}.runner")
engine = importlib.import_module(f"{package}.engine")
seeding = importlib.import_module(f"{package}.seeding")
data = importlib.import_module(f"{package}.data")
settings = importlib.import_module(f"{package}.settings").load_settings(Path("/nonexistent/.env"))


def config(deterministic: bool = True, length: int = epochs):
    overrides = [f"training.epochs={length}", f"deterministic={str(deterministic).lower()}"]
    return config_module.load_config(project / "configs" / "baseline.yaml", overrides)


def generated(deterministic: bool = True, length: int = epochs) -> None:
    runner.train(config(deterministic, length), settings, Path(tempfile.mkdtemp()) / "run")


def bare(length: int = epochs) -> None:
    cfg = config(length=length)
    seeding.seed_everything(cfg.seed, cfg.deterministic)
    dataset = data.load_dataset(cfg.data, cfg.seed)
    trainer = engine.Trainer(cfg, dataset.num_features, dataset.num_classes)
    for _ in range(cfg.training.epochs):
        trainer.train_epoch(dataset.train)
        trainer.evaluate(dataset.val)
    trainer.evaluate(dataset.test)


def median(action) -> float:
    """Warm-up first: imports, MLflow store creation, kernel caches."""
    return median_seconds(action, runs, warm_up=True)


bare_s, generated_s = median(bare), median(generated)
# A run of a third of the epochs separates the overhead paid once per run (MLflow run, plot, model file)
# from the overhead paid every epoch (checkpoint, metric logging): overhead = fixed + per_epoch * epochs.
short = max(1, epochs // 3)
short_overhead = median(lambda: generated(length=short)) - median(lambda: bare(length=short))
overhead = generated_s - bare_s
per_epoch = (overhead - short_overhead) / (epochs - short) if epochs > short else 0.0
fixed = overhead - per_epoch * epochs
epoch_s = bare_s / epochs
device = engine.framework_versions()["device"]
print(f"framework {engine.FRAMEWORK}, device {device}, {epochs} epochs, median of {runs}")
print(f"bare loop           {bare_s:7.3f} s")
print(f"generated loop      {generated_s:7.3f} s   ratio {generated_s / bare_s:.3f} (target <= 1.10)")
print(f"overhead            {overhead:7.3f} s per run: {fixed:.3f} s once + {per_epoch * 1000:.1f} ms per epoch")
print(f"per-epoch ratio     {(epoch_s + per_epoch) / epoch_s:7.3f}   (the ratio a long run tends to)")
if device != "cpu":
    fast_s = median(lambda: generated(deterministic=False))
    print(f"non-deterministic   {fast_s:7.3f} s   deterministic/non-deterministic {generated_s / fast_s:.3f}")
