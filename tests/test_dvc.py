"""Slow tier: the default project's DVC pipeline runs, is idempotent, reacts to configs, and round-trips a remote.

The pipeline runs in the default project's own environment (conftest's installed_project: rendered,
locked and installed once per session), with PYTHONPATH pointing at this render's src/.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.rendering import render

pytestmark = pytest.mark.slow
EXPERIMENT = "configs/baseline.yaml:training.learning_rate=0.01"


class Project:
    """A rendered default project with git, run through the dvc of the test venv."""

    def __init__(self, root: Path, env: dict[str, str], dvc: str) -> None:
        self.root, self.env, self.dvc = root, env, dvc

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            list(command),
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result

    def dvc_json(self, *args: str) -> Any:
        return json.loads(self.run(self.dvc, *args, "--json").stdout)

    def restore(self) -> None:
        """Back to the last commit: config, dvc.lock, and the outputs dvc.lock names."""
        self.run("git", "checkout", "--", ".")
        self.run(self.dvc, "checkout", "--force")


@pytest.fixture(scope="module")
def project(template: Path, tmp_path_factory: pytest.TempPathFactory, installed_project) -> Iterator[Project]:
    """Render, `git init`, commit, and `dvc repro` once (timed), then commit dvc.lock as the README says."""
    # The pipeline runs on the default project's own environment (installed once per session).
    venv_bin = installed_project("pytorch")[0] / ".venv" / "bin"
    root = render(template, tmp_path_factory.mktemp("dvc") / "ml-project", {})
    home = tmp_path_factory.mktemp("dvc-home")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "DVC_"))}
    env.update(
        HOME=str(home),
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",  # `python` and `dvc` are the project's
        PYTHONPATH=str(root / "src"),
        PYTHONHASHSEED="0",
        DVC_NO_ANALYTICS="1",
        DVC_SITE_CACHE_DIR=str(home / "dvc-site"),
        GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
    )  # fmt: skip
    project = Project(root, env, str(venv_bin / "dvc"))
    project.run("git", "init", "-q")
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "Start from ml-template")
    started = time.perf_counter()
    first = project.run(project.dvc, "repro")
    project.first_repro = (first.stdout, time.perf_counter() - started)  # type: ignore[attr-defined]
    project.run("git", "add", "dvc.lock")
    project.run("git", "commit", "-qm", "Run the pipeline")
    yield project


def test_repro_runs_every_stage_then_nothing(project: Project) -> None:
    stdout, seconds = project.first_repro  # type: ignore[attr-defined]
    for stage in ("prepare", "train", "evaluate"):
        assert f"Running stage '{stage}'" in stdout
    print(f"first dvc repro: {seconds:.1f} s")
    second = project.run(project.dvc, "repro").stdout
    assert "Running stage" not in second, second
    assert "Data and pipelines are up to date." in project.run(project.dvc, "status").stdout
    assert project.run("git", "status", "--porcelain").stdout == "", "the pipeline left files git would commit"


def test_params_come_from_the_config_not_copies(project: Project) -> None:
    pipeline = yaml.safe_load((project.root / "dvc.yaml").read_text())
    for name, stage in pipeline["stages"].items():
        assert "configs/baseline.yaml" in stage["cmd"] or name == "evaluate"
        for entry in stage.get("params", []):
            assert isinstance(entry, dict) and list(entry) == ["configs/baseline.yaml"], entry
    lock = yaml.safe_load((project.root / "dvc.lock").read_text())
    config = yaml.safe_load((project.root / "configs" / "baseline.yaml").read_text())
    assert lock["stages"]["train"]["params"]["configs/baseline.yaml"]["training"] == config["training"]


def test_metrics_and_plots_point_at_the_run(project: Project) -> None:
    metrics = next(iter(project.dvc_json("metrics", "show").values()))["data"]  # keyed "" (workspace)
    run = metrics["outputs/pipeline/run/metrics.json"]["data"]["final"]
    evaluation = metrics["outputs/pipeline/evaluation/metrics.json"]["data"]
    # Equal, not close: evaluate re-scores the run's last checkpoint on the same test split and device.
    assert (evaluation["test_accuracy"], evaluation["test_loss"]) == (run["test_accuracy"], run["test_loss"])
    assert 0.5 < run["test_accuracy"] <= 1.0
    plots = project.dvc_json("plots", "show")["data"]
    assert {
        "loss",
        "accuracy",
        "outputs/pipeline/run/curves.png",
        "outputs/pipeline/evaluation/per_class.json",
    } <= set(plots)
    epochs = yaml.safe_load((project.root / "configs" / "baseline.yaml").read_text())["training"]["epochs"]
    loss = plots["loss"][0]
    points = loss.get("datapoints") or loss["content"]["data"]["values"]
    assert len(points) == 2 * epochs  # train and val, one point per epoch


def test_a_changed_config_value_makes_train_stale(project: Project) -> None:
    config = project.root / "configs" / "baseline.yaml"
    text = config.read_text()
    assert "  epochs: 10\n" in text
    config.write_text(text.replace("  epochs: 10\n", "  epochs: 3\n"))
    try:
        status = project.dvc_json("status")
    finally:
        project.restore()
    assert "train" in status and "prepare" not in status, status
    assert {"configs/baseline.yaml": {"training": "modified"}} in [
        change.get("changed deps") for change in status["train"]
    ], status


def test_exp_run_with_a_parameter_override(project: Project) -> None:
    try:
        project.run(project.dvc, "exp", "run", "-S", EXPERIMENT)
        params = project.dvc_json("params", "diff")
        metrics = project.dvc_json("metrics", "diff")
        experiments = project.dvc_json("exp", "show")
    finally:
        project.restore()
    change = params["configs/baseline.yaml"]["training.learning_rate"]
    assert (change["old"], change["new"]) == (0.003, 0.01)
    assert "outputs/pipeline/evaluation/metrics.json" in metrics
    assert any(row.get("experiments") for row in experiments), "dvc exp show lists no experiment"
    assert "Running stage" not in project.run(project.dvc, "repro").stdout, "restore left the workspace stale"


def test_push_and_pull_through_the_default_local_remote(project: Project) -> None:
    project.run(project.dvc, "push")
    assert (project.root / ".dvc" / "storage" / "files").is_dir()
    for path in (".dvc/cache", "data/processed", "outputs/pipeline"):
        shutil.rmtree(project.root / path)
    project.run(project.dvc, "pull")
    assert "Data and pipelines are up to date." in project.run(project.dvc, "status").stdout
    assert (project.root / "outputs" / "pipeline" / "run" / "metrics.json").exists()
