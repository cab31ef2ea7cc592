"""The mutation check: each patch in tests/mutations/ breaks the template on purpose, and the test it names must
fail on the broken copy. A test that still passes cannot guard what it claims to (README, "Testing").

A patch starts with `# test: <pytest node id>` and `# why: <what the mutation breaks>`, then a git diff against
the repository. A patch that no longer applies fails too: a mutation is kept current with the code it breaks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import snapshot_template
from matrix import REPO

pytestmark = pytest.mark.slow
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
def test_the_named_test_catches_the_mutation(patch: Path, tmp_path: Path) -> None:
    copy = snapshot_template(tmp_path / "template")
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    applied = subprocess.run(["git", "apply", str(patch)], cwd=copy, capture_output=True, text=True)
    assert applied.returncode == 0, f"{patch.name} no longer applies: {applied.stderr}"
    test = header(patch)["test"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", test],
        cwd=copy, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    # pytest exits 1 when a test failed (in its body: FAILED, or in a fixture it needs: ERROR); 2-5 mean it never
    # ran (interrupted, usage error, no such node, nothing collected).
    caught = f"FAILED {test}" in result.stdout or f"ERROR {test}" in result.stdout
    assert result.returncode == 1 and caught, f"{patch.name}: {result.stdout[-3000:]}"
