"""Slow tier: each framework's default project, installed as its README says, trains and passes its own suite."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import render
from matrix import FRAMEWORKS, REPO

pytestmark = pytest.mark.slow
EXPECTED = yaml.safe_load((REPO / "data" / "expected_results.yml").read_text())


def _make(project: Path, target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", target], cwd=project, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _readme_numbers(project: Path) -> dict[str, float]:
    text = (project / "README.md").read_text()
    found = dict(re.findall(r"\| test (accuracy|loss) \| ([0-9.]+) \|", text))
    return {f"test_{name}": float(value) for name, value in found.items()}


@pytest.fixture(scope="module")
def installed(template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str):
    """Render and `make install` lazily, once per framework."""
    cache: dict[str, tuple[Path, dict[str, str]]] = {}

    def get(framework: str) -> tuple[Path, dict[str, str]]:
        if framework not in cache:
            answers = {"framework": framework}
            if "index" in FRAMEWORKS[framework]["cuda"]["cpu"]:
                answers["framework_index_url"] = local_wheel_index
            project = render(template, tmp_path_factory.mktemp(framework) / "project", answers)
            subprocess.run(["git", "init", "-q"], cwd=project, check=True)
            # As the README says: lock (uv resolves in seconds), then install exactly the lock (no resolver).
            _make(project, "lock", dict(os.environ))
            _make(project, "install", dict(os.environ))
            home = tmp_path_factory.mktemp(f"{framework}-home")
            cache[framework] = project, {**os.environ, "HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/m.db"}
        return cache[framework]

    return get


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
