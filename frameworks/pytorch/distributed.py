"""Joining a distributed run through the framework's own launcher (engine.start_world calls `join`)."""

from __future__ import annotations

from .config import Config
from .world import World, WorldError


def join(config: Config) -> World:
    raise WorldError(f"distributed.enabled: not built yet ({config.experiment_name})")
