"""Locks: pip, uv and Poetry locks are really written and installed from (against the local torch index);
conda's environment.yml is checked offline, spec by spec, with a real conda match-spec parser.

Torch must only ever come from the local index: every project pins it exactly (torch==2.13.0), and each
lock is checked to hold the +cpu build from 127.0.0.1 before anything is installed from it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from conftest import combo_params, render, tool
from matrix import COMPAT, Combo

TORCH = COMPAT["frameworks"]["pytorch"]["version"]
PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"


def _caches() -> dict[str, str]:
    """The machine's download caches, kept when HOME is swapped for a temporary one."""
    home = Path.home()
    return {
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(home / ".cache" / "pip")),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(home / ".cache" / "uv")),
        "POETRY_CACHE_DIR": os.environ.get("POETRY_CACHE_DIR", str(home / ".cache" / "pypoetry")),
    }


def _make(project: Path, *targets: str, env: dict[str, str], ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["make", *targets, f"PYTHON={sys.executable}", f"UV={tool('uv')}", f"POETRY={tool('poetry')}"],
        cwd=project, env=env, capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    if ok:
        assert result.returncode == 0, f"make {' '.join(targets)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _serve_pypi_through_simple_api(pyproject: Path) -> None:
    """This machine's PyPI proxy answers the simple API but not the per-version JSON API Poetry uses for PyPI;
    a primary simple-API source with PyPI's own URL stands in for it (as a company mirror would)."""
    pyproject.write_text(
        pyproject.read_text()
        + '\n[[tool.poetry.source]]\nname = "pypi-simple"\nurl = "https://pypi.org/simple/"\npriority = "primary"\n'
    )


@pytest.fixture(scope="module")
def locked(template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str):
    """A default PyTorch/CPU project per manager, its torch index pointed at the local one, locked once."""
    cache: dict[str, tuple[Path, dict[str, str]]] = {}

    def get(manager: str) -> tuple[Path, dict[str, str]]:
        if manager not in cache:
            root = tmp_path_factory.mktemp(f"lock-{manager}")
            answers = {
                "manager": manager,
                "python_version": PYTHON,
                "framework_index_url": local_wheel_index,
            }
            project = render(template, root / "project", answers)
            if manager == "poetry":
                _serve_pypi_through_simple_api(project / "pyproject.toml")
            (root / "home").mkdir()
            env = {
                **os.environ,
                **_caches(),
                "HOME": str(root / "home"),
                "UV_PYTHON_DOWNLOADS": "never",
            }
            env.pop("VIRTUAL_ENV", None)
            _make(project, "lock", env=env)
            cache[manager] = project, env
        return cache[manager]

    return get


def _locked_torch(project: Path, manager: str) -> tuple[str, str]:
    """(version, where it comes from) of torch in the lock."""
    if manager == "pip":
        text = (project / "requirements.txt").read_text()
        version = re.search(r"^torch==(\S+)", text, re.MULTILINE).group(1)
        return version, "hash-pinned"
    lock = tomllib.loads((project / f"{manager}.lock").read_text())
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
    _make(project, "lock-check", env=env)
    _make(project, "install", env=env)
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


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["pip", "uv", "poetry"])
def test_lock_check_fails_on_a_stale_lock(locked, manager: str) -> None:
    project, env = locked(manager)
    source = project / ("requirements.in" if manager == "pip" else "pyproject.toml")
    original = source.read_text()
    try:
        source.write_text(re.sub(r"^.*\bpytest==.*\n", "", original, flags=re.MULTILINE))  # a direct dependency dropped
        assert source.read_text() != original
        assert _make(project, "lock-check", env=env, ok=False).returncode != 0
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
    pins = dict(requirement.split("==") for requirement in framework["libraries"])
    for group in ["runtime", "dev", "notebook"] + (["dvc"] if combo.use_dvc else []):
        pins.update(COMPAT["packages"][group])
    conda_names = {"matplotlib": "matplotlib-base"}
    pip_section = next(
        (item["pip"] for item in environment["dependencies"] if isinstance(item, dict)),
        [],
    )
    for name, version in pins.items():
        conda_name = conda_names.get(name, name)
        if conda_name in parsed:
            assert str(parsed[conda_name].version) == f"=={version}", name
        else:
            assert f"{name}=={version}" in pip_section, f"{name} is neither a conda-forge spec nor in pip:"
