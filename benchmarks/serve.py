"""Latency and throughput of the project's model server beside plain `mlflow models serve` of the same model.

    python benchmarks/serve.py --project DIR [--requests 400] [--rounds 9]

DIR is a rendered project with its environment installed and trained (`make install train`): the model is the run
in DIR/outputs/baseline-seed42. Both servers run at once on 127.0.0.1, one uvicorn process each, and are called in
turn (rounds of --requests sequential requests on one keep-alive connection, batches of 1 and 64 test rows), so that
neither gets a quieter machine. It prints p50/p99 latency and throughput per server and batch, and the ratios
(served / plain): what the metrics, the drift window, the request bound and the shorter errors cost. Target: p50
ratio <= 1.10. (`mlflow models serve` also logs every request at INFO; the project's server logs warnings only.)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

ROWS = """
import json, sys
from {package}.config import load_config
from {package}.data import load_dataset
print(json.dumps(load_dataset(load_config("configs/baseline.yaml").data, 42).test.features[:64].tolist()))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _running(command: list[str], env: dict[str, str], cwd: Path, log: IO[bytes]) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=log)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def server(command: list[str], port: int, env: dict[str, str], cwd: Path) -> Iterator[None]:
    """`command` running until the block ends, once its /health answers (its stderr shown if it exits first)."""
    with tempfile.TemporaryFile() as log, _running(command, env, cwd, log) as process:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log.seek(0)
                sys.exit(f"{command[0]} exited with {process.returncode}:\n{log.read()[-3000:].decode()}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            sys.exit(f"{' '.join(command)} did not answer on port {port}")
        yield


def latencies(port: int, body: bytes, requests: int) -> tuple[list[float], float]:
    """Each request's seconds, and the whole round's, over one keep-alive connection."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    timings = []
    started = time.perf_counter()
    for _ in range(requests):
        begin = time.perf_counter()
        connection.request("POST", "/invocations", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        timings.append(time.perf_counter() - begin)
    total = time.perf_counter() - started
    connection.close()
    return timings, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="rendered, installed and trained project")
    parser.add_argument("--requests", type=int, default=400, help="requests per round")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    project = args.project.resolve()
    package = next(path.name for path in (project / "src").iterdir() if (path / "serve.py").exists())
    bin_dir = project / ".venv" / "bin"
    tracking = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")  # the project's default store
    # `mlflow models serve` starts `uvicorn` from PATH: the project's venv goes first, as if activated.
    path = f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PYTHONHASHSEED": "0", "MLFLOW_TRACKING_URI": tracking, "PATH": path}
    run_id = json.loads((project / "outputs" / "baseline-seed42" / "run.json").read_text())["mlflow_run_id"]
    rows = json.loads(
        subprocess.run([str(bin_dir / "python"), "-c", ROWS.format(package=package)], cwd=project, env=env,
                       capture_output=True, text=True, check=True).stdout
    )  # fmt: skip
    ports = {"served": free_port(), "plain": free_port()}
    uri = f"runs:/{run_id}/model"
    commands = {
        "served": [str(bin_dir / "python"), "-m", f"{package}.serve", uri, "--port", str(ports["served"])],
        "plain": [str(bin_dir / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                  "-h", "127.0.0.1", "-p", str(ports["plain"])],
    }  # fmt: skip
    results: dict[tuple[str, int], dict[str, list[float]]] = {}
    with ExitStack() as stack:
        for name, command in commands.items():
            stack.enter_context(server(command, ports[name], env, project))
        for batch in (1, 64):
            body = json.dumps({"inputs": rows[:batch]}).encode()
            for name in ports:
                latencies(ports[name], body, 20)  # warm-up
            for _ in range(args.rounds):
                for name in ports:
                    timings, total = latencies(ports[name], body, args.requests)
                    result = results.setdefault((name, batch), {"timings": [], "throughput": []})
                    result["timings"] += timings
                    result["throughput"].append(args.requests / total)
    print(f"{'server':8} {'batch':>5} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    summary = {}
    for (name, batch), result in results.items():
        timings = sorted(result["timings"])
        p50 = statistics.median(timings) * 1000
        p99 = timings[int(0.99 * (len(timings) - 1))] * 1000
        throughput = statistics.median(result["throughput"])
        summary[name, batch] = (p50, p99, throughput)
        print(f"{name:8} {batch:5d} {p50:8.2f} {p99:8.2f} {throughput:8.1f}")
    for batch in (1, 64):
        (p50, p99, rate), (plain50, plain99, plain_rate) = summary["served", batch], summary["plain", batch]
        print(f"batch {batch}: p50 ratio {p50 / plain50:.3f}, p99 ratio {p99 / plain99:.3f}, "
              f"throughput ratio {plain_rate / rate:.3f} (served / plain; <= 1.10 is the target)")  # fmt: skip


if __name__ == "__main__":
    main()
