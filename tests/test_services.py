"""The compose services' own commands, run as local processes on 127.0.0.1 (no Docker engine here).

- mlflow: the exact `mlflow server` command of compose.yaml (its volumes mapped to temporary folders, its port to
  a free one); the project's train.py logs to it over HTTP; the REST API then shows the run, metrics, artifacts.
- jupyter: compose's `jupyter lab` command and token variable; a request without the token is refused.
Both run from the default project's own environment (its pinned mlflow and jupyterlab).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from helpers.monitoring import dashboard_metrics, names
from helpers.net import free_port, mlflow_artifacts, mlflow_runs, request, serving
from helpers.rendering import render
from helpers.tools import tool
from matrix import COMPAT

pytestmark = pytest.mark.slow
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def project(template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str) -> Path:
    """The default project with its direct pins installed into .venv (uv, torch from the local index only)."""
    root = tmp_path_factory.mktemp("services")
    project = render(
        template,
        root / "project",
        {"python_version": PYTHON, "framework_index_url": local_wheel_index},
    )
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    venv = project / ".venv"
    subprocess.run(
        [tool("uv"), "venv", "-q", "--python", sys.executable, str(venv)],
        env=env,
        check=True,
    )
    install = [
        tool("uv"),
        "pip",
        "install",
        "-q",
        "--python",
        str(venv / "bin" / "python"),
    ]
    index = [
        "--extra-index-url",
        local_wheel_index,
        "--index-strategy",
        "unsafe-best-match",
    ]
    subprocess.run(  # every group, as `make install` puts them in .venv: the full mlflow (train) and Jupyter (dev)
        [*install, *index, "-r", "pyproject.toml", "--all-extras", "--group", "dev"],
        cwd=project,
        env=env,
        check=True,
        timeout=1500,
    )
    subprocess.run([*install, "--no-deps", "-e", str(project)], env=env, check=True)
    # What the Dockerfile's mlflow stage adds to the MLflow image (the exporter behind --expose-prometheus).
    extra = [f"{name}=={version}" for name, version in COMPAT["tracking_server"]["packages"].items()]
    subprocess.run([*install, *extra], env=env, check=True, timeout=600)
    return project


@pytest.fixture(scope="module")
def compose(project: Path) -> dict:
    return yaml.safe_load((project / "compose.yaml").read_text())["services"]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def mlflow_server(project: Path, compose: dict, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = compose["mlflow"]
    root = tmp_path_factory.mktemp("mlflow")
    command = [str(project / ".venv" / "bin" / "mlflow"), *service["command"][1:]]
    for volume in service["volumes"]:  # named volume -> a temporary folder at the same place in the command
        target = volume.split(":")[1]
        (root / target.strip("/")).mkdir(parents=True)
        command = [part.replace(target, str(root / target.strip("/"))) for part in command]
    (root / "metrics").mkdir()  # the image's /mlflow/metrics (not a volume)
    command = [part.replace("=/mlflow/metrics", f"={root / 'metrics'}") for part in command]
    port = free_port()
    assert "--host=0.0.0.0" in command and "--port=5000" in command
    command = [part.replace("--host=0.0.0.0", "--host=127.0.0.1") for part in command]
    command = [part.replace("--port=5000", f"--port={port}") for part in command]
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/health", root / "server.log", cwd=root, env={**os.environ, "HOME": str(home)}):
        yield url
    artifacts = list((root / "mlflow" / "artifacts").rglob("*"))
    assert artifacts, "the served artifact store stayed empty"


def test_train_logs_run_metrics_and_artifacts_to_the_compose_mlflow(
    project: Path, mlflow_server: str, home: Path, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "HOME": str(home),
        "MLFLOW_TRACKING_URI": mlflow_server,
        "PYTHONHASHSEED": "0",
    }
    result = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "train.py", "--config", "configs/baseline.yaml", "--seed", "42",
         "--output-dir", str(tmp_path / "run"), "training.epochs=2"],
        cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = mlflow_runs(mlflow_server, "baseline")
    assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
    metrics = {metric["key"] for metric in runs[0]["data"].get("metrics", [])}
    assert {"test_accuracy", "test_loss"} <= metrics, metrics
    assert mlflow_artifacts(mlflow_server, runs[0]["info"]["run_id"]), "no artifact arrived"


def test_mlflow_accepts_the_trainer_and_refuses_foreign_hosts(
    mlflow_server: str,
) -> None:
    search = f"{mlflow_server}/api/2.0/mlflow/experiments/search"
    assert request(search, {"max_results": 1}, {"Host": "mlflow:5000"})[0] == 200  # the trainer, inside compose
    assert request(search, {"max_results": 1}, {"Host": "localhost:5000"})[0] == 200  # the browser on the host
    assert request(search, {"max_results": 1}, {"Host": "attacker.example"})[0] == 403  # DNS rebinding


def test_mlflow_exports_prometheus_metrics_for_the_monitoring_profile(project: Path, mlflow_server: str) -> None:
    request(f"{mlflow_server}/api/2.0/mlflow/experiments/search", {"max_results": 1}, {"Host": "mlflow:5000"})
    status, body = request(f"{mlflow_server}/metrics", None, {"Host": "mlflow:5000"})  # Prometheus's scrape
    assert status == 200 and "mlflow_http_request_total" in body, body[:500]
    wanted = {name for name in dashboard_metrics(project) if name.startswith("mlflow_")}
    assert wanted and wanted <= names(body), (
        f"the dashboard reads tracking-server metrics it lacks: {wanted - names(body)}"
    )


def test_jupyter_refuses_requests_without_the_token(project: Path, compose: dict, home: Path, tmp_path: Path) -> None:
    service = compose["jupyter"]
    assert service["environment"]["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?")
    port = free_port()
    replace = {
        "--ServerApp.ip=0.0.0.0": "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=8888": f"--ServerApp.port={port}",
        "--ServerApp.root_dir=/app": f"--ServerApp.root_dir={project}",
    }
    assert set(replace) <= set(service["command"])
    command = [str(project / ".venv" / "bin" / service["command"][0])]
    command += [replace.get(part, part) for part in service["command"][1:]]
    if os.geteuid() == 0:  # the image runs it as its non-root user; this test machine may run tests as root
        command.append("--allow-root")
    token = "test-" + os.urandom(8).hex()
    env = {**os.environ, "HOME": str(home), "JUPYTER_TOKEN": token, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTER_DATA_DIR": str(tmp_path / "data"), "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with serving(command, f"{url}/api", tmp_path / "jupyter.log", cwd=project, env=env):
        assert request(f"{url}/api/status")[0] == 403
        assert request(f"{url}/api/status", headers={"Authorization": "token wrong"})[0] == 403
        status, _ = request(f"{url}/lab")
        assert status == 302, "the UI must redirect to the login page"
        assert request(f"{url}/api/status", headers={"Authorization": f"token {token}"})[0] == 200
        assert request(f"{url}/lab?token={token}")[0] == 200


def test_compose_pins_the_image_the_server_command_was_checked_with(project: Path, compose: dict) -> None:
    """compose builds MLflow from the Dockerfile's `mlflow` stage, whose base is the official image."""
    assert compose["mlflow"]["build"]["target"] == "mlflow"
    stage = re.search(r"^FROM (\S+) AS mlflow$", (project / "Dockerfile").read_text(), re.MULTILINE)
    assert stage is not None, "the Dockerfile has no mlflow stage"
    image_version = stage.group(1).rsplit(":v", 1)[1]
    assert image_version == COMPAT["packages"]["train"]["mlflow"], "the server flags were checked with this mlflow"
