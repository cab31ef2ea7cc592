"""Static checks of every combination's Dockerfile and compose.yaml (hadolint and the compose-spec schema run in
test_matrix.py): exact base images from data/compat.yml, install from the lock, non-root, loopback-only ports.

There is no Docker engine here: `docker build` / `docker compose up` run in the generated project's CI.
`docker-compose config` runs when a compose tool is installed (Debian: apt-get install docker-compose).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import combo_params, tool
from matrix import COMPAT, Combo

LOCK_FILES = {
    "pip": "requirements.txt",
    "uv": "uv.lock",
    "poetry": "poetry.lock",
    "conda": "conda-lock.yml",
}


def _runtime_image(combo: Combo) -> str:
    if combo.cuda == "cpu":
        return COMPAT["images"]["python"].replace("{python}", COMPAT["python_patch"][combo.python])
    return COMPAT["images"]["cuda"][combo.cuda]


def _stages(dockerfile: str) -> list[list[str]]:
    """Instructions (continuation lines joined, comments dropped), split at each FROM."""
    text = re.sub(r"\\\n\s*", " ", dockerfile)
    stages: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


@pytest.mark.parametrize("combo", combo_params())
def test_dockerfile_builds_from_the_lock_on_exact_images(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    stages = _stages((rendered_matrix[combo.id] / "Dockerfile").read_text())
    images = [stage[0].split()[1] for stage in stages]
    assert all(":" in image and not image.endswith(":latest") for image in images), images
    builder, runtime = stages[-2], stages[-1]
    mlflow = next(stage for stage in stages if stage[0].endswith(" AS mlflow"))
    assert mlflow[0] == f"FROM {COMPAT['images']['mlflow']} AS mlflow"
    assert mlflow[-1] == "USER ${UID}:${GID}" and "chown" in " ".join(mlflow), (
        "compose's MLflow server must run as the non-root UID/GID build args"
    )
    assert builder[0] == f"FROM {_runtime_image(combo)} AS builder"
    assert runtime[0] == f"FROM {_runtime_image(combo)} AS runtime"
    lock = LOCK_FILES[combo.manager]
    assert any(line.startswith("COPY ") and lock in line for line in builder), f"builder does not copy {lock}"
    runtime_text = "\n".join(runtime)
    for variable in (
        "PYTHONHASHSEED=0",
        "CUBLAS_WORKSPACE_CONFIG=:4096:8",
        "PYTHONUNBUFFERED=1",
    ):
        assert variable in runtime_text
    for label in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{label}=" in runtime_text
    assert {"ARG UID=1000", "ARG GID=1000"} <= set(runtime)
    assert runtime[-2] == "USER ${UID}:${GID}", "the image must run as the non-root UID/GID build args"
    if combo.cuda != "cpu" and combo.manager != "conda":
        assert "COPY --from=builder /opt/python /opt/python" in runtime, "the CUDA image needs the portable Python"


@pytest.mark.parametrize("combo", combo_params())
def test_compose_stack_is_local_only_and_secure(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    compose = yaml.safe_load((rendered_matrix[combo.id] / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"trainer", "mlflow", "jupyter"}
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:${"), f"{name} publishes {port} beyond loopback or on a fixed port"
    trainer, mlflow, jupyter = (
        services["trainer"],
        services["mlflow"],
        services["jupyter"],
    )
    assert trainer["env_file"] == ".env" and "build" in trainer
    assert trainer["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert {"./data:/app/data", "./outputs:/app/outputs"} <= set(trainer["volumes"])
    gpu = [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    for service in (trainer, jupyter):
        devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
        assert devices == (gpu if combo.cuda != "cpu" else None)
    assert trainer["build"]["target"] == jupyter["build"]["target"] == "runtime"
    assert mlflow["build"]["target"] == "mlflow", "MLflow runs from the Dockerfile's non-root stage"
    flags = mlflow["command"]
    assert flags[:2] == ["mlflow", "server"] and "--serve-artifacts" in flags
    assert any(flag.startswith("--allowed-hosts=") and "mlflow" in flag for flag in flags)
    assert any(flag.startswith("--cors-allowed-origins=") for flag in flags)
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    volume_targets = {volume.split(":")[1] for volume in mlflow["volumes"]}
    assert {"/mlflow/db", "/mlflow/artifacts"} <= volume_targets
    assert jupyter["image"] == trainer["image"], "jupyter must run the project's image"
    assert jupyter["environment"]["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?"), "the token must never be empty"
    assert "user" not in jupyter or not str(jupyter["user"]).startswith(("0", "root"))


@pytest.mark.parametrize("combo", combo_params())
def test_dockerignore_keeps_secrets_and_data_out(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    ignored = set((rendered_matrix[combo.id] / ".dockerignore").read_text().split())
    assert {".git", ".env", "data/", "outputs/", "mlruns/"} <= ignored
    assert not {"README.md", "src", "configs", LOCK_FILES[combo.manager]} & ignored


@pytest.fixture(scope="session")
def compose_config(
    tmp_path_factory: pytest.TempPathFactory,
) -> Callable[[str], tuple[str, str]]:
    """`compose config` verdicts (with a token, with an empty one) per distinct compose.yaml text: few differ."""
    if shutil.which("docker-compose"):
        tool = ["docker-compose"]
    elif (docker := shutil.which("docker")) and subprocess.run(
        [docker, "compose", "version"], check=False
    ).returncode == 0:
        tool = [docker, "compose"]
    else:
        pytest.skip("no compose tool installed (Debian: apt-get install docker-compose); the schema check still ran")

    @functools.cache
    def verdicts(text: str) -> tuple[str, str]:
        folder = tmp_path_factory.mktemp("compose")
        (folder / "compose.yaml").write_text(text)
        env = folder / ".env"  # env_file: .env must exist, as `cp .env.example .env` makes it
        command = [
            *tool,
            "--project-directory",
            str(folder),
            "-f",
            "compose.yaml",
            "config",
            "--quiet",
        ]
        outcome = []
        for token in ("not-empty", ""):
            env.write_text(f"JUPYTER_TOKEN={token}\n")
            result = subprocess.run(command, check=False, cwd=folder, capture_output=True, text=True)
            outcome.append("ok" if result.returncode == 0 else result.stderr.strip() or "failed")
        return outcome[0], outcome[1]

    return verdicts


@pytest.mark.parametrize("combo", combo_params())
def test_docker_compose_config_accepts_it(combo: Combo, rendered_matrix: dict[str, Path], compose_config) -> None:
    with_token, without_token = compose_config((rendered_matrix[combo.id] / "compose.yaml").read_text())
    assert with_token == "ok"  # noqa: S105 - compose_config's verdict, not a password
    assert "JUPYTER_TOKEN" in without_token, "an empty JUPYTER_TOKEN must be refused"


def test_python_releases_are_the_newest_uv_installs() -> None:
    """The exact Python per version (slim images, and uv's portable build in CUDA images) is uv's newest."""
    uv = tool("uv")
    version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout
    assert version.split()[1] == COMPAT["tools"]["uv"], "requirements-dev.txt and compat's uv differ"
    listing = subprocess.run(
        [
            uv,
            "python",
            "list",
            "--all-versions",
            "--only-downloads",
            "--output-format",
            "json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    newest: dict[str, tuple[int, ...]] = {}
    for entry in json.loads(listing):
        parts = entry["version_parts"]
        minor = f"{parts['major']}.{parts['minor']}"
        if (
            entry["implementation"] == "cpython"
            and entry["variant"] == "default"
            and entry["version"].replace(".", "").isdigit()
        ):
            newest[minor] = max(newest.get(minor, ()), (parts["major"], parts["minor"], parts["patch"]))
    assert set(COMPAT["python_patch"]) == set(COMPAT["python_versions"])
    for minor, release in COMPAT["python_patch"].items():
        assert release == ".".join(map(str, newest[minor])), f"uv {COMPAT['tools']['uv']} installs {newest[minor]}"
