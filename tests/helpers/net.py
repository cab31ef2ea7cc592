"""HTTP on 127.0.0.1 for the service and container tests: free ports, plain requests, MLflow's REST API."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest


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


def wait_for(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 300) -> None:
    """Until `url` answers at all (an HTTP error status counts: auth may refuse); fails if the server exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, f"server exited:\n{log.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - http://127.0.0.1 only
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout_s} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def serving(command: list[str], ready: str, log: Path, **popen: Any) -> Iterator[subprocess.Popen]:
    """A server process, its output in `log`, once `ready` (a URL) answers; stopped on the way out."""
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, **popen)
    try:
        wait_for(ready, process, log)
        yield process
    finally:
        stop(process)


def mlflow_runs(server: str, experiment: str, headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every run of `experiment` on an MLflow server, read through its REST API (`headers`: e.g. a login)."""
    api = f"{server}/api/2.0/mlflow"
    status, body = request(f"{api}/experiments/get-by-name?experiment_name={experiment}", headers=headers)
    assert status == 200, body
    experiment_id = json.loads(body)["experiment"]["experiment_id"]
    status, body = request(f"{api}/runs/search", {"experiment_ids": [experiment_id], "max_results": 50}, headers)
    assert status == 200, body
    return json.loads(body).get("runs", [])


def mlflow_artifacts(server: str, run_id: str, headers: dict[str, str] | None = None) -> set[str]:
    status, body = request(f"{server}/api/2.0/mlflow/artifacts/list?run_id={run_id}", headers=headers)
    assert status == 200, body
    return {item["path"] for item in json.loads(body).get("files", [])}
