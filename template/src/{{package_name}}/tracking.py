"""MLflow tracking: fail fast on a server that is down at start, ride out one that goes away during the run.

What cannot be sent while the server is away is kept in the run's folder (spool.py) and sent at the next log
call that finds it back; if the run ends first, `python -m <package>.tracking replay <output_dir>` sends it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError, reports_user_errors
from .interrupts import critical, deferred
from .spool import Record, Spool, summary
from .writable import ensure_writable

if TYPE_CHECKING:  # not imported at run time: the command line checks the server before loading NumPy
    import numpy as np

    from .contract import Trainer

REACHABILITY_TIMEOUT_S = 5
PROBE_TIMEOUT_S = 2  # while the server is away, each log call asks once whether it is back: keep it short
MODEL_NAME = "model"  # the logged model's name: runs:/<run_id>/model
INPUT_EXAMPLE_ROWS = 5
QUIET = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"


class TrackingError(UserError):
    """The tracking store cannot be used; the message names the URI."""


def sqlite_folder(uri: str) -> Path | None:
    """The folder of a SQLite store (`sqlite:///relative.db`, `sqlite:////absolute.db`), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///")).parent


def unreachable(uri: str, timeout_s: float = REACHABILITY_TIMEOUT_S) -> str | None:
    """Why a tracking server does not answer `/health` (None when it does, or when the store is no server)."""
    if not uri.startswith(("http://", "https://")):
        return None
    try:
        health = f"{uri.rstrip('/')}/health"
        with urllib.request.urlopen(health, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
            return None if response.status == 200 else f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as error:
        return str(getattr(error, "reason", error))


def ensure_reachable(uri: str) -> None:
    """Before any training starts: a SQLite store's folder is writable; a server answers `/health` within seconds."""
    if (folder := sqlite_folder(uri)) is not None:
        ensure_writable(folder, "MLFLOW_TRACKING_URI's folder")
    if (reason := unreachable(uri)) is not None:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({reason}); start it (docker compose up -d mlflow) "
            "or unset MLFLOW_TRACKING_URI to log to the local store"
        )


def _client(uri: str, timeout_s: int) -> Any:
    # Bound how long a client waits on a dead server (MLflow's default retries for minutes).
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(timeout_s))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    # MLflow 3 reports usage to its maintainers unless told not to: a team's runs send nothing by default
    # (export MLFLOW_DISABLE_TELEMETRY=false to opt in).
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # imported late: it is slow, and config errors should not wait for it

    mlflow.set_tracking_uri(uri)  # for the flavours' log_model, which log through the fluent API
    return mlflow.MlflowClient(uri)


def _experiment_id(client: Any, uri: str, name: str) -> str:
    if (experiment := client.get_experiment_by_name(name)) is not None:
        return str(experiment.experiment_id)
    # Artifacts beside a SQLite file, not in ./mlruns of whatever folder the process started in (a container's
    # working directory is not writable). With the default store both are the same.
    folder = sqlite_folder(uri)
    return str(client.create_experiment(name, (folder.resolve() / "mlruns").as_uri() if folder else None))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """One MLflow run, logged by run id; while the server is away, what the run logs waits in the spool.

    Every call is synchronous: the spool must know whether a write reached the server. (MLflow's asynchronous
    logging drops a batch the server refused, after one error line, and raises only at the end of the run.)
    """

    def __init__(self, client: Any, uri: str, output_dir: Path, run_id: str) -> None:
        self._client, self.uri, self.output_dir, self.run_id = client, uri, output_dir, run_id
        self.spool = Spool(output_dir)
        self._away = False  # the server stopped answering and has not answered since (warned once)
        self._trainer: Any = None  # the live trainer, once log_model has it (a replay restores one instead)

    @classmethod
    def start(cls, uri: str, experiment: str, timeout_s: int, output_dir: Path, run_id: str | None = None) -> Tracker:
        """A new run, or `run_id` continued (--resume): what an earlier start spooled is sent first."""
        from mlflow.tracking.context.registry import resolve_tags  # the tags mlflow.start_run sets: user, git...

        client = _client(uri, timeout_s)
        if run_id is None:
            run = client.create_run(_experiment_id(client, uri, experiment), tags=resolve_tags())
            return cls(client, uri, output_dir, run.info.run_id)
        tracker = cls(client, uri, output_dir, run_id)
        tracker._away = bool(tracker.spool.records())
        # First, so that a spooled end of the earlier start cannot land after this start's RUNNING.
        if not tracker._resend():
            ensure_reachable(uri)  # it went away since the check at start: say so in one line
        client.update_run(run_id, status="RUNNING")
        return tracker

    @critical
    def log_params(self, params: dict[str, Any]) -> None:
        self._submit({"op": "params", "params": {key: str(value) for key, value in params.items()}})

    @critical
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._submit({"op": "metrics", "metrics": metrics, "step": step, "timestamp": _now_ms()})

    @critical
    def log_missing(self, rows: list[dict[str, float]]) -> None:
        """Log the rows (`epoch`: the step) the run lacks: on resume, epochs whose checkpoint was written but whose
        metrics a kill cut off; at the end, test scores unless a killed finish already logged them."""
        if rows:
            self._submit({"op": "missing", "rows": rows})

    @critical
    def log_artifacts(self, paths: list[Path]) -> None:
        self._submit({"op": "artifacts", "paths": [os.path.relpath(path, self.output_dir) for path in paths]})

    @critical
    def log_model(
        self, trainer: Trainer, features: np.ndarray, epochs: int, drift_reference: dict[str, Any] | None = None
    ) -> None:
        """The trained model in its framework's MLflow flavour, with a signature, an input example and (metadata)
        the training data's statistics that serving compares its inputs with (drift.py)."""
        import numpy as np  # not at the top: cli.py imports this module before any heavy package

        self._trainer = trainer
        example = np.asarray(features[:INPUT_EXAMPLE_ROWS])
        classes = int(trainer.predict(example).shape[1])
        model = {"example": example.tolist(), "dtype": str(example.dtype), "classes": classes, "epochs": epochs}
        if drift_reference is not None:
            model["drift_reference"] = drift_reference
        self._submit({"op": "model", **model})

    @critical
    def finish(self, status: str = "FINISHED") -> None:
        self._submit({"op": "status", "status": status, "end_time": _now_ms()})
        if records := self.spool.records():
            replay = shlex.join([f"MLFLOW_TRACKING_URI={self.uri}", sys.executable, "-m", __name__, "replay"])
            print(
                f"warning: MLflow server {self.uri} is still unreachable; {summary(records)} of run {self.run_id} "
                f"are kept in {self.spool.path}; once it is back, send them with: "
                f"{replay} {shlex.quote(str(self.output_dir))}",
                file=sys.stderr,
            )

    def abort(self, error: BaseException) -> None:
        """Close the run as KILLED (Ctrl-C, SIGTERM) or FAILED; a failure to do so never hides `error`."""
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        try:
            # A second Ctrl-C or SIGTERM while closing is ignored: the first one is already being handled.
            with contextlib.suppress(KeyboardInterrupt), deferred():
                self.finish(status)
        except Exception as finish_error:  # the run's own error is the one to raise
            print(f"warning: could not mark MLflow run {self.run_id} {status}: {finish_error}", file=sys.stderr)

    def _submit(self, record: Record) -> None:
        record = {"run_id": self.run_id, **record}
        if self._resend():
            try:
                self._send(record)
                return
            except Exception:
                if (reason := unreachable(self.uri, PROBE_TIMEOUT_S)) is None:
                    raise  # the server answers: a real error, not an outage
            if not self._away:
                self._away = True
                print(
                    f"warning: MLflow server {self.uri} stopped answering ({reason}); training goes on, and what it "
                    f"logs is kept in {self.spool.path} until the server is back",
                    file=sys.stderr,
                )
        self.spool.append(record)

    def _resend(self) -> bool:
        """Send what the spool holds, in order, if the server answers; False while it is still away."""
        records = self.spool.records()
        if not records:
            return True
        if unreachable(self.uri, PROBE_TIMEOUT_S) is not None:
            return False
        try:
            for record in records:
                self._send(record)
        except Exception:
            if unreachable(self.uri, PROBE_TIMEOUT_S) is None:
                raise
            return False  # away again: everything stays spooled (sending twice does no harm)
        self.spool.clear()
        if self._away:
            self._away = False
            print(f"warning: MLflow server {self.uri} is back; sent {summary(records)} kept meanwhile", file=sys.stderr)
        return True

    def _send(self, record: Record) -> None:
        from mlflow.entities import Metric, Param

        run_id, op = record["run_id"], record["op"]
        if op == "params":
            self._client.log_batch(run_id, params=[Param(key, value) for key, value in record["params"].items()])
        elif op == "metrics":
            stamp, step = record["timestamp"], record["step"]
            metrics = [Metric(key, value, stamp, step) for key, value in record["metrics"].items()]
            self._client.log_batch(run_id, metrics=metrics)
        elif op == "missing":
            self._send_missing(run_id, record["rows"])
        elif op == "artifacts":
            for path in record["paths"]:
                self._client.log_artifact(run_id, str(self.output_dir / path))
        elif op == "model":
            self._send_model(run_id, record)
        else:
            self._client.set_terminated(run_id, record["status"], record["end_time"])

    def _send_missing(self, run_id: str, rows: list[dict[str, float]]) -> None:
        from mlflow.entities import Metric

        probe = next(key for key in rows[0] if key != "epoch")
        logged = {point.step for point in self._client.get_metric_history(run_id, probe)}
        now = _now_ms()
        missing = [row for row in rows if row["epoch"] not in logged]
        metrics = [Metric(k, v, now, int(row["epoch"])) for row in missing for k, v in row.items() if k != "epoch"]
        if metrics:
            self._client.log_batch(run_id, metrics=metrics)

    def _send_model(self, run_id: str, record: Record) -> None:
        import mlflow
        import numpy as np
        from mlflow.entities import LoggedModelStatus
        from mlflow.models import infer_signature

        from .drift import METADATA_KEY

        tags = {"epochs": str(record["epochs"])}  # tells this model from one a later --resume trains further
        run = self._client.get_run(run_id)
        logged = self._client.search_logged_models([run.info.experiment_id], f"source_run_id = '{run_id}'")
        same = [model for model in logged if model.name == MODEL_NAME and model.tags.get("epochs") == tags["epochs"]]
        if any(model.status == LoggedModelStatus.READY for model in same):
            return  # sent before a replay was cut short
        example = np.asarray(record["example"], dtype=record["dtype"])
        trainer = self._trainer or _restored_trainer(self.output_dir, example.shape[1], record["classes"])
        signature = infer_signature(example, trainer.predict(example))
        metadata = {METADATA_KEY: record["drift_reference"]} if "drift_reference" in record else None
        # The flavours log to the active run. It ends here, quietly and whatever happened: the status record that
        # follows sets the run's status and prints its link.
        quiet, os.environ[QUIET] = os.environ.get(QUIET), "true"
        try:
            mlflow.start_run(run_id=run_id, log_system_metrics=False)
            trainer.log_model(name=MODEL_NAME, signature=signature, input_example=example, tags=tags, metadata=metadata)
        finally:
            with contextlib.suppress(Exception):
                mlflow.end_run()  # nothing to end when start_run failed
            if quiet is None:
                del os.environ[QUIET]
            else:
                os.environ[QUIET] = quiet


def _restored_trainer(output_dir: Path, features: int, classes: int) -> Any:
    """The trained model again, from the run's last checkpoint: for a model spooled at the end of a run."""
    from . import checkpoint, engine
    from .config import Config

    saved = checkpoint.load(output_dir / "checkpoints")
    if saved is None:
        raise TrackingError(f"{output_dir / 'checkpoints'} holds no checkpoint to log the spooled model from")
    trainer = engine.Trainer(Config.model_validate(saved["config"]), features, classes)
    trainer.load_state(saved["trainer"])
    return trainer


def replay(output_dir: Path, uri: str, timeout_s: int) -> str:
    """Send what a run kept while the server was away; the line to print. Safe to run again."""
    from mlflow.exceptions import MlflowException

    records = Spool(output_dir).records()
    if not records:
        return f"nothing to send: {output_dir} holds no tracking spool"
    ensure_reachable(uri)
    run_id = records[0]["run_id"]
    try:
        tracker = Tracker(_client(uri, timeout_s), uri, output_dir, run_id)
        sent = tracker._resend()
    except MlflowException as error:  # e.g. another server than the run's: its run id is unknown there
        raise TrackingError(f"{uri} refused run records from {output_dir}: {error.message}") from error
    if not sent:
        raise TrackingError(f"MLflow tracking server {uri} went away while sending; run the same command again")
    return f"sent {summary(records)} of run {run_id} to {uri}"


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """`python -m <package>.tracking replay DIR`; exit 0, 2 when the server is unreachable or refuses a record."""
    from .settings import load_settings

    parser = argparse.ArgumentParser(description="Send what a run kept while the MLflow server was away.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("replay", help="send DIR/tracking-spool.jsonl to MLFLOW_TRACKING_URI").add_argument(
        "output_dir", type=Path, help="the run's --output-dir"
    )
    args = parser.parse_args(argv)
    settings = load_settings()
    print(replay(args.output_dir, settings.MLFLOW_TRACKING_URI, settings.MLFLOW_HTTP_REQUEST_TIMEOUT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
