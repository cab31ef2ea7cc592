"""The generated README's commands work as written, in a shell where nothing is activated.

Fast tier, every combination checked statically: each command line of the quick start, "Reproducing results"
and the DVC pipeline sections calls only make targets the Makefile has (`make -n`), `.venv/bin/...`, `cp` or
`git` (a bare `dvc` or `python` needs an activated environment); every Makefile knob is used; the claims the
files make about CI hold. A `use_dvc=false` project mentions DVC nowhere.
Slow tier (pip, uv, Poetry; conda has no channel here): those lines run, literally and in order, in a fresh
render without a lock, with the project's environment absent from PATH and a temporary HOME.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from helpers.projects import caches, manager_project
from helpers.rendering import combo_params, render
from helpers.tools import tool
from matrix import COMPAT, MANAGERS, Combo

SECTIONS = ("## Quick start", "## Reproducing results", "### The DVC pipeline")
# Lines of a use_dvc=false project that may say "dvc", each with why.
DVC_ALLOWED = {
    ".copier-answers.yml": {"use_dvc: false"},  # the answer itself, which `copier update` reads back
    # The generated package's comments (another concern's files): the remote-storage settings serve MLflow
    # artifact stores as well, and the PNG is a run output either way.
    "src/ml_project/settings.py": {
        '"""Every variable the project reads (training code, compose, DVC remotes)."""',
        "# --- remote storage for DVC remotes and MLflow artifacts (read by boto3, gcsfs, adlfs)",
    },
    "src/ml_project/plots.py": {'"""Training curves as a PNG (logged to MLflow and used by `dvc plots`)."""'},
}


def readme_commands(project: Path) -> list[str]:
    """The command lines of the bash blocks in the README's quick start, reproducing and DVC pipeline sections."""
    commands = []
    for section in re.split(r"(?m)^(?=#{2,3} )", (project / "README.md").read_text()):
        if section.startswith(SECTIONS):
            for block in re.findall(r"```bash\n(.*?)```", section, re.S):
                commands += [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def _steps(line: str) -> list[list[str]]:
    """The simple commands of a `a && b  # comment` line, as words."""
    steps: list[list[str]] = [[]]
    for word in shlex.split(line, comments=True):
        if word == "&&":
            steps.append([])
        else:
            steps[-1].append(word)
    return steps


@pytest.mark.parametrize("combo", combo_params())
def test_readme_commands_need_nothing_activated(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    project = rendered_matrix[combo.id]
    commands = readme_commands(project)
    runs_the_pipeline = any(line.startswith("make repro ") for line in commands)
    assert runs_the_pipeline == combo.use_dvc, "the DVC section runs the pipeline through make"
    for line in commands:
        for words in _steps(line):
            assert words[0] in {"make", "cp", "git"} or words[0].startswith(".venv/bin/"), f"needs activation: {line}"
            if words[0] == "make":  # every target exists (dry run: nothing is executed)
                result = subprocess.run(["make", "-n", *words[1:]], cwd=project, capture_output=True, text=True)
                assert result.returncode == 0, f"{line}:\n{result.stderr}"


@pytest.mark.parametrize("combo", combo_params())
def test_makefile_knobs_and_file_claims_hold(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    project = rendered_matrix[combo.id]
    makefile = (project / "Makefile").read_text()
    assigned = set(re.findall(r"^([A-Z_]+) *[:?]?=", makefile, re.MULTILINE)) - {"SHELL"}  # make reads SHELL itself
    assert not {name for name in assigned if f"$({name})" not in makefile}, "a Makefile variable that nothing reads"
    jobs = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())["jobs"]
    steps = [step.get("run", "") for job in jobs.values() for step in job["steps"]]
    assert "CI runs them" in (project / ".pre-commit-config.yaml").read_text()
    assert any("pre-commit run --all-files" in run for run in steps), "the hooks' header says CI runs them"
    assert "make lock-check" in steps, "README: CI runs make lock-check"
    # `make lock` keeps existing pins for uv pip compile -o, uv lock and poetry lock; conda-lock re-solves.
    keeps_pins = COMPAT["managers"][combo.manager]["keeps_pins"]
    assert ("existing pins are kept" in (project / "README.md").read_text()) == keeps_pins
    mentions_mirror_variable = "FRAMEWORK_INDEX_URL" in (project / ".env.example").read_text()
    assert mentions_mirror_variable == ("$(FRAMEWORK_INDEX_URL)" in makefile), ".env.example names a make knob"


def _runs(project: Path, target: str, command: str) -> bool:
    """Whether `make TARGET` runs COMMAND: its words in order on one line of the dry run (a word matching a path's
    last part: `uv` is `.venv/bin/uv`)."""
    dry_run = subprocess.run(["make", "-n", target], cwd=project, capture_output=True, text=True, check=True).stdout
    wanted = command.split()
    for line in dry_run.splitlines():
        words = iter(Path(word).name if "/" in word else word for word in shlex.split(line))
        if all(any(word == part for word in words) for part in wanted):  # a subsequence: `words` is consumed
            return True
    return False


@pytest.mark.parametrize("combo", combo_params())
def test_readme_names_what_make_runs(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """data/compat.yml's commands per manager, which the README's table names, are what the Makefile runs."""
    project = rendered_matrix[combo.id]
    manager = COMPAT["managers"][combo.manager]
    readme = (project / "README.md").read_text()
    for target in ("lock", "install", "lock-check"):
        command = manager[f"{target.replace('-', '_')}_command"]
        assert _runs(project, target, command), f"make {target} does not run {command}"
        if target != "lock-check":
            assert f"| `make {target}` | `{command}`" in readme, f"README's make {target} row"


@pytest.fixture(scope="module")
def projects_without_dvc(template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("nodvc")
    return {manager: render(template, root / manager, {"manager": manager, "use_dvc": False}) for manager in MANAGERS}


@pytest.mark.parametrize("manager", MANAGERS)
def test_project_without_dvc_mentions_no_dvc(projects_without_dvc: dict[str, Path], manager: str) -> None:
    project = projects_without_dvc[manager]
    found = []
    for path in sorted(project.rglob("*")):
        name = path.relative_to(project).as_posix()
        if path.is_file():
            lines = path.read_text(errors="replace").splitlines()
            found += [
                f"{name}: {line}"
                for line in lines
                if "dvc" in line.lower() and line.strip() not in DVC_ALLOWED.get(name, ())
            ]
        if "dvc" in name.lower():
            found.append(name)
    assert found == []
    for name in ("prepare.py", "evaluate.py"):
        assert not (project / "src" / "ml_project" / name).exists()
    assert not (project / "tests" / "test_pipeline.py").exists()


def _clean_environment(env: dict[str, str], tools: Path) -> dict[str, str]:
    """A login shell's environment: no virtualenv activated or on PATH, PYTHONHASHSEED unset; the managers
    the README expects (uv, Poetry) on PATH, as a user installs them."""
    for name, target in {"uv": tool("uv"), "poetry": tool("poetry")}.items():
        if not (tools / name).exists():
            (tools / name).symlink_to(target)
    path = [entry for entry in env["PATH"].split(os.pathsep) if not (Path(entry).parent / "pyvenv.cfg").exists()]
    clean = {key: value for key, value in env.items() if key not in {"VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH"}}
    clean = {key: value for key, value in clean.items() if not key.startswith(("PYTHONHASHSEED", "MLFLOW_", "DVC_"))}
    home = Path(env["HOME"])
    return clean | caches() | {
        "PATH": os.pathsep.join([str(tools), *path]),
        "DVC_NO_ANALYTICS": "1", "DVC_SITE_CACHE_DIR": str(home / "dvc-site"),
        "GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.com",
        "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.com",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["pip", "uv", "poetry"])
def test_readme_commands_run_as_written(template: Path, local_wheel_index: str, manager: str, tmp_path: Path) -> None:
    """A fresh render per manager (PyTorch from the local index), no lock yet: README's commands write it."""
    answers = {"manager": manager, "framework_index_url": local_wheel_index}
    project, env = manager_project(template, tmp_path / "render", answers)
    (tmp_path / "tools").mkdir()
    env = _clean_environment(env, tmp_path / "tools")
    assert shutil.which("dvc", path=env["PATH"]) is None, "dvc on PATH: the test would not show what a user sees"
    first_commit = 'git init -q && git add -A && git commit -qm "Start from ml-template"'  # the post-copy message
    for line in [first_commit, *readme_commands(project)]:
        result = subprocess.run(
            ["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True, timeout=1500, check=False
        )
        assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert (project / COMPAT["managers"][manager]["lock"]).exists(), "make install wrote the lock first"
    for run in ("outputs/baseline-seed42", "outputs/reproduce", "outputs/pipeline/run"):
        assert (project / run / "metrics.json").exists(), run
    provenance = yaml.safe_load((project / "outputs/pipeline/run/run.json").read_text())
    assert provenance["determinism"]["PYTHONHASHSEED"] == "0", "make repro passes PYTHONHASHSEED to the stages"
    assert (project / "outputs/pipeline/evaluation/metrics.json").exists()
