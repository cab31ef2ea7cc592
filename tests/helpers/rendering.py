"""Rendering the template: a snapshot of the working tree, one combination's project, the matrix as test params."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

import pytest

from matrix import REPO, all_combos, fast_sample


def snapshot_template(destination: Path) -> Path:
    """The working tree as git would commit it (uncommitted edits included), without .git.

    Rendering from a plain folder skips copier's clone of the repo: the matrix renders ~2x faster.
    """
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return destination


def render(template: Path, destination: Path, answers: dict[str, Any]) -> Path:
    from copier import run_copy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(template), destination, data=answers, defaults=True, quiet=True, unsafe=False)
    return destination


def combo_params() -> list[Any]:
    """Every combination; those outside matrix.fast_sample are marked slow (the fast tier stays under a minute)."""
    combos = all_combos()
    fast = set(fast_sample(combos))
    return [pytest.param(c, id=c.id, marks=() if c in fast else pytest.mark.slow) for c in combos]
