"""data/compat.yml states each fact once: where one still repeats another (an image tag and the tool or package
it runs), they must agree; every key the templates read exists, for every framework and manager."""

from __future__ import annotations

import re

import pytest

from matrix import COMPAT, FRAMEWORKS, MANAGERS, REPO

MANAGER_FACTS = {
    "label", "source", "lock", "lock_command", "install_command", "lock_check_command", "keeps_pins", "python",
    "builder", "index", "locked_install",
}  # fmt: skip
OPTIONAL_FACTS = {"image_locks"}  # pip's per-image lock files (the others select groups from their one lock)
# Each manager's pieces, beside frameworks/<name>/ (managers/<name>/, included or imported by the templates).
MANAGER_PIECES = ["targets.mk.jinja", "builder.Dockerfile.jinja", "install.Dockerfile.jinja", "ci-setup.yml.jinja",
                  "pyproject.toml.jinja", "README.md.jinja"]  # fmt: skip


def _tag(image: str) -> str:
    return image.rsplit(":", 1)[1]


def test_image_tags_agree_with_the_pins_of_what_they_run() -> None:
    """The uv and micromamba images are the tools the Makefile and CI install; MLflow's server is the client's
    version (an older server can refuse a newer client's requests)."""
    images, tools = COMPAT["images"], COMPAT["tools"]
    assert _tag(images["uv"]) == tools["uv"]
    assert _tag(images["micromamba"]).split("-")[0] == tools["micromamba"]
    assert _tag(images["mlflow"]) == f"v{COMPAT['packages']['train']['mlflow']}"


@pytest.mark.parametrize("name", FRAMEWORKS)
def test_framework_requirements_derive_from_its_version(name: str) -> None:
    framework = FRAMEWORKS[name]
    for cuda, flavour in framework["cuda"].items():
        requirement = flavour["requirement"]
        assert re.fullmatch(r"[a-z0-9-]+(\[[a-z0-9-]+\])?==\{version\}", requirement), f"{cuda}: {requirement}"
    assert set(framework["python"]) <= set(COMPAT["python_patch"]), "a Python version without an exact release"
    for library in framework["libraries"]:
        assert re.fullmatch(r"[a-z0-9-]+==[0-9][0-9.]*", library), library


def test_names_and_versions_are_known() -> None:
    assert COMPAT["default_python"] in COMPAT["python_patch"]
    assert all(release.startswith(f"{version}.") for version, release in COMPAT["python_patch"].items())
    every_pin = {name for group in COMPAT["packages"].values() for name in group}
    assert set(COMPAT["conda_names"]) <= every_pin and set(COMPAT["conda_pip_only"]) <= every_pin
    cpu_dists = {f["cuda"]["cpu"]["requirement"].split("==")[0].split("[")[0] for f in FRAMEWORKS.values()}
    assert set(COMPAT["import_names"]) <= every_pin | cpu_dists


@pytest.mark.parametrize("manager", MANAGERS)
def test_each_manager_has_its_facts_and_pieces(manager: str) -> None:
    facts = COMPAT["managers"][manager]
    assert MANAGER_FACTS <= set(facts) <= MANAGER_FACTS | OPTIONAL_FACTS
    assert facts["python"] in {"path", "uv", "lock"} and facts["index"] in {"make", "pyproject", "none"}
    assert facts["builder"] in COMPAT["images"]
    assert sorted(path.name for path in (REPO / "managers" / manager).iterdir()) == sorted(MANAGER_PIECES)
