"""Serve a trained model on MLflow's own scoring server, plus Prometheus metrics, input drift and a request bound.

`python -m <package>.serve MODEL --port 8080` (`make serve MODEL=... PORT=...`). MODEL is a `models:/NAME/VERSION`
or `runs:/RUN_ID/model` URI, a run folder of this project (its run.json names the MLflow run), or a model folder.

The endpoints are MLflow's (`mlflow models serve`): POST /invocations (`{"inputs": [[...], ...]}`), /ping, /health,
/version; its app is used as it is. Added around it:
- /metrics: requests by handler and status and a latency histogram by handler (prometheus-fastapi-instrumentator),
  predictions per class, and each feature's drift (drift.py) against the statistics logged with the model;
- a bound on the request body (413 beyond `--max-request-bytes`), checked before MLflow reads it.
One process serves: the drift window and the counters live in it (several uvicorn workers would each keep their
own). Scale out with replicas behind a load balancer, each scraped by Prometheus.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from prometheus_fastapi_instrumentator import Instrumentator, metrics

from . import drift
from .errors import UserError, reports_user_errors
from .settings import load_settings
from .tracking import MODEL_NAME

DEFAULT_MAX_REQUEST_BYTES = 5_000_000
DEFAULT_DRIFT_WINDOW = 1000
DRAIN_BYTES = 64_000_000  # what is read and dropped of an oversized body before the 413
MAX_MESSAGE = 300  # characters of an error message
# Seconds, per handler (the instrumentator's default buckets, 0.1/0.5/1, cannot show a p50 of milliseconds).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServeError(UserError):
    """A model that cannot be found or loaded; one line."""


def model_uri(target: str) -> str:
    """The MLflow URI of `target`: a URI as it is, a run folder's logged model, or a model folder."""
    if ":/" in target:
        return target
    folder = Path(target)
    if not folder.exists():
        raise ServeError(f"{target} does not exist: train first (make train), or serve a models:/ or runs:/ URI")
    if (folder / "MLmodel").is_file():
        return str(folder.resolve())
    run_file = folder / "run.json"
    if not run_file.is_file():
        raise ServeError(f"{target} is neither a models:/ or runs:/ URI, a run folder (run.json) nor a model folder")
    run_id = json.loads(run_file.read_text()).get("mlflow_run_id")
    if not run_id:
        raise ServeError(f"{run_file} names no MLflow run: the run did not start tracking")
    return f"runs:/{run_id}/{MODEL_NAME}"


class DriftMonitor(Collector):
    """The last `window` input rows, and their PSI per feature as Prometheus gauges when scraped."""

    def __init__(self, stored: dict[str, Any], window: int) -> None:
        self.stored = stored
        self.rows: deque[np.ndarray] = deque(maxlen=window)
        self._lock = threading.Lock()  # predictions run in worker threads; scrapes in the event loop

    def observe(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape(len(batch), -1)
        with self._lock:
            self.rows.extend(batch)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            recent = np.array(self.rows)
        seen = GaugeMetricFamily("model_drift_window_rows", "Input rows the drift statistics are computed over")
        seen.add_metric([], len(recent))
        yield seen
        per_feature = GaugeMetricFamily(
            "model_input_drift_psi", "PSI of recent inputs against the training data", labels=["feature"]
        )
        worst = GaugeMetricFamily("model_input_drift_psi_max", "The largest PSI over all features")
        if len(recent):
            values = drift.psi(recent, self.stored)
            for feature, value in enumerate(values):
                per_feature.add_metric([str(feature)], value)
            worst.add_metric([], float(values.max()))
        yield per_feature
        yield worst


class ObservedModel:
    """The loaded pyfunc model as MLflow's server calls it, counting predicted classes and keeping recent inputs."""

    def __init__(self, model: Any, predictions: Counter, monitor: DriftMonitor | None) -> None:
        self._model = model
        self._predictions = predictions
        self._monitor = monitor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)  # metadata and the rest, as the server reads them

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        output = self._model.predict(data, params=params)  # after MLflow enforced the signature on `data`
        if self._monitor is not None:
            self._monitor.observe(np.asarray(data))
        scores = np.asarray(output)
        if scores.ndim == 2:
            for label, count in zip(*np.unique(scores.argmax(axis=1), return_counts=True), strict=True):
                self._predictions.labels(str(label)).inc(int(count))
        return output


class BodyLimit:
    """Answers 413 to a request body over `max_bytes`, declared (Content-Length) or streamed, before MLflow sees it.

    The body is read here (MLflow reads it whole anyway) and handed on in one piece. The rest of an oversized body is
    read and dropped (up to DRAIN_BYTES), so that the client, still sending, gets the 413 instead of a reset.
    """

    def __init__(self, app: App, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit():
            await _reply(send, 400, "Content-Length is not a number")
            return
        if int(declared) > self.max_bytes:
            await self._refuse(receive, send, more=True)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = bool(message.get("more_body"))
            if size > self.max_bytes:
                await self._refuse(receive, send, more)
                return
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            message, whole = whole, None
            return message if message is not None else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, receive: Receive, send: Send, more: bool) -> None:
        drained = 0
        while more and drained < DRAIN_BYTES:
            message = await receive()
            drained += len(message.get("body", b""))
            more = message["type"] == "http.request" and bool(message.get("more_body"))
        await _reply(send, 413, f"request body over {self.max_bytes} bytes (the server's --max-request-bytes)")


class ConciseErrors:
    """Shortens the message of MLflow's 4xx answers to their cause: MLflow puts the whole request data in them."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = b""

        async def shortening_send(message: Message) -> None:
            nonlocal start, body
            if message["type"] == "http.response.start" and 400 <= message["status"] < 500:
                start = message
                return
            if start is None:
                await send(message)
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                await _reply(send, start["status"], _cause(body))

        await self.app(scope, receive, shortening_send)


def _cause(body: bytes) -> str:
    """An MLflow error message without the request data it quotes: its opening sentence when that quotes nothing,
    and its last `Error: ...` clause (the cause); at most MAX_MESSAGE characters."""
    try:
        message = str(json.loads(body).get("message", ""))
    except (ValueError, AttributeError):
        message = body.decode(errors="replace")
    opening, _, _ = message.partition(". ")
    cause = (message.rsplit("Error: ", 1)[-1].strip().splitlines() or [""])[0]
    text = cause if "'" in opening or opening in cause else f"{opening}. {cause}"
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


async def _reply(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error_code": "BAD_REQUEST", "message": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(model: Any, max_request_bytes: int, drift_window: int) -> FastAPI:
    """MLflow's scoring app for the loaded pyfunc `model`, instrumented, with a metrics registry of its own."""
    from mlflow.pyfunc import scoring_server

    registry = CollectorRegistry()
    predictions = Counter("model_predictions", "Predicted rows per class", ["predicted_class"], registry=registry)
    stored = model.metadata.metadata and model.metadata.metadata.get(drift.METADATA_KEY)
    monitor = DriftMonitor(stored, drift_window) if stored else None
    if monitor is not None:
        registry.register(monitor)
    else:
        print(f"warning: the model has no {drift.METADATA_KEY} metadata: no drift metrics", file=sys.stderr)
    app = scoring_server.init(ObservedModel(model, predictions, monitor))
    app.add_middleware(ConciseErrors)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)  # inside the instrumentation: its 413s are counted
    # Only what the dashboard reads (the default set also times every request twice and measures its sizes).
    instrumentator = Instrumentator(excluded_handlers=["/metrics"], registry=registry).add(
        metrics.requests(registry=registry),
        metrics.latency(buckets=LATENCY_BUCKETS, should_include_status=False, registry=registry),
    )
    instrumentator.instrument(app).expose(app)
    return app


def positive(text: str) -> int:
    """A whole number above 0, or argparse's one-line usage error."""
    if not text.isdigit() or int(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number above 0")
    return int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Serve a trained model (MLflow's scoring API, /metrics).")
    parser.add_argument(
        "model",
        nargs="?",
        help="models:/NAME/VERSION, runs:/RUN_ID/model, a run folder or a model folder (default: SERVE_MODEL)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 in a container)")
    parser.add_argument("--port", type=positive, default=8080)
    parser.add_argument("--max-request-bytes", type=positive, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("--drift-window", type=positive, default=DEFAULT_DRIFT_WINDOW, help="recent rows drift covers")
    return parser.parse_args(argv)


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = load_settings()
    import mlflow

    mlflow.set_tracking_uri(settings.MLFLOW_TRACKING_URI)
    uri = model_uri(args.model or settings.SERVE_MODEL)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (OSError, mlflow.exceptions.MlflowException) as error:
        raise ServeError(f"cannot load {uri}: {str(error).splitlines()[0]}") from error
    app = create_app(model, args.max_request_bytes, args.drift_window)
    print(f"serving {uri} on http://{args.host}:{args.port} (POST /invocations, GET /health, /metrics)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
