"""Every answer combination the questionnaire allows, enumerated from data/compat.yml (never by hand)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
COMPAT: dict[str, Any] = yaml.safe_load((REPO / "data" / "compat.yml").read_text())
MANAGERS: list[str] = list(COMPAT["managers"])
FRAMEWORKS: dict[str, Any] = COMPAT["frameworks"]
# The answers `copier copy --defaults` gives (copier.yml's defaults, use_dvc included): always rendered as such.
DEFAULT = (next(iter(FRAMEWORKS)), "cpu", COMPAT["default_python"], MANAGERS[0])


@dataclass(frozen=True)
class Combo:
    framework: str
    cuda: str
    python: str
    manager: str
    use_dvc: bool = True

    @property
    def id(self) -> str:
        dvc = "" if self.use_dvc else "-nodvc"
        return f"{self.framework}-{self.cuda}-py{self.python}-{self.manager}{dvc}"

    def answers(self) -> dict[str, Any]:
        return {
            "framework": self.framework,
            "cuda": self.cuda,
            "python_version": self.python,
            "manager": self.manager,
            "use_dvc": self.use_dvc,
        }


def all_combos() -> list[Combo]:
    """framework x CUDA x Python x manager, each pair only where the framework publishes it.

    use_dvc is independent of the rest, so it is cycled rather than multiplied: both values are
    rendered for every framework x manager pair, at half the cost.
    """
    combos = []
    for name, fw in FRAMEWORKS.items():
        product = itertools.product(fw["cuda"], fw["python"], MANAGERS)
        for index, (cuda, python, manager) in enumerate(product):
            is_default = (name, cuda, python, manager) == DEFAULT
            combos.append(Combo(name, cuda, python, manager, use_dvc=index % 5 != 4 or is_default))
    return combos


def fast_sample(combos: list[Combo]) -> list[Combo]:
    """The combinations the fast tier checks; the slow tier checks the rest.

    Each framework with each of its CUDA choices, Python versions and managers at least once, the default
    framework, CUDA, Python and manager, and a project without DVC.
    """
    picked: list[Combo] = []
    for name, fw in FRAMEWORKS.items():
        cudas, pythons = list(fw["cuda"]), list(fw["python"])
        for index in range(max(len(cudas), len(pythons), len(MANAGERS))):
            cuda, python = cudas[index % len(cudas)], pythons[index % len(pythons)]
            manager = MANAGERS[index % len(MANAGERS)]
            picked += [c for c in combos if (c.framework, c.cuda, c.python, c.manager) == (name, cuda, python, manager)]
    picked += [c for c in combos if (c.framework, c.cuda, c.python, c.manager) == DEFAULT]
    picked += [next(c for c in combos if not c.use_dvc)]
    return [c for c in combos if c in picked]


def refused_combos() -> list[tuple[dict[str, str], str]]:
    """Answers the questionnaire must refuse, with the words its message must contain."""
    every_cuda = sorted({cuda for fw in FRAMEWORKS.values() for cuda in fw["cuda"]} | {"11.8"})
    refused: list[tuple[dict[str, str], str]] = []
    for name, fw in FRAMEWORKS.items():
        for cuda in every_cuda:
            if cuda not in fw["cuda"]:
                refused.append(({"framework": name, "cuda": cuda}, f"Invalid choice for 'cuda': '{cuda}'"))
        for python in [*COMPAT["python_patch"], "3.9", "3.10", "3.14"]:
            if python not in fw["python"]:
                refused.append(
                    ({"framework": name, "python_version": python}, f"Invalid choice for 'python_version': '{python}'")
                )
    return refused


if __name__ == "__main__":  # `python tests/matrix.py`: every combination with the tier that checks it
    everything = all_combos()
    fast = set(fast_sample(everything))
    for combo in everything:
        print(f"{'fast' if combo in fast else 'slow'}  {combo.id}")
    print(f"{len(fast)} fast + {len(everything) - len(fast)} slow = {len(everything)} combinations")
