"""Real builds beside the default project's (test_images.py): the PyTorch image from the uv and Poetry locks, the
TensorFlow and JAX images, each trained offline with this machine's numbers, and compose.team.yaml's server stage.

A module of its own so that the suite's second worker builds these while the first builds the default project's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.images import APP_UID, assert_trains_like_the_host, torch_version
from helpers.podman import Podman
from matrix import COMPAT

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("manager", ["uv", "poetry"])
def test_manager_image_builds_from_its_lock_and_trains_offline(
    manager: str, built, podman: Podman, installed_project, tmp_path: Path
) -> None:
    image, _ = built("pytorch", manager)
    try:
        assert torch_version(podman, image) == f"{COMPAT['frameworks']['pytorch']['version']}+cpu"
        assert_trains_like_the_host(podman, image, "pytorch", installed_project, tmp_path)
    finally:
        podman.remove(image)


@pytest.mark.parametrize("framework", ["tensorflow", "jax"])
def test_framework_image_trains_like_this_machine(
    framework: str, built, podman: Podman, installed_project, tmp_path: Path
) -> None:
    image, _ = built(framework)
    try:
        assert_trains_like_the_host(podman, image, framework, installed_project, tmp_path)
    finally:
        podman.remove(image)  # about 4.5 GB with its build layers, used by this test only


def test_team_server_stage_holds_auth_postgres_and_s3_and_runs_non_root(podman: Podman, default_project: Path) -> None:
    """compose.team.yaml's image: what tests/test_team_server.py runs the server with, installed in the stage."""
    image = "localhost/ml-test:mlflow-team"
    podman.build(default_project, image, "--target", "mlflow-team")
    try:
        versions = "import sys, importlib.metadata as m; print(*(m.version(name) for name in sys.argv[1:]))"
        names = ["mlflow", *COMPAT["team_server"]["packages"], "flask-wtf"]  # flask-wtf: what mlflow[auth] adds
        probe = podman("run", "--rm", "--network=none", image, "python", "-c", versions, *names)
        expected = [COMPAT["packages"]["train"]["mlflow"], *COMPAT["team_server"]["packages"].values()]
        assert probe.stdout.split()[: len(expected)] == expected
        podman("run", "--rm", "--network=none", image, "python", "-c", "import mlflow.server.auth, psycopg2, boto3")
        user = podman("run", "--rm", "--network=none", image, "id", "-u").stdout.strip()
        assert user == str(APP_UID), "the team server must run as its non-root user"
    finally:
        podman.remove(image)
