"""HTTP on 127.0.0.1 for the service and container tests: free ports, plain requests, MLflow's REST API."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def request(url: str, data: dict | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    """(status, body) without following redirects; an HTTP error status is returned, not raised."""
    body = json.dumps(data).encode() if data is not None else None
    headers = {"Content-Type": "application/json", **(headers or {})}
    prepared = urllib.request.Request(url, data=body, headers=headers)  # noqa: S310 - http://127.0.0.1 only
    try:
        with urllib.request.build_opener(_NoRedirect).open(prepared, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def mlflow_runs(server: str, experiment: str) -> list[dict[str, Any]]:
    """Every run of `experiment` on an MLflow server, read through its REST API."""
    api = f"{server}/api/2.0/mlflow"
    status, body = request(f"{api}/experiments/get-by-name?experiment_name={experiment}")
    assert status == 200, body
    experiment_id = json.loads(body)["experiment"]["experiment_id"]
    status, body = request(f"{api}/runs/search", {"experiment_ids": [experiment_id], "max_results": 50})
    assert status == 200, body
    return json.loads(body).get("runs", [])


def mlflow_artifacts(server: str, run_id: str) -> set[str]:
    status, body = request(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
    assert status == 200, body
    return {item["path"] for item in json.loads(body).get("files", [])}
