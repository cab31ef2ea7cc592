"""The one exception type the command line turns into a one-line message (no traceback)."""


class UserError(Exception):
    """Something the user can fix: a bad config, a missing variable, an unreachable server, a used run folder."""

    exit_code = 2  # the command line's exit status for this error (a subclass may choose another)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `docker stop`, a scheduler's time limit), raised like Ctrl-C so cleanup runs."""
