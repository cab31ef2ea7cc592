"""The template's own Python (tests, scripts, benchmarks, framework engines) is ruff-clean (ruff.toml)."""

from __future__ import annotations

import subprocess

import pytest

from helpers.tools import tool
from matrix import REPO


@pytest.mark.parametrize("command", [["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]])
def test_template_code_is_ruff_clean(command: list[str]) -> None:
    result = subprocess.run([tool("ruff"), *command], cwd=REPO, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_jinja_run_is_copied_between_files() -> None:
    """The rule "no Jinja block copied across managers or frameworks", for the files the Python-only duplicate finders
    skip: no six non-blank lines stand, in the same order, in two of the template's Jinja files."""
    runs: dict[tuple[str, ...], set[str]] = {}
    for path in sorted(REPO.glob("[!.]*/**/*.jinja")):
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        for start in range(len(lines) - 5):
            runs.setdefault(tuple(lines[start : start + 6]), set()).add(str(path.relative_to(REPO)))
    copied = {run[0]: sorted(names) for run, names in runs.items() if len(names) > 1}
    assert not copied, copied
