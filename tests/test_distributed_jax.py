"""JAX data parallelism on CPU, in the installed default project (slow tier).

One process over two XLA CPU devices, and two processes of one device each joined through
`jax.distributed.initialize` on 127.0.0.1: each trained twice, beside one single-device run.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from helpers.net import free_port

pytestmark = pytest.mark.slow
# 420 training rows in batches of 31 end in a batch of 17, and 93 val and 87 test rows: odd counts, so two
# replicas pad every one of them; a padded row that counted would move the scores far past float rounding.
FAST = [
    "data.dataset=synthetic", "training.epochs=4", "training.batch_size=31",
    "data.splits.train=0.7", "data.splits.val=0.155", "data.splits.test=0.145",
]  # fmt: skip
TWO_DEVICES = "--xla_force_host_platform_device_count=2"
TIMEOUT_S = 300


class Launch:
    """Training processes of the installed project, each with its own MLflow store under a temporary HOME."""

    def __init__(self, project: Path, env: dict[str, str], home: Path) -> None:
        self.project, self.home = project, home
        self.env = {**env, "HOME": str(home), "PYTHONHASHSEED": "0"}
        for name in ("XLA_FLAGS", "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
            self.env.pop(name, None)
        self.running: list[tuple[str, subprocess.Popen[str]]] = []

    def start(self, label: str, output_dir: Path, extra_env: dict[str, str], *overrides: str) -> None:
        command = [
            str(self.project / ".venv" / "bin" / "python"), "train.py", "--config", "configs/baseline.yaml",
            "--seed", "42", "--output-dir", str(output_dir), *FAST, *overrides,
        ]  # fmt: skip
        env = {**self.env, **extra_env, "MLFLOW_TRACKING_URI": f"sqlite:///{self.store(output_dir.name)}"}
        process = subprocess.Popen(
            command, cwd=self.project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.running.append((label, process))

    def store(self, name: str) -> Path:
        return self.home / f"{name}.db"

    def one_process(self, name: str, devices: int, *overrides: str) -> Path:
        self.start(name, self.home / name, {"XLA_FLAGS": TWO_DEVICES} if devices == 2 else {}, *overrides)
        return self.home / name

    def two_processes(self, name: str) -> Path:
        coordinator = f"127.0.0.1:{free_port()}"
        for rank in range(2):
            joined = {"JAX_COORDINATOR_ADDRESS": coordinator, "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(rank)}
            self.start(f"{name}-rank{rank}", self.home / name, joined, "distributed.enabled=true")
        return self.home / name

    def wait(self) -> dict[str, str]:
        """Each process's last line of stdout; fails on the first that fails or outlives the timeout."""
        lines = {}
        try:
            for name, process in self.running:
                stdout, stderr = process.communicate(timeout=TIMEOUT_S)
                assert process.returncode == 0, f"{name} exited {process.returncode}:\n{stderr[-3000:]}"
                lines[name] = stdout.strip().splitlines()[-1]
        finally:
            for _, process in self.running:
                process.kill()
            self.running.clear()
        return lines


@pytest.fixture(scope="module")
def runs(installed_project, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    project, env = installed_project("jax")
    launch = Launch(project, env, tmp_path_factory.mktemp("distributed-home"))
    folders = {
        "single": launch.one_process("single", 1),
        "devices": launch.one_process("devices", 2, "distributed.enabled=true"),
        "devices-again": launch.one_process("devices-again", 2, "distributed.enabled=true"),
    }
    lines = launch.wait()
    # Two launches at once: four processes on their own coordinators, on this machine's cores.
    folders |= {name: launch.two_processes(name) for name in ("processes", "processes-again")}
    lines |= launch.wait()
    return {"folders": folders, "lines": lines, "stores": {name: launch.store(name) for name in folders}}


def _metrics(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "metrics.json").read_text())


def _assert_bit_identical(first: Path, second: Path) -> None:
    """Every score of every epoch (the JSON holds the exact floats) and every byte of the saved weights."""
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    assert (first / "model.npz").read_bytes() == (second / "model.npz").read_bytes()


def test_one_process_on_two_devices_repeats_bit_for_bit(runs: dict[str, Any]) -> None:
    _assert_bit_identical(runs["folders"]["devices"], runs["folders"]["devices-again"])


def test_two_processes_repeat_bit_for_bit_and_agree_on_the_scores(runs: dict[str, Any]) -> None:
    _assert_bit_identical(runs["folders"]["processes"], runs["folders"]["processes-again"])
    for name in ("processes", "processes-again"):  # the chief's printed test scores, and the other process's
        assert runs["lines"][f"{name}-rank0"] == runs["lines"][f"{name}-rank1"]
        with closing(sqlite3.connect(runs["stores"][name])) as store:
            assert store.execute("SELECT COUNT(*) FROM runs").fetchone() == (1,), "only the chief tracks"


def test_two_devices_train_alike_in_one_process_or_two(runs: dict[str, Any]) -> None:
    """Both split every batch over the same two CPU devices and sum the two gradients (a + b, in any order):
    bit-identical. A single device sums the whole batch at once: equal up to float rounding, not bit for bit."""
    _assert_bit_identical(runs["folders"]["devices"], runs["folders"]["processes"])
    single, parallel = _metrics(runs["folders"]["single"]), _metrics(runs["folders"]["devices"])
    assert len(single["epochs"]) == len(parallel["epochs"]) == 4
    for one, two in [*zip(single["epochs"], parallel["epochs"], strict=True), (single["final"], parallel["final"])]:
        assert one.keys() == two.keys()
        for key in one:
            assert math.isclose(one[key], two[key], rel_tol=1e-5), (key, one[key], two[key])


def test_run_json_records_the_world(runs: dict[str, Any]) -> None:
    expected = {
        "single": {"strategy": "none", "processes": 1, "replicas": 1},
        "devices": {"strategy": "data_parallel", "processes": 1, "replicas": 2},
        "processes": {"strategy": "data_parallel", "processes": 2, "replicas": 2},
    }
    for name, world in expected.items():
        assert json.loads((runs["folders"][name] / "run.json").read_text())["world"] == world


def test_training_loss_falls(runs: dict[str, Any]) -> None:
    losses = [epoch["train_loss"] for epoch in _metrics(runs["folders"]["processes"])["epochs"]]
    assert losses == sorted(losses, reverse=True) and losses[-1] < losses[0] / 2, losses
