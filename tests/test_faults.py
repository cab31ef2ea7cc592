"""Faults a long training run meets, injected for real into each framework's default project (slow tier).

Each test trains the installed default project in subprocesses, breaks something for real (a size-limited tmpfs, a
truncated or bit-flipped checkpoint file, SIGTERM, a tracking server killed mid-run), and checks that the run says
one thing, keeps its files, and finishes with exactly the numbers of an uninterrupted run. The table of outcomes is
printed at the end of the session (README, "Reliability", repeats it).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
FRAMEWORKS = ["pytorch", "tensorflow", "jax"]
EPOCHS = 8


class Project:
    """An installed default project, trained in subprocesses with its own .venv and a private MLflow store."""

    def __init__(self, framework: str, root: Path, env: dict[str, str]) -> None:
        self.framework, self.root, self.env = framework, root, env

    def command(self, output_dir: Path, *extra: str) -> list[str]:
        return [
            str(self.root / ".venv" / "bin" / "python"), "train.py", "--config", "configs/baseline.yaml",
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
    lines = [line for line in stderr.strip().splitlines() if line.startswith(("error:", "warning:"))]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def fault_table(request: pytest.FixtureRequest) -> Iterator[list[tuple[str, ...]]]:
    rows: list[tuple[str, ...]] = []
    yield rows
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and rows:
        header = ("framework", "fault", "outcome", "epochs lost", "seconds to recover")
        reporter.write_line("")
        for row in [header, *rows]:
            reporter.write_line(" | ".join(f"{cell:<18}" for cell in row))


@pytest.fixture(scope="module", params=FRAMEWORKS)
def project(request: pytest.FixtureRequest, installed_project) -> Project:
    return Project(request.param, *installed_project(request.param))


@pytest.fixture(scope="module")
def reference(project: Project, tmp_path_factory: pytest.TempPathFactory) -> dict[str, float]:
    """The uninterrupted run every fault must end up equal to."""
    output_dir = tmp_path_factory.mktemp("reference") / "run"
    result = project.train(output_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    return final(output_dir)


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
    project: Project, reference: dict[str, float], small_disk, tmp_path: Path, fault_table
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
    assert final(output_dir) == reference
    fault_table.append((project.framework, "disk full", "exit 75, one line", "0", f"{time.monotonic() - started:.1f}"))


@pytest.mark.parametrize("damage", ["truncated", "bit flip"])
def test_damaged_checkpoint_falls_back_and_resumes_exactly(
    project: Project, reference: dict[str, float], damage: str, tmp_path: Path, fault_table
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
    assert final(output_dir) == reference
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
