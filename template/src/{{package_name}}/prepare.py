"""`python -m <package>.prepare`: write the splits training uses to data/processed (the DVC `prepare` stage).

The splits are the ones `data.load_dataset` builds from the config's `data` section and `seed`; training
reads them back (data.load_training_data), so DVC versions exactly the data a run saw, a change here
reaches training, and `evaluate` scores a model on the stored test split.
Bring your own data: read it from data/raw here and write it with `save`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .config import load_config
from .data import MANIFEST, SPLITS, Dataset, Split, load_dataset, load_prepared, source
from .errors import UserError
from .settings import load_settings


def save(dataset: Dataset, folder: Path, source: dict[str, object]) -> Path:
    """Write each split as .npy arrays (byte-identical on every run, unlike .npz) and a manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        split: Split = getattr(dataset, name)
        np.save(folder / f"{name}_features.npy", split.features)
        np.save(folder / f"{name}_labels.npy", split.labels)
    manifest = {
        **source,
        "num_features": dataset.num_features,
        "num_classes": dataset.num_classes,
        "sizes": {name: len(getattr(dataset, name).labels) for name in SPLITS},
    }
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def load(folder: Path) -> Dataset:
    """The splits `save` wrote; a missing file is one line."""
    try:
        return load_prepared(folder)
    except (FileNotFoundError, KeyError) as error:
        missing = Path(error.filename).name if isinstance(error, FileNotFoundError) else MANIFEST
        raise UserError(f"{folder}: no prepared data ({missing} missing); run `dvc repro prepare`") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the train/val/test splits of a config to a folder.")
    parser.add_argument("--config", type=Path, default=Path("configs/baseline.yaml"), help="YAML config file")
    parser.add_argument("--output-dir", type=Path, help="default: DATA_DIR (or the config's paths.data_dir)/processed")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
        config = load_config(args.config, settings.config_overrides())
        output_dir = args.output_dir or Path(config.paths.data_dir) / "processed"
        dataset = load_dataset(config.data, config.seed)
        save(dataset, output_dir, source(config))
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    sizes = ", ".join(f"{name}={len(getattr(dataset, name).labels)}" for name in SPLITS)
    print(f"{config.data.dataset}: {sizes} -> {output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
