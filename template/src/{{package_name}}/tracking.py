"""MLflow tracking: fail fast on an unreachable server, then log params, metrics and artifacts."""

from __future__ import annotations

import contextlib
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError
from .interrupts import critical, deferred
from .writable import ensure_writable

if TYPE_CHECKING:  # not imported at run time: the command line checks the server before loading NumPy
    import numpy as np

    from .contract import Trainer

REACHABILITY_TIMEOUT_S = 5
MODEL_NAME = "model"  # the logged model's name: runs:/<run_id>/model
INPUT_EXAMPLE_ROWS = 5


class TrackingError(UserError):
    """The tracking store cannot be used; the message names the URI."""


def sqlite_folder(uri: str) -> Path | None:
    """The folder of a SQLite store (`sqlite:///relative.db`, `sqlite:////absolute.db`), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).parent


def ensure_reachable(uri: str) -> None:
    """Before any training starts: a SQLite store's folder is writable; a server answers `/health` within seconds."""
    if (folder := sqlite_folder(uri)) is not None:
        ensure_writable(folder, "MLFLOW_TRACKING_URI's folder")
    if not uri.startswith(("http://", "https://")):
        return
    try:
        health = f"{uri.rstrip('/')}/health"
        with urllib.request.urlopen(health, timeout=REACHABILITY_TIMEOUT_S) as response:  # noqa: S310 - http(s) only
            if response.status == 200:
                return
            reason = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
    raise TrackingError(
        f"MLflow tracking server {uri} is unreachable ({reason}); start it (docker compose up -d mlflow) "
        "or unset MLFLOW_TRACKING_URI to log to the local store"
    )


class Tracker:
    """One MLflow run; `run_id` continues an earlier run (used by --resume)."""

    def __init__(self, uri: str, experiment: str, timeout_s: int, run_id: str | None = None) -> None:
        # Bound how long a client waits on a dead server (MLflow's default retries for minutes).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        # Batch asynchronous metric writes for up to 1 s. Without buffering, MLflow's logging thread blocks
        # on its queue for up to 1 s and end_run waits for it; with it, end_run wakes the thread at once.
        os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
        import mlflow  # imported late: it is slow, and config errors should not wait for it

        self._mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        folder = sqlite_folder(uri)
        if folder is not None and mlflow.get_experiment_by_name(experiment) is None:
            # Artifacts beside the SQLite file, not in ./mlruns of whatever folder the process started in
            # (a container's working directory is not writable). With the default store both are the same.
            mlflow.create_experiment(experiment, artifact_location=(folder.resolve() / "mlruns").as_uri())
        mlflow.set_experiment(experiment)
        self.run = mlflow.start_run(run_id=run_id)
        self.run_id: str = self.run.info.run_id

    @critical
    def log_params(self, params: dict[str, Any]) -> None:
        self._mlflow.log_params({key: str(value) for key, value in params.items()})

    @critical
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        # Asynchronous: MLflow queues the write and flushes it by end_run, so epochs don't wait on the store.
        self._mlflow.log_metrics(metrics, step=step, synchronous=False)

    @critical
    def log_missing_epochs(self, history: list[dict[str, float]]) -> None:
        """On resume: log the epochs whose checkpoint was written but whose metrics a kill cut off."""
        if not history:
            return
        probe = next(key for key in history[0] if key != "epoch")
        logged = {point.step for point in self._mlflow.MlflowClient().get_metric_history(self.run_id, probe)}
        for row in history:
            if row["epoch"] not in logged:
                self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))

    @critical
    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            self._mlflow.log_artifact(str(path))

    @critical
    def log_model(self, trainer: Trainer, features: np.ndarray) -> None:
        """The trained model in its framework's MLflow flavour, with a signature and an input example."""
        from mlflow.models import infer_signature

        example = features[:INPUT_EXAMPLE_ROWS]
        signature = infer_signature(example, trainer.predict(example))
        trainer.log_model(name=MODEL_NAME, signature=signature, input_example=example)

    @critical
    def finish(self, status: str = "FINISHED") -> None:
        self._mlflow.end_run(status=status)

    def abort(self, error: BaseException) -> None:
        """Close the run as KILLED (Ctrl-C, SIGTERM) or FAILED; a failure to do so never hides `error`."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        try:
            # A second Ctrl-C or SIGTERM while closing is ignored: the first one is already being handled.
            with contextlib.suppress(KeyboardInterrupt), deferred():
                self.finish(status)
        except Exception as finish_error:  # the run's own error is the one to raise
            print(f"warning: could not mark MLflow run {self.run_id} {status}: {finish_error}", file=sys.stderr)
