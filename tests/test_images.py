"""Real builds: the generated Dockerfile built by podman, its image run, and the compose stack started.

Base images come from stand-ins tagged under the exact names the Dockerfile uses (tests/helpers/podman.py): the
Python one is Debian bookworm's CPython 3.11.2, not the image's exact release. CUDA and conda images have no
stand-in: they stay checked statically (test_containers.py, test_matrix.py). Every run here is slow.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.images import (
    APP_UID,
    COMPOSE_BUILD_ARGS,
    TWO_EPOCHS,
    assert_trains_like_the_host,
    owned_folder,
    torch_version,
    train_in_image,
)
from helpers.net import free_port, mlflow_artifacts, mlflow_runs, request
from helpers.podman import Podman, store_lock
from helpers.tools import tool
from matrix import COMPAT

pytestmark = pytest.mark.slow


def test_default_image_builds_from_the_lock_and_trains_offline(
    built, podman: Podman, installed_project, tmp_path: Path
) -> None:
    image, _ = built()  # stays: the tests below and compose's build reuse it
    assert torch_version(podman, image) == f"{COMPAT['frameworks']['pytorch']['version']}+cpu"
    assert_trains_like_the_host(podman, image, "pytorch", installed_project, tmp_path)


def test_image_runs_out_of_the_box(built, podman: Podman) -> None:
    """`docker run <image>` with no compose, no .env and no mounts: its default command trains and tracks."""
    image, _ = built()
    result = podman("run", "--rm", "--network=none", image, check=False, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith("test_accuracy="), result.stdout


def test_a_bind_mount_the_user_cannot_write_is_one_line(built, podman: Podman, tmp_path: Path) -> None:
    image, _ = built()
    outputs = tmp_path / "root-owned"
    outputs.mkdir(mode=0o755)  # as `docker run -v` creates a missing folder: owned by root
    result = podman("run", "--rm", "--network=none", "-v", f"{outputs}:/app/outputs", image, *TWO_EPOCHS, check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        f"error: output folder outputs is not writable by uid {APP_UID} (Permission denied); make it writable, e.g. "
        "chown a bind-mounted folder to HOST_UID:HOST_GID (README, Docker and compose)"
    ]


def _size(podman: Podman, image: str) -> int:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout.strip())


def test_three_images_hold_their_groups_and_serve_is_far_smaller(
    built, podman: Podman, installed_project, tmp_path: Path
) -> None:
    """train, serve and dev from the one lock: each imports what it runs and not what the others add; the serve
    image serves a run folder the train image wrote (its sqlite store and artifacts); sizes printed for README."""
    train, project = built()
    serve, dev = "localhost/ml-test:serve", "localhost/ml-test:dev"
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two stages install at once: a build keeps about one core busy
        builds = [pool.submit(podman.build, project, image, "--target", target, *COMPOSE_BUILD_ARGS)
                  for image, target in ((serve, "serve"), (dev, "dev"))]  # fmt: skip
    for build in builds:
        build.result()
    package = "ml_project"  # the images stay: compose's build below reuses their layers
    missing = "import importlib.util as u, sys; print(*[m for m in sys.argv[1:] if u.find_spec(m) is None])"
    probes = {
        train: (["sklearn", "flask", f"{package}.runner"],
                ["prometheus_fastapi_instrumentator", "jupyterlab", "dvc", "pytest"]),  # mlflow brings FastAPI
        serve: (["fastapi", "prometheus_fastapi_instrumentator", "sqlalchemy", f"{package}.serve"],
                ["sklearn", "flask", "matplotlib", "jupyterlab", "dvc", "pytest"]),
        dev: (["sklearn", "fastapi", "jupyterlab", "dvc", "pytest", "ruff"], []),
    }  # fmt: skip
    for image, (present, absent) in probes.items():
        found = podman("run", "--rm", "--network=none", image, "python", "-c", missing, *present, *absent)
        assert found.stdout.split() == absent, f"{image}: missing {found.stdout.split()}, expected {absent}"
    outputs = owned_folder(tmp_path / "outputs")
    train_in_image(podman, train, outputs)
    served = (
        "import subprocess, sys, time, urllib.request as r\n"
        "p = subprocess.Popen([sys.executable, '-m', sys.argv[1], 'outputs/baseline-seed42', '--port', '8080'])\n"
        "for _ in range(120):\n"
        "    try: print(r.urlopen('http://127.0.0.1:8080/health', timeout=2).status); break\n"
        "    except OSError: time.sleep(1)\n"
        "p.terminate()\n"
    )
    result = podman("run", "--rm", "--network=none", "-v", f"{outputs}:/app/outputs", serve, "python", "-c",
                    served, f"{package}.serve", check=False, timeout=300)  # fmt: skip
    assert result.stdout.split()[-1:] == ["200"], result.stdout[-1000:] + result.stderr[-3000:]
    sizes = {name: _size(podman, image) for name, image in {"train": train, "serve": serve, "dev": dev}.items()}
    print("image sizes (MB):", {name: round(size / 1e6) for name, size in sizes.items()})
    assert sizes["serve"] < 0.75 * sizes["dev"], sizes


class Compose:
    """podman-compose in a project folder, under its own project name, with this machine's build settings."""

    def __init__(self, podman: Podman, project: Path, name: str) -> None:
        self.podman, self.project, self.name = podman, project, name

    def __call__(self, *args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess[str]:
        build_args = " ".join(self.podman.build_args())
        command = [tool("podman-compose"), "-p", self.name, f"--podman-build-args={build_args}", *args]
        result = subprocess.run(
            command, cwd=self.project, env=self.podman.env, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def wait_healthy(self, service: str, timeout_s: float = 180) -> None:
        """podman runs healthchecks from systemd timers, absent here: run the service's own check until it passes."""
        container = f"{self.name}_{service}_1"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.podman("healthcheck", "run", container, check=False).returncode == 0:
                return
            time.sleep(2)
        logs = self.podman("logs", container, check=False)
        pytest.fail(f"{service} not healthy after {timeout_s} s:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}")


@pytest.fixture
def stack(podman: Podman, installed_project, tmp_path: Path) -> Iterator[tuple[Compose, dict[str, str]]]:
    """The default project's stack with `.env` made as README says; `down -v` even when a test fails."""
    source, _ = installed_project("pytorch")
    project = tmp_path / "project"
    shutil.copytree(source, project, ignore=shutil.ignore_patterns(".venv", "outputs", "mlflow.db", "mlruns"))
    settings = {
        "JUPYTER_TOKEN": secrets.token_hex(16),
        "MLFLOW_PORT": str(free_port()),
        "JUPYTER_PORT": str(free_port()),
        "SERVE_PORT": str(free_port()),
    }
    lines = [
        f"{name}={settings[name]}" if name in settings else line
        for line in (project / ".env.example").read_text().splitlines()
        for name in [line.split("=", 1)[0]]
    ]
    (project / ".env").write_text("\n".join(lines) + "\n")  # every other variable stays empty, as copied
    for folder in ("data", "outputs", "notebooks"):
        owned_folder(project / folder)
    compose = Compose(podman, project, f"mltest{settings['MLFLOW_PORT']}")
    try:
        yield compose, settings
    finally:
        compose("--profile", "serve", "down", "-v", check=False, timeout=300)  # a profile's services only with it


def test_compose_stack_trains_tracks_serves_and_guards_jupyter(stack: tuple[Compose, dict[str, str]]) -> None:
    compose, settings = stack
    with store_lock():  # a build: the other worker's prune waits
        compose("build")
    compose("up", "-d", "mlflow")
    compose.wait_healthy("mlflow")
    trainer = compose("run", "--rm", "trainer", check=False)
    assert trainer.returncode == 0, f"{trainer.stdout[-3000:]}\n{trainer.stderr[-3000:]}"
    server = f"http://127.0.0.1:{settings['MLFLOW_PORT']}"
    runs = mlflow_runs(server, "baseline")
    assert [run["info"]["status"] for run in runs] == ["FINISHED"]
    metrics = {metric["key"]: metric["value"] for metric in runs[0]["data"]["metrics"]}
    final = json.loads((compose.project / "outputs" / "baseline-seed42" / "metrics.json").read_text())["final"]
    assert metrics["test_accuracy"] == final["test_accuracy"] > 0.5
    assert {"metrics.json", "run.json", "config.yaml"} <= mlflow_artifacts(server, runs[0]["info"]["run_id"])

    compose("up", "-d", "jupyter")
    jupyter = f"http://127.0.0.1:{settings['JUPYTER_PORT']}"
    deadline = time.monotonic() + 120
    while (status := _status(f"{jupyter}/api/status")) is None and time.monotonic() < deadline:
        time.sleep(1)
    assert status == 403, "JupyterLab must refuse requests without its token"
    assert request(f"{jupyter}/api/status", headers={"Authorization": f"token {settings['JUPYTER_TOKEN']}"})[0] == 200

    # The serve image serves the trainer's run (SERVE_MODEL's default), resolved on the compose MLflow server.
    compose("--profile", "serve", "up", "-d", "serve")
    compose.wait_healthy("serve")
    serve = f"http://127.0.0.1:{settings['SERVE_PORT']}"
    status, body = request(f"{serve}/invocations", {"inputs": [[0.0] * 64, [1.0] * 64]})  # digits: 64 pixels
    assert status == 200, body
    predictions = json.loads(body)["predictions"]
    assert len(predictions) == 2 and all(len(row) == 10 for row in predictions), predictions
    assert "http_requests_total" in request(f"{serve}/metrics")[1]
    assert compose.podman("exec", f"{compose.name}_serve_1", "id", "-u").stdout.strip() != "0", "serve runs as root"


def _status(url: str) -> int | None:
    try:
        return request(url)[0]
    except OSError:
        return None
