"""Before every `copier update`: refuse while a *.rej from an earlier `copier update --conflict rej` is unresolved.

.gitignore hides *.rej, so copier's clean-tree check cannot see them, and a new update would mix its rejects
with the old ones. Run by copier.yml's `_migrations` in the project folder, with copier's own Python.
"""

from __future__ import annotations

import subprocess
import sys


def unresolved_rejects() -> list[str]:
    """The *.rej files git ignores in the current folder (untracked ones included)."""
    listed = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    return [name for name in listed if name.endswith(".rej")]


def main() -> int | str:
    rejects = unresolved_rejects()
    if not rejects:
        return 0
    return (
        f"copier update refused: unresolved conflicts from an earlier update in {', '.join(rejects)}. "
        "Merge each into its file, delete the .rej files, commit, and run the update again."
    )


if __name__ == "__main__":
    sys.exit(main())
