""".env: the example lists every variable, .env never enters git or an image, bad settings are one line."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers.tools import tool

ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=", re.MULTILINE)
# Light dependencies that the settings module needs to run (no framework): see README's test command.
SETTINGS_DEPS = ("pydantic", "pydantic_settings", "dotenv", "yaml")
# The compose files that interpolate variables from .env (the local stack and the team tracking server).
COMPOSE_FILES = ("compose.yaml", "compose.team.yaml")


def _settings_fields(project: Path) -> set[str]:
    """Field names of `Settings`, read from the source (no import, so no dependencies)."""
    tree = ast.parse((project / "src" / "ml_project" / "settings.py").read_text())
    settings = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    return {
        node.target.id
        for node in settings.body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id.isupper()
    }


def _compose_variables(project: Path, name: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (project / name).read_text()))


def _variables_read(project: Path) -> set[str]:
    """Variables compose interpolates and the package reads from os.environ."""
    names = set().union(*(_compose_variables(project, name) for name in COMPOSE_FILES))
    for source in (project / "src").rglob("*.py"):
        text = source.read_text()
        names |= set(re.findall(r"os\.environ(?:\.get|\.setdefault)?[\[(]\"([A-Z][A-Z0-9_]*)\"", text))
        names |= set(re.findall(r"os\.getenv\(\"([A-Z][A-Z0-9_]*)\"", text))
    return names


def test_env_example_documents_every_variable(default_project: Path) -> None:
    example = (default_project / ".env.example").read_text()
    assigned = set(ASSIGNMENT.findall(example))
    assert assigned == _settings_fields(default_project), "every Settings field, and only those, is assigned"
    # compose reads JUPYTER_TOKEN, ports and HOST_UID/HOST_GID from .env; the rest are at least explained.
    unexplained = {name for name in _variables_read(default_project) if name not in example}
    assert not unexplained, f".env.example does not mention {sorted(unexplained)}"
    compose = set().union(*(_compose_variables(default_project, name) for name in COMPOSE_FILES))
    assert compose - {"GIT_REVISION"} <= assigned, "compose's .env variables must be assignable in .env.example"
    assert all(value == "" for value in re.findall(r"^[A-Z][A-Z0-9_]*=(.*)$", example, re.MULTILINE)), "no real values"


def test_each_variable_has_a_comment(default_project: Path) -> None:
    lines = (default_project / ".env.example").read_text().splitlines()
    for index, line in enumerate(lines):
        if ASSIGNMENT.match(line):
            above = index - 1
            while above >= 0 and ASSIGNMENT.match(lines[above]):
                above -= 1
            assert above >= 0 and lines[above].startswith("#"), f"{line} has no comment above it"


def _git(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=False)


def test_git_and_docker_ignore_secrets_and_data(default_project: Path, tmp_path: Path) -> None:
    project = tmp_path / "repo"  # the project's ignore files in a fresh repository
    for name in (".gitignore", ".dvc/.gitignore", ".dockerignore"):
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_text((default_project / name).read_text())
    _git(project, "init", "-q")
    ignored = [
        *(".env", ".env.local", "sub/.env", "data/raw/x.csv", "data/processed/train.npy", "outputs/run/x"),
        *("dvc_plots/index.html", ".dvc/storage/files/md5/ab", ".dvc/cache/files/md5/ab", ".dvc/config.local"),
    ]
    for path in ignored:
        assert _git(project, "check-ignore", "-q", path).returncode == 0, f"git does not ignore {path}"
    for path in (
        ".env.example",
        "dvc.yaml",
        "dvc.lock",
        ".dvc/config",
        ".dvcignore",
        "data/raw.dvc",
    ):
        assert _git(project, "check-ignore", "-q", path).returncode == 1, f"git ignores {path}"
    docker = (project / ".dockerignore").read_text().split()
    assert {
        ".env",
        ".env.*",
        "!.env.example",
        "data/",
        ".dvc/cache",
        ".dvc/storage",
    } <= set(docker)


def _hooks(project: Path) -> dict[str, dict[str, object]]:
    config = yaml.safe_load((project / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: {**hook, "repo": repo["repo"]} for repo in config["repos"] for hook in repo["hooks"]}


def test_pre_commit_refuses_env_files_and_private_keys(default_project: Path) -> None:
    hooks = _hooks(default_project)
    assert "detect-private-key" in hooks
    no_env = hooks["no-env-file"]
    # pre-commit matches `files`/`exclude` with re.search on the repository-relative path.
    refused = [".env", "deploy/.env", ".env.local", ".env.production"]
    allowed = [
        ".env.example",
        "sub/.env.example",
        "src/env.py",
        "my.env.txt",
        "environment.yml",
    ]
    for path in refused:
        assert re.search(str(no_env["files"]), path) and not re.search(str(no_env["exclude"]), path), path
    for path in allowed:
        assert not re.search(str(no_env["files"]), path) or re.search(str(no_env["exclude"]), path), path


def test_pre_commit_hook_really_fails_a_committed_env(default_project: Path, tmp_path: Path) -> None:
    """Runs the project's local hooks with pre-commit itself (remote hooks would need the network)."""
    pre_commit = tool("pre-commit")  # requirements-dev.txt installs it: missing is a failure, never a skip
    config = yaml.safe_load((default_project / ".pre-commit-config.yaml").read_text())
    local = {"repos": [repo for repo in config["repos"] if repo["repo"] == "local"]}
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "local.yaml").write_text(yaml.safe_dump(local))
    (repo / ".env.example").write_text("JUPYTER_TOKEN=\n")
    env = {
        **os.environ,
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
        "HOME": str(tmp_path),
    }
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-f", ".env.example", "local.yaml"], cwd=repo, check=True)
    command = [pre_commit, "run", "--config", "local.yaml"]
    assert subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=False).returncode == 0
    (repo / ".env").write_text("JUPYTER_TOKEN=secret\n")
    subprocess.run(["git", "add", "-f", ".env"], cwd=repo, check=True)
    refused = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=False)
    assert refused.returncode == 1 and "no-env-file" in refused.stdout + refused.stderr, refused.stdout


def _train(project: Path, work: Path, env_text: str, config: str) -> subprocess.CompletedProcess[str]:
    """`python train.py --config CONFIG` in `work`, whose .env holds `env_text`; no project variable inherited."""
    missing = [name for name in SETTINGS_DEPS if importlib.util.find_spec(name) is None]
    assert not missing, f"the test venv lacks {missing}: run README's test command (requirements-dev.txt)"
    (work / ".env").write_text(env_text)
    env = {key: value for key, value in os.environ.items() if key not in _settings_fields(project)}
    env["PYTHONPATH"] = str(project / "src")
    command = [sys.executable, str(project / "train.py"), "--config", config]
    return subprocess.run(
        command,
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("env_text", "expected"),
    [
        (
            "MLFLOW_TRACKING_USERNAME=alice\n",
            ["MLFLOW_TRACKING_PASSWORD: required when MLFLOW_TRACKING_USERNAME"],
        ),
        (
            "AWS_SECRET_ACCESS_KEY=s3cr3t\n",
            ["AWS_ACCESS_KEY_ID: required when AWS_SECRET_ACCESS_KEY"],
        ),
        ("MLFLOW_PORT=eighty\n", ["MLFLOW_PORT: Input should be a valid integer"]),
        (
            "MLFLOW_TRACKING_URI=mlflow.example\n",
            ["MLFLOW_TRACKING_URI: 'mlflow.example' must start with"],
        ),
        (
            "HOST_UID=-1\nJUPYTER_PORT=0\nAZURE_STORAGE_KEY=k\n",
            ["HOST_UID", "JUPYTER_PORT", "AZURE_STORAGE_ACCOUNT"],
        ),
    ],
    ids=[
        "missing-password",
        "missing-key-id",
        "malformed-port",
        "malformed-uri",
        "three-at-once",
    ],
)
def test_bad_settings_stop_train_py_with_one_line(
    default_project: Path, tmp_path: Path, env_text: str, expected: list[str]
) -> None:
    result = _train(
        default_project,
        tmp_path,
        env_text,
        str(default_project / "configs" / "baseline.yaml"),
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: environment"), result.stderr
    for fragment in expected:
        assert fragment in lines[0]
    assert "s3cr3t" not in result.stderr


def test_copied_env_example_is_accepted(default_project: Path, tmp_path: Path) -> None:
    """`cp .env.example .env` must not stop training: empty values mean defaults. (The config error
    that follows proves the settings passed, without importing the framework.)"""
    result = _train(
        default_project,
        tmp_path,
        (default_project / ".env.example").read_text(),
        "missing.yaml",
    )
    assert result.returncode == 2 and "missing.yaml: no such config file" in result.stderr, result.stderr
