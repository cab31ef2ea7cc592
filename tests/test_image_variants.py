"""Real builds beside the default project's (test_images.py): the TensorFlow image from the uv lock and the JAX image
from the Poetry lock, each trained offline with this machine's numbers, and compose.team.yaml's server stage.

A module of its own so that the suite's second worker builds these while the first builds the default project's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.images import APP_UID, assert_trains_like_the_host
from helpers.podman import Podman
from matrix import COMPAT

pytestmark = pytest.mark.slow
# The framework's version in an image: TensorFlow and JAX import under their own names.
VERSION = "import importlib, sys; print(importlib.import_module(sys.argv[1]).__version__)"


# Each framework's image from another manager's lock than the default project's pip: every manager and every
# framework is built once (PyTorch with pip in test_images.py), at two builds' cost rather than six.
@pytest.mark.parametrize(("framework", "manager"), [("tensorflow", "uv"), ("jax", "poetry")])
def test_framework_image_from_a_manager_lock_trains_like_this_machine(
    framework: str, manager: str, built, podman: Podman, installed_project, tmp_path: Path
) -> None:
    image, _ = built(framework, manager)
    try:
        version = podman("run", "--rm", "--network=none", image, "python", "-c", VERSION, framework)
        assert version.stdout.strip() == COMPAT["frameworks"][framework]["version"]
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
