"""Slow tier: each framework's default project, installed as its README says, trains and passes its own suite."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from helpers.projects import make as _make
from matrix import FRAMEWORKS, REPO

pytestmark = pytest.mark.slow
EXPECTED = yaml.safe_load((REPO / "data" / "expected_results.yml").read_text())


def _readme_numbers(project: Path) -> dict[str, float]:
    text = (project / "README.md").read_text()
    found = dict(re.findall(r"\| test (accuracy|loss) \| ([0-9.]+) \|", text))
    return {f"test_{name}": float(value) for name, value in found.items()}


@pytest.fixture(scope="module")
def installed(installed_project):
    return installed_project


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_default_config_gives_the_numbers_readme_states(installed, framework: str) -> None:
    project, env = installed(framework)
    _make(project, "train", env)
    metrics = json.loads((project / "outputs" / "baseline-seed42" / "metrics.json").read_text())["final"]
    measured = {key: round(metrics[key], 4) for key in ("test_accuracy", "test_loss")}
    assert _readme_numbers(project) == measured, "update data/expected_results.yml with these measured numbers"


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_generated_suite_passes(installed, framework: str) -> None:
    project, env = installed(framework)
    result = _make(project, "test", env)
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]
    assert "failed" not in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("framework", list(FRAMEWORKS))
def test_generated_project_is_lint_clean(installed, framework: str) -> None:
    project, env = installed(framework)
    _make(project, "lint", env)
