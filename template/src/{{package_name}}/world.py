"""Which process of a run this is: one process (the default), or one of many started by a framework's launcher.

The engine starts the world (`engine.start_world`): torchrun's environment for PyTorch, `jax.distributed` for
JAX, `TF_CONFIG` for TensorFlow. The runner only asks whether this process is the chief, which alone writes the
run folder and talks to MLflow, and waits at `barrier()` where every process must have arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError


class WorldError(UserError):
    """A distributed run that cannot start (no launcher, a resume on another world size); one line."""


def _alone() -> None:
    """A barrier or shutdown with one process: nothing to wait for."""


@dataclass(frozen=True)
class World:
    strategy: str = "none"  # the framework's name for it: ddp, mirrored, multi_worker_mirrored, data_parallel
    processes: int = 1
    process_index: int = 0  # the rank; 0 is the chief
    replicas: int = 1  # copies of the model that each see a slice of every batch: the devices of all processes
    barrier: Callable[[], None] = field(default=_alone, repr=False, compare=False)
    shutdown: Callable[[], None] = field(default=_alone, repr=False, compare=False)

    @property
    def is_chief(self) -> bool:
        return self.process_index == 0

    def record(self) -> dict[str, Any]:
        """What run.json and each checkpoint record: results depend on the number of replicas."""
        return {"strategy": self.strategy, "processes": self.processes, "replicas": self.replicas}


SINGLE = World()


def check_same_size(saved: dict[str, Any] | None, world: World, where: str) -> None:
    """A resume continues on as many replicas as the checkpoint was trained on (a checkpoint without: one)."""
    before = (saved or SINGLE.record())["replicas"]
    if before != world.replicas:
        raise WorldError(
            f"--resume: {where} was trained on {before} replica(s), this launch has {world.replicas}; "
            f"the batches each replica sees, and so the results, depend on it: relaunch on {before}"
        )
