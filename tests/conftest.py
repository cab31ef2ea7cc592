"""Fixtures for the template's own tests: a snapshot of the template, rendering, a local wheel index."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from filelock import FileLock

from helpers.images import COMPOSE_BUILD_ARGS
from helpers.podman import CACHE, STANDIN_PYTHON, Podman, standin_mlflow, standin_python, standin_uv
from helpers.projects import make, make_targets, manager_project
from helpers.rendering import render, snapshot_template
from helpers.wheels import (
    WHEEL_INDEX,
    WHEEL_INDEX_URL,
    add_wheel,
    find_torch_cpu_wheel,
    has_wheel,
    index_url,
    serve_folder,
)
from matrix import COMPAT, FRAMEWORKS, all_combos

# Test modules by measured length, longest first. README's command runs the suite on two processes
# (pytest-xdist, --dist loadscope: a module's tests on one process, in this order), so the longest start at once
# and the short ones fill in at the end. A module not named keeps its place after these. The projects the
# modules install (installed_project) are shared by both processes.
LONGEST_FIRST = [
    "test_images.py",
    "test_readme_commands.py",
    "test_image_variants.py",
    "test_faults.py",
    "test_locks.py",
    "test_generated_projects.py",
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


def _shared_folder(config: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder all of this session's worker processes see (pytest-xdist gives each its own basetemp below it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if hasattr(config, "workerinput") else base


@pytest.fixture(scope="session")
def installed_project(
    pytestconfig: pytest.Config, template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str
):
    """Each framework's default project, rendered, locked and installed as its README says: once per session, by
    whichever worker process needs it first (the other waits, then reuses it). Each process has its own HOME and
    MLflow store; tests write their runs to their own --output-dir."""
    cache: dict[str, tuple[Path, dict[str, str]]] = {}
    shared = _shared_folder(pytestconfig, tmp_path_factory)

    def get(framework: str) -> tuple[Path, dict[str, str]]:
        if framework not in cache:
            project = shared / f"installed-{framework}" / "project"
            with FileLock(shared / f"installed-{framework}.lock"):
                if not (project.parent / "installed").exists():
                    shutil.rmtree(project.parent, ignore_errors=True)  # an install another process left unfinished
                    _install(template, project, framework, local_wheel_index)
                    (project.parent / "installed").touch()
            home = tmp_path_factory.mktemp(f"{framework}-home")
            cache[framework] = (
                project,
                {**os.environ, "HOME": str(home), "MLFLOW_TRACKING_URI": f"sqlite:///{home}/m.db"},
            )
        return cache[framework]

    return get


def _install(template: Path, project: Path, framework: str, index: str) -> None:
    answers = {"framework": framework}
    if "index" in FRAMEWORKS[framework]["cuda"]["cpu"]:
        answers["framework_index_url"] = index
    render(template, project, answers)
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    # As the README says: lock (uv resolves in seconds), then install exactly the lock (no resolver).
    make(project, "lock", dict(os.environ))
    make(project, "install", dict(os.environ))


@pytest.fixture(scope="session")
def locked(template: Path, tmp_path_factory: pytest.TempPathFactory, local_wheel_index: str):
    """A default CPU project per manager (and framework: PyTorch unless named), locked once. PyTorch's index is
    the local one."""
    cache: dict[tuple[str, str], tuple[Path, dict[str, str]]] = {}

    def get(manager: str, framework: str = "pytorch") -> tuple[Path, dict[str, str]]:
        if (manager, framework) not in cache:
            answers = {"manager": manager, "framework": framework}
            if "index" in FRAMEWORKS[framework]["cuda"]["cpu"]:
                answers["framework_index_url"] = local_wheel_index
            root = tmp_path_factory.mktemp(f"lock-{manager}-{framework}")
            project, env = manager_project(template, root, answers)
            make_targets(project, "lock", env=env)
            cache[manager, framework] = project, env
        return cache[manager, framework]

    return get


_index_key = pytest.StashKey[tuple]()


def pytest_configure(config: pytest.Config) -> None:
    """The local wheel index is served by the main process, for the whole session: a project one worker process
    installed (or an image it built) names the index's URL, and the other process may use it after the first ends."""
    if not hasattr(config, "workerinput") and WHEEL_INDEX not in os.environ:
        root = Path(tempfile.mkdtemp(prefix="ml-template-index-"))
        server = serve_folder(root)
        config.stash[_index_key] = (server, root)
        # Inherited by the worker processes, which start after this hook (and by nested pytest runs).
        os.environ.update({WHEEL_INDEX: str(root), WHEEL_INDEX_URL: index_url(server)})


def pytest_unconfigure(config: pytest.Config) -> None:
    if _index_key in config.stash:
        server, root = config.stash[_index_key]
        server.shutdown()
        shutil.rmtree(root, ignore_errors=True)
        for name in (WHEEL_INDEX, WHEEL_INDEX_URL):
            os.environ.pop(name, None)


@pytest.fixture(scope="session")
def local_wheel_index() -> str:
    """A PEP 503 index on 127.0.0.1 holding the CPU torch wheel: the stand-in for a company mirror."""
    root = Path(os.environ[WHEEL_INDEX])
    with FileLock(root.parent / f"{root.name}.lock"):  # the first worker process to need it fills it
        if not has_wheel(root):
            version = FRAMEWORKS["pytorch"]["version"]
            wheel = find_torch_cpu_wheel(version)
            if wheel is None:
                subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", f"torch=={version}", "-d", str(root / "dl"),
                     "--index-url", FRAMEWORKS["pytorch"]["cuda"]["cpu"]["index"]],
                    check=True,
                )  # fmt: skip
                wheel = next((root / "dl").glob("torch-*.whl"))
            add_wheel(wheel, root)
    return os.environ[WHEEL_INDEX_URL]


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
    """The train image of a default CPU project, by framework and manager: built once."""
    images: dict[str, tuple[str, Path]] = {}

    def get(framework: str = "pytorch", manager: str = "pip") -> tuple[str, Path]:
        key = f"{framework}-{manager}"
        if key not in images:
            project = installed_project(framework)[0] if manager == "pip" else locked(manager, framework)[0]
            podman.build(project, f"localhost/ml-test:{key}", "--target", "train", *COMPOSE_BUILD_ARGS)
            images[key] = f"localhost/ml-test:{key}", project
        return images[key]

    return get
