"""What the real-build tests (test_images.py, test_image_variants.py) do with a built image: train in it offline and
compare with the same run on this machine."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from helpers.podman import Podman

APP_UID = 1000  # the image's default UID/GID build args
# What compose passes with .env's HOST_UID, HOST_GID and GIT_REVISION empty (compose.yaml's x-build-args), in its
# order: builds given the same arguments leave compose's build in test_images.py only cached layers to reuse.
COMPOSE_BUILD_ARGS = ("--build-arg", "UID=1000", "--build-arg", "GID=1000", "--build-arg", "REVISION=unknown")
TWO_EPOCHS = ["python", "train.py", "--config", "configs/baseline.yaml", "--seed", "42", "training.epochs=2"]


def owned_folder(path: Path, uid: int = APP_UID) -> Path:
    path.mkdir(parents=True)
    shutil.chown(path, uid, uid)
    return path


def host_metrics(framework: str, installed_project, tmp_path: Path) -> dict:
    """The same two-epoch run on this machine, in the project's own .venv."""
    project, env = installed_project(framework)
    command = [str(project / ".venv" / "bin" / "python"), *TWO_EPOCHS[1:], "--output-dir", str(tmp_path / "host")]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((tmp_path / "host" / "metrics.json").read_text())["final"]


def train_in_image(podman: Podman, image: str, outputs: Path) -> dict:
    """Two epochs in the image with no network, writing to a bind-mounted outputs folder owned by its user."""
    result = podman("run", "--rm", "--network=none", "-v", f"{outputs}:/app/outputs", image, *TWO_EPOCHS, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    run = outputs / "baseline-seed42"
    expected = {"metrics.json", "run.json", "config.yaml", "curves.png", "checkpoints"}
    assert expected <= {path.name for path in run.iterdir()}, sorted(run.iterdir())
    assert (outputs / "mlflow.db").is_file() and any((outputs / "mlruns").rglob("metrics.json")), (
        "the image's default tracking store (and its artifacts) must land in the writable outputs folder"
    )
    return json.loads((run / "metrics.json").read_text())["final"]


def assert_trains_like_the_host(podman: Podman, image: str, framework: str, installed_project, tmp_path: Path) -> None:
    """As its non-root user, offline: same lock versions, same CPU, same seed, so this machine's numbers bit for bit."""
    user = podman("run", "--rm", "--network=none", image, "id", "-u").stdout.strip()
    assert user == str(APP_UID), "the image must run as its non-root user"
    in_image = train_in_image(podman, image, owned_folder(tmp_path / "outputs"))
    assert in_image == host_metrics(framework, installed_project, tmp_path)


def torch_version(podman: Podman, image: str) -> str:
    return podman(
        "run", "--rm", "--network=none", image, "python", "-c", "import torch; print(torch.__version__)"
    ).stdout.strip()
