"""Locks: pip, uv and Poetry locks are really written and installed from (against the local torch index);
conda's environment.yml is checked offline, spec by spec, with a real conda match-spec parser, and its lock
commands for the CUDA driver they assume.

Torch must only ever come from the local index: every project pins it exactly (torch==2.13.0), and each
lock is checked to hold the +cpu build from 127.0.0.1 before anything is installed from it.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import InvalidRequirement, Requirement

from helpers.projects import caches, make_targets
from helpers.rendering import combo_params
from helpers.tools import tool
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


def _pip_lock_entries(text: str) -> dict[str, list[str]]:
    """requirements.txt's requirements (what precedes the first option on a logical line) and their hashes."""
    entries = {}
    for line in text.replace("\\\n", " ").splitlines():
        words = line.split("#", 1)[0].split()
        if words and not words[0].startswith("-"):
            entries[words[0]] = [word for word in words[1:] if word.startswith("--hash=sha256:")]
    return entries


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["pip", "uv", "poetry"])
def test_lock_is_written_fresh_and_installs(locked, manager: str, local_wheel_index: str) -> None:
    project, env = locked(manager)
    version, source = _locked_torch(project, manager)
    assert version == f"{TORCH}+cpu", "torch must be the CPU build from the framework index"
    if manager != "pip":
        assert source.rstrip("/") == local_wheel_index.rstrip("/")
    else:  # uv.lock and poetry.lock hold versions and hashes by format; requirements.txt only when asked
        entries = _pip_lock_entries((project / "requirements.txt").read_text())
        assert len(entries) > 20 and _not_exact(list(entries)) == []
        assert [entry for entry, hashes in entries.items() if not hashes] == [], "entries without --hash"
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
        COMPAT["packages"]["train"]["mlflow"],
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
        said = " ".join((result.stdout + result.stderr).split())  # uv wraps its message at the terminal's width
        assert result.returncode != 0 and STALE_LOCK[manager] in said, result.stderr[-2000:]
    finally:
        source.write_text(original)


# What each image must not hold (data/compat.yml environments): training-only, notebook, DVC and test packages.
NOT_IN = {
    "serve": {"mlflow", "scikit-learn", "matplotlib", "tqdm", "jupyterlab", "dvc", "pytest", "ruff", "pre-commit"},
    "train": {"prometheus-fastapi-instrumentator", "jupyterlab", "dvc", "pytest", "ruff"},  # mlflow brings FastAPI
}


def _image_packages(project: Path, manager: str, image: str) -> set[tuple[str, str, str]]:
    """(name, version, environment marker) of what `image` installs, as the manager itself selects it from the lock.
    uv's lock is universal: a package may have one version per marker (e.g. below and above a Python patch)."""
    if manager == "pip":
        lock = COMPAT["managers"]["pip"]["image_locks"].get(image, COMPAT["managers"]["pip"]["lock"])
        return {(*pin.split("=="), "") for pin in _pip_lock_entries((project / lock).read_text())}
    groups = COMPAT["environments"][image]
    selection = ["--all-extras"] if "dev" in groups else ["--no-dev", "--extra", image]
    command = [tool("uv"), "export", "--frozen", "--no-hashes", "--no-header", "--no-emit-project", *selection]
    exported = subprocess.run(command, cwd=project, capture_output=True, text=True, check=True).stdout
    lines = [line.strip() for line in exported.splitlines() if "==" in line and not line.startswith((" ", "#"))]
    return {(*pin.strip().split("=="), marker.strip()) for pin, _, marker in (line.partition(";") for line in lines)}


@pytest.mark.slow
@pytest.mark.parametrize("manager", ["pip", "uv", "poetry"])
def test_images_share_one_version_of_every_package(locked, manager: str) -> None:
    """The train, serve and dev images install parts of the one lock: a package two of them hold has one version
    (pip: each image's file is resolved with requirements.txt as constraints; uv: each image's selection holds only
    versions the dev image's holds; Poetry: its lock holds each package once), and no image holds what it should
    not (serve: no scikit-learn, full MLflow, Jupyter or DVC)."""
    project, _ = locked(manager)
    if manager == "poetry":  # Poetry exports only through a plugin: its lock must name every package once
        names = [package["name"] for package in tomllib.loads((project / "poetry.lock").read_text())["package"]]
        assert sorted({name for name in names if names.count(name) > 1}) == []
        return
    images = {image: _image_packages(project, manager, image) for image in COMPAT["environments"]}
    dev_versions = {(name, version) for name, version, _ in images["dev"]}
    for image, packages in images.items():  # markers may differ: another group can need a package more widely
        assert {(name, version) for name, version, _ in packages} - dev_versions == set(), f"{image}: other versions"
        assert {name for name, _, _ in packages} & NOT_IN.get(image, set()) == set(), image
    names = {image: {name for name, _, _ in packages} for image, packages in images.items()}
    assert {"mlflow-skinny", "fastapi", "torch"} <= names["serve"], "serve lacks what serving needs"
    assert {"mlflow", "scikit-learn", "torch"} <= names["train"], "train lacks what training needs"
    assert len(names["serve"]) < 0.5 * len(names["dev"]), f"serve holds {len(names['serve'])} of {len(names['dev'])}"


def _pins_without_framework() -> list[str]:
    return [f"{name}=={version}" for group in COMPAT["packages"].values() for name, version in group.items()]


@pytest.mark.slow
@pytest.mark.parametrize("python", list(COMPAT["python_patch"]))
def test_every_pin_resolves_on_every_python_offered(python: str, tmp_path: Path) -> None:
    """Every direct pin of every group, resolved together from PyPI for each Python the questionnaire offers (the
    framework's own wheels are resolved by the locks above): a pin that dropped a Python fails here, not in a
    user's `make lock`."""
    (tmp_path / "pins.in").write_text("\n".join(_pins_without_framework()) + "\n")
    result = subprocess.run(
        [tool("uv"), "pip", "compile", "pins.in", "--python-version", python, "--python-platform",
         "x86_64-manylinux_2_28", "--quiet", "--no-header", "-o", "pins.txt"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, **caches()},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


def _not_exact(requirements: list[str]) -> list[str]:
    """The PEP 508 requirements that do not name exactly one version (`name[extras]==X.Y.Z`)."""
    loose = []
    for text in requirements:
        try:
            specifiers = list(Requirement(text).specifier)
        except InvalidRequirement:
            specifiers = []
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            loose.append(text)
    return loose


# `pip install` options that take a value (the value is not a requirement).
PIP_VALUE_OPTIONS = {"-r", "--requirement", "-e", "--editable", "--extra-index-url", "--index-url", "-c"}
# pip/pipx install commands, as far as their arguments go on the line (a shell `&&`, `||`, `;` or `\` ends them).
PIP_INSTALL = re.compile(r"\bpipx? install\b([^&|;\\\n]*)")


def _pip_installs(project: Path) -> list[tuple[str, list[str]]]:
    """(file, arguments) of every `pip install` / `pipx install` in the Makefile, Dockerfile and CI workflows."""
    files = [project / "Makefile", project / "Dockerfile", *(project / ".github" / "workflows").glob("*.yml")]
    found = []
    for path in files:
        for match in PIP_INSTALL.finditer(path.read_text()):
            found.append((path.name, shlex.split(match.group(1))))
    assert found, "no pip install found: the pattern no longer matches the files"
    return found


@pytest.mark.parametrize("combo", combo_params())
def test_every_dependency_is_pinned_exactly(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """Every requirement a project declares or installs names one exact version, and pip's lock carries hashes.

    The locks pin the rest (pip: `--generate-hashes`, installed with `--require-hashes`; uv.lock, poetry.lock and
    conda-lock.yml always hold versions and hashes); a loose direct pin would let `make lock` move a version.
    """
    project = rendered_matrix[combo.id]
    pyproject = tomllib.loads((project / "pyproject.toml").read_text())
    declared = pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"]
    for extra in pyproject["project"]["optional-dependencies"].values():
        declared += extra
    for group in pyproject.get("dependency-groups", {}).values():
        declared += [item for item in group if isinstance(item, str)]  # {include-group = ...} names no package
    assert _not_exact(declared) == [], "pyproject.toml"
    installed = []
    for name, arguments in _pip_installs(project):
        values = {index + 1 for index, word in enumerate(arguments) if word in PIP_VALUE_OPTIONS}
        if "-r" in arguments:
            assert "--require-hashes" in arguments, f"{name}: pip install -r without --require-hashes"
        installed += [
            word for index, word in enumerate(arguments)
            if index not in values and not word.startswith(("-", "$", '"$')) and word not in {".", "./"}
        ]  # fmt: skip
    assert _not_exact(installed) == [], "pip install"
    if combo.manager == "pip":
        lock = [
            tokens for tokens in _make_commands(project, "lock") if tokens[1:4] == ["pip", "compile", "pyproject.toml"]
        ]
        assert lock and all("--generate-hashes" in tokens for tokens in lock), "make lock: no --generate-hashes"
    if combo.manager == "conda":
        from rattler import MatchSpec

        specs = [spec for category in CONDA_FILES for spec in _conda_specs(project, category)[1]]
        environment, _ = _conda_specs(project)
        # The interpreter and its installer follow the answered Python (and CUDA) by family; the lock pins builds.
        follow_answers = {"python", "cuda-version", "pip"}
        versions = {spec: MatchSpec(spec, strict=True) for spec in specs}
        loose = [
            spec for spec, match in versions.items()
            if match.name.normalized not in follow_answers and not str(match.version or "").startswith("==")
        ]  # fmt: skip
        assert loose == [], "environment.yml"
        pip_section = next((item["pip"] for item in environment["dependencies"] if isinstance(item, dict)), [])
        assert _not_exact(pip_section) == [], "environment.yml pip:"


def _make_commands(project: Path, *targets: str) -> list[list[str]]:
    """The commands `make <targets>` would run, as make expands them (split like a shell)."""
    result = subprocess.run(["make", "-n", *targets], cwd=project, capture_output=True, text=True, check=True)
    return [shlex.split(line) for line in result.stdout.splitlines() if line.strip()]


# conda-lock's categories: each one's environment file, and the pyproject.toml list holding the same pins.
CONDA_FILES = {
    "main": "environment.yml", "train": "environment.train.yml", "serve": "environment.serve.yml",
    "dev": "environment.dev.yml",
}  # fmt: skip


def _pyproject_group(pyproject: dict, category: str) -> list[str]:
    if category == "main":
        return pyproject["project"]["dependencies"]
    if category == "dev":
        return pyproject["dependency-groups"]["dev"]
    return pyproject["project"]["optional-dependencies"][category]


def _conda_specs(project: Path, category: str = "main") -> tuple[dict, list[str]]:
    environment = yaml.safe_load((project / CONDA_FILES[category]).read_text())
    specs = [item for item in environment["dependencies"] if isinstance(item, str)]
    return environment, specs


@pytest.mark.parametrize("combo", [p for p in combo_params() if p.values[0].manager == "conda"])
def test_conda_environment_is_valid_offline(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """No conda channel is reachable here: parse every spec with rattler (strict) and compare it with compat.yml.
    The solve itself (`make lock` = conda-lock) runs in the generated project's CI."""
    from rattler import MatchSpec

    environment, specs = _conda_specs(rendered_matrix[combo.id])
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
    # The same pins as pyproject.toml's groups, one environment file per group (conda-lock category), the
    # framework aside.
    pyproject = tomllib.loads((rendered_matrix[combo.id] / "pyproject.toml").read_text())
    requirements = pyproject["project"]["dependencies"]
    assert requirements[0] == framework["cuda"][combo.cuda]["requirement"].replace("{version}", framework["version"])
    for category, name in CONDA_FILES.items():
        environment, specs = _conda_specs(rendered_matrix[combo.id], category)
        assert environment.get("category", "main") == category, name
        assert environment["channels"] == ["conda-forge", "nodefaults"], name
        parsed = {match.name.normalized: match for match in map(functools.partial(MatchSpec, strict=True), specs)}
        pip_section = next((item["pip"] for item in environment["dependencies"] if isinstance(item, dict)), [])
        group = _pyproject_group(pyproject, category)
        pins = dict(requirement.split("==") for requirement in (group[1:] if category == "main" else group))
        extra = set(parsed) - {COMPAT["conda_names"].get(name, name) for name in pins}
        expected_extra = {framework["conda_package"], "python", "cuda-version", "pip", combo.framework}
        assert extra <= (expected_extra if category == "main" else set()), f"{name}: specs beyond its group {extra}"
        for dist, version in pins.items():
            conda_name = COMPAT["conda_names"].get(dist, dist)
            if dist in COMPAT["conda_pip_only"]:
                assert f"{dist}=={version}" in pip_section and conda_name not in parsed, f"{dist}: not in pip: alone"
            else:
                assert conda_name in parsed, f"{name}: no conda-forge spec {conda_name}"
                assert str(parsed[conda_name].version) == f"=={version}", dist


def _conda_install_categories(line: str) -> set[str]:
    return set(re.findall(r"--category (\S+)", line))


@pytest.mark.parametrize("combo", [p for p in combo_params() if p.values[0].manager == "conda"])
def test_conda_images_install_their_categories_of_the_one_lock(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """conda-lock solves every environment file together; each image's micromamba install takes its categories,
    and `make lock` passes every file."""
    project = rendered_matrix[combo.id]
    dockerfile = re.sub(r"\\\n\s*", " ", (project / "Dockerfile").read_text())
    stage = ""
    installs = {}
    for line in dockerfile.splitlines():
        if line.startswith("FROM "):
            stage = line.split()[-1]
        elif "micromamba create" in line:
            installs[stage] = _conda_install_categories(line)
    assert installs == {
        "train-env": {"main", "train"}, "serve-env": {"main", "serve"}, "dev-env": {"main", "train", "serve", "dev"},
    }  # fmt: skip
    for tokens in _conda_lock_commands(project):
        files = {tokens[index + 1] for index, word in enumerate(tokens) if word == "-f"}
        assert files == set(CONDA_FILES.values()), shlex.join(tokens)


def _conda_lock_commands(project: Path) -> list[list[str]]:
    """The `conda-lock lock` commands `make lock` and `make lock-check` run, as make expands them."""
    commands = [
        tokens for tokens in _make_commands(project, "lock", "lock-check") if tokens[:2] == ["conda-lock", "lock"]
    ]
    assert len(commands) == 2, f"expected the lock and lock-check solves: {commands}"
    return commands


@pytest.mark.parametrize("combo", [p for p in combo_params() if p.values[0].manager == "conda"])
def test_conda_lock_solves_for_the_answered_cuda(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    """conda-forge's CUDA builds need the virtual package __cuda >= their major; conda-lock assumes 11.4 unless
    told (--with-cuda). The lock-check must pass the same, since conda-lock's input hash covers it."""
    for tokens in _conda_lock_commands(rendered_matrix[combo.id]):
        with_cuda = [tokens[index + 1] for index, word in enumerate(tokens) if word == "--with-cuda"]
        assert with_cuda == ([] if combo.cuda == "cpu" else [combo.cuda]), shlex.join(tokens)
