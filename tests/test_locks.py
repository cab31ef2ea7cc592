"""Locks: pip, uv and Poetry locks are really written and installed from (against the local torch index);
conda's environment.yml is checked offline, spec by spec, with a real conda match-spec parser, and its lock
commands for the CUDA driver they assume.

Torch must only ever come from the local index: every project pins it exactly (torch==2.13.0), and each
lock is checked to hold the +cpu build from 127.0.0.1 before anything is installed from it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from helpers.projects import make_targets
from helpers.rendering import combo_params
from matrix import COMPAT, Combo

TORCH = COMPAT["frameworks"]["pytorch"]["version"]
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _locked_torch(project: Path, manager: str) -> tuple[str, str]:
    """(version, where it comes from) of torch in the lock."""
    lock_file = project / COMPAT["managers"][manager]["lock"]
    if lock_file.suffix == ".txt":  # a requirements file: pins and hashes, no sources
        version = re.search(r"^torch==(\S+)", lock_file.read_text(), re.MULTILINE).group(1)
        return version, "hash-pinned"
    lock = tomllib.loads(lock_file.read_text())
    entry = next(package for package in lock["package"] if package["name"] == "torch")
    source = entry["source"]["registry"] if manager == "uv" else entry["source"]["url"]
    return entry["version"], source


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["pip", "uv", "poetry"])
def test_lock_is_written_fresh_and_installs(locked, manager: str, local_wheel_index: str) -> None:
    project, env = locked(manager)
    version, source = _locked_torch(project, manager)
    assert version == f"{TORCH}+cpu", "torch must be the CPU build from the framework index"
    if manager != "pip":
        assert source.rstrip("/") == local_wheel_index.rstrip("/")
    make_targets(project, "lock-check", env=env)
    make_targets(project, "install", env=env)
    probe = "import torch, mlflow, sklearn; print(torch.__version__, mlflow.__version__)"
    result = subprocess.run(
        [str(project / ".venv" / "bin" / "python"), "-c", probe],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.split() == [
        f"{TORCH}+cpu",
        COMPAT["packages"]["runtime"]["mlflow"],
    ]


# What each manager's `make lock-check` says about a stale lock (any other failure must not pass for it).
STALE_LOCK = {
    "pip": "requirements.txt is stale: run 'make lock'",
    "uv": "The lockfile at `uv.lock` needs to be updated, but `--check` was provided.",
    "poetry": "pyproject.toml changed significantly since poetry.lock was last generated. Run `poetry lock`",
}


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["pip", "uv", "poetry"])
def test_lock_check_fails_on_a_stale_lock(locked, manager: str) -> None:
    project, env = locked(manager)
    source = project / "pyproject.toml"  # every manager's one list of direct dependencies
    original = source.read_text()
    try:
        source.write_text(re.sub(r"^.*\bpytest==.*\n", "", original, flags=re.MULTILINE))  # a direct dependency dropped
        assert source.read_text() != original
        result = make_targets(project, "lock-check", env=env, ok=False)
        assert result.returncode != 0 and STALE_LOCK[manager] in result.stdout + result.stderr, result.stderr[-2000:]
    finally:
        source.write_text(original)


def _conda_specs(project: Path) -> tuple[dict, list[str]]:
    environment = yaml.safe_load((project / "environment.yml").read_text())
    specs = [item for item in environment["dependencies"] if isinstance(item, str)]
    return environment, specs


@pytest.mark.parametrize("combo", [p for p in combo_params() if p.values[0].manager == "conda"])
def test_conda_environment_is_valid_offline(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """No conda channel is reachable here: parse every spec with rattler (strict) and compare it with compat.yml.
    The solve itself (`make lock` = conda-lock) runs in the generated project's CI."""
    from rattler import MatchSpec

    environment, specs = _conda_specs(rendered_matrix[combo.id])
    assert environment["channels"] == ["conda-forge", "nodefaults"]
    parsed = {}
    for spec in specs:
        match = MatchSpec(spec, strict=True)
        parsed[match.name.normalized] = match
    assert str(parsed["python"].version) == f"{combo.python}.*"
    if combo.cuda == "cpu":
        assert "cuda-version" not in parsed
    else:
        assert str(parsed["cuda-version"].version) == f"{combo.cuda}.*"
    framework = COMPAT["frameworks"][combo.framework]
    build = parsed[framework["conda_package"]]
    assert str(build.version) == f"=={framework['version']}"
    assert build.build == ("*cpu*" if combo.cuda == "cpu" else "*cuda*")
    # The same pins as pyproject.toml's one list (dependencies and the dev group), the framework aside.
    pyproject = tomllib.loads((rendered_matrix[combo.id] / "pyproject.toml").read_text())
    requirements = pyproject["project"]["dependencies"] + pyproject["dependency-groups"]["dev"]
    pins = dict(requirement.split("==") for requirement in requirements[1:])
    assert requirements[0] == framework["cuda"][combo.cuda]["requirement"].replace("{version}", framework["version"])
    pip_section = next(
        (item["pip"] for item in environment["dependencies"] if isinstance(item, dict)),
        [],
    )
    for name, version in pins.items():
        conda_name = COMPAT["conda_names"].get(name, name)
        if name in COMPAT["conda_pip_only"]:
            assert f"{name}=={version}" in pip_section and conda_name not in parsed, f"{name}: not in pip: alone"
        else:
            assert conda_name in parsed, f"{name}: no conda-forge spec {conda_name}"
            assert str(parsed[conda_name].version) == f"=={version}", name


def _conda_lock_commands(project: Path) -> list[list[str]]:
    """The `conda-lock lock` commands `make lock` and `make lock-check` run, as make expands them."""
    result = subprocess.run(
        ["make", "-n", "lock", "lock-check"], cwd=project, capture_output=True, text=True, check=True
    )
    commands = [shlex.split(line) for line in result.stdout.splitlines()]
    commands = [tokens for tokens in commands if tokens[:2] == ["conda-lock", "lock"]]
    assert len(commands) == 2, f"expected the lock and lock-check solves:\n{result.stdout}"
    return commands


@pytest.mark.parametrize("combo", [p for p in combo_params() if p.values[0].manager == "conda"])
def test_conda_lock_solves_for_the_answered_cuda(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """conda-forge's CUDA builds need the virtual package __cuda >= their major; conda-lock assumes 11.4 unless
    told (--with-cuda). The lock-check must pass the same, since conda-lock's input hash covers it."""
    for tokens in _conda_lock_commands(rendered_matrix[combo.id]):
        with_cuda = [tokens[index + 1] for index, word in enumerate(tokens) if word == "--with-cuda"]
        assert with_cuda == ([] if combo.cuda == "cpu" else [combo.cuda]), shlex.join(tokens)
