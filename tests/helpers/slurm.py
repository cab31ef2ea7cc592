"""A one-node Slurm cluster on 127.0.0.1: Debian's slurm-wlm daemons and munge, every file in a temporary folder.

This host is the one compute node (as many CPUs as it has). No cgroups are needed: processes are tracked through
/proc (proctrack/linuxproc) and not bound to CPUs (task/none); no accounting database, so jobs are followed with
`scontrol show job` (a job's record stays MinJobAge seconds after it ends).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers.net import free_port
from helpers.tools import debian_packages

DEBIAN_PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def install() -> float:
    """The daemons and clients from Debian when missing (needs root, as in CI); the seconds apt took."""
    return debian_packages(DEBIAN_PACKAGES, "slurmctld", "slurmd", "sbatch", "munged")


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.munge = root / "munge"
        for folder in (self.munge, root / "state", root / "spool", root / "log"):
            folder.mkdir(parents=True, mode=0o700)
        self.socket = self.munge / "socket"
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _config(self, node: str) -> str:
        return "\n".join([
            "ClusterName=test",
            f"SlurmctldHost={node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "MinJobAge=600",
            f"NodeName={node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} State=UNKNOWN",
            "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]) + "\n"  # fmt: skip

    def start(self) -> None:
        """munged, slurmctld and slurmd (each daemonizes), then until the node takes jobs."""
        key = self.munge / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        subprocess.run(
            ["munged", "--force", f"--key-file={key}", f"--socket={self.socket}",
             f"--pid-file={self.munge / 'munged.pid'}", f"--log-file={self.munge / 'munged.log'}",
             f"--seed-file={self.munge / 'seed'}"],
            check=True, timeout=30,
        )  # fmt: skip
        # slurmd names its node after the host; the controller and the node share 127.0.0.1.
        self.conf.write_text(self._config(os.uname().nodename.split(".")[0]))
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], env=self.env, check=True, timeout=30)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            state = self("sinfo", "--noheader", "--format=%t", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        pytest.fail(f"the Slurm node never became idle:\n{self.logs()}")

    def stop(self) -> None:
        """Every daemon, each by the pid it wrote; a daemon still there after 30 s is killed."""
        pids = [int(path.read_text()) for path in self.root.rglob("*.pid") if path.read_text().strip()]
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in pids:
            _signal(pid, signal.SIGKILL)

    def __call__(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(command)} exited {result.returncode}: {result.stderr}\n{self.logs()}")
        return result

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job`'s KEY=VALUE fields (JobState, Restarts, ExitCode, ...)."""
        return dict(re.findall(r"(\w+)=(\S*)", self("scontrol", "show", "job", job_id).stdout))

    def wait(self, job_id: str, states: set[str], timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["JobState"] in states:
                return job
            time.sleep(0.5)
        pytest.fail(f"job {job_id} not {states} within {timeout_s} s: {self.job(job_id)}\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-2000:]}" for path in sorted(self.root.glob("log/*")))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _signal(pid: int, number: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, number)
