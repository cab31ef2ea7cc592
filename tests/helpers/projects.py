"""Generated projects as the tests drive them: make with the test venv's tools, the machine's download caches."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers.rendering import render
from helpers.tools import tool


def caches() -> dict[str, str]:
    """The machine's download caches, kept when HOME is swapped for a temporary one."""
    home = Path.home()
    return {
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(home / ".cache" / "pip")),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(home / ".cache" / "uv")),
        "POETRY_CACHE_DIR": os.environ.get("POETRY_CACHE_DIR", str(home / ".cache" / "pypoetry")),
    }


def make(project: Path, target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`make TARGET` with the project's own tools (an installed project: its venv, its manager)."""
    result = subprocess.run(["make", target], cwd=project, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def make_targets(
    project: Path, *targets: str, env: dict[str, str], ok: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["make", *targets, f"PYTHON={sys.executable}", f"UV={tool('uv')}", f"POETRY={tool('poetry')}"],
        cwd=project, env=env, capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    if ok:
        assert result.returncode == 0, f"make {' '.join(targets)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def serve_pypi_through_simple_api(pyproject: Path) -> None:
    """This machine's PyPI proxy answers the simple API but not the per-version JSON API Poetry uses for PyPI;
    a primary simple-API source with PyPI's own URL stands in for it (as a company mirror would)."""
    pyproject.write_text(
        pyproject.read_text()
        + '\n[[tool.poetry.source]]\nname = "pypi-simple"\nurl = "https://pypi.org/simple/"\npriority = "primary"\n'
    )


def manager_project(template: Path, root: Path, answers: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A default CPU project for answers["manager"], rendered under `root` with its own HOME, not locked yet."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    project = render(template, root / "project", {"python_version": python, **answers})
    if answers["manager"] == "poetry":
        serve_pypi_through_simple_api(project / "pyproject.toml")
    (root / "home").mkdir()
    env = {**os.environ, **caches(), "HOME": str(root / "home"), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    return project, env
