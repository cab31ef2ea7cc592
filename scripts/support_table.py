"""Write README.md's support table from data/compat.yml (`--check` fails if README disagrees).

python scripts/support_table.py          # rewrite the table in README.md
python scripts/support_table.py --check  # exit 1 if README.md is stale (the tests run this)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
START, END = "<!-- support-table:start -->", "<!-- support-table:end -->"


def render(compat: dict[str, Any]) -> str:
    rows = [
        "| framework | version | compute (`cuda`) | Python | base image per compute |",
        "|---|---|---|---|---|",
    ]
    for name, fw in compat["frameworks"].items():
        images = ", ".join(
            f"`{cuda}`: `{compat['images']['cuda'][cuda] if cuda != 'cpu' else compat['images']['python']}`"
            for cuda in fw["cuda"]
        )
        rows.append(
            f"| {fw['label']} (`{name}`) | {fw['version']} | {', '.join(fw['cuda'])} | "
            f"{', '.join(fw['python'])} | {images} |"
        )
    managers = ", ".join(f"`{key}` ({manager['label']})" for key, manager in compat["managers"].items())
    releases = ", ".join(compat["python_patch"].values())
    return "\n".join(
        [
            *rows,
            "",
            f"Every row works with every dependency manager: {managers}.",
            f"`{{python}}` is the exact Python release ({releases}); pip, poetry and uv install the same release "
            "from uv in CUDA images (conda: the lock pins conda-forge's).",
        ]
    )


def replace_table(readme: str, table: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return pattern.sub(lambda _: f"{START}\n{table}\n{END}", readme)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail instead of writing when README.md is stale")
    args = parser.parse_args()
    compat = yaml.safe_load((REPO / "data" / "compat.yml").read_text())
    readme_path = REPO / "README.md"
    current = readme_path.read_text()
    updated = replace_table(current, render(compat))
    if updated == current:
        return 0
    if args.check:
        print("README.md's support table is stale: run python scripts/support_table.py", file=sys.stderr)
        return 1
    readme_path.write_text(updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
