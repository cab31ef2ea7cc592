"""`python -m <package>.evaluate`: score a finished run on the prepared test split (the DVC `evaluate` stage).

Writes `metrics.json` (test accuracy and loss, and the worst class's accuracy) and `per_class.json`
(accuracy per class, for `dvc plots`). The model comes from the run's last checkpoint, so this works
for every framework; on CPU the numbers equal the run's own `final.test_*` metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import checkpoint, prepare
from .config import load_config
from .data import Split
from .errors import UserError


def evaluate(run_dir: Path, data_dir: Path) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Overall test metrics and per-class accuracy of the model in `run_dir`, on `data_dir`'s test split."""
    saved = checkpoint.load(run_dir / "checkpoints")
    if saved is None or not (run_dir / "metrics.json").exists():
        raise UserError(f"{run_dir}: no finished run to evaluate; run `dvc repro train`")
    config = load_config(run_dir / "config.yaml")
    dataset = prepare.load(data_dir)
    # The framework is imported only now: it takes seconds, and a missing run should not wait for it.
    from . import engine, seeding

    seeding.seed_everything(config.seed, config.deterministic)
    trainer = engine.Trainer(config, dataset.num_features, dataset.num_classes)
    trainer.load_state(saved["trainer"])
    test = dataset.test
    overall = trainer.evaluate(test)
    per_class = []
    for label in range(dataset.num_classes):
        mask = test.labels == label
        if mask.any():
            scores = trainer.evaluate(Split(test.features[mask], test.labels[mask]))
            per_class.append({"class": label, "accuracy": scores["accuracy"], "support": int(mask.sum())})
    metrics = {
        "test_accuracy": overall["accuracy"],
        "test_loss": overall["loss"],
        "worst_class_accuracy": min(row["accuracy"] for row in per_class),
    }
    return metrics, per_class


def _write(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate a finished run on the prepared test split.")
    parser.add_argument("--run-dir", type=Path, required=True, help="a run folder written by train.py")
    parser.add_argument("--data-dir", type=Path, default=Path("data/processed"), help="written by the prepare stage")
    parser.add_argument("--output-dir", type=Path, required=True, help="gets metrics.json and per_class.json")
    args = parser.parse_args(argv)
    try:
        metrics, per_class = evaluate(args.run_dir, args.data_dir)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.output_dir.mkdir(parents=True, exist_ok=True)
    _write(args.output_dir / "metrics.json", metrics)
    _write(args.output_dir / "per_class.json", per_class)
    print(" ".join(f"{key}={value:.4f}" for key, value in metrics.items()) + f" -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
