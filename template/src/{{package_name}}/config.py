"""Experiment configuration: one YAML file, validated by pydantic, overridable from the command line."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError, describe


class ConfigError(UserError):
    """A config that cannot be used; the message is one line naming the dotted key."""


class _Section(BaseModel):
    # extra="forbid" turns a typo into an error instead of a silently ignored key.
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelConfig(_Section):
    hidden_sizes: list[int] = Field(default=[64], min_length=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)


class TrainingConfig(_Section):
    batch_size: int = Field(gt=0)
    epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0.0)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = Field(default=0.0, ge=0.0)


class SplitConfig(_Section):
    train: float = Field(gt=0.0, lt=1.0)
    val: float = Field(gt=0.0, lt=1.0)
    test: float = Field(gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"train + val + test must sum to 1, got {total:g}")
        return self


class DataConfig(_Section):
    # "digits" ships with scikit-learn (no download); "synthetic" is the fastest, for tests.
    # Plug in your own data in data.py (see load_dataset).
    dataset: Literal["digits", "synthetic"] = "digits"
    splits: SplitConfig
    num_workers: int = Field(default=0, ge=0)


class DistributedConfig(_Section):
    # false: one process on one device. true: one replica per device, in as many processes as the framework's
    # launcher starts (README "Scale out"); results then depend on the number of replicas (run.json records it).
    enabled: bool = False


class PathsConfig(_Section):
    data_dir: str = "data"
    output_dir: str = "outputs"


class Config(_Section):
    seed: int = Field(ge=0, lt=2**32)  # NumPy's legacy global seed is 32-bit; every framework accepts this range
    experiment_name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    deterministic: bool = True
    model: ModelConfig = ModelConfig()
    training: TrainingConfig
    data: DataConfig
    paths: PathsConfig = PathsConfig()
    distributed: DistributedConfig = DistributedConfig()

    def flat(self) -> dict[str, Any]:
        """The config as dotted keys, for MLflow params."""
        return flatten(self.model_dump(mode="json"))

    def digest(self) -> str:
        """A stable hash of the resolved config (recorded in run.json)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML reads YAML 1.1, where `1e-3` is a string; YAML 1.2 (and every other tool) reads a float."""


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),  # 1.1 already reads 1.5, 1.0e+3
    list("-+.0123456789"),
)


def read_yaml(text: str) -> Any:
    """YAML with YAML 1.2 numbers: `1e-3`, `3e-4` and `1.0e3` are floats."""
    return yaml.load(text, Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader subclass


def differing_keys(first: dict[str, Any], second: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two configs (as `model_dump(mode="json")` gives them)."""
    left, right = flatten(first), flatten(second)
    return sorted(key for key in left.keys() | right.keys() if left.get(key) != right.get(key))


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` override; the value is parsed as YAML (3 -> int, 1e-3 -> float)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{assignment}' is not KEY=VALUE (e.g. training.epochs=3)")
    *parents, leaf = key.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: '{part}' is not a section, it holds {child!r}")
        node = child
    node[leaf] = read_yaml(raw) if raw else ""


def default_output_dir(config: Config) -> Path:
    return Path(config.paths.output_dir) / f"{config.experiment_name}-seed{config.seed}"


def load_config(path: Path, overrides: Sequence[str] = (), seed: int | None = None) -> Config:
    """Read, override and validate a config file; every failure is a one-line ConfigError."""
    try:
        tree = read_yaml(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    for assignment in overrides:
        apply_override(tree, assignment)
    if seed is not None:
        tree["seed"] = seed
    try:
        return Config.model_validate(tree)
    except ValidationError as error:
        raise ConfigError(f"{path}: {describe(error)}") from None
