"""One training run: seed, train epoch by epoch with a checkpoint after each, record everything."""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import ValidationError
from tqdm import tqdm

from . import checkpoint, drift, engine, plots, provenance, seeding
from .config import Config, differing_keys, flatten
from .contract import Trainer
from .data import Dataset, load_training_data
from .data import digest as data_digest
from .errors import UserError
from .settings import Settings
from .tracking import Tracker, ensure_reachable
from .world import World, check_same_size
from .writable import ensure_writable

History = list[dict[str, float]]  # one row per epoch: its number and scores
FINISHED = "checkpoints/finished.json"  # written once the MLflow run has ended: {"epochs": N}
EPOCHS = "training.epochs"  # the one key a resume may change (upwards): extend a finished or killed run


class RunError(UserError):
    """A run that cannot start; the message is one line."""


@dataclass(frozen=True)
class RunResult:
    output_dir: Path
    metrics: dict[str, Any]
    weights: list[np.ndarray]
    run_id: str
    trainer: Trainer


def _check_output_dir(output_dir: Path, resume: bool) -> dict[str, Any] | None:
    saved = checkpoint.load(output_dir / "checkpoints")
    if resume and saved is None:
        raise RunError(f"--resume: {output_dir} holds no checkpoint to resume from")
    if not resume and (saved is not None or (output_dir / "metrics.json").exists()):
        raise RunError(f"{output_dir} already holds a run; pass --resume to continue it or choose another --output-dir")
    return saved


def _check_resumable(saved: dict[str, Any], config: Config, output_dir: Path) -> None:
    """A resume continues the same experiment: only training.epochs may change, and only upwards."""
    # A checkpoint from before configs were stored in it has no digest: there is nothing to compare.
    if saved.get("config_digest", config.digest()) != config.digest():
        _refuse_other_config(saved["config"], config.model_dump(mode="json"), output_dir)
    trained = len(saved["history"])
    finished = _finished_epochs(output_dir) == trained
    minimum = trained + 1 if finished else trained  # a finished run resumes only to train more epochs
    if config.training.epochs < minimum:
        raise RunError(
            f"--resume: {output_dir} already trained {trained} epochs{' and finished' if finished else ''}; "
            f"pass {EPOCHS}=N with N >= {minimum}"
        )


def _finished_epochs(output_dir: Path) -> int | None:
    """The epochs of the run's last complete finish (its MLflow run ended), else None.

    Not `metrics.json`: a kill -9 between writing it and ending the MLflow run leaves an unfinished run, which
    `--resume` with the same epochs then finishes.
    """
    try:
        return int(json.loads((output_dir / FINISHED).read_text())["epochs"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _refuse_other_config(before: dict[str, Any], now: dict[str, Any], output_dir: Path) -> None:
    # A key added to the config since the checkpoint (after a template update) holds its default there: no change.
    with contextlib.suppress(ValidationError):
        before = Config.model_validate(before).model_dump(mode="json")
    changed = [key for key in differing_keys(before, now) if key != EPOCHS]
    if changed:
        old, new = flatten(before), flatten(now)
        details = ", ".join(f"{key}: {old.get(key)!r} -> {new.get(key)!r}" for key in changed)
        raise RunError(f"--resume: {output_dir} was trained with another config ({details}); only {EPOCHS} may grow")


def _check_same_data(saved: dict[str, Any], data: dict[str, str]) -> None:
    """A resume trains on the data the checkpoint saw (a re-run `prepare` changes data/processed)."""
    if saved.get("data_sha256", data["sha256"]) != data["sha256"]:
        raise RunError(f"--resume: the data ({data['source']}) changed since the checkpoint; start a new run")


def _write_json(path: Path, payload: dict[str, Any]) -> Path:
    checkpoint.atomic_write_bytes(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())
    return path


def _run_info(
    config: Config, flags: dict[str, Any], output_dir: Path, data: dict[str, str], world: World
) -> dict[str, Any]:
    previous = output_dir / "run.json"
    if previous.exists():  # a resume: the first start stays, this one is appended (on the same world size)
        return provenance.add_resume(json.loads(previous.read_text()), sys.argv)
    return {**provenance.collect(config, flags, sys.argv, data), "world": world.record()}


def train(config: Config, settings: Settings, output_dir: Path, resume: bool = False) -> RunResult:
    """Train `config` into `output_dir`; with `resume`, continue from its last checkpoint.

    With `distributed.enabled`, every process of the launch calls this; the chief alone writes and tracks.
    """
    flags = seeding.seed_everything(config.seed, config.deterministic)
    world = engine.start_world(config)
    try:
        return _train(config, settings, output_dir, resume, flags, world)
    finally:
        world.shutdown()


def _train(
    config: Config, settings: Settings, output_dir: Path, resume: bool, flags: dict[str, Any], world: World
) -> RunResult:
    saved = _check_output_dir(output_dir, resume)
    if saved is not None:
        _check_resumable(saved, config, output_dir)
        check_same_size(saved.get("world"), world, str(output_dir))
    world.barrier()  # every process has looked at the folder before the chief writes to it
    ensure_writable(output_dir, "output folder")
    dataset, source = load_training_data(config)
    data = {"source": source, "sha256": data_digest(dataset)}
    if saved is not None:
        _check_same_data(saved, data)
    trainer = engine.Trainer(config, dataset.num_features, dataset.num_classes, world)

    history: History = []
    run_id = None
    if saved is not None:
        trainer.load_state(saved["trainer"])
        seeding.restore_rng(saved["rng"])
        history, run_id = saved["history"], saved["mlflow_run_id"]
    if not world.is_chief:
        _train_epochs(config, trainer, dataset, history, output_dir, world, tracker=None)
        metrics = _metrics(history, _prefixed("test", trainer.evaluate(dataset.test)))
        world.barrier()  # stay until the chief has finished: a peer that left early reads as a crashed one
        return RunResult(output_dir, metrics, trainer.weights(), run_id or "", trainer)

    ensure_reachable(settings.MLFLOW_TRACKING_URI)
    output_dir.mkdir(parents=True, exist_ok=True)
    run_info = _run_info(config, flags, output_dir, data, world)
    tracker = Tracker.start(
        settings.MLFLOW_TRACKING_URI, config.experiment_name, settings.MLFLOW_HTTP_REQUEST_TIMEOUT, output_dir, run_id
    )
    finishing = False
    # From here on the MLflow run is open: whatever happens, it ends FINISHED, FAILED or KILLED (tracker.abort).
    try:
        run_info["mlflow_run_id"] = tracker.run_id
        _write_json(output_dir / "run.json", run_info)
        if saved is None:
            tracker.log_params(config.flat())
        tracker.log_missing(history)
        _train_epochs(config, trainer, dataset, history, output_dir, world, tracker)
        finishing = True
        metrics = _finish(config, trainer, dataset, history, output_dir, tracker)
        tracker.finish()
    except BaseException as error:
        tracker.abort(error)
        if finishing:  # killed while finishing: the run is not finished, so --resume (same epochs) finishes it
            (output_dir / "metrics.json").unlink(missing_ok=True)
        raise
    _write_json(output_dir / FINISHED, {"epochs": len(history)})
    world.barrier()
    return RunResult(output_dir, metrics, trainer.weights(), tracker.run_id, trainer)


def _train_epochs(
    config: Config,
    trainer: Trainer,
    dataset: Dataset,
    history: History,
    output_dir: Path,
    world: World,
    tracker: Tracker | None,
) -> None:
    """Every process trains; the chief (the one with a tracker) saves each epoch's checkpoint and logs it."""
    state = {
        "config": config.model_dump(mode="json"),
        "config_digest": config.digest(),
        "data_sha256": data_digest(dataset),
        "mlflow_run_id": tracker.run_id if tracker else None,
        "world": world.record(),
    }
    for epoch in tqdm(range(len(history), config.training.epochs), desc="epochs", disable=not sys.stderr.isatty()):
        train_scores = trainer.train_epoch(dataset.train)
        val_scores = trainer.evaluate(dataset.val)
        row = {"epoch": epoch + 1, **_prefixed("train", train_scores), **_prefixed("val", val_scores)}
        history.append(row)
        trainer_state = trainer.state()  # on every process: it may gather from all replicas
        if tracker is not None:
            checkpoint.save(
                output_dir / "checkpoints",
                {**state, "trainer": trainer_state, "rng": seeding.capture_rng(), "history": history},
                epoch=epoch + 1,
            )
        world.barrier()  # no process runs ahead of the newest checkpoint: a resume continues all from it
        if tracker is not None:
            # Only once the checkpoint is on disk: a kill before this line re-logs nothing twice on resume
            # (log_missing fills the gap instead).
            tracker.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)


def _prefixed(split: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{split}_{name}": value for name, value in scores.items()}


def _metrics(history: History, test_scores: dict[str, float]) -> dict[str, Any]:
    final = {key: value for key, value in history[-1].items() if key != "epoch"}
    return {"final": {**final, **test_scores}, "epochs": history}


def _finish(
    config: Config, trainer: Trainer, dataset: Dataset, history: History, output_dir: Path, tracker: Tracker
) -> dict[str, Any]:
    test_scores = _prefixed("test", trainer.evaluate(dataset.test))
    metrics = _metrics(history, test_scores)
    # One point per finish (an extended run adds one), and one only when a killed finish is done again.
    tracker.log_missing([{"epoch": len(history), **test_scores}])
    resolved = output_dir / "config.yaml"
    resolved.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    artifacts = [
        _write_json(output_dir / "metrics.json", metrics),
        plots.plot_curves(history, output_dir / "curves.png"),
        resolved,
        output_dir / "run.json",
        trainer.save_model(output_dir),
    ]
    tracker.log_artifacts(artifacts)
    reference = drift.reference(dataset.train.features)
    tracker.log_model(trainer, dataset.test.features, epochs=len(history), drift_reference=reference)
    return metrics
