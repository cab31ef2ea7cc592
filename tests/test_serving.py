"""The trained model served for real: each framework's installed default project trains, `make serve` serves the run
folder on 127.0.0.1 (MLflow's scoring app plus src/<pkg>/serve.py's additions), and the test split is posted to it.

- predictions equal the in-process pyfunc predictions bit for bit; /health, /ping and /version answer;
- each bad request gets its 4xx, with a short message, and the server keeps answering;
- /metrics shows the requests, a latency histogram, predictions per class and the input drift, which a shifted batch
  moves and the unshifted one does not;
- Debian's Prometheus checks the generated configuration (promtool) and scrapes the served model once; the Grafana
  dashboard's queries name only metrics the server exports (MLflow's are checked in test_services.py).
"""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import textwrap
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.monitoring import DASHBOARD, dashboard_metrics, names, samples
from helpers.net import free_port, request, serving
from helpers.tools import debian_packages
from matrix import FRAMEWORKS

pytestmark = pytest.mark.slow

MAX_REQUEST_BYTES = 300_000  # the test split's JSON is about 55 kB
SHIFT = 0.5  # added to every feature (digits' pixels lie in [0, 1]): far outside the training data
# The test split and the predictions of the logged model loaded in the project's own process.
IN_PROCESS = textwrap.dedent(
    """
    import json, os, sys
    import mlflow, numpy as np
    from ml_project.config import load_config
    from ml_project.data import load_dataset
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    run = json.loads(open(os.path.join(sys.argv[1], "run.json")).read())
    model = mlflow.pyfunc.load_model(f"runs:/{run['mlflow_run_id']}/model")
    features = load_dataset(load_config("configs/baseline.yaml").data, 42).test.features
    answer = {"inputs": features.tolist(), "predictions": np.asarray(model.predict(features)).tolist()}
    open(sys.argv[2], "w").write(json.dumps(answer))  # not stdout: Keras prints a progress bar there
    """
)


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict[str, Any]]:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    try:
        connection.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        connection.close()


def metrics(url: str) -> dict[str, float]:
    status, body = request(f"{url}/metrics")
    assert status == 200, body
    return samples(body)


def drift(url: str) -> float:
    return metrics(url)["model_input_drift_psi_max"]


@pytest.fixture(scope="module", params=list(FRAMEWORKS))
def served(request: pytest.FixtureRequest, installed_project, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """(project, server URL, the test split, its in-process predictions) for a freshly trained default run."""
    project, env = installed_project(request.param)
    run = tmp_path_factory.mktemp(f"serve-{request.param}") / "run"
    python = str(project / ".venv" / "bin" / "python")
    trained = subprocess.run(
        [python, "train.py", "--output-dir", str(run), "training.epochs=3"],
        cwd=project, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    answer = run.parent / "in-process.json"
    subprocess.run([python, "-c", IN_PROCESS, str(run), str(answer)], cwd=project, env=env, check=True)
    split = json.loads(answer.read_text())
    port = free_port()
    args = f"--drift-window {len(split['inputs'])} --max-request-bytes {MAX_REQUEST_BYTES}"
    # The command `make serve` runs, exec'd so that stopping the server stops the process that listens.
    command = subprocess.run(
        ["make", "-s", "-n", "serve", f"MODEL={run}", f"PORT={port}", f"ARGS={args}"],
        cwd=project, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    log = run.parent / "serve.log"
    with serving(["bash", "-c", f"exec {command}"], f"{url}/health", log, cwd=project, env=env):
        yield project, url, split
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_predictions_equal_the_in_process_model_exactly(served) -> None:
    _, url, split = served
    status, answer = post(url, json.dumps({"inputs": split["inputs"]}).encode())
    assert status == 200, answer
    assert answer["predictions"] == split["predictions"], "served predictions differ from the model's own"
    for path in ("/health", "/ping"):
        assert request(f"{url}{path}")[0] == 200
    status, version = request(f"{url}/version")
    assert status == 200 and re.fullmatch(r"\d+\.\d+\.\d+", version), version


def test_bad_requests_get_a_4xx_with_a_short_message_and_the_server_keeps_answering(served) -> None:
    _, url, split = served
    rows = split["inputs"]
    bad = {
        "wrong shape": (json.dumps({"inputs": [row[:3] for row in rows[:4]]}).encode(), "application/json", 400),
        "wrong dtype": (json.dumps({"inputs": [["a"] * len(rows[0])]}).encode(), "application/json", 400),
        "not JSON": (b"this is not json", "application/json", 400),
        "no inputs key": (json.dumps(rows[:2]).encode(), "application/json", 400),
        "not a content type it reads": (b"{}", "text/plain", 415),
        "too large": (b"0" * (MAX_REQUEST_BYTES + 1), "application/json", 413),
    }
    for what, (body, content_type, expected) in bad.items():
        status, answer = post(url, body, content_type)
        assert status == expected, (what, status, answer)
        assert 0 < len(answer["message"]) <= 300 and "[[" not in answer["message"], (what, answer)
        assert request(f"{url}/health")[0] == 200, f"the server stopped answering after {what}"
    assert post(url, json.dumps({"inputs": rows[:2]}).encode())[0] == 200


def test_a_streamed_body_over_the_bound_gets_413(served) -> None:
    _, url, _ = served
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    chunks = iter([b"0" * 50_000] * (MAX_REQUEST_BYTES // 50_000 + 2))  # no Content-Length: chunked
    connection.request("POST", "/invocations", body=chunks, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 413, response.read()
    connection.close()
    assert request(f"{url}/health")[0] == 200


def test_metrics_show_requests_latency_and_predictions(served) -> None:
    _, url, split = served
    before = metrics(url)
    assert post(url, json.dumps({"inputs": split["inputs"]}).encode())[0] == 200
    assert post(url, b"not json")[0] == 400
    after = metrics(url)
    ok = 'http_requests_total{handler="/invocations",method="POST",status="2xx"}'
    failed = 'http_requests_total{handler="/invocations",method="POST",status="4xx"}'
    assert after[ok] - before.get(ok, 0) == 1 and after[failed] - before.get(failed, 0) == 1
    count = 'http_request_duration_seconds_count{handler="/invocations",method="POST"}'
    assert after[count] - before.get(count, 0) == 2
    buckets = [name for name in after if name.startswith('http_request_duration_seconds_bucket{handler="/invocations"')]
    assert len(buckets) > 5, "a latency histogram with buckets fine enough for quantiles"

    def predicted(samples: dict[str, float]) -> float:
        return sum(value for name, value in samples.items() if name.startswith("model_predictions_total{"))

    assert predicted(after) - predicted(before) == len(split["inputs"])


def test_a_shifted_input_moves_the_drift_signal_and_the_unshifted_one_does_not(served) -> None:
    _, url, split = served  # the drift window holds exactly one test split
    shifted = [[value + SHIFT for value in row] for row in split["inputs"]]
    assert post(url, json.dumps({"inputs": split["inputs"]}).encode())[0] == 200
    unshifted = drift(url)
    assert post(url, json.dumps({"inputs": shifted}).encode())[0] == 200
    moved = drift(url)
    assert post(url, json.dumps({"inputs": split["inputs"]}).encode())[0] == 200
    assert unshifted < 0.1 < 0.25 < moved, (unshifted, moved)  # PSI: < 0.1 no shift, > 0.25 a major one
    assert drift(url) == unshifted, "the window forgets the shifted rows once they are older than it"


@pytest.fixture(scope="module")
def prometheus() -> str:
    debian_packages(["prometheus"], "prometheus", "promtool")
    return "prometheus"


def test_prometheus_checks_the_config_and_scrapes_the_served_model(served, prometheus: str, tmp_path: Path) -> None:
    project, url, _ = served
    generated = project / "monitoring" / "prometheus.yml"
    check = subprocess.run(["promtool", "check", "config", str(generated)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    config = yaml.safe_load(generated.read_text())
    config["global"]["scrape_interval"] = "1s"  # the test's only change besides the address
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "model"]
    job["static_configs"] = [{"targets": [urllib.parse.urlsplit(url).netloc]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    api = f"http://127.0.0.1:{port}/api/v1"
    command = [
        prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]  # fmt: skip
    with serving(command, f"{api}/status/buildinfo", tmp_path / "prometheus.log"):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            query = urllib.parse.quote('http_requests_total{job="model"}')
            status, body = request(f"{api}/query?query={query}")
            if status == 200 and json.loads(body)["data"]["result"]:
                break
            time.sleep(1)
        else:
            pytest.fail(f"Prometheus did not scrape the model server in 60 s: {body}")
        up = urllib.parse.quote('up{job="model"}')
        status, body = request(f"{api}/query?query={up}")
        assert json.loads(body)["data"]["result"][0]["value"][1] == "1"


def test_grafana_files_parse_and_read_only_exported_metrics(served) -> None:
    project, url, split = served
    assert post(url, json.dumps({"inputs": split["inputs"][:3]}).encode())[0] == 200
    exported = names(request(f"{url}/metrics")[1])
    wanted = {name for name in dashboard_metrics(project) if not name.startswith("mlflow_")}
    assert wanted and not wanted - exported, f"the dashboard reads metrics the server lacks: {wanted - exported}"
    provisioning = project / "monitoring" / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    dashboard = json.loads((project / DASHBOARD).read_text())
    uids = {target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]}
    assert uids == {source["uid"]} and source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "model.yaml").read_text())["providers"]
    compose = yaml.safe_load((project / "compose.yaml").read_text())["services"]["grafana"]
    assert f"./monitoring/grafana/dashboards:{provider['options']['path']}:ro" in compose["volumes"]
