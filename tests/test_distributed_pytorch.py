"""PyTorch DistributedDataParallel on CPU: torchrun with two processes over gloo on 127.0.0.1 (slow tier).

The installed default project is trained by its own torchrun, as `make train-distributed NPROC=2` does, and
checked the way a multi-GPU run would be: repeats bit for bit, a killed rank resumes to exactly the uninterrupted
result on the same MLflow run, another world size is refused, and only the chief writes.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
EPOCHS = 6
# digits, in global batches of 64: each of the two replicas takes 32 rows of every batch.
FAST = [f"training.epochs={EPOCHS}", "distributed.enabled=true"]
TIMEOUT_S = 300


class Torchrun:
    """The installed project's own torchrun, each run with its own MLflow store under a temporary HOME."""

    def __init__(self, project: Path, env: dict[str, str], home: Path) -> None:
        self.project, self.home = project, home
        self.env = {**env, "HOME": str(home), "PYTHONHASHSEED": "0", "GLOO_SOCKET_IFNAME": "lo"}

    def _command(self, output_dir: Path, extra: tuple[str, ...], processes: int) -> tuple[list[str], dict[str, str]]:
        torchrun = [str(self.project / ".venv" / "bin" / "torchrun"), "--standalone", f"--nproc-per-node={processes}"]
        train = ["train.py", "--config", "configs/baseline.yaml", "--seed", "42", "--output-dir", str(output_dir)]
        return [*torchrun, *train, *FAST, *extra], {
            **self.env,
            "MLFLOW_TRACKING_URI": f"sqlite:///{self.store(output_dir)}",
        }

    def store(self, output_dir: Path) -> Path:
        return self.home / f"{output_dir.name}.db"

    def run(self, output_dir: Path, *extra: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
        argv, env = self._command(output_dir, extra, processes)
        return subprocess.run(argv, cwd=self.project, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)

    def start(self, output_dir: Path) -> subprocess.Popen[str]:
        argv, env = self._command(output_dir, (), 2)
        return subprocess.Popen(
            argv, cwd=self.project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


@pytest.fixture(scope="module")
def torchrun(installed_project, tmp_path_factory: pytest.TempPathFactory) -> Torchrun:
    project, env = installed_project("pytorch")
    return Torchrun(project, env, tmp_path_factory.mktemp("ddp-home"))


@pytest.fixture(scope="module")
def uninterrupted(torchrun: Torchrun) -> Path:
    output_dir = torchrun.home / "uninterrupted"
    result = torchrun.run(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return output_dir


def _runs(store: Path) -> list[tuple[str, str]]:
    with closing(sqlite3.connect(store)) as db:
        return db.execute("SELECT run_uuid, status FROM runs").fetchall()


def test_two_ranks_repeat_bit_for_bit_and_the_loss_falls(torchrun: Torchrun, uninterrupted: Path) -> None:
    repeat = torchrun.home / "repeat"
    result = torchrun.run(repeat)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (repeat / "model.pt").read_bytes() == (uninterrupted / "model.pt").read_bytes()
    first, second = (json.loads((path / "metrics.json").read_text()) for path in (uninterrupted, repeat))
    assert first == second
    losses = [row["train_loss"] for row in first["epochs"]]
    assert losses[-1] < losses[0] / 2, losses


def test_the_chief_alone_writes_and_tracks(torchrun: Torchrun, uninterrupted: Path) -> None:
    run_info = json.loads((uninterrupted / "run.json").read_text())
    assert run_info["world"] == {"strategy": "ddp", "processes": 2, "replicas": 2}
    assert sorted(path.name for path in uninterrupted.iterdir()) == sorted(
        ["checkpoints", "config.yaml", "curves.png", "metrics.json", "model.pt", "run.json"]
    )
    assert _runs(torchrun.store(uninterrupted)) == [(run_info["mlflow_run_id"], "FINISHED")]


def test_a_killed_rank_resumes_to_the_uninterrupted_result(torchrun: Torchrun, uninterrupted: Path) -> None:
    output_dir = torchrun.home / "killed"
    launcher = torchrun.start(output_dir)
    try:
        _wait_for(lambda: len(list((output_dir / "checkpoints").glob("epoch-*.npz"))) >= 2, launcher)
        os.kill(_rank_pid(launcher.pid, rank=1), signal.SIGKILL)
        launcher.communicate(timeout=TIMEOUT_S)
    finally:
        launcher.kill()
    assert launcher.returncode != 0
    assert not (output_dir / "metrics.json").exists(), "the kill came too late to test a resume"

    resumed = torchrun.run(output_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (output_dir / "model.pt").read_bytes() == (uninterrupted / "model.pt").read_bytes()
    assert json.loads((output_dir / "metrics.json").read_text()) == json.loads(
        (uninterrupted / "metrics.json").read_text()
    )
    run_id = json.loads((output_dir / "run.json").read_text())["mlflow_run_id"]
    assert _runs(torchrun.store(output_dir)) == [(run_id, "FINISHED")]


def test_a_resume_on_another_world_size_is_refused_in_one_line(torchrun: Torchrun, uninterrupted: Path) -> None:
    result = torchrun.run(uninterrupted, "--resume", f"training.epochs={EPOCHS + 1}", processes=1)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: --resume: {uninterrupted} was trained on 2 replica(s), this launch has 1; the batches each replica "
        "sees, and so the results, depend on it: relaunch on 2"
    ], result.stderr[-3000:]


def test_distributed_without_torchrun_is_one_line(installed_project, tmp_path: Path) -> None:
    project, env = installed_project("pytorch")
    result = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "train.py", "--output-dir", str(tmp_path / "run"), *FAST],
        cwd=project, env={**env, "HOME": str(tmp_path)}, capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: distributed.enabled=true needs torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, "
            "MASTER_PORT unset): launch with `make train-distributed NPROC=N`"
        )
    ), result.stderr[-3000:]


def _wait_for(condition, process: subprocess.Popen[str], timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert process.poll() is None, f"torchrun ended first: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def _rank_pid(torchrun_pid: int, rank: int) -> int:
    """The worker torchrun started with RANK=`rank` (its environment says which it is)."""
    children = Path(f"/proc/{torchrun_pid}/task/{torchrun_pid}/children").read_text().split()
    for pid in children:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return int(pid)
    raise AssertionError(f"no rank {rank} among torchrun's children {children}")
