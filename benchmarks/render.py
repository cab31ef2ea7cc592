"""Render timings: CLI `copier copy --defaults`, an in-process render, and the full matrix with checks.

    python benchmarks/render.py [--runs 5] [--matrix-runs 1]

Prints medians and their ratio to the targets (2-core machine: CLI <= 1.0 s, full matrix <= 60 s).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(REPO / "tests"))

from timing import median_seconds  # noqa: E402

from conftest import render, snapshot_template  # noqa: E402

CLI_TARGET_S, MATRIX_TARGET_S = 1.0, 60.0


def cli_copy() -> None:
    with tempfile.TemporaryDirectory() as destination:
        subprocess.run(
            [str(BIN / "copier"), "copy", "--quiet", "--defaults", "--vcs-ref", "HEAD", str(REPO), f"{destination}/p"],
            check=True, capture_output=True,
        )  # fmt: skip


def in_process(template: Path) -> None:
    with tempfile.TemporaryDirectory() as destination, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        render(template, Path(destination) / "p", {})


def full_matrix() -> None:
    subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests/test_matrix.py"], cwd=REPO, check=True,
        capture_output=True,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--matrix-runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        template = snapshot_template(Path(folder))
        rows = [
            ("copier copy --defaults (CLI process)", median_seconds(cli_copy, args.runs), CLI_TARGET_S),
            ("in-process render (run_copy)", median_seconds(lambda: in_process(template), args.runs), None),
            ("full matrix: render + static checks", median_seconds(full_matrix, args.matrix_runs), MATRIX_TARGET_S),
        ]
    for name, seconds, target in rows:
        verdict = f"  {seconds / target:.2f} x target ({target:.0f} s)" if target else ""
        print(f"{name:40s} median {seconds:7.2f} s{verdict}")


if __name__ == "__main__":
    main()
