"""Setup time per dependency manager: from a freshly rendered default project to an installed environment.

    python benchmarks/setup_time.py [--runs 3] [--managers pip uv poetry conda]

Each run renders the default PyTorch/CPU project (its torch index pointed at a local PEP 503 index holding the
CPU wheel, as the tests do), then times `make lock` and `make install`. Download caches stay warm between runs
(the machine's pip/uv/Poetry caches), so the figures compare the managers' own work, not the network.
Prints the median of each step and its ratio to pip. Target (issue 7): uv at least 5x faster than pip.
conda runs only where micromamba and conda-lock are installed and conda-forge is reachable.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))

from helpers.rendering import render, snapshot_template  # noqa: E402
from helpers.wheels import find_torch_cpu_wheel, index_url, serve_wheel_index  # noqa: E402
from matrix import FRAMEWORKS  # noqa: E402

UV_TARGET = 5.0


def serve_torch_index(root: Path) -> str:
    """The CPU torch wheel behind a PEP 503 index on 127.0.0.1 (as tests/conftest.py's local_wheel_index)."""
    wheel = find_torch_cpu_wheel(FRAMEWORKS["pytorch"]["version"])
    if wheel is None:
        sys.exit("no CPU torch wheel in pip's find-links folders: run the tests once, or set PIP_FIND_LINKS")
    return index_url(serve_wheel_index(wheel, root))


def tool(name: str) -> str:
    local = BIN / name
    return str(local) if local.exists() else shutil.which(name) or name


def available(manager: str) -> bool:
    if manager == "conda":
        return all(shutil.which(name) for name in ("micromamba", "conda-lock"))
    return manager == "pip" or Path(tool(manager)).exists() or shutil.which(manager) is not None


def timed_make(project: Path, target: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        ["make", target, f"PYTHON={sys.executable}", f"UV={tool('uv')}", f"POETRY={tool('poetry')}"],
        cwd=project, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"make {target} failed in {project}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start


def one_run(template: Path, manager: str, index: str, work: Path) -> tuple[float, float]:
    answers = {
        "manager": manager,
        "python_version": f"{sys.version_info.major}.{sys.version_info.minor}",
    }
    project = render(template, work / manager / "project", {**answers, "framework_index_url": index})
    if manager == "poetry":  # this machine's PyPI proxy has no JSON API: see tests/test_locks.py
        with (project / "pyproject.toml").open("a") as pyproject:
            pyproject.write('\n[[tool.poetry.source]]\nname = "pypi-simple"\nurl = "https://pypi.org/simple/"\n')
            pyproject.write('priority = "primary"\n')
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    lock = timed_make(project, "lock", env)
    install = timed_make(project, "install", env)
    shutil.rmtree(work / manager)
    return lock, install


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--managers", nargs="+", default=["pip", "uv", "poetry", "conda"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        template = snapshot_template(work / "template")
        index = serve_torch_index(work / "index")
        medians: dict[str, tuple[float, float]] = {}
        for manager in args.managers:
            if not available(manager):
                print(f"{manager:>6}: skipped (not installed here)")
                continue
            runs = [one_run(template, manager, index, work) for _ in range(args.runs)]
            medians[manager] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
            )
            lock, install = medians[manager]
            print(f"{manager:>6}: lock {lock:6.1f} s  install {install:6.1f} s  total {lock + install:6.1f} s"
                  f"  (median of {args.runs})", flush=True)  # fmt: skip
    if "pip" not in medians:
        return
    base = sum(medians["pip"])
    print(f"\nratio to pip (total time; >1 = faster than pip), target uv >= {UV_TARGET:.0f}x:")
    for manager, (lock, install) in medians.items():
        print(f"{manager:>6}: {base / (lock + install):5.2f}x  (install alone: {medians['pip'][1] / install:5.2f}x)")


if __name__ == "__main__":
    main()
