"""Command line: `python train.py --config FILE --seed N [--output-dir DIR] [--resume] [KEY=VALUE ...]`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from . import interrupts
from .config import default_output_dir, load_config
from .errors import Terminated, reports_user_errors
from .settings import load_settings
from .tracking import ensure_reachable
from .writable import ensure_writable


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Train a model reproducibly from a YAML config.")
    parser.add_argument("--config", type=Path, default=Path("configs/baseline.yaml"), help="YAML config file")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument("--output-dir", type=Path, help="run directory (default: OUTPUT_DIR/EXPERIMENT-seedSEED)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir from its checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    # Intermixed: overrides may come before and after options (`a=1 --resume b=2`), as launch scripts append them.
    return parser.parse_intermixed_args(argv)


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Train; exit 0, 2 for a problem the user can fix, 130 after Ctrl-C, 143 after SIGTERM (128 + signal)."""
    args = parse_args(argv)
    # SIGTERM raises like Ctrl-C, so the run is closed as KILLED in MLflow instead of left RUNNING forever.
    try:
        with interrupts.handled():
            return _train(args)
    except Terminated:
        print("error: terminated (SIGTERM); continue the run with --resume", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("error: interrupted; continue the run with --resume", file=sys.stderr)
        return 128 + signal.SIGINT


def _train(args: argparse.Namespace) -> int:
    settings = load_settings()
    # DATA_DIR / OUTPUT_DIR from the environment come first, so KEY=VALUE on the command line wins.
    config = load_config(args.config, [*settings.config_overrides(), *args.overrides], seed=args.seed)
    output_dir = args.output_dir or default_output_dir(config)
    # Checked before the framework loads: it takes seconds, and TensorFlow logs to stderr as it imports.
    ensure_writable(output_dir, "output folder")
    ensure_reachable(settings.MLFLOW_TRACKING_URI)
    from .runner import train

    result = train(config, settings, output_dir, resume=args.resume)
    final = result.metrics["final"]
    print(f"test_accuracy={final['test_accuracy']:.4f} test_loss={final['test_loss']:.4f} -> {result.output_dir}")
    return 0
