"""README.md stays true: its support table matches data/compat.yml, and .ci/run runs its test command."""

from __future__ import annotations

import re
import subprocess
import sys

from matrix import REPO


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
