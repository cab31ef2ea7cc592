"""`copier update` of a generated project: team edits survive, template changes arrive, conflicts show.

No test needs a tag in this clone. `releases` builds a git copy of the template (from the `template`
snapshot) with two releases of its own:

- v0.1.0: the working tree as it is;
- v0.2.0: v0.1.0 plus NEW_RELEASE: a new line in three generated files, a changed dependency pin in
  data/compat.yml, and the answer `use_dvc` renamed to `dvc_pipeline` with the migration that carries
  the recorded answer over (the pattern every future rename follows).

Projects are rendered from v0.1.0 through the template's ABSOLUTE path (a relative `_src_path` breaks
`copier update` run from elsewhere), committed, edited the way a team edits them, and updated.
`test_update_from_first_release` does the same from the real first release recorded in
data/releases.yml to the working tree.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from copier import VcsRef
from packaging.version import Version

from helpers.rendering import render, snapshot_template
from helpers.tools import BIN, tool
from matrix import COMPAT, FRAMEWORKS, MANAGERS, REPO

OLD, NEW = "v0.1.0", "v0.2.0"
BEFORE, AFTER = "<<<<<<< before updating", ">>>>>>> after updating"  # copier's inline conflict labels

# v0.2.0 of the test template: a new line at the end of these generated files ...
NEW_LINES = {
    "template/.gitignore.jinja": ("# Added in v0.2.0 of the test template\n", ".gitignore"),
    "template/README.md.jinja": ("Line added in v0.2.0 of the test template.\n", "README.md"),
    "template/.pre-commit-config.yaml.jinja": ("# Added in v0.2.0 of the test template\n", ".pre-commit-config.yaml"),
}
# ... a changed pin (v0.1.0's tqdm pin -> NEW_TQDM; a team that bumps it itself picks TEAM_TQDM) ...
OLD_TQDM = COMPAT["packages"]["train"]["tqdm"]
NEW_TQDM, TEAM_TQDM = "99.0.1", "99.0.2"
# ... and a renamed answer, moved over by a before-stage migration.
RENAME_MIGRATION = """\
  - version: v0.2.0
    command:
      - "{{ _copier_python }}"
      - "-c"
      - >-
        import pathlib, re; answers = pathlib.Path('.copier-answers.yml');
        answers.write_text(re.sub(r'(?m)^use_dvc:', 'dvc_pipeline:', answers.read_text()))
    when: "{{ _stage == 'before' }}"
"""

TEAM_TRAIN_LINE = 'TEAM_DEFAULT_CONFIG = "configs/team.yaml"  # team edit\n'
TEAM_README = "Churn prediction for the retention team (team edit)."
TEAM_FILE = "notes/team-decisions.md"
TEAM_FILE_TEXT = "# Decisions\n\n- 2026-11: epochs raised to 25 (team edit).\n"
DELETED = ".pre-commit-config.yaml"  # optional: a team that does not use pre-commit deletes it
TEMPLATE_FOLDERS = ("template", "partials", "managers")  # where the rename reaches (frameworks/ hold no answer)


# ---------------------------------------------------------------- helpers


def git(cwd: Path, *args: str, check: bool = True) -> str:
    """git with a fixed identity (CI runners have none) and no hooks."""
    command = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "core.hooksPath=/dev/null"]
    result = subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if check and result.returncode:
        raise AssertionError(f"git {' '.join(args)} failed in {cwd}:\n{result.stdout}{result.stderr}")
    return result.stdout


def commit_all(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)


def copy_from(template_repo: Path, destination: Path, answers: dict[str, Any], vcs_ref: str) -> Path:
    """A project rendered from a tagged git template (absolute path) and committed, as a team starts."""
    from copier import run_copy

    assert template_repo.is_absolute()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_copy(str(template_repo), destination, data=answers, vcs_ref=vcs_ref, defaults=True, quiet=True)
    git(destination, "init", "-q")
    commit_all(destination, "Start from ml-template")
    return destination


def update(project: Path, **options: Any) -> None:
    """`copier update --trust --defaults` through the API (overwrite=True is the API's consent)."""
    from copier import run_update

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_update(project, overwrite=True, defaults=True, unsafe=True, quiet=True, **options)


def files(root: Path) -> dict[str, bytes]:
    """Every file under root (outside .git) with its bytes."""
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and ".git" not in path.relative_to(root).parts
    }


def conflict_markers(project: Path) -> list[str]:
    """Files holding copier's inline conflict markers (at the start of a line, as git writes them)."""
    return [
        name
        for name, data in files(project).items()
        if re.search(rb"(?m)^(<<<<<<< before updating|>>>>>>> after updating)\s*$", data)
    ]


def rejects(project: Path) -> list[str]:
    return [name for name in files(project) if name.endswith(".rej")]


def unmerged(project: Path) -> list[str]:
    return git(project, "diff", "--name-only", "--diff-filter=U").split()


def answers_of(project: Path) -> dict[str, Any]:
    return yaml.safe_load((project / ".copier-answers.yml").read_text())


def dependency_file(project: Path) -> str:
    """The file the manager installs tqdm's pin from: environment.train.yml (conda: tqdm is in the train group;
    pyproject.toml holds the same pin), else pyproject.toml, the one list of direct dependencies."""
    manager = answers_of(project)["manager"]
    name = "environment.train.yml" if manager == "conda" else COMPAT["managers"][manager]["source"]
    assert re.search(rb"tqdm\W+" + re.escape(OLD_TQDM.encode()), files(project)[name]), f"{name} does not pin tqdm"
    return name


def replace_once(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"{old!r} occurs {text.count(old)} times in {path}"
    path.write_text(text.replace(old, new))


def team_edits(project: Path) -> None:
    """What a team does to a fresh project, committed: code, config, README, a new file, a deletion."""
    replace_once(project / "train.py", "import sys\n", "import sys\n\n" + TEAM_TRAIN_LINE)
    replace_once(project / "configs/baseline.yaml", "  epochs: 10\n", "  epochs: 25\n")
    description = answers_of(project)["description"]
    replace_once(project / "README.md", f"\n{description}.\n", f"\n{TEAM_README}\n")
    (project / TEAM_FILE).parent.mkdir(parents=True, exist_ok=True)
    (project / TEAM_FILE).write_text(TEAM_FILE_TEXT)
    (project / DELETED).unlink()
    commit_all(project, "Team edits")


def assert_team_edits_kept(project: Path) -> None:
    assert TEAM_TRAIN_LINE in (project / "train.py").read_text()
    assert "  epochs: 25\n" in (project / "configs/baseline.yaml").read_text()
    assert TEAM_README in (project / "README.md").read_text()
    assert (project / TEAM_FILE).read_text() == TEAM_FILE_TEXT
    assert not (project / DELETED).exists(), "a file the team deleted came back"


# ---------------------------------------------------------------- the test template's releases


def make_new_release(repo: Path) -> None:
    """v0.1.0 -> v0.2.0 of the test template (see the module docstring)."""
    for name, (line, _) in NEW_LINES.items():
        with (repo / name).open("a") as file:
            file.write(line)
    replace_once(repo / "data/compat.yml", f'tqdm: "{OLD_TQDM}"', f'tqdm: "{NEW_TQDM}"')
    renamed = [repo / "copier.yml", *(path for folder in TEMPLATE_FOLDERS for path in (repo / folder).rglob("*"))]
    for path in sorted(renamed, key=lambda p: len(p.parts), reverse=True):  # deepest first
        if path.is_file() and "use_dvc" in (text := path.read_text()):
            path.write_text(text.replace("use_dvc", "dvc_pipeline"))
        if "use_dvc" in path.name:  # conditional file names, e.g. {% if use_dvc %}dvc.yaml{% endif %}
            path.rename(path.with_name(path.name.replace("use_dvc", "dvc_pipeline")))
    config = (repo / "copier.yml").read_text()
    assert config.count("\n_migrations:\n") == 1, "copier.yml needs its _migrations block"
    (repo / "copier.yml").write_text(config.replace("\n_migrations:\n", "\n_migrations:\n" + RENAME_MIGRATION))


@pytest.fixture(scope="session")
def releases(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git copy of the template tagged v0.1.0 (the working tree) and v0.2.0 (NEW_RELEASE)."""
    repo = tmp_path_factory.mktemp("releases") / "ml-template"
    shutil.copytree(template, repo)
    git(repo, "init", "-q")
    commit_all(repo, "release 0.1.0")
    git(repo, "tag", OLD)
    make_new_release(repo)
    commit_all(repo, "release 0.2.0")
    git(repo, "tag", NEW)
    return repo


@pytest.fixture(scope="session")
def old_projects(releases: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """manager -> the default project of that manager, rendered from v0.1.0 and committed (cached)."""
    cache: dict[str, Path] = {}

    def get(manager: str) -> Path:
        if manager not in cache:
            destination = tmp_path_factory.mktemp(f"old-{manager}") / "ml-project"
            cache[manager] = copy_from(releases, destination, {"manager": manager}, OLD)
        return cache[manager]

    return get


@pytest.fixture
def project(old_projects: Callable[[str], Path], manager: str, tmp_path: Path) -> Path:
    """A private copy (git history included) of the manager's v0.1.0 project."""
    return Path(shutil.copytree(old_projects(manager), tmp_path / "ml-project", symlinks=True))


# ---------------------------------------------------------------- fast: static facts of the release process


def test_migrations_are_in_the_current_format() -> None:
    config = yaml.safe_load((REPO / "copier.yml").read_text())
    assert config["_migrations"], "copier.yml has no _migrations"
    for migration in config["_migrations"]:
        assert isinstance(migration, dict) and "command" in migration, migration
        assert not {"before", "after"} & set(migration), "legacy {version, before, after} format (deprecated)"
        if "version" in migration:
            assert migration["version"].startswith("v") and Version(migration["version"])
    assert Version(config["_min_copier_version"]) >= Version("9.13.0"), "check-update needs copier >= 9.13"


def test_first_release_is_recorded_and_in_the_changelog() -> None:
    first = yaml.safe_load((REPO / "data/releases.yml").read_text())["first_release"]
    assert re.fullmatch(r"v\d+\.\d+\.\d+", first["tag"]) and Version(first["tag"])
    assert first["commit"] is None or re.fullmatch(r"[0-9a-f]{40}", first["commit"]), "a full 40-hex sha, or null"
    headings = re.findall(r"(?m)^## (\S+)", (REPO / "CHANGELOG.md").read_text())
    assert first["tag"] in headings, f"CHANGELOG.md has no '## {first['tag']}' entry"
    releases = [h for h in headings if h != "Unreleased"]
    assert all(re.fullmatch(r"v\d+\.\d+\.\d+", h) for h in releases), releases
    assert releases == sorted(releases, key=Version, reverse=True), "newest release first"


def test_generated_readme_explains_updating(default_project: Path) -> None:
    readme = (default_project / "README.md").read_text()
    section = readme.split("## Updating from the template", 1)[1]
    for needed in ("copier update --trust", "--conflict rej", "copier recopy", BEFORE, AFTER, ".rej"):
        assert needed in section, needed
    # The example markers are indented: pre-commit's check-merge-conflict must not flag the README itself.
    assert not conflict_markers(default_project)


def test_ci_reports_new_releases_without_failing(default_project: Path) -> None:
    ci = yaml.safe_load((default_project / ".github/workflows/ci.yml").read_text())
    job = ci["jobs"]["template-update"]
    assert job.get("continue-on-error") is True
    steps = "\n".join(step.get("run", "") for step in job["steps"])
    assert f"copier=={COMPAT['tools']['copier']}" in steps and "copier check-update" in steps


@pytest.mark.parametrize(
    ("release", "expected"),
    [(OLD, f"::notice title=Template update::ml-template {NEW[1:]} is out"), (NEW, "Up to date")],
)
def test_ci_update_notice_runs(releases: Path, tmp_path: Path, release: str, expected: str) -> None:
    """The template-update job's script, run for real against a project at each release."""
    project = copy_from(releases, tmp_path / "ml-project", {}, release)
    ci = yaml.safe_load((project / ".github/workflows/ci.yml").read_text())
    script = next(
        step["run"] for step in ci["jobs"]["template-update"]["steps"] if step.get("name") == "copier check-update"
    )
    summary = tmp_path / "summary.md"
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "GITHUB_STEP_SUMMARY": str(summary), "HOME": str(tmp_path)}
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=project, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and expected in result.stdout, result.stdout + result.stderr
    assert (summary.exists() and f"at {OLD[1:]}" in summary.read_text()) == (release == OLD)


@pytest.mark.parametrize("dirt", ["modified", "untracked"])
@pytest.mark.parametrize("manager", MANAGERS)
def test_dirty_project_is_refused_untouched(project: Path, manager: str, dirt: str) -> None:
    if dirt == "modified":
        with (project / "train.py").open("a") as file:
            file.write("# uncommitted\n")
    else:
        (project / "scratch.py").write_text("print('uncommitted')\n")
    before, status = files(project), git(project, "status", "--porcelain")
    result = subprocess.run(
        [tool("copier"), "update", "--trust", "--defaults"], cwd=project, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "Destination repository is dirty; cannot continue" in result.stderr
    assert files(project) == before and git(project, "status", "--porcelain") == status


# ---------------------------------------------------------------- slow: real updates (each ~10-25 s)


@pytest.mark.slow
@pytest.mark.parametrize("manager", MANAGERS)
def test_update_keeps_team_edits_and_brings_the_release(project: Path, manager: str, releases: Path) -> None:
    pins = dependency_file(project)
    team_edits(project)
    update(project)

    assert_team_edits_kept(project)
    for line, generated in NEW_LINES.values():
        if generated != DELETED:
            assert (project / generated).read_text().endswith(line), f"{generated}: the template's new line"
    assert re.search(r"tqdm\W+" + re.escape(NEW_TQDM), (project / pins).read_text()), f"{pins}: the new pin"
    assert OLD_TQDM not in (project / pins).read_text()
    assert conflict_markers(project) == [] and rejects(project) == [] and unmerged(project) == []
    answers = answers_of(project)
    assert answers["_commit"] == NEW and answers["_src_path"] == str(releases)
    assert answers["dvc_pipeline"] is True and "use_dvc" not in answers, "the rename migration ran"


@pytest.mark.slow
@pytest.mark.parametrize("manager", MANAGERS)
def test_overlapping_edit_conflicts_inline_and_keeps_both(project: Path, manager: str) -> None:
    pins = dependency_file(project)
    replace_once(project / pins, OLD_TQDM, TEAM_TQDM)  # the team bumped tqdm; so did the template
    team_edits(project)
    update(project)

    text = (project / pins).read_text()
    assert conflict_markers(project) == [pins] and unmerged(project) == [pins]
    ours = text.split(BEFORE, 1)[1].split("=======", 1)[0]
    theirs = text.split("=======", 1)[1].split(AFTER, 1)[0]
    assert TEAM_TQDM in ours and NEW_TQDM in theirs
    assert rejects(project) == []
    assert_team_edits_kept(project)


@pytest.mark.slow
@pytest.mark.parametrize("manager", MANAGERS)
def test_overlapping_edit_as_rej_file_and_rejects_block_the_next_update(
    project: Path, manager: str, capfd: pytest.CaptureFixture[str]
) -> None:
    pins = dependency_file(project)
    replace_once(project / pins, OLD_TQDM, TEAM_TQDM)
    team_edits(project)
    update(project, conflict="rej")

    assert NEW_TQDM in (project / pins).read_text() and TEAM_TQDM not in (project / pins).read_text()
    assert rejects(project) == [f"{pins}.rej"]
    assert TEAM_TQDM in (project / f"{pins}.rej").read_text(), "the team's hunk survives in the .rej"
    assert conflict_markers(project) == []
    assert_team_edits_kept(project)
    # .gitignore hides *.rej from git status (and from copier's clean check): the template's
    # before-migration refuses the next update until the reject is resolved.
    commit_all(project, "update to v0.2.0 (reject not resolved yet)")
    assert git(project, "status", "--porcelain") == ""
    before = files(project)
    from copier.errors import TaskError

    capfd.readouterr()
    with pytest.raises(TaskError):
        update(project)
    assert f"copier update refused: unresolved conflicts from an earlier update in {pins}.rej" in capfd.readouterr().err
    assert files(project) == before, "the refused update touched the project"
    (project / f"{pins}.rej").unlink()
    update(project)


@pytest.mark.slow
def test_answer_rename_migration_keeps_the_answer(releases: Path, tmp_path: Path) -> None:
    """use_dvc -> dvc_pipeline in v0.2.0: without the migration a `false` answer would become the default `true`."""
    project = copy_from(releases, tmp_path / "ml-project", {"use_dvc": False}, OLD)
    new_config = yaml.safe_load(git(releases, "show", f"{NEW}:copier.yml"))
    assert new_config["dvc_pipeline"]["default"] is True and "use_dvc" not in new_config
    update(project)
    answers = answers_of(project)
    assert answers["dvc_pipeline"] is False and "use_dvc" not in answers
    dvc = COMPAT["packages"]["dvc"]["dvc"]
    assert not any(f"dvc=={dvc}".encode() in data for data in files(project).values()), "DVC came back"


def cuda_change(manager: str) -> tuple[str, dict[str, str]]:
    fw = FRAMEWORKS["pytorch"]
    cuda = [c for c in fw["cuda"] if c != "cpu"][-1]
    return cuda, {"cuda": cuda, "framework_index_url": fw["cuda"][cuda]["index"]}


@pytest.mark.slow
@pytest.mark.parametrize("manager", MANAGERS)
def test_changed_answer_rerenders_only_what_depends_on_it(
    project: Path, manager: str, releases: Path, tmp_path: Path
) -> None:
    cuda, data = cuda_change(manager)
    fresh_old = files(project)
    fresh_new = files(copy_from(releases, tmp_path / "fresh" / "ml-project", {"manager": manager, **data}, OLD))
    team_edits(project)
    update(project, data=data, vcs_ref=VcsRef.CURRENT)  # same release, new answer

    assert answers_of(project)["cuda"] == cuda and answers_of(project)["_commit"] == OLD
    assert conflict_markers(project) == [] and rejects(project) == []
    assert_team_edits_kept(project)
    after = files(project)
    team_touched = {"train.py", "configs/baseline.yaml", "README.md", TEAM_FILE, DELETED}
    for name in sorted((set(fresh_old) | set(fresh_new)) - team_touched - {".copier-answers.yml"}):
        assert after.get(name) == fresh_new.get(name), f"{name}: not what a fresh {cuda} project holds"
    depends = {n for n in set(fresh_old) | set(fresh_new) if fresh_old.get(n) != fresh_new.get(n)}
    assert "Dockerfile" in depends
    changed = set(git(project, "diff", "--name-only", "HEAD").split()) - {".copier-answers.yml"}
    assert changed <= depends, f"re-rendered without depending on cuda: {changed - depends}"
    assert "Dockerfile" in changed
    readme = (project / "README.md").read_text()
    assert f"CUDA {cuda}" in readme, "the README's cuda line merged next to the team's edit"


@pytest.mark.slow
def test_cuda_alone_moves_the_framework_index(old_projects: Callable[[str], Path], tmp_path: Path) -> None:
    """copier.yml's validator rejects the recorded CPU index for a CUDA answer, so the matching default wins."""
    project = Path(shutil.copytree(old_projects("pip"), tmp_path / "ml-project", symlinks=True))
    cuda, data = cuda_change("pip")
    update(project, data={"cuda": cuda}, vcs_ref=VcsRef.CURRENT)
    assert answers_of(project)["framework_index_url"] == data["framework_index_url"]


@pytest.mark.slow
def test_recopy_brings_back_one_deleted_file(old_projects: Callable[[str], Path], tmp_path: Path) -> None:
    """The README's recovery command: only the named file comes back, team edits untouched."""
    project = Path(shutil.copytree(old_projects("pip"), tmp_path / "ml-project", symlinks=True))
    team_edits(project)
    subprocess.run(
        [tool("copier"), "recopy", "--trust", "--defaults", "-q", "--vcs-ref", ":current:",
         "--exclude", "**", "--exclude", f"!{DELETED}"],
        cwd=project, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert git(project, "status", "--porcelain") == f"?? {DELETED}\n"
    assert (project / DELETED).read_bytes() == files(old_projects("pip"))[DELETED]


@pytest.mark.slow
def test_manager_change_replaces_dependency_files(old_projects: Callable[[str], Path], tmp_path: Path) -> None:
    project = Path(shutil.copytree(old_projects("pip"), tmp_path / "ml-project", symlinks=True))
    team_edits(project)
    update(project, data={"manager": "uv"}, vcs_ref=VcsRef.CURRENT)
    makefile = (project / "Makefile").read_text()
    assert "uv pip compile" not in makefile and "$(UV) sync" in makefile
    assert "[tool.uv" in (project / "pyproject.toml").read_text()
    assert conflict_markers(project) == [] and rejects(project) == []
    assert_team_edits_kept(project)


# ---------------------------------------------------------------- slow: the real first release to HEAD


def first_release() -> dict[str, Any]:
    return yaml.safe_load((REPO / "data/releases.yml").read_text())["first_release"]


@pytest.mark.slow
@pytest.mark.skipif(
    first_release()["commit"] is None,
    reason="data/releases.yml: first_release.commit is null until the first release is tagged (fill in its sha)",
)
def test_update_from_first_release(template: Path, tmp_path: Path) -> None:
    """The default project of the first release, updated to the working tree, equals a fresh render of it."""
    tag, commit = first_release()["tag"], first_release()["commit"]
    clone = tmp_path / "ml-template"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    if git(clone, "cat-file", "-t", commit, check=False).strip() != "commit":
        if git(REPO, "rev-parse", "--is-shallow-repository").strip() == "true":
            pytest.skip(f"{tag} ({commit}) is not in this shallow clone's history: clone fully (fetch-depth: 0)")
        pytest.fail(f"{commit} ({tag}) is not in this repository's history: fix data/releases.yml")
    tagged = git(clone, "rev-parse", "-q", "--verify", f"refs/tags/{tag}^{{commit}}", check=False).strip()
    if not tagged:
        git(clone, "tag", tag, commit)
    else:
        assert tagged == commit, f"tag {tag} is at {tagged}, data/releases.yml says {commit}"
    # HEAD of the clone := the working tree (uncommitted edits included), one commit after the tag at least.
    for name in git(clone, "ls-files", "-z").split("\0"):
        if name:
            (clone / name).unlink(missing_ok=True)
    snapshot_template(clone)  # copies REPO's files; same content as `template`
    commit_all(clone, "working tree")

    project = copy_from(clone, tmp_path / "ml-project", {}, tag)
    (project / TEAM_FILE).parent.mkdir(parents=True, exist_ok=True)
    (project / TEAM_FILE).write_text(TEAM_FILE_TEXT)
    commit_all(project, "Team file")
    update(project, vcs_ref="HEAD")

    assert conflict_markers(project) == [] and rejects(project) == [] and unmerged(project) == []
    fresh = files(render(template, tmp_path / "fresh" / "ml-project", {}))
    updated = files(project)
    assert updated.pop(TEAM_FILE) == TEAM_FILE_TEXT.encode()
    answers, fresh_answers = (yaml.safe_load(tree.pop(".copier-answers.yml")) for tree in (updated, fresh))
    assert answers["_commit"] != tag
    assert {k: v for k, v in answers.items() if k[0] != "_"} == {k: v for k, v in fresh_answers.items() if k[0] != "_"}
    assert sorted(updated) == sorted(fresh), "files differ from a fresh render"
    for name in fresh:
        assert updated[name] == fresh[name], f"{name} differs from a fresh render of the working tree"
