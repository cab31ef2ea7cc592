"""README.md stays true: its support table matches data/compat.yml, and .ci/run runs its test command.
The tools it installs (requirements-dev.txt) are pinned as data/compat.yml pins them for projects."""

from __future__ import annotations

import re
import subprocess
import sys

from matrix import COMPAT, REPO


def test_support_table_matches_compat_data() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/support_table.py", "--check"], cwd=REPO, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_readme_opens_with_two_commands_and_ci_runs_the_second() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [line for line in first_block.group(1).splitlines() if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "copier copy" in commands[0] and "train" in commands[0]
    assert commands[1] in (REPO / ".ci" / "run").read_text()


def test_dev_requirements_pin_what_compat_pins() -> None:
    pins = dict(
        line.split("==")
        for line in (REPO / "requirements-dev.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    compat = {name: version for group in COMPAT["packages"].values() for name, version in group.items()}
    compat |= {name: version for name, version in COMPAT["tools"].items()}
    compat |= COMPAT["team_server"]["packages"]  # boto3: the team server's S3 client, and the test's
    shared = set(pins) & set(compat)
    assert {"copier", "uv", "poetry", "pydantic", "pre-commit", "boto3"} <= shared
    assert {name: pins[name] for name in shared} == {name: compat[name] for name in shared}


def test_own_workflow_pins_the_actions_compat_pins() -> None:
    """This repository's CI uses the same action commits as the generated CI (data/compat.yml's actions)."""
    own = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    uses = set(re.findall(r"uses: (.+)", own))
    assert uses and uses <= set(COMPAT["actions"].values()), uses - set(COMPAT["actions"].values())
