"""copier.yml: defaults, computed answers, and answers refused at question time with a clear message."""

from __future__ import annotations

import keyword
import re
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.rendering import render
from helpers.tools import tool
from matrix import COMPAT, REPO, refused_combos


def test_defaults_give_pytorch_cpu_pip(default_project: Path) -> None:
    answers = yaml.safe_load((default_project / ".copier-answers.yml").read_text())
    assert (answers["framework"], answers["cuda"], answers["manager"]) == ("pytorch", "cpu", "pip")
    assert answers["python_version"] == COMPAT["default_python"]
    assert answers["package_name"] == "ml_project"


def test_computed_values_are_not_recorded(default_project: Path) -> None:
    answers = yaml.safe_load((default_project / ".copier-answers.yml").read_text())
    assert "compat" not in answers
    assert "reserved_names" not in answers


def test_package_name_is_derived_from_project_name(template: Path, tmp_path: Path) -> None:
    project = render(template, tmp_path / "p", {"project_name": "My Cool-Project 2"})
    assert (project / "src" / "my_cool_project_2" / "__init__.py").exists()


def test_framework_index_url_is_asked_only_where_it_applies(template: Path, tmp_path: Path) -> None:
    project = render(template, tmp_path / "p", {"framework": "jax"})
    answers = yaml.safe_load((project / ".copier-answers.yml").read_text())
    assert "framework_index_url" not in answers


@pytest.mark.parametrize(
    ("package_name", "message"),
    [
        ("my-proj!", "is not a valid package name"),
        ("123abc", "is not a valid package name"),
        ("MyProj", "is not a valid package name"),
        ("", "is not a valid package name"),
        ("import", "is a Python keyword or standard-library module"),
        ("class", "is a Python keyword or standard-library module"),
        ("json", "is a Python keyword or standard-library module"),
        ("logging", "is a Python keyword or standard-library module"),
    ],
)
def test_bad_package_names_are_refused(copie, package_name: str, message: str) -> None:
    result = copie.copy(extra_answers={"package_name": package_name})
    assert result.exit_code != 0 and result.project_dir is None, "a refused answer must leave nothing behind"
    assert re.match(f"Validation error for question 'package_name': .*{message}", str(result.exception))


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"author_email": "not-an-email"}, "is not an e-mail address"),
        ({"project_name": "  "}, "cannot be empty"),
        ({"framework": "mxnet"}, "Invalid choice for 'framework'"),
        ({"manager": "pipenv"}, "Invalid choice for 'manager'"),
        ({"framework_index_url": "download.pytorch.org/whl/cpu"}, "is not an index URL"),
        (
            {"cuda": "12.8", "framework_index_url": "https://download.pytorch.org/whl/cpu"},
            "holds cpu wheels but cuda is '12.8'",
        ),
    ],
)
def test_bad_answers_are_refused(copie, answers: dict[str, str], message: str) -> None:
    """pytest-copie renders the repository as `copier copy` does (git HEAD, uncommitted edits included)."""
    result = copie.copy(extra_answers=answers)
    assert result.exit_code != 0 and result.project_dir is None
    assert message in str(result.exception)


def test_copy_needs_no_trust(template: Path, tmp_path: Path) -> None:
    """`render` passes unsafe=False, as `copier copy` without --trust: copying runs no task or migration."""
    project = render(template, tmp_path / "p", {})
    assert (project / ".copier-answers.yml").is_file()


@pytest.mark.parametrize(("answers", "message"), refused_combos(), ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_unpublished_combinations_are_refused_naming_valid_choices(
    template: Path, tmp_path: Path, answers: dict[str, str], message: str
) -> None:
    framework = COMPAT["frameworks"][answers["framework"]]
    valid = list(framework["cuda"]) if "cuda" in answers else framework["python"]
    with pytest.raises(ValueError, match=rf"{message} is not in \[") as caught:
        render(template, tmp_path / "p", answers)
    assert all(f"'{choice}'" in str(caught.value) for choice in valid)


def test_refused_combinations_include_the_known_bad_ones() -> None:
    refused = {tuple(sorted(answers.items())) for answers, _ in refused_combos()}
    assert (("cuda", "11.8"), ("framework", "tensorflow")) in refused
    assert (("cuda", "11.8"), ("framework", "jax")) in refused
    assert (("framework", "jax"), ("python_version", "3.10")) in refused


def test_reserved_names_cover_this_interpreter() -> None:
    reserved = set((REPO / "data" / "reserved_names.txt").read_text().split())
    expected = set(keyword.kwlist) | {name for name in sys.stdlib_module_names if not name.startswith("_")}
    assert expected <= reserved, sorted(expected - reserved)


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _choices(prompt: Any, question: str, last: str) -> str:
    """The choice list the prompt shows for `question` (up to its `last` entry); takes the pre-selected one."""
    prompt.expect(question)
    prompt.expect(re.escape(last))
    shown = ANSI.sub("", prompt.before + prompt.after)
    prompt.send("\r")
    return shown


def test_the_prompt_refuses_bad_answers_inline_and_offers_only_published_choices(
    template: Path, tmp_path: Path
) -> None:
    """A person at copier's prompt (a real terminal, driven by pexpect): a bad answer is refused with the same
    message and asked again; a choice the framework does not publish is never offered."""
    import pexpect

    jax = COMPAT["frameworks"]["jax"]
    prompt = pexpect.spawn(
        tool("copier"), ["copy", str(template), str(tmp_path / "p")],
        encoding="utf-8", timeout=60, dimensions=(50, 200), env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    clear = "\x15"  # Ctrl-U: drop the default the prompt pre-fills

    def answer(question: str, text: str = "", refused: str | None = None) -> str:
        prompt.expect(question)
        shown = ANSI.sub("", prompt.before)
        prompt.send((clear + text if text else "") + "\r")  # no text: keep the default
        if refused:
            prompt.expect(refused)
        return shown

    answer("Project name")
    answer("package name", "123abc", refused="is not a valid package name")
    prompt.send(clear + "json\r")
    prompt.expect("is a Python keyword or standard-library module")
    prompt.send(clear + "good_name\r")
    answer("One-line description")
    answer("Author or team name")
    answer("Contact e-mail", "not-an-email", refused="is not an e-mail address")
    prompt.send(clear + "team@example.com\r")
    prompt.expect("ML framework")
    prompt.send("\x1b[B" * list(COMPAT["frameworks"]).index("jax") + "\r")  # arrow down to JAX
    offered_cuda = _choices(prompt, "Compute target", list(jax["cuda"])[-1])
    offered_python = _choices(prompt, "Python version", jax["python"][-1])
    prompt.expect("Dependency manager")
    prompt.send("\r")
    prompt.expect("DVC pipeline")
    prompt.send("\r")
    prompt.expect(pexpect.EOF)
    prompt.close()
    assert prompt.exitstatus == 0, prompt.before
    assert all(cuda in offered_cuda for cuda in jax["cuda"]) and "12.6" not in offered_cuda
    assert all(python in offered_python for python in jax["python"]) and "3.10" not in offered_python
    answers = yaml.safe_load((tmp_path / "p" / ".copier-answers.yml").read_text())
    assert (answers["package_name"], answers["author_email"], answers["framework"]) == (
        "good_name", "team@example.com", "jax",
    )  # fmt: skip
