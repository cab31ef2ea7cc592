"""`.devcontainer/devcontainer.json` read by the dev container CLI (`@devcontainers/cli` from npm, the reference
implementation VS Code's Dev Containers extension follows): `read-configuration` parses it as VS Code does, and what
it names holds in the project: compose's `dev` service on the Dockerfile's dev image, the project folder at its
workspace, the image's user and venv, GPU answers with compose.gpu.yaml. Building and opening the container needs
Docker and VS Code: the image itself is built in test_images.py (Jupyter runs it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.podman import CACHE, engine_env, install_engine
from helpers.rendering import render
from helpers.tools import debian_packages

pytestmark = pytest.mark.slow

CLI_VERSION = "0.89.0"  # @devcontainers/cli


@pytest.fixture(scope="module")
def devcontainer() -> list[str]:
    """The pinned CLI, installed from npm into the cache folder once; it asks the engine (podman) for containers."""
    debian_packages(["nodejs", "npm"], "node", "npm")
    install_engine()
    prefix = CACHE.parent / f"devcontainers-cli-{CLI_VERSION}"
    cli = prefix / "node_modules" / ".bin" / "devcontainer"
    if not cli.exists():
        subprocess.run(
            ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", f"@devcontainers/cli@{CLI_VERSION}"],
            check=True, capture_output=True, timeout=600,
        )  # fmt: skip
    return [str(cli), "read-configuration", "--docker-path", "podman"]


def read_configuration(devcontainer: list[str], project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*devcontainer, "--workspace-folder", str(project)],
        capture_output=True, text=True, timeout=120, env={**os.environ, **engine_env()},
    )  # fmt: skip


def problems(config: dict, project: Path) -> list[str]:
    """What the configuration names that the project does not hold."""
    found = []
    files = [(project / ".devcontainer" / name).resolve() for name in config["dockerComposeFile"]]
    if not all(file.exists() for file in files):
        return [f"a compose file is missing: {files}"]
    services = [yaml.safe_load(file.read_text())["services"] for file in files]
    service = services[0].get(config["service"], {})
    if service.get("build", {}).get("target") != "dev":
        found.append(f"service {config['service']!r} does not run the dev image")
    if f".:{config['workspaceFolder']}" not in service.get("volumes", []):
        found.append("the project folder is not mounted at the workspace folder")
    if set(config["runServices"]) != {config["service"], "mlflow"}:
        found.append(f"runServices {config['runServices']}")
    gpu = (project / "compose.gpu.yaml").exists()
    if gpu and not any("deploy" in more.get(config["service"], {}) for more in services[1:]):
        found.append("a GPU answer without the GPUs")
    dockerfile = (project / "Dockerfile").read_text()
    if not re.search(rf"useradd .* {config['remoteUser']}\b", dockerfile):
        found.append(f"remoteUser {config['remoteUser']!r} is not the image's user")
    vscode = config["customizations"]["vscode"]
    venv = re.search(r"VIRTUAL_ENV=(\S+)", dockerfile).group(1)
    if vscode["settings"]["python.defaultInterpreterPath"] != f"{venv}/bin/python":
        found.append("the interpreter is not the image's venv")
    if vscode["settings"]["[python]"]["editor.defaultFormatter"] != "charliermarsh.ruff":
        found.append("ruff does not format")
    if not {"ms-python.python", "ms-toolsai.jupyter", "charliermarsh.ruff"} <= set(vscode["extensions"]):
        found.append(f"extensions {vscode['extensions']}")
    if not config["postCreateCommand"].startswith("pre-commit install"):
        found.append("pre-commit is not installed after creation")
    return found


@pytest.mark.parametrize("answers", [{}, {"cuda": "12.8"}], ids=["cpu", "gpu"])
def test_the_cli_reads_the_dev_container_and_what_it_names_exists(
    devcontainer: list[str], template: Path, tmp_path: Path, answers: dict[str, str]
) -> None:
    project = render(template, tmp_path / "project", answers)
    result = read_configuration(devcontainer, project)
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads(result.stdout)["configuration"]
    assert ("../compose.gpu.yaml" in config["dockerComposeFile"]) == bool(answers)
    assert problems(config, project) == []

    broken = {**config, "service": "trainer", "remoteUser": "root"}
    assert len(problems(broken, project)) == 4, "the checks above catch a container on the wrong service and user"


def test_what_is_not_a_configuration_is_refused(devcontainer: list[str], template: Path, tmp_path: Path) -> None:
    project = render(template, tmp_path / "project", {})
    path = project / ".devcontainer" / "devcontainer.json"
    path.write_text(path.read_text().split("{")[0])  # cut after its header comment, as a bad merge leaves it
    result = read_configuration(devcontainer, project)
    assert result.returncode != 0, result.stdout[-2000:]
