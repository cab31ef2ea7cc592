"""The one exception type the command line turns into a one-line message (no traceback), and how it does."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Protocol

from pydantic import ValidationError


class UserError(Exception):
    """Something the user can fix: a bad config, a missing variable, an unreachable server, a used run folder."""

    exit_code = 2  # the command line's exit status for this error (a subclass may choose another)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, a scheduler's time limit), raised like Ctrl-C so cleanup runs."""


class Command(Protocol):
    """A command's `main`: its arguments (default: sys.argv[1:]) in, its exit status out."""

    def __call__(self, argv: Sequence[str] | None = None) -> int: ...


def reports_user_errors(main: Command) -> Command:
    """Wrap a command's `main`: a UserError becomes `error: MESSAGE` on stderr and the error's exit status."""

    @functools.wraps(main)
    def run(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except UserError as error:
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code

    return run


def describe(error: ValidationError) -> str:
    """pydantic's errors as one line: `dotted.key: message; ...`."""
    problems = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key (typo?)"
        # Only the message: pydantic's `input` (the raw value) may be a secret, so it is never shown.
        problems.append(f"{location}: {message}" if location else message)
    return "; ".join(problems)
