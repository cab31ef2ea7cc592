"""Fixtures for the template's own tests: a snapshot of the template, rendering, a local wheel index."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from matrix import FRAMEWORKS, REPO, Combo, all_combos, fast_sample

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A command-line tool installed next to the running Python (the test venv), else on PATH."""
    local = BIN / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: run the README's test command, which installs it")
    return found


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


@pytest.fixture(scope="session")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return snapshot_template(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def rendered_matrix(
    request: pytest.FixtureRequest, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The combinations this session's tests check (all of them, or the fast tier's), rendered once, on every core."""
    root = tmp_path_factory.mktemp("matrix")
    selected = {item.callspec.params.get("combo") for item in request.session.items if hasattr(item, "callspec")}
    combos = [combo for combo in all_combos() if combo in selected] or all_combos()
    targets = [root / combo.id for combo in combos]
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(functools.partial(render, template), targets, [c.answers() for c in combos]))
    return {combo.id: target for combo, target in zip(combos, targets, strict=True)}


@pytest.fixture(scope="session")
def default_project(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return render(template, tmp_path_factory.mktemp("default") / "ml-project", {})


def make(project: Path, target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["make", target], cwd=project, env=env, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, f"make {target} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="session")
def installed_project(template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str):
    """Each framework's default project, rendered, locked and installed as its README says: once per session."""
    cache: dict[str, tuple[Path, dict[str, str]]] = {}

    def get(framework: str) -> tuple[Path, dict[str, str]]:
        if framework not in cache:
            answers = {"framework": framework}
            if "index" in FRAMEWORKS[framework]["cuda"]["cpu"]:
                answers["framework_index_url"] = local_wheel_index
            project = render(template, tmp_path_factory.mktemp(framework) / "project", answers)
            subprocess.run(["git", "init", "-q"], cwd=project, check=True)
            # As the README says: lock (uv resolves in seconds), then install exactly the lock (no resolver).
            make(project, "lock", dict(os.environ))
            make(project, "install", dict(os.environ))
            home = tmp_path_factory.mktemp(f"{framework}-home")
            cache[framework] = (
                project,
                {**os.environ, "HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/m.db"},
            )
        return cache[framework]

    return get


@pytest.fixture(scope="session")
def locked(template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str):
    """A default PyTorch/CPU project per manager, its torch index pointed at the local one, locked once."""
    from helpers.projects import caches, make_targets, serve_pypi_through_simple_api

    cache: dict[str, tuple[Path, dict[str, str]]] = {}

    def get(manager: str) -> tuple[Path, dict[str, str]]:
        if manager not in cache:
            root = tmp_path_factory.mktemp(f"lock-{manager}")
            python = f"{sys.version_info.major}.{sys.version_info.minor}"
            answers = {"manager": manager, "python_version": python, "framework_index_url": local_wheel_index}
            project = render(template, root / "project", answers)
            if manager == "poetry":
                serve_pypi_through_simple_api(project / "pyproject.toml")
            (root / "home").mkdir()
            env = {**os.environ, **caches(), "HOME": str(root / "home"), "UV_PYTHON_DOWNLOADS": "never"}
            env.pop("VIRTUAL_ENV", None)
            make_targets(project, "lock", env=env)
            cache[manager] = project, env
        return cache[manager]

    return get


def combo_params() -> list[Any]:
    """Every combination; those outside matrix.fast_sample are marked slow (the fast tier stays under a minute)."""
    combos = all_combos()
    fast = set(fast_sample(combos))
    return [pytest.param(c, id=c.id, marks=() if c in fast else pytest.mark.slow) for c in combos]


def find_torch_cpu_wheel(version: str) -> Path | None:
    """The CPU torch wheel from pip's find-links folders (a company cache or this machine's disk)."""
    config = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    folders = [os.environ.get("PIP_FIND_LINKS", "")]
    folders += [line.split("=", 1)[1].strip("'\"") for line in config.splitlines() if "find-links" in line]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for folder in " ".join(folders).split():
        for wheel in Path(folder.removeprefix("file://")).glob(f"torch-{version}+cpu-{tag}-*.whl"):
            return wheel
    return None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def local_wheel_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PEP 503 index on 127.0.0.1 holding the CPU torch wheel: the stand-in for a company mirror."""
    from matrix import FRAMEWORKS

    version = FRAMEWORKS["pytorch"]["version"]
    wheel = find_torch_cpu_wheel(version)
    root = tmp_path_factory.mktemp("index")
    if wheel is None:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", f"torch=={version}", "-d", str(root / "dl"),
             "--index-url", FRAMEWORKS["pytorch"]["cuda"]["cpu"]["index"]],
            check=True,
        )  # fmt: skip
        wheel = next((root / "dl").glob("torch-*.whl"))
    package = root / "simple" / "torch"
    package.mkdir(parents=True)
    shutil.copy(wheel, package / wheel.name)
    link = wheel.name.replace("+", "%2B")
    (package / "index.html").write_text(f'<html><body><a href="{link}">{wheel.name}</a></body></html>\n')
    (root / "simple" / "index.html").write_text('<html><body><a href="torch/">torch</a></body></html>\n')
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple"
    server.shutdown()


__all__ = ["Combo", "combo_params", "render", "tool"]
