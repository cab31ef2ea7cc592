"""Every combination renders, and every file it renders passes the static check for its kind.

Each tool runs once over the whole matrix (that is what keeps the full matrix under a minute);
the per-combination tests then read their own verdict from it.
"""

from __future__ import annotations

import json
import py_compile
import re
import subprocess
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from conftest import combo_params, tool
from matrix import Combo

UNRENDERED = re.compile(r"\{\{|\{%|\{#")
GITHUB_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
# Every project holds these whatever the answers (the files the manager/DVC answers add are checked below).
CORE_FILES = [
    ".copier-answers.yml", ".dockerignore", ".env.example", ".gitignore", ".pre-commit-config.yaml",
    ".python-version", ".github/workflows/ci.yml", "Dockerfile", "Makefile", "README.md", "compose.yaml",
    "configs/baseline.yaml", "pyproject.toml", "train.py", "tests/test_reproducibility.py",
]  # fmt: skip
MANAGER_FILES = {"pip": ["requirements.in"], "conda": ["environment.yml"], "poetry": [], "uv": []}


def _files(project: Path) -> list[Path]:
    return [path for path in project.rglob("*") if path.is_file()]


def _project_of(root: Path, path: str | Path) -> str:
    """The combination folder (directly under the matrix root) that a tool finding belongs to."""
    path = Path(path)
    return (path if path.is_absolute() else root / path).resolve().relative_to(root.resolve()).parts[0]


@pytest.fixture(scope="session")
def matrix_root(rendered_matrix: dict[str, Path]) -> Path:
    return next(iter(rendered_matrix.values())).parent


@pytest.fixture(scope="session")
def ruff_findings(matrix_root: Path) -> dict[str, list[str]]:
    """ruff check and ruff format --check over all projects, each with its own pyproject settings."""
    check = subprocess.run(
        [tool("ruff"), "check", "--output-format", "json", "--no-cache", "."],
        cwd=matrix_root,
        capture_output=True,
        text=True,
    )
    found = [f"{item['filename']}: {item['code']} {item['message']}" for item in json.loads(check.stdout or "[]")]
    formatted = subprocess.run(
        [tool("ruff"), "format", "--check", "--no-cache", "."], cwd=matrix_root, capture_output=True, text=True
    )
    found += [
        line.removeprefix("Would reformat: ") for line in formatted.stdout.splitlines() if "Would reformat" in line
    ]
    grouped: dict[str, list[str]] = defaultdict(list)
    for line in found:
        grouped[_project_of(matrix_root, line.split(":")[0])].append(line)
    return grouped


@pytest.fixture(scope="session")
def hadolint_findings(matrix_root: Path) -> dict[str, list[str]]:
    dockerfiles = sorted(str(path) for path in matrix_root.glob("*/Dockerfile"))
    result = subprocess.run([tool("hadolint"), "-f", "json", *dockerfiles], capture_output=True, text=True)
    grouped: dict[str, list[str]] = defaultdict(list)
    for item in json.loads(result.stdout or "[]"):
        grouped[_project_of(matrix_root, item["file"])].append(f"line {item['line']}: {item['code']} {item['message']}")
    return grouped


def _jsonschema_failures(root: Path, files: list[str], schema: str) -> dict[str, list[str]]:
    result = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", schema, "--output-format", "json", *files],
        capture_output=True, text=True,
    )  # fmt: skip
    report = json.loads(result.stdout)
    grouped: dict[str, list[str]] = defaultdict(list)
    for error in report.get("errors", []) + report.get("parse_errors", []):
        grouped[_project_of(root, error["filename"])].append(error.get("message", str(error)))
    return grouped


@pytest.fixture(scope="session")
def compose_findings(matrix_root: Path) -> dict[str, list[str]]:
    composes = sorted(str(path) for path in matrix_root.glob("*/compose.yaml"))
    return _jsonschema_failures(matrix_root, composes, "vendor.compose-spec")


@pytest.fixture(scope="session")
def workflow_findings(matrix_root: Path) -> dict[str, list[str]]:
    workflows = sorted(str(p) for p in matrix_root.glob("*/.github/workflows/*.yml"))
    grouped = _jsonschema_failures(matrix_root, workflows, "vendor.github-workflows")
    result = subprocess.run([tool("actionlint"), "-format", "{{json .}}", *workflows], capture_output=True, text=True)
    for item in json.loads(result.stdout or "[]"):
        grouped[_project_of(matrix_root, item["filepath"])].append(f"actionlint line {item['line']}: {item['message']}")
    return grouped


@pytest.mark.parametrize("combo", combo_params())
def test_renders_completely(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    project = rendered_matrix[combo.id]
    names = {str(path.relative_to(project)) for path in _files(project)}
    expected = CORE_FILES + MANAGER_FILES[combo.manager] + (["dvc.yaml"] if combo.use_dvc else [])
    assert not [name for name in expected if name not in names], "missing files"
    assert not [name for name in names if name.endswith(".jinja")]
    leftovers = []
    for path in _files(project):
        text = GITHUB_EXPRESSION.sub("", path.read_text(errors="replace"))
        if UNRENDERED.search(text):
            leftovers.append(str(path.relative_to(project)))
    assert not leftovers, f"unrendered Jinja in {leftovers}"


@pytest.mark.parametrize("combo", combo_params())
def test_data_files_parse(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    for path in _files(rendered_matrix[combo.id]):
        if path.suffix in {".yml", ".yaml"}:
            yaml.safe_load(path.read_text())
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".py":
            py_compile.compile(str(path), doraise=True)


@pytest.mark.parametrize("combo", combo_params())
def test_python_is_ruff_clean(combo: Combo, ruff_findings: dict[str, list[str]]) -> None:
    assert ruff_findings.get(combo.id, []) == []


@pytest.mark.parametrize("combo", combo_params())
def test_dockerfile_passes_hadolint(combo: Combo, hadolint_findings: dict[str, list[str]]) -> None:
    assert hadolint_findings.get(combo.id, []) == []


@pytest.mark.parametrize("combo", combo_params())
def test_compose_matches_compose_spec(combo: Combo, compose_findings: dict[str, list[str]]) -> None:
    assert compose_findings.get(combo.id, []) == []


@pytest.mark.parametrize("combo", combo_params())
def test_workflows_pass_schema_and_actionlint(combo: Combo, workflow_findings: dict[str, list[str]]) -> None:
    assert workflow_findings.get(combo.id, []) == []
