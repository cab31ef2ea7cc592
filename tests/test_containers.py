"""Static checks of every combination's Dockerfile and compose.yaml (hadolint and the compose-spec schema run in
test_matrix.py): exact base images from data/compat.yml, install from the lock, non-root, loopback-only ports.

`podman-compose config` reads every compose file as a compose tool would; real builds and the running stack are in
test_images.py (slow tier).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from helpers.podman import install_engine
from helpers.rendering import combo_params
from helpers.tools import tool
from matrix import COMPAT, FRAMEWORKS, Combo


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
    names = {stage[0].split()[-1] for stage in stages if " AS " in stage[0]}
    images = [stage[0].split()[1] for stage in stages if stage[0].split()[1] not in names]  # not FROM <stage>
    assert all(":" in image and not image.endswith(":latest") for image in images), images
    by_name = {stage[0].split()[-1]: stage for stage in stages if " AS " in stage[0]}
    builder, base = by_name["builder"], by_name["base"]
    assert stages[-1][0] == "FROM base AS train" and stages[-1][-1] == (
        'CMD ["python", "train.py", "--config", "configs/baseline.yaml", "--seed", "42"]'
    ), "a plain `docker build .` must give the training image"
    serve = by_name["serve"]
    assert serve[0] == "FROM base AS serve" and "EXPOSE 8080" in serve, serve
    assert any(line.startswith("HEALTHCHECK ") and "/health" in line for line in serve), serve
    assert serve[-1].startswith('CMD ["python", "-m", ') and '"--port", "8080"' in serve[-1], serve
    mlflow = by_name["mlflow"]
    assert mlflow[0] == f"FROM {COMPAT['images']['mlflow']} AS mlflow"
    assert mlflow[-1] == "USER ${UID}:${GID}" and "chown" in " ".join(mlflow), (
        "compose's MLflow server must run as the non-root UID/GID build args"
    )
    assert builder[0] == f"FROM {_runtime_image(combo)} AS builder"
    assert base[0] == f"FROM {_runtime_image(combo)} AS base"
    manager = COMPAT["managers"][combo.manager]
    lock = manager["lock"]
    assert any(line.startswith("COPY ") and lock in line for line in builder), f"builder does not copy {lock}"
    expected = manager["locked_install"]  # what the dev image's stage runs so that it holds exactly the lock
    assert not [line for line in builder if all(part in line for part in expected)], "the builder installs the lock"
    runs = [line for line in by_name["dev-env"] if line.startswith("RUN ")]
    assert any(all(part in line for part in expected) for line in runs), f"no locked install {expected}: {runs}"
    for image in COMPAT["environments"]:
        environment = by_name[f"{image}-env"]
        assert environment[0] == f"FROM builder AS {image}-env"
        stage = by_name[image]
        assert f"COPY --from={image}-env /opt/venv /opt/venv" in stage, f"{image} has not its own environment"
        assert [line for line in stage if "--from=" in line and f"--from={image}-env" not in line] == [], image
        users = [line for line in stage if line.startswith("USER ")]
        assert users[-1:] == ["USER ${UID}:${GID}"] and {"ARG UID=1000", "ARG GID=1000"} <= set(stage), (
            f"{image}: the image must run as the non-root UID/GID build args"
        )
        if combo.cuda != "cpu" and manager["builder"] == "uv":
            assert f"COPY --from={image}-env /opt/python /opt/python" in stage, "the CUDA image needs its Python"
    if combo.manager == "pip":
        for image, path in manager["image_locks"].items():
            assert any(f"-r {path}" in line for line in by_name[f"{image}-env"]), f"{image} does not install {path}"
    base_text = "\n".join(base)
    for variable in (
        "PYTHONHASHSEED=0",
        "CUBLAS_WORKSPACE_CONFIG=:4096:8",
        "PYTHONUNBUFFERED=1",
        "GIT_COMMIT=${REVISION}",  # run.json's git commit inside the image, which has no .git
    ):
        assert variable in base_text
    for label in ("source", "revision", "version"):
        assert f"org.opencontainers.image.{label}=" in base_text
    assert {"ARG UID=1000", "ARG GID=1000"} <= set(base)


@pytest.mark.parametrize("combo", combo_params())
def test_compose_stack_is_local_only_and_secure(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    compose = yaml.safe_load((rendered_matrix[combo.id] / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"trainer", "mlflow", "jupyter", "dev", "serve", "prometheus", "grafana"}
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
    for service in (trainer, jupyter):
        assert "deploy" not in service, "no GPU request in compose.yaml: CI runners and laptops have no NVIDIA device"
        assert service["init"] is True, "without an init process, SIGTERM never reaches Python"
        assert service["shm_size"] == "1gb", "DataLoader workers need more than Docker's 64 MB /dev/shm"
        shared = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", **FRAMEWORKS[combo.framework]["gpu_memory_env"]}
        assert shared.items() <= service["environment"].items()
    assert (
        trainer["build"]["target"] == "train"
        and jupyter["build"]["target"] == services["dev"]["build"]["target"] == "dev"
    )
    dev = services["dev"]
    assert (
        dev["profiles"] == ["dev"] and dev["volumes"] == [".:/app"] and dev["environment"]["PYTHONPATH"] == "/app/src"
    )
    assert mlflow["build"]["target"] == "mlflow", "MLflow runs from the Dockerfile's non-root stage"
    flags = mlflow["command"]
    assert flags[:2] == ["mlflow", "server"] and "--serve-artifacts" in flags
    assert any(flag.startswith("--allowed-hosts=") and "mlflow" in flag for flag in flags)
    assert any(flag.startswith("--cors-allowed-origins=") for flag in flags)
    assert "/health" in " ".join(mlflow["healthcheck"]["test"])
    assert "--expose-prometheus=/mlflow/metrics" in flags, "the monitoring profile scrapes MLflow"
    serve, prometheus, grafana = services["serve"], services["prometheus"], services["grafana"]
    assert serve["build"]["target"] == "serve" and serve["profiles"] == ["serve", "monitoring"]
    assert serve["volumes"] == ["./outputs:/app/outputs:ro"], "the model server only reads the runs"
    assert serve["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    for name, service in (("prometheus", prometheus), ("grafana", grafana)):
        assert service["image"] == COMPAT["images"][name] and service["profiles"] == ["monitoring"]
        assert "user" not in service, f"{name} keeps its image's non-root user"
    assert "./monitoring/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    check = grafana["entrypoint"][-1]
    assert check.startswith('[ -n "$$GF_SECURITY_ADMIN_PASSWORD" ] ||') and check.endswith("exec /run.sh"), check
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "${GRAFANA_ADMIN_PASSWORD:-}"  # noqa: S105
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    volume_targets = {volume.split(":")[1] for volume in mlflow["volumes"]}
    assert {"/mlflow/db", "/mlflow/artifacts"} <= volume_targets
    assert jupyter["image"] == dev["image"] != trainer["image"], "jupyter runs the dev image"
    assert jupyter["environment"]["JUPYTER_TOKEN"].startswith("${JUPYTER_TOKEN:?"), "the token must never be empty"
    assert "user" not in jupyter or not str(jupyter["user"]).startswith(("0", "root"))


@pytest.mark.parametrize("combo", combo_params())
def test_gpu_hosts_add_every_gpu_through_an_override(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    override = rendered_matrix[combo.id] / "compose.gpu.yaml"
    if combo.cuda == "cpu":
        assert not override.exists()
        return
    services = yaml.safe_load(override.read_text())["services"]
    gpu = [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert set(services) == {"trainer", "jupyter", "dev"}
    for service in services.values():
        assert service["deploy"]["resources"]["reservations"]["devices"] == gpu
    assert "compose.gpu.yaml" in (rendered_matrix[combo.id] / "README.md").read_text(), "README must say how"


@pytest.mark.parametrize("combo", combo_params())
def test_dockerignore_keeps_secrets_and_data_out(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    ignored = set((rendered_matrix[combo.id] / ".dockerignore").read_text().split())
    assert {".git", ".env", "data/", "outputs/", "mlruns/"} <= ignored
    assert not {"README.md", "src", "configs", COMPAT["managers"][combo.manager]["lock"]} & ignored


@pytest.fixture(scope="session")
def compose_verdict(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., str]:
    """`podman-compose [--profile P] config` over compose files given as (name, text) with a given .env: the merged
    YAML, or "refused: <last line of the error>". podman-compose is pinned in requirements-dev.txt; even `config`
    asks `podman version` first, so the engine is installed when missing. Cached: few inputs differ."""
    install_engine()
    podman_compose = tool("podman-compose")

    @functools.cache
    def verdict(files: tuple[tuple[str, str], ...], dotenv: str, profile: str = "") -> str:
        folder = tmp_path_factory.mktemp("compose")
        arguments = ["--profile", profile] if profile else []
        for name, text in files:
            (folder / name).write_text(text)
            arguments += ["-f", name]
        (folder / ".env").write_text(dotenv)
        result = subprocess.run([podman_compose, *arguments, "config"], cwd=folder, capture_output=True, text=True)
        error = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return result.stdout if result.returncode == 0 else f"refused: {error}"

    return verdict


@pytest.fixture(scope="session")
def compose_config(compose_verdict) -> Callable[[tuple[tuple[str, str], ...]], list[str]]:
    """The verdicts with a JUPYTER_TOKEN and with an empty one, as `cp .env.example .env` makes it."""
    return lambda files: [compose_verdict(files, f"JUPYTER_TOKEN={token}\n") for token in ("not-empty", "")]


@pytest.mark.parametrize("combo", combo_params())
def test_compose_config_accepts_it(combo: Combo, rendered_matrix: dict[str, Path], compose_config) -> None:
    project = rendered_matrix[combo.id]
    files = [("compose.yaml", (project / "compose.yaml").read_text())]
    with_token, without_token = compose_config(tuple(files))
    assert not with_token.startswith("refused"), with_token
    assert without_token.startswith("refused") and "JUPYTER_TOKEN" in without_token, "an empty token must be refused"
    assert "deploy" not in yaml.safe_load(with_token)["services"]["trainer"]
    if combo.cuda != "cpu":  # the GPU host's command line: both files, merged
        merged, _ = compose_config((*files, ("compose.gpu.yaml", (project / "compose.gpu.yaml").read_text())))
        assert not merged.startswith("refused"), merged
        for name in ("trainer", "jupyter"):
            service = yaml.safe_load(merged)["services"][name]
            assert service["deploy"]["resources"]["reservations"]["devices"][0]["driver"] == "nvidia"
            assert service["init"] is True and service["env_file"], "the override must add to a service, not replace it"


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
    for minor, release in COMPAT["python_patch"].items():
        assert release == ".".join(map(str, newest[minor])), f"uv {COMPAT['tools']['uv']} installs {newest[minor]}"


# What compose.team.yaml requires from .env (every MLFLOW_TEAM_* variable but the port).
TEAM_REQUIRED = (
    "MLFLOW_TEAM_ADMIN_PASSWORD", "MLFLOW_TEAM_SECRET_KEY", "MLFLOW_TEAM_DB_PASSWORD", "MLFLOW_TEAM_S3_ENDPOINT_URL",
    "MLFLOW_TEAM_S3_BUCKET", "MLFLOW_TEAM_S3_ACCESS_KEY_ID", "MLFLOW_TEAM_S3_SECRET_ACCESS_KEY",
)  # fmt: skip


@pytest.mark.parametrize("combo", combo_params())
def test_team_server_needs_every_secret_from_env_and_stays_local(
    combo: Combo, rendered_matrix: dict[str, Path], compose_verdict
) -> None:
    project = rendered_matrix[combo.id]
    text = (project / "compose.team.yaml").read_text()
    files = (("compose.team.yaml", text),)
    assert "MLFLOW_TEAM_" not in (project / "compose.yaml").read_text(), (
        "compose checks a file's required variables before it picks services: the local stack must not need these"
    )
    complete = {name: f"value-of-{name.lower()}" for name in TEAM_REQUIRED}
    accepted = compose_verdict(files, "".join(f"{k}={v}\n" for k, v in complete.items()), "team")
    assert not accepted.startswith("refused"), accepted
    for missing in TEAM_REQUIRED:  # `NAME=` as .env.example ships it
        dotenv = "".join(f"{k}={'' if k == missing else v}\n" for k, v in complete.items())
        refused = compose_verdict(files, dotenv, "team")
        assert refused.startswith("refused") and f"set {missing} in .env" in refused, refused

    services = yaml.safe_load(text)["services"]
    assert set(services) == {"team-mlflow", "team-postgres"}
    for name, service in services.items():
        assert service["profiles"] == ["team"], f"{name} must start only with --profile team"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:${"), f"{name} publishes {port} beyond loopback"
    mlflow, postgres = services["team-mlflow"], services["team-postgres"]
    assert postgres["image"] == COMPAT["images"]["postgres"] and not postgres.get("ports"), "the database stays inside"
    assert mlflow["build"]["target"] == "mlflow-team"
    flags = mlflow["command"]
    assert flags[:2] == ["mlflow", "server"] and {"--serve-artifacts", "--app-name=basic-auth"} <= set(flags)
    assert any(flag.startswith("--artifacts-destination=s3://${MLFLOW_TEAM_S3_BUCKET:?") for flag in flags)
    assert not any(":${" in flag and "@" in flag for flag in flags), "no password in a URI: libpq reads PGPASSWORD"
    for variable in (
        "MLFLOW_AUTH_ADMIN_PASSWORD",
        "MLFLOW_FLASK_SERVER_SECRET_KEY",
        "PGPASSWORD",
        "AWS_SECRET_ACCESS_KEY",
    ):
        assert mlflow["environment"][variable].startswith("${MLFLOW_TEAM_"), f"{variable} must come from .env"
    auth = (project / "team" / "basic_auth.ini").read_text()
    assert not re.search(r"(?m)^\s*admin_password\s*=", auth) and not re.search(r"://[^/@]*:[^/@]*@", auth)

    stages = _stages((project / "Dockerfile").read_text())
    team = next(stage for stage in stages if stage[0] == "FROM mlflow AS mlflow-team")
    pins = [f"{name}=={version}" for name, version in COMPAT["team_server"]["packages"].items()]
    install = next(line for line in team if line.startswith("RUN pip install"))
    assert all(f'"{pin}"' in install for pin in pins) and f"]=={COMPAT['packages']['train']['mlflow']}" in install
    assert team[-1] == "USER ${UID}:${GID}", "the team server must run as the non-root UID/GID build args"
