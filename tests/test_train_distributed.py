"""`make train-distributed` for real in each framework's installed default project: NPROC=2 processes on this host
(torchrun for PyTorch; for JAX and TensorFlow, two processes told their place by data/compat.yml's launch.env, as
a cluster tells them), over gloo / the frameworks' CPU collectives on 127.0.0.1.

tests/test_launch.py checks what each process is told, for every combination; this checks that the engines take it:
the run trains two replicas and its loss falls.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers.net import free_port
from matrix import FRAMEWORKS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_make_train_distributed_trains_two_replicas(framework: str, installed_project, tmp_path: Path) -> None:
    project, env = installed_project(framework)
    run = tmp_path / "run"
    # PORT and PORT+1 (TensorFlow's second worker): a free port and, almost always, its neighbour.
    args = f"--output-dir {run} data.dataset=synthetic training.epochs=2"
    result = subprocess.run(
        ["make", "train-distributed", "NPROC=2", f"PORT={free_port()}", f"ARGS={args}"],
        cwd=project, env={**env, "GLOO_SOCKET_IFNAME": "lo"}, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    world = json.loads((run / "run.json").read_text())["world"]
    assert (world["processes"], world["replicas"]) == (2, 2), world
    losses = [row["train_loss"] for row in json.loads((run / "metrics.json").read_text())["epochs"]]
    assert losses[-1] < losses[0], losses
