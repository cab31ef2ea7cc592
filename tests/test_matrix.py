"""Every combination renders, and every file it renders passes the static check for its kind.

Each tool runs once over the whole matrix (that is what keeps the full matrix under a minute; deptry, which reads
one project's pyproject.toml, once per project); the per-combination tests then read their own verdict from it.
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

from helpers.rendering import combo_params
from helpers.tools import tool
from matrix import COMPAT, REPO, Combo

UNRENDERED = re.compile(r"\{\{|\{%|\{#")
GITHUB_EXPRESSION = re.compile(r"\$\{\{.*?\}\}")
# Grafana's own label placeholders in a panel's legend ("legendFormat": "class {{predicted_class}}").
GRAFANA_LEGEND = re.compile(r'"legendFormat": "[^"]*"')
# Every project holds these whatever the answers (the manager's source file and dvc.yaml are checked below).
CORE_FILES = [
    ".copier-answers.yml", ".dockerignore", ".env.example", ".gitignore", ".pre-commit-config.yaml",
    ".python-version", ".github/workflows/ci.yml", "Dockerfile", "Makefile", "README.md", "compose.yaml",
    "compose.team.yaml", "team/basic_auth.ini", "team/create-auth-db.sql", "configs/baseline.yaml", "pyproject.toml",
    "train.py", "tests/test_reproducibility.py", "slurm/train.sbatch", "k8s/job.yaml", "k8s/service.yaml",
    "k8s/configmap.yaml", "k8s/pvc.yaml",
]  # fmt: skip


def _files(project: Path) -> list[Path]:
    return [path for path in project.rglob("*") if path.is_file()]


def _checked_run(command: list[str], findings_codes: set[int], cwd: Path | None = None) -> tuple[int, str]:
    """Runs a checker; an exit code its docs give neither for "clean" (0) nor for "findings" fails the test.

    A crash, a bad flag or a file it could not read is never a clean verdict. Returns (exit code, stdout).
    """
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0 and result.returncode not in findings_codes:
        pytest.fail(f"{Path(command[0]).name} failed with exit code {result.returncode}:\n{result.stderr[-3000:]}")
    return result.returncode, result.stdout


def _json_report(command: list[str], findings_codes: set[int], cwd: Path | None = None) -> list[dict]:
    """A checker's JSON report, its exit code checked; no parseable report, or findings claimed but absent, fails."""
    code, stdout = _checked_run(command, findings_codes, cwd)
    try:
        report = json.loads(stdout)
    except json.JSONDecodeError:
        pytest.fail(f"{Path(command[0]).name} exited {code} without a JSON report:\n{stdout[-3000:]}")
    if code in findings_codes and not report:
        pytest.fail(f"{Path(command[0]).name} exited {code} (findings) with an empty report")
    return report


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
    # ruff check and ruff format --check both exit 0 when clean, 1 on findings, 2 on an error.
    check = _json_report([tool("ruff"), "check", "--output-format", "json", "--no-cache", "."], {1}, matrix_root)
    found = [f"{item['filename']}: {item['code']} {item['message']}" for item in check]
    code, formatted = _checked_run([tool("ruff"), "format", "--check", "--no-cache", "."], {1}, matrix_root)
    reformat = [line.removeprefix("Would reformat: ") for line in formatted.splitlines() if "Would reformat" in line]
    if code == 1 and not reformat:
        pytest.fail(f"ruff format --check exited 1 without naming a file:\n{formatted[-3000:]}")
    found += reformat
    grouped: dict[str, list[str]] = defaultdict(list)
    for line in found:
        grouped[_project_of(matrix_root, line.split(":")[0])].append(line)
    return grouped


@pytest.fixture(scope="session")
def hadolint_findings(matrix_root: Path) -> dict[str, list[str]]:
    dockerfiles = sorted(str(path) for path in matrix_root.glob("*/Dockerfile"))
    # hadolint exits 0 when clean (findings below its failure threshold may still be listed), 1 on findings;
    # it also exits 1 on a file it cannot read, but then prints no JSON report, which fails here.
    report = _json_report([tool("hadolint"), "-f", "json", *dockerfiles], {1})
    grouped: dict[str, list[str]] = defaultdict(list)
    for item in report:
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
    names = ("compose.yaml", "compose.team.yaml", "compose.gpu.yaml", "compose.multigpu.yaml")
    composes = sorted(str(path) for name in names for path in matrix_root.glob(f"*/{name}"))
    return _jsonschema_failures(matrix_root, composes, "vendor.compose-spec")


@pytest.fixture(scope="session")
def workflow_findings(matrix_root: Path) -> dict[str, list[str]]:
    workflows = sorted(str(p) for p in matrix_root.glob("*/.github/workflows/*.yml"))
    grouped = _jsonschema_failures(matrix_root, workflows, "vendor.github-workflows")
    # actionlint exits 0 when clean, 1 on findings, 2 on a bad command line, 3 on a fatal error.
    report = _json_report([tool("actionlint"), "-format", "{{json .}}", *workflows], {1}, matrix_root)
    for item in report:
        grouped[_project_of(matrix_root, item["filepath"])].append(f"actionlint line {item['line']}: {item['message']}")
    return grouped


# zizmor's documented exit codes (docs/usage.md, "Exit codes"): 0 no findings; 11-14 findings, the highest being
# informational, low, medium or high; 1 an audit error, 2 a bad command line, 3 no input collected.
ZIZMOR_FINDINGS_EXIT = {11, 12, 13, 14}


def _zizmor(workflows: list[str]) -> list[tuple[str, str]]:
    """zizmor --offline (the regular persona, as users run it) over the workflows: (file, finding) per finding.

    --strict-collection makes a workflow zizmor cannot parse an error: without it, zizmor skips the file
    with a warning and reports the rest as clean.
    """
    assert workflows, "no workflow to audit"
    command = [tool("zizmor"), "--offline", "--strict-collection", "--format", "json", *workflows]
    found = []
    for item in _json_report(command, ZIZMOR_FINDINGS_EXIT):
        if item.get("ignored"):
            continue
        primary = next(loc for loc in item["locations"] if loc["symbolic"]["kind"] == "Primary")
        path = primary["symbolic"]["key"]["Local"]["verbatim_path"]
        line = primary["concrete"]["location"]["start_point"]["row"] + 1  # zizmor counts rows from 0
        found.append((path, f"line {line}: {item['ident']} ({item['determinations']['severity']}) {item['desc']}"))
    return found


@pytest.fixture(scope="session")
def zizmor_findings(matrix_root: Path) -> dict[str, list[str]]:
    """zizmor's security audit, run once over every rendered workflow."""
    workflows = sorted(str(p) for p in matrix_root.glob("*/.github/workflows/*.yml"))
    grouped: dict[str, list[str]] = defaultdict(list)
    for path, finding in _zizmor(workflows):
        grouped[_project_of(matrix_root, path)].append(finding)
    return grouped


@pytest.fixture(scope="session")
def pyproject_findings(rendered_matrix: dict[str, Path]) -> dict[str, list[str]]:
    """validate-pyproject over every pyproject.toml at once (exit 0 all valid, 1 an invalid file), then deptry in
    each project: every import declared in pyproject.toml, every runtime dependency imported (0 clean, 1 findings)."""
    matrix_root = next(iter(rendered_matrix.values())).parent
    pyprojects = [str(project / "pyproject.toml") for project in rendered_matrix.values()]
    code, report = _checked_run([tool("validate-pyproject"), *pyprojects], {1})
    grouped: dict[str, list[str]] = defaultdict(list)
    valid = {_project_of(matrix_root, line.removeprefix("Valid file: ")) for line in report.splitlines()}
    for combo_id in set(rendered_matrix) - valid:
        grouped[combo_id].append(f"validate-pyproject: invalid pyproject.toml (exit {code})")
    for combo_id, project in rendered_matrix.items():
        report_file = project.parent / f"{combo_id}.deptry.json"
        _checked_run([tool("deptry"), ".", "--json-output", str(report_file)], {1}, project)
        for item in json.loads(report_file.read_text()):
            grouped[combo_id].append(f"deptry {item['error']['code']}: {item['error']['message']}")
    return grouped


@pytest.mark.parametrize("combo", combo_params())
def test_renders_completely(combo: Combo, rendered_matrix: dict[str, Path]) -> None:
    project = rendered_matrix[combo.id]
    names = {str(path.relative_to(project)) for path in _files(project)}
    expected = [*CORE_FILES, COMPAT["managers"][combo.manager]["source"], *(["dvc.yaml"] if combo.use_dvc else [])]
    assert not [name for name in expected if name not in names], "missing files"
    assert not [name for name in names if name.endswith(".jinja")]
    gpu_overrides = {"compose.gpu.yaml", "compose.multigpu.yaml"}
    assert names & gpu_overrides == (gpu_overrides if combo.cuda != "cpu" else set()), "GPU overrides on GPU hosts"

    leftovers = []
    for path in _files(project):
        text = GRAFANA_LEGEND.sub("", GITHUB_EXPRESSION.sub("", path.read_text(errors="replace")))
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
        elif path.suffix == ".json":  # devcontainer.json is JSONC: its header comment lines go first
            json.loads(
                re.sub(r"(?m)^//.*$", "", path.read_text()) if path.name == "devcontainer.json" else path.read_text()
            )
        elif path.suffix == ".py":
            py_compile.compile(str(path), doraise=True)


@pytest.mark.parametrize("combo", combo_params())
def test_pyproject_is_valid_and_declares_every_import(combo: Combo, pyproject_findings: dict[str, list[str]]) -> None:
    assert pyproject_findings.get(combo.id, []) == []


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


@pytest.mark.parametrize("combo", combo_params())
def test_workflows_pass_zizmor(combo: Combo, zizmor_findings: dict[str, list[str]]) -> None:
    assert zizmor_findings.get(combo.id, []) == []


def test_own_workflows_pass_zizmor() -> None:
    """The template's own CI is held to the same bar as the workflows it generates."""
    workflows = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    assert _zizmor(workflows) == []
