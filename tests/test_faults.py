"""Faults a long training run meets, injected for real into each framework's default project (slow tier).

Each test trains the installed default project in subprocesses, breaks something for real (a size-limited tmpfs, a
truncated or bit-flipped checkpoint file, SIGTERM, a tracking server killed mid-run), and checks that the run says
one thing, keeps its files, and finishes with exactly the numbers of an uninterrupted run. The table of outcomes is
printed at the end of the session (README, "Reliability", repeats it).
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers import net
from helpers.net import free_port, mlflow_artifacts, request

pytestmark = pytest.mark.slow
FRAMEWORKS = ["pytorch", "tensorflow", "jax"]
EPOCHS = 8


class Project:
    """An installed default project, trained in subprocesses with its own .venv and a private MLflow store."""

    def __init__(self, framework: str, root: Path, env: dict[str, str]) -> None:
        self.framework, self.root, self.env = framework, root, env
        self.python = str(root / ".venv" / "bin" / "python")

    def tracked_by(self, uri: str) -> Project:
        return Project(self.framework, self.root, {**self.env, "MLFLOW_TRACKING_URI": uri})

    def command(self, output_dir: Path, *extra: str) -> list[str]:
        return [
            self.python, "train.py", "--config", "configs/baseline.yaml",
            "--seed", "42", "--output-dir", str(output_dir), f"training.epochs={EPOCHS}", *extra,
        ]  # fmt: skip

    def train(self, output_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(output_dir, *extra), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=900
        )

    def start(self, output_dir: Path, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.command(output_dir, *extra), cwd=self.root, env=self.env, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip


def checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / "checkpoints"
    return sorted(folder.glob("epoch-*.npz")) if folder.is_dir() else []


def epochs_checkpointed(output_dir: Path) -> int:
    found = checkpoints(output_dir)
    return int(found[-1].stem.removeprefix("epoch-")) if found else 0


def final(output_dir: Path) -> dict[str, float]:
    return json.loads((output_dir / "metrics.json").read_text())["final"]


def wait_for(condition: Callable[[], bool], process: subprocess.Popen[str], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"training ended or stalled first:\n{process.stderr.read()[-3000:] if process.stderr else ''}")
        time.sleep(0.002)


def one_line(stderr: str) -> str:
    """stderr must be one line (warnings of the framework aside): the message a user reads."""
    lines = messages(stderr)
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def fault_table(request: pytest.FixtureRequest) -> Iterator[list[tuple[str, ...]]]:
    rows: list[tuple[str, ...]] = []
    yield rows
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and rows:  # a Markdown table, as README.md's "Reliability" repeats it
        header = ("framework", "fault", "outcome", "epochs lost", "seconds to recover")
        widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
        reporter.write_line("")
        for row in [header, tuple("-" * width for width in widths), *rows]:
            cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            reporter.write_line(f"| {' | '.join(cells)} |")


@pytest.fixture(scope="module", params=FRAMEWORKS)
def project(request: pytest.FixtureRequest, installed_project) -> Project:
    return Project(request.param, *installed_project(request.param))


class TrackingServer:
    """The project's own `mlflow server` on 127.0.0.1, its store in a temporary folder; killed (its whole process
    group, as in a crash) and started again on the same store and port."""

    def __init__(self, project: Project, root: Path) -> None:
        self.uri = f"http://127.0.0.1:{free_port()}"
        self.command = [
            str(project.root / ".venv" / "bin" / "mlflow"), "server", "--host", "127.0.0.1",
            "--port", self.uri.rsplit(":", 1)[1], "--workers", "1", "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
            "--artifacts-destination", str(root / "artifacts"),
        ]  # fmt: skip
        # Without its job runner (a dozen worker processes this test has no use for) it starts in half the time.
        self.env, self.log = {**project.env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, root / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        net.wait_for(f"{self.uri}/health", self.process, self.log)

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.process = None

    def api(self, endpoint: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
        status, body = request(f"{self.uri}/api/2.0/mlflow/{endpoint}", data)
        assert status == 200, body
        return json.loads(body)

    def run(self, run_id: str) -> dict[str, Any]:
        """What the server holds of a run: status, params, each metric's history, artifacts and logged models."""
        run = self.api(f"runs/get?run_id={run_id}")["run"]
        histories = {
            metric["key"]: sorted(
                (point["step"], point["value"])
                for point in self.api(f"metrics/get-history?run_id={run_id}&metric_key={metric['key']}")["metrics"]
            )
            for metric in run["data"].get("metrics", [])
        }
        search = {"experiment_ids": [run["info"]["experiment_id"]], "filter": f"source_run_id = '{run_id}'"}
        models = self.api("logged-models/search", search).get("models", [])
        return {
            "status": run["info"]["status"],
            "params": {param["key"]: param["value"] for param in run["data"].get("params", [])},
            "metrics": histories,
            "artifacts": mlflow_artifacts(self.uri, run_id),
            "models": sorted((model["info"]["name"], model["info"]["status"]) for model in models),
        }


@pytest.fixture(scope="module")
def tracking_server(project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrackingServer]:
    server = TrackingServer(project, tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@dataclass(frozen=True)
class Reference:
    final: dict[str, float]
    run_id: str
    tail_s: float  # seconds from the first checkpoint to the run's end in MLflow (the process exits later)


@pytest.fixture(scope="module")
def reference(project: Project, tracking_server: TrackingServer, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The uninterrupted run every fault must end up equal to, logged to a server that never goes down."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    process = project.tracked_by(tracking_server.uri).start(output_dir)
    wait_for(lambda: epochs_checkpointed(output_dir) >= 1, process)
    first_checkpoint = time.time()
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    ended = tracking_server.api(f"runs/get?run_id={run_id(output_dir)}")["run"]["info"]["end_time"] / 1000
    return Reference(final(output_dir), run_id(output_dir), ended - first_checkpoint)


def run_id(output_dir: Path) -> str:
    return json.loads((output_dir / "run.json").read_text())["mlflow_run_id"]


def messages(stderr: str) -> list[str]:
    """The lines a user reads (error: / warning:); the framework's own warnings aside, and never a traceback."""
    assert "Traceback" not in stderr, stderr[-3000:]
    return [line for line in stderr.strip().splitlines() if line.startswith(("error:", "warning:"))]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """A tmpfs of a given size (root may mount one, as CI runs); unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: int) -> Path:
        folder = tmp_path / f"disk{len(mounted)}"
        folder.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_full_disk_is_one_line_and_resumes_exactly(
    project: Project, reference: Reference, small_disk, tmp_path: Path, fault_table
) -> None:
    probe = tmp_path / "probe"
    assert project.train(probe, "training.epochs=1").returncode == 0
    size = checkpoints(probe)[-1].stat().st_size
    disk = small_disk(int(size * 2.5))  # two checkpoints and run.json fit; a third, written before the first goes, not
    output_dir = disk / "run"
    failed = project.train(output_dir)
    assert failed.returncode == 75, failed.stderr[-3000:]
    message = one_line(failed.stderr)
    assert message.startswith(f"error: no space left on the device of {output_dir / 'checkpoints'}/epoch-0000"), message
    survivors = checkpoints(output_dir)
    assert len(survivors) == 2, survivors
    started = time.monotonic()
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)  # space freed
    resumed = project.train(output_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final(output_dir) == reference.final
    fault_table.append((project.framework, "disk full", "exit 75, one line", "0", f"{time.monotonic() - started:.1f}"))


@pytest.mark.parametrize("damage", ["truncated", "bit flip"])
def test_damaged_checkpoint_falls_back_and_resumes_exactly(
    project: Project, reference: Reference, damage: str, tmp_path: Path, fault_table
) -> None:
    output_dir = tmp_path / "run"
    process = project.start(output_dir)
    wait_for(lambda: epochs_checkpointed(output_dir) >= 3, process)  # the last two are kept: epochs 2 and 3
    process.send_signal(signal.SIGKILL)
    process.wait()
    newest = checkpoints(output_dir)[-1]
    payload = bytearray(newest.read_bytes())
    if damage == "truncated":
        payload = payload[: len(payload) // 2]
    else:
        payload[len(payload) // 2] ^= 0x10
    newest.write_bytes(bytes(payload))
    started = time.monotonic()
    resumed = project.train(output_dir, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    warning = one_line(resumed.stderr)
    assert warning.startswith(f"warning: damaged checkpoint skipped ({newest.name}: digest mismatch); using "), warning
    assert final(output_dir) == reference.final
    fault_table.append(
        (project.framework, f"checkpoint {damage}", "previous one used", "1", f"{time.monotonic() - started:.1f}")
    )


def test_no_usable_checkpoint_is_one_line(project: Project, tmp_path: Path, fault_table) -> None:
    output_dir = tmp_path / "run"
    assert project.train(output_dir, "training.epochs=2").returncode == 0
    for path in checkpoints(output_dir):
        path.write_bytes(path.read_bytes()[:100])
    refused = project.train(output_dir, "training.epochs=3", "--resume")
    assert refused.returncode == 2
    assert one_line(refused.stderr).startswith(f"error: no usable checkpoint in {output_dir / 'checkpoints'}: ")
    fault_table.append((project.framework, "every checkpoint damaged", "refused, one line", "all", "-"))


def lose_server(project: Project, server: TrackingServer, output_dir: Path) -> subprocess.Popen[str]:
    """Training logged to `server`, which is killed once the first checkpoint is on disk."""
    process = project.tracked_by(server.uri).start(output_dir)
    wait_for(lambda: epochs_checkpointed(output_dir) >= 1, process)
    server.stop()
    return process


def assert_went_away(line: str, server: TrackingServer, spool: Path) -> None:
    assert line.startswith(f"warning: MLflow server {server.uri} stopped answering (") and str(spool) in line, line


def test_tracking_outage_is_sent_when_the_server_is_back(
    project: Project, reference: Reference, tracking_server: TrackingServer, tmp_path: Path, fault_table
) -> None:
    output_dir = tmp_path / "run"
    spool = output_dir / "tracking-spool.jsonl"
    process = lose_server(project, tracking_server, output_dir)
    try:
        wait_for(lambda: epochs_checkpointed(output_dir) >= 3, process)  # epochs 2 and 3 logged while it is away
        # Training is held while the server starts (seconds), so that it is back before the run ends.
        process.send_signal(signal.SIGSTOP)
    finally:
        if tracking_server.process is None:
            tracking_server.start()
        process.send_signal(signal.SIGCONT)
    back = time.monotonic()
    wait_for(lambda: not spool.exists(), process)  # sent at the next log call
    recovered = time.monotonic() - back
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
    away, returned = messages(stderr)
    assert_went_away(away, tracking_server, spool)
    uri = re.escape(tracking_server.uri)
    assert re.fullmatch(
        rf"warning: MLflow server {uri} is back; sent metrics of steps? [\d-]+ kept meanwhile", returned
    ), returned
    assert final(output_dir) == reference.final
    assert tracking_server.run(run_id(output_dir)) == tracking_server.run(reference.run_id)
    fault_table.append(
        (project.framework, "tracking server down", "sent when back, 2 warnings", "0", f"{recovered:.1f}")
    )


def test_tracking_down_at_the_end_is_one_line_and_replayed(
    project: Project, reference: Reference, tracking_server: TrackingServer, tmp_path: Path, fault_table
) -> None:
    output_dir = tmp_path / "run"
    spool = output_dir / "tracking-spool.jsonl"
    try:
        process = lose_server(project, tracking_server, output_dir)
        _, stderr = process.communicate(timeout=900)
    finally:
        if tracking_server.process is None:
            tracking_server.start()
    assert process.returncode == 0, stderr[-3000:]  # the run's own files are complete
    away, still_away = messages(stderr)
    assert_went_away(away, tracking_server, spool)
    uri = re.escape(tracking_server.uri)
    kept = (
        rf"warning: MLflow server {uri} is still unreachable; metrics of steps \d-{EPOCHS}, 5 artifacts, the model, "
        rf"status FINISHED of run {run_id(output_dir)} are kept in {re.escape(str(spool))}; once it is back, send them "
        rf"with: MLFLOW_TRACKING_URI={uri} \S+ -m \w+\.tracking replay {re.escape(str(output_dir))}"
    )
    assert re.fullmatch(kept, still_away), still_away
    assert final(output_dir) == reference.final
    assert tracking_server.run(run_id(output_dir))["status"] == "RUNNING"  # until the replay says otherwise
    spooled = spool.read_bytes()

    variable, *command = shlex.split(still_away.split("send them with: ", 1)[1])  # URI=... PYTHON -m ... replay DIR
    assert command[0] == project.python

    def run_replay() -> subprocess.CompletedProcess[str]:
        env = {**project.env, **dict([variable.split("=", 1)])}
        return subprocess.run(command, cwd=project.root, env=env, capture_output=True, text=True, timeout=600)

    started = time.monotonic()
    replayed = run_replay()
    recovered = time.monotonic() - started
    assert replayed.returncode == 0 and "Traceback" not in replayed.stderr, replayed.stderr[-3000:]
    assert replayed.stdout.strip().endswith(f"of run {run_id(output_dir)} to {tracking_server.uri}"), replayed.stdout
    assert not spool.exists()
    assert tracking_server.run(run_id(output_dir)) == tracking_server.run(reference.run_id)

    # Sending the same records again (a replay cut short and run again) changes nothing on the server.
    spool.write_bytes(spooled)
    again = run_replay()
    assert again.returncode == 0, again.stderr[-3000:]
    assert tracking_server.run(run_id(output_dir)) == tracking_server.run(reference.run_id)
    nothing = run_replay()
    assert nothing.returncode == 0 and nothing.stdout.startswith("nothing to send: "), nothing.stdout
    fault_table.append(
        (project.framework, "tracking down at the end", "exit 0, replay command", "0", f"{recovered:.1f}")
    )


def test_sigterm_at_a_random_moment_resumes_exactly(
    project: Project, reference: Reference, tracking_server: TrackingServer, tmp_path: Path, fault_table
) -> None:
    seed = int(os.environ.get("FAULTS_SEED", time.time_ns() % 2**32))
    # In training or finishing, mostly (the reference, the server's first run, is a little slower); a signal after
    # the end is checked as well.
    delay = random.Random(seed).uniform(0, reference.tail_s)  # noqa: S311 - a schedule, not a secret
    print(f"\nSIGTERM {delay:.3f} s after the first checkpoint (reproduce with FAULTS_SEED={seed})")
    output_dir = tmp_path / "run"
    served = project.tracked_by(tracking_server.uri)
    process = served.start(output_dir)
    wait_for(lambda: epochs_checkpointed(output_dir) >= 1, process)
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=900)
    killed = tracking_server.run(run_id(output_dir))
    if process.returncode == 0 or killed["status"] == "FINISHED":  # the signal came after the run had ended
        assert final(output_dir) == reference.final
        fault_table.append((project.framework, "SIGTERM after the end", "finished first", "0", "-"))
        return
    assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert one_line(stderr) == "error: terminated (SIGTERM); continue the run with --resume"
    assert killed["status"] == "KILLED"
    killed_id, in_progress = run_id(output_dir), int(epochs_checkpointed(output_dir) < EPOCHS)
    started = time.monotonic()
    resumed = served.train(output_dir, "--resume")
    recovered = time.monotonic() - started
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert final(output_dir) == reference.final
    assert run_id(output_dir) == killed_id  # the same MLflow run, continued
    assert tracking_server.run(run_id(output_dir)) == tracking_server.run(reference.run_id)
    fault_table.append(
        (project.framework, "SIGTERM at random", "KILLED, resumed", str(in_progress), f"{recovered:.1f}")
    )
