"""Overhead of the generated training loop over a bare loop (same model, data, epochs), MLflow on.

    python benchmarks/train_overhead.py --project DIR [--runs 5] [--epochs 30]

DIR is a rendered project with its environment installed (`make install`); the timing runs in that
project's `.venv`. Both loops run warm in one process (MLflow imported, its store created), so the
ratio measures the cost of checkpoints, tracking, provenance and the plot, not start-up; a run of a
third of the epochs splits that into a once-per-run part and a per-epoch part (what long runs pay).
With a GPU, it also times deterministic against non-deterministic kernels. Target: ratio <= 1.10.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

INNER = Path(__file__).with_name("_train_overhead_inner.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, required=True, help="rendered project with .venv installed")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--python", help="interpreter with the project's dependencies (default: DIR/.venv)")
    args = parser.parse_args()
    python = args.python or str(args.project / ".venv" / "bin" / "python")
    command = [python, str(INNER), str(args.project), str(args.runs), str(args.epochs)]
    env = {"PYTHONPATH": str(args.project / "src"), "PYTHONHASHSEED": "0", "PATH": "/usr/bin:/bin"}
    sys.exit(subprocess.run(command, env=env, cwd=args.project, check=False).returncode)


if __name__ == "__main__":
    main()
