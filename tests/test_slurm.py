"""slurm/train.sbatch on a real one-node Slurm cluster (tests/helpers/slurm.py): the default PyTorch project's
script, submitted as its header says, runs torchrun under srun with a c10d rendezvous, 2 processes on this host.

One job runs through; a second is told its time limit is near (the USR1 its `--signal` asks for), requeues itself,
and its next start continues the run with --resume: both end with the same numbers.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.net import free_port
from helpers.slurm import ENDED, Cluster, install

pytestmark = pytest.mark.slow

# Small enough for 2 cores, long enough (seconds an epoch: a wide model, small batches) for the requeue to land
# mid-run, after the first checkpoint and before the last epoch.
OVERRIDES = ["data.dataset=synthetic", "training.epochs=3", "training.batch_size=2", "model.hidden_sizes=[1024,1024]"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    apt_seconds = install()
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    started = time.monotonic()
    try:
        cluster.start()
        print(f"slurm: apt-get {apt_seconds:.0f} s, daemons up in {time.monotonic() - started:.1f} s")
        yield cluster
    finally:
        cluster.stop()


def _submit(
    cluster: Cluster, project: Path, env: dict[str, str], run_dir: Path, overrides: list[str] = OVERRIDES
) -> str:
    # The job inherits this environment (sbatch --export=ALL): HOME, the tracking URI, RUN_DIR, PORT.
    env = {**env, **cluster.env, "RUN_DIR": str(run_dir), "PORT": str(free_port()), "GLOO_SOCKET_IFNAME": "lo"}
    # The log beside the run, not in the (shared) project folder; `#SBATCH` lines give way to the command line.
    log = run_dir.parent / f"{run_dir.name}-%j.out"
    command = ["sbatch", "--parsable", f"--output={log}", "slurm/train.sbatch", *overrides]
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"sbatch: {result.stderr}\n{cluster.logs()}"
    return result.stdout.strip().split(";")[0]  # --parsable: JOBID[;CLUSTER]


def _log(run_dir: Path, job_id: str) -> str:
    return (run_dir.parent / f"{run_dir.name}-{job_id}.out").read_text()


def _finished(cluster: Cluster, run_dir: Path, job_id: str) -> dict[str, str]:
    job = cluster.wait(job_id, ENDED, timeout_s=150)
    log = _log(run_dir, job_id)
    assert job["JobState"] == "COMPLETED", f"job {job_id}: {job['JobState']} {job['ExitCode']}\n{log[-4000:]}"
    return job


def test_sbatch_script_trains_on_two_processes_and_requeues_to_resume(
    cluster: Cluster, installed_project, tmp_path: Path
) -> None:
    project, env = installed_project("pytorch")

    started = time.monotonic()
    through = tmp_path / "through"
    _finished(cluster, through, _submit(cluster, project, env, through))
    print(f"slurm: the job ran through in {time.monotonic() - started:.0f} s")
    metrics = json.loads((through / "metrics.json").read_text())
    losses = [row["train_loss"] for row in metrics["epochs"]]
    assert losses[-1] < losses[0], losses
    world = json.loads((through / "run.json").read_text())["world"]
    assert (world["processes"], world["replicas"]) == (2, 2), world

    requeued = tmp_path / "requeued"
    job_id = _submit(cluster, project, env, requeued)
    deadline = time.monotonic() + 120
    while not list((requeued / "checkpoints").glob("epoch-*.npz")):
        assert cluster.job(job_id)["JobState"] not in ENDED, _log(requeued, job_id)[-4000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    cluster("scancel", "--batch", "--signal=USR1", job_id)  # what --signal=B:USR1@120 sends near the time limit
    cluster.wait(job_id, {"PENDING"}, timeout_s=60)
    assert not (requeued / "metrics.json").exists(), "the run finished before the requeue: raise training.epochs"
    cluster("scontrol", "update", f"JobId={job_id}", "StartTime=now")  # a requeued job otherwise waits ~2 min
    job = _finished(cluster, requeued, job_id)
    print(f"slurm: both jobs done {time.monotonic() - started:.0f} s after the first was submitted")
    assert job["Restarts"] == "1", job
    log = _log(requeued, job_id)
    assert f"continuing the run in {requeued}" in log, log[-4000:]
    assert len(json.loads((requeued / "run.json").read_text())["resumes"]) == 1
    assert json.loads((requeued / "metrics.json").read_text()) == metrics, "the requeued run ended elsewhere"
    # One MLflow run across both starts: KILLED by the requeue, then continued to FINISHED, each epoch logged once.
    run_id = json.loads((requeued / "run.json").read_text())["mlflow_run_id"]
    query = (
        "import json, sys, mlflow; run = mlflow.get_run(sys.argv[1]); history = mlflow.MlflowClient()"
        ".get_metric_history(run.info.run_id, 'train_loss'); print(json.dumps([run.info.status, len(history)]))"
    )
    found = subprocess.run([project / ".venv/bin/python", "-c", query, run_id], env=env, capture_output=True,
                           text=True, timeout=120, check=True)  # fmt: skip
    assert json.loads(found.stdout.splitlines()[-1]) == ["FINISHED", len(metrics["epochs"])]


@pytest.mark.parametrize("framework", ["jax", "tensorflow"])
def test_sbatch_script_runs_one_task_per_process(cluster: Cluster, installed_project, framework: str, tmp_path: Path):
    """JAX and TensorFlow: srun starts the 2 processes, each finds its place from Slurm's variables itself."""
    project, env = installed_project(framework)
    run_dir = tmp_path / "run"
    _finished(
        cluster, run_dir, _submit(cluster, project, env, run_dir, ["data.dataset=synthetic", "training.epochs=3"])
    )
    losses = [row["train_loss"] for row in json.loads((run_dir / "metrics.json").read_text())["epochs"]]
    assert losses[-1] < losses[0], losses
    world = json.loads((run_dir / "run.json").read_text())["world"]
    assert (world["processes"], world["replicas"]) == (2, 2), world
