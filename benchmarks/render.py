"""Render timings: CLI `copier copy --defaults`, an in-process render, and the full matrix with checks.

    python benchmarks/render.py [--runs 7] [--matrix-runs 1]

Prints medians, the CLI copy's ratio to copier's floor (a one-question, one-file template copied by the same
copier in the same run, so the ratio holds on any machine; aim <= 1.2) and the full matrix against 60 s.
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

from helpers.rendering import render, snapshot_template  # noqa: E402

MATRIX_TARGET_S = 60.0


def cli_copy(template: Path) -> None:
    with tempfile.TemporaryDirectory() as destination:
        subprocess.run(
            [str(BIN / "copier"), "copy", "--quiet", "--defaults", str(template), f"{destination}/p"],
            check=True, capture_output=True,
        )  # fmt: skip


def floor_template(folder: Path) -> Path:
    """copier's floor: one question, one templated file (a plain folder, as the template's snapshot is)."""
    (folder / "copier.yml").write_text("name:\n  type: str\n  default: floor\n")
    (folder / "{{ name }}.txt.jinja").write_text("{{ name }}\n")
    return folder


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
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--matrix-runs", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as floor_folder:
        template, floor = snapshot_template(Path(folder)), floor_template(Path(floor_folder))
        cli_floor = median_seconds(lambda: cli_copy(floor), args.runs)
        cli = median_seconds(lambda: cli_copy(template), args.runs)
        rows = [
            ("copier's floor (one question, one file)", cli_floor, ""),
            ("copier copy --defaults (CLI process)", cli, f"  {cli / cli_floor:.2f} x floor (aim 1.20)"),
            ("in-process render (run_copy)", median_seconds(lambda: in_process(template), args.runs), ""),
        ]
        if args.matrix_runs:
            matrix = median_seconds(full_matrix, args.matrix_runs)
            rows.append(("full matrix: render + static checks", matrix, f"  {matrix / MATRIX_TARGET_S:.2f} x 60 s"))
    for name, seconds, verdict in rows:
        print(f"{name:40s} median {seconds:7.2f} s{verdict}")


if __name__ == "__main__":
    main()
