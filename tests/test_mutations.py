"""The mutation check: each patch in tests/mutations/ breaks the template on purpose, and the test it names must
fail on the broken copy. A test that still passes cannot guard what it claims to (README, "Testing").

A patch starts with `# test: <pytest node id>` and `# why: <what the mutation breaks>`, then a git diff against
the repository. With `# project: <framework>`, the test is one of the generated project's: the framework's default
project is rendered from the broken template and its test runs with the installed default project's environment.
A test that fails in a fixture rather than its body (an ERROR) counts only when the patch's `# expect: <text>` line
names what the fixture must report. A patch that no longer applies fails too: a mutation is kept current with the
code it breaks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.rendering import render, snapshot_template
from matrix import REPO

MUTATIONS = sorted((REPO / "tests" / "mutations").glob("*.patch"))


def header(patch: Path) -> dict[str, str]:
    """The `# key: value` lines above the diff."""
    lines = patch.read_text().split("\ndiff --git", 1)[0].splitlines()
    return dict(line.removeprefix("# ").split(": ", 1) for line in lines if line.startswith("# "))


def test_every_mutation_names_its_test_and_reason() -> None:
    assert MUTATIONS, "tests/mutations/ holds no patch"
    for patch in MUTATIONS:
        assert {"test", "why"} <= set(header(patch)), f"{patch.name} lacks '# test:' or '# why:'"


@pytest.mark.parametrize("patch", MUTATIONS, ids=lambda patch: patch.stem)
def test_every_mutation_still_applies(patch: Path) -> None:
    """In the fast tier: a change to the code a patch breaks shows at once, not only in the slow check."""
    applied = subprocess.run(["git", "apply", "--check", str(patch)], cwd=REPO, capture_output=True, text=True)
    assert applied.returncode == 0, f"{patch.name} no longer applies: {applied.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("patch", MUTATIONS, ids=lambda patch: patch.stem)
def test_the_named_test_catches_the_mutation(patch: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    copy = snapshot_template(tmp_path / "template")
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    applied = subprocess.run(["git", "apply", str(patch)], cwd=copy, capture_output=True, text=True)
    assert applied.returncode == 0, f"{patch.name} no longer applies: {applied.stderr}"
    fields = header(patch)
    if "project" in fields:  # a test of the generated project: render the broken template, run its suite
        command, cwd, env = _in_generated_project(copy, fields["project"], tmp_path, request)
    else:
        command, cwd, env = [sys.executable, "-m", "pytest"], copy, dict(os.environ)
    result = subprocess.run(
        [*command, "-x", "-q", "-p", "no:cacheprovider", fields["test"]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    # pytest exits 1 when a test failed; 2-5 mean it never ran (interrupted, usage error, no such node, nothing
    # collected). A failure in the test's body counts. An ERROR (in a fixture it needs) counts only with the
    # `# expect:` text in the output: a patch that merely stops the template rendering breaks every fixture.
    failed = f"FAILED {fields['test']}" in result.stdout
    errored = f"ERROR {fields['test']}" in result.stdout and fields.get("expect", "\0") in result.stdout
    caught = failed or errored
    assert result.returncode == 1 and caught, f"{patch.name}: {result.stdout[-3000:]}"


def _in_generated_project(
    template: Path, framework: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[list[str], Path, dict[str, str]]:
    """The framework's default project rendered from the broken template, run by the installed project's Python:
    its src/ comes first on PYTHONPATH, ahead of the installed (unbroken) package."""
    installed, env = request.getfixturevalue("installed_project")(framework)
    answers = yaml.safe_load((installed / ".copier-answers.yml").read_text())
    keep = {"framework", "framework_index_url"}
    project = render(template, tmp_path / "project", {key: value for key, value in answers.items() if key in keep})
    python = str(installed / ".venv" / "bin" / "python")
    return [python, "-m", "pytest"], project, {**env, "PYTHONPATH": str(project / "src"), "PYTHONHASHSEED": "0"}
