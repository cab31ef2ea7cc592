"""Fixtures for the template's own tests: a snapshot of the template, rendering, a local wheel index."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from filelock import FileLock

from helpers.images import COMPOSE_BUILD_ARGS
from helpers.podman import CACHE, STANDIN_PYTHON, Podman, standin_mlflow, standin_python, standin_uv
from helpers.projects import caches, make, make_targets, serve_pypi_through_simple_api
from helpers.rendering import render, snapshot_template
from helpers.wheels import find_torch_cpu_wheel, index_url, serve_wheel_index
from matrix import COMPAT, FRAMEWORKS, all_combos

# Test modules by measured length, longest first. README's command runs the suite on two processes
# (pytest-xdist, --dist loadscope: a module's tests on one process, in this order), so the longest start at once
# and the short ones fill in at the end. A module not named keeps its place after these.
LONGEST_FIRST = [
    "test_images.py",
    "test_image_variants.py",
    "test_faults.py",
    "test_readme_commands.py",
    "test_locks.py",
    "test_mutations.py",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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


@pytest.fixture(scope="session")
def local_wheel_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PEP 503 index on 127.0.0.1 holding the CPU torch wheel: the stand-in for a company mirror."""
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
    server = serve_wheel_index(wheel, root)
    yield index_url(server)
    server.shutdown()


@pytest.fixture(scope="session")
def podman() -> Podman:
    """The engine with every stand-in base image the default projects' Dockerfiles name."""
    engine = Podman()
    with FileLock(CACHE / "standins.lock"):  # the other worker waits, then finds them made
        python_image = COMPAT["images"]["python"].replace("{python}", COMPAT["python_patch"][STANDIN_PYTHON])
        standin_python(engine, f"docker.io/library/{python_image}")
        standin_uv(engine, COMPAT["images"]["uv"], COMPAT["tools"]["uv"])
        standin_mlflow(engine, COMPAT["images"]["mlflow"], python_image, COMPAT["packages"]["train"]["mlflow"])
    return engine


@pytest.fixture(scope="session")
def built(podman: Podman, installed_project, locked):
    """The train image of a default CPU project, by framework (pip) or by manager (PyTorch): built once."""
    images: dict[str, tuple[str, Path]] = {}

    def get(framework: str = "pytorch", manager: str = "pip") -> tuple[str, Path]:
        key = f"{framework}-{manager}"
        if key not in images:
            project = installed_project(framework)[0] if manager == "pip" else locked(manager)[0]
            podman.build(project, f"localhost/ml-test:{key}", "--target", "train", *COMPOSE_BUILD_ARGS)
            images[key] = f"localhost/ml-test:{key}", project
        return images[key]

    return get
