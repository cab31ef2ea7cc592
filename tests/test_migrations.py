"""copier.yml's `_migrations` scripts (migrations/*.py), run as copier runs them: in a project folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from matrix import REPO

MIGRATIONS = REPO / "migrations"


def _project(tmp_path: Path, *files: str) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("*.rej\n")
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("a hunk\n")
    return tmp_path


def _run(script: str, project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(MIGRATIONS / script)], cwd=project, capture_output=True, text=True)


def test_every_migration_script_is_run_by_copier_yml() -> None:
    migrations = yaml.safe_load((REPO / "copier.yml").read_text())["_migrations"]
    commands = [" ".join(entry["command"]) for entry in migrations]
    for script in MIGRATIONS.glob("*.py"):
        assert any(f"migrations/{script.name}" in command for command in commands), f"{script.name} is never run"


def test_no_rejects_lets_the_update_go_on(tmp_path: Path) -> None:
    result = _run("refuse_unresolved_rejects.py", _project(tmp_path, "README.md"))
    assert (result.returncode, result.stderr) == (0, "")


@pytest.mark.parametrize("reject", ["pyproject.toml.rej", "src/pkg/cli.py.rej"])
def test_an_unresolved_reject_refuses_the_update_in_one_line(tmp_path: Path, reject: str) -> None:
    result = _run("refuse_unresolved_rejects.py", _project(tmp_path, reject))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"copier update refused: unresolved conflicts from an earlier update in {reject}. Merge each into its "
        "file, delete the .rej files, commit, and run the update again."
    ]
