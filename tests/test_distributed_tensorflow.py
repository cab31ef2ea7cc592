"""Slow tier: TensorFlow's strategies on CPU, in the installed default project, launched as a cluster would.

MultiWorkerMirroredStrategy: two worker processes on 127.0.0.1, each with its own TF_CONFIG (free ports), sharing the
run folder. MirroredStrategy: one process over two logical CPU devices, which the test configures before the project
starts (a user's CPU run has one device; GPUs need nothing). Each process has its own HOME and MLflow store, so a
store the non-chief opened would show.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.net import free_port

pytestmark = pytest.mark.slow
EPOCHS = 6
ARGS = ["--config", "configs/baseline.yaml", "--seed", "42", "data.dataset=synthetic", "training.batch_size=32",
        f"training.epochs={EPOCHS}", "distributed.enabled=true"]  # fmt: skip
TIMEOUT_S = 240  # a worker whose peer never comes waits in a collective: fail instead of hanging
TWO_CPUS = """import sys
import tensorflow as tf
cpu, = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from {package}.cli import main
sys.exit(main(sys.argv[1:]))
"""
RUN_FOLDER = {"checkpoints", "config.yaml", "curves.png", "metrics.json", "model.keras", "run.json"}


@dataclass(frozen=True)
class Launch:
    output_dir: Path
    homes: list[Path]  # one per process, the chief's first
    returncodes: list[int]
    stdouts: list[str]
    stderrs: list[str]

    def metrics(self) -> dict:
        return json.loads((self.output_dir / "metrics.json").read_text())

    def mlflow_runs(self, process: int) -> list[str]:
        """The statuses of the runs in that process's MLflow store (none if it has no store)."""
        store = self.homes[process] / "mlflow.db"
        if not store.exists():
            return []
        with sqlite3.connect(store) as db:
            return [status for (status,) in db.execute("SELECT status FROM runs")]


class Cluster:
    """The installed project, started as `processes` workers that find each other through TF_CONFIG."""

    def __init__(self, project: Path, env: dict[str, str], root: Path) -> None:
        self.project, self.env, self.root = project, env, root
        self.python = str(project / ".venv" / "bin" / "python")
        self.package = next(path.name for path in (project / "src").iterdir() if (path / "cli.py").exists())

    def env_for(self, home: Path, **extra: str) -> dict[str, str]:
        home.mkdir(parents=True, exist_ok=True)
        return {**self.env, "HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/mlflow.db",
                "PYTHONHASHSEED": "0", "TF_CPP_MIN_LOG_LEVEL": "2", **extra}  # fmt: skip

    def start(self, name: str, *extra: str, processes: int = 2) -> tuple[Path, list[Path], list[subprocess.Popen]]:
        output_dir, homes = self.root / name, [self.root / f"{name}-home{index}" for index in range(processes)]
        cluster = {"worker": [f"127.0.0.1:{free_port()}" for _ in range(processes)]}
        command = [self.python, "train.py", *ARGS, "--output-dir", str(output_dir), *extra]
        tasks = [{"type": "worker", "index": index} for index in range(processes)]
        tf_configs = [json.dumps({"cluster": cluster, "task": task}) for task in tasks]
        started = [
            self.popen(command, self.env_for(home, TF_CONFIG=tf_config))
            for home, tf_config in zip(homes, tf_configs, strict=True)
        ]
        return output_dir, homes, started

    def popen(self, command: list[str], env: dict[str, str]) -> subprocess.Popen:
        return subprocess.Popen(
            command, cwd=self.project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def train(self, name: str, *extra: str) -> Launch:
        return finish(*self.start(name, *extra))

    def train_on_two_cpus(self, name: str) -> Launch:
        output_dir, home = self.root / name, self.root / f"{name}-home0"
        command = [self.python, "-c", TWO_CPUS.format(package=self.package), *ARGS, "--output-dir", str(output_dir)]
        return finish(output_dir, [home], [self.popen(command, self.env_for(home))])


def finish(output_dir: Path, homes: list[Path], processes: list[subprocess.Popen]) -> Launch:
    deadline = time.monotonic() + TIMEOUT_S
    try:
        outputs = [process.communicate(timeout=max(1, deadline - time.monotonic())) for process in processes]
    except subprocess.TimeoutExpired:
        for process in processes:
            process.kill()
        pytest.fail(f"a process of {output_dir.name} was still running after {TIMEOUT_S} s")
    codes = [process.returncode for process in processes]
    return Launch(output_dir, homes, codes, [out for out, _ in outputs], [err for _, err in outputs])


def succeeded(launch: Launch) -> Launch:
    assert launch.returncodes == [0] * len(launch.returncodes), "\n".join(err[-3000:] for err in launch.stderrs)
    return launch


def checkpoint_arrays(cluster: Cluster, launch: Launch) -> str:
    """The last checkpoint's arrays (weights, optimizer state), printed exactly; its JSON part names the MLflow run."""
    probe = "import numpy as np, sys; c = np.load(sys.argv[1]); print([c[k].tolist() for k in sorted(c.files)[1:]])"
    last = sorted((launch.output_dir / "checkpoints").glob("epoch-*.npz"))[-1]
    result = subprocess.run([cluster.python, "-c", probe, str(last)], capture_output=True, text=True, check=True)
    return result.stdout


@pytest.fixture(scope="module")
def cluster(installed_project, tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return Cluster(*installed_project("tensorflow"), tmp_path_factory.mktemp("tf-distributed"))


@pytest.fixture(scope="module")
def two_workers(cluster: Cluster) -> list[Launch]:
    """The same launch twice: MultiWorkerMirroredStrategy over two worker processes of one CPU each."""
    return [succeeded(cluster.train(f"workers-{attempt}")) for attempt in range(2)]


def test_two_workers_repeat_bit_for_bit(cluster: Cluster, two_workers: list[Launch]) -> None:
    first, second = two_workers
    assert first.metrics() == second.metrics()
    assert checkpoint_arrays(cluster, first) == checkpoint_arrays(cluster, second)
    # The scores are reduced over both replicas: each worker reports the same numbers.
    finals = [stdout.strip().splitlines()[-1].split(" -> ")[0] for stdout in first.stdouts]
    assert finals[0].startswith("test_accuracy=") and finals[0] == finals[1]


def test_two_workers_train(two_workers: list[Launch]) -> None:
    epochs = two_workers[0].metrics()["epochs"]
    assert len(epochs) == EPOCHS
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] * 0.8


def test_only_the_chief_writes_the_run_and_tracks_it(two_workers: list[Launch]) -> None:
    for launch in two_workers:
        assert {path.name for path in launch.output_dir.iterdir()} == RUN_FOLDER
        run = json.loads((launch.output_dir / "run.json").read_text())
        assert run["world"] == {"strategy": "multi_worker_mirrored", "processes": 2, "replicas": 2}
        assert launch.mlflow_runs(0) == ["FINISHED"]
        assert launch.mlflow_runs(1) == []


def test_mirrored_on_two_cpus_trains_as_two_workers(cluster: Cluster, two_workers: list[Launch]) -> None:
    launch = succeeded(cluster.train_on_two_cpus("mirrored"))
    run = json.loads((launch.output_dir / "run.json").read_text())
    assert run["world"] == {"strategy": "mirrored", "processes": 1, "replicas": 2}
    assert launch.mlflow_runs(0) == ["FINISHED"]
    # Two replicas see the same slices with the same dropout seeds either way, and a sum of two numbers does not
    # depend on their order: one process with two devices matches two processes with one each, bit for bit.
    assert launch.metrics() == two_workers[0].metrics()


def test_a_killed_worker_stops_the_chief_in_one_line_and_both_resume_exactly(
    cluster: Cluster, two_workers: list[Launch]
) -> None:
    output_dir, homes, processes = cluster.start("killed")
    second_checkpoint = output_dir / "checkpoints" / "epoch-000002.npz"
    deadline = time.monotonic() + TIMEOUT_S
    while not second_checkpoint.exists() and time.monotonic() < deadline and processes[0].poll() is None:
        time.sleep(0.002)
    processes[1].send_signal(signal.SIGKILL)
    killed = finish(output_dir, homes, processes)
    assert killed.returncodes == [2, -signal.SIGKILL], killed.stderrs[0][-3000:]
    assert "Traceback" not in killed.stderrs[0]
    errors = [line for line in killed.stderrs[0].splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "another process of this run stopped" in errors[0], killed.stderrs[0][-3000:]
    assert killed.mlflow_runs(0) == ["FAILED"]

    resumed = finish(*cluster.start("killed", "--resume"))
    succeeded(resumed)
    assert resumed.metrics() == two_workers[0].metrics()
    assert resumed.mlflow_runs(0) == ["FINISHED"]


def test_a_broken_tf_config_is_one_line(cluster: Cluster, tmp_path: Path) -> None:
    env = cluster.env_for(tmp_path / "home", TF_CONFIG='{"cluster": {"worker": ["127.0.0.1:1"]}}')
    command = [cluster.python, "train.py", *ARGS, "--output-dir", str(tmp_path / "run")]
    result = subprocess.run(command, cwd=cluster.project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        "error: TF_CONFIG must name the cluster and this task in it, as TensorFlow documents (KeyError('task')); "
        "see README 'Scale out'"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("reserved", "ports"), [(None, (8888, 8889)), ("12000-12001", (12000, 12001))], ids=["default-ports", "resv-ports"]
)
def test_a_slurm_step_resolves_to_its_tasks(cluster: Cluster, tmp_path: Path, reserved: str | None, ports) -> None:
    """What `srun` sets for 4 tasks on 2 nodes, resolved as the project does (no Slurm here): the strategy built on
    it is the one the TF_CONFIG launches above run."""
    slurm = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_STEP_NODELIST": "node[07-08]",
             "SLURM_STEP_TASKS_PER_NODE": "2(x2)"}  # fmt: skip
    if reserved:
        slurm["SLURM_STEP_RESV_PORTS"] = reserved
    probe = (
        f"import json; from {cluster.package}.distributed import _slurm_resolver as resolve; r = resolve(0); "
        "print(json.dumps([r.cluster_spec().as_dict(), r.task_type, r.task_id, r.num_accelerators()]))"
    )
    env = cluster.env_for(tmp_path / "home", **slurm)
    command = [cluster.python, "-c", probe]
    result = subprocess.run(command, cwd=cluster.project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode == 0, result.stderr[-3000:]
    hosts = [f"{node}:{port}" for node in ("node07", "node08") for port in ports]
    assert json.loads(result.stdout.splitlines()[-1]) == [{"worker": hosts}, "worker", 3, {"GPU": 0}]
