"""Joining a distributed run through `jax.distributed`, and placing data on its devices (data parallelism).

`join` calls `jax.distributed.initialize()`, which on JAX 0.10.2 reads by itself:
- JAX_COORDINATOR_ADDRESS: host:port of process 0, which serves the coordinator there (reachable by all);
  JAX_COORDINATOR_BIND_ADDRESS (default [::]:PORT), JAX_LOCAL_DEVICE_IDS (e.g. "0,1": the devices this process
  uses; default all), JAX_PARTITION_INDEX;
- with any of address, process count or id missing, its cluster detection fills them in: Slurm (SLURM_JOB_ID,
  SLURM_STEP_NODELIST, SLURM_NTASKS, SLURM_PROCID, SLURM_LOCALID: one task per device, the first node serves
  the coordinator on JAX_COORDINATOR_PORT or a port derived from the job id), Open MPI (OMPI_MCA_orte_hnp_uri,
  OMPI_COMM_WORLD_SIZE/RANK/LOCAL_RANK), Kubernetes Indexed Jobs (only with the `kubernetes` package, which this
  project does not install) and Cloud TPU VMs.
JAX reads no variable for the process count and id outside those clusters; this module reads them:
- JAX_NUM_PROCESSES, JAX_PROCESS_ID (0 is the chief), given to `initialize` when set.
With none of these, a run is one process, data-parallel over its own devices (`jax.devices()`).
A process that cannot reach the coordinator is ended by JAX itself (DEADLINE_EXCEEDED, after 300 s).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from .config import Config
from .world import SINGLE, World, WorldError

STRATEGY = "data_parallel"
BATCH_AXIS = "batch"
COORDINATOR = "JAX_COORDINATOR_ADDRESS"  # read by JAX itself
NUM_PROCESSES = "JAX_NUM_PROCESSES"
PROCESS_ID = "JAX_PROCESS_ID"
# What initialize raises when neither the environment nor a detected cluster names a coordinator.
_NO_COORDINATOR = "coordinator_address should be defined"


def join(config: Config) -> World:
    """This process's place in the run; the first call initializes `jax.distributed` (before any device query)."""
    if _initialize() and not jax.distributed.is_initialized():
        raise WorldError("jax.distributed: this process already ended its distributed run; start a new process")
    return World(
        strategy=STRATEGY,
        processes=jax.process_count(),
        process_index=jax.process_index(),
        replicas=jax.device_count(),
        barrier=_barrier(config.experiment_name) if jax.process_count() > 1 else SINGLE.barrier,
        shutdown=jax.distributed.shutdown if jax.distributed.is_initialized() else SINGLE.shutdown,
    )


@functools.cache  # JAX joins once per process: a later run in it keeps the first answer
def _initialize() -> bool:
    """True once this process joined the others; False where nothing names a coordinator (one process)."""
    counts = {name: _env_int(name) for name in (NUM_PROCESSES, PROCESS_ID)}
    try:
        jax.distributed.initialize(num_processes=counts[NUM_PROCESSES], process_id=counts[PROCESS_ID])
    except ValueError as error:
        if _NO_COORDINATOR in str(error) and counts == {NUM_PROCESSES: None, PROCESS_ID: None}:
            return False
        raise WorldError(
            f"jax.distributed.initialize: {error} (a launch sets {COORDINATOR}, {NUM_PROCESSES} and {PROCESS_ID}, "
            "or runs under Slurm)"
        ) from error
    except RuntimeError as error:  # JAX computed before this call, or a second initialize
        raise WorldError(f"jax.distributed.initialize: {str(error).splitlines()[0]}") from error
    return True


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise WorldError(f"{name}={value!r}: expected an integer") from None


def _barrier(name: str) -> Callable[[], None]:
    return lambda: multihost_utils.sync_global_devices(name)


class DataParallel:
    """One replica of the model per device of the run: batches split along their first axis, the rest copied.

    Auto axes, not `jax.make_mesh`'s default Explicit ones: the model and loss are the single-device code, with
    no sharding in their types, and XLA places the all-reduce of the gradients itself.
    """

    def __init__(self) -> None:
        devices = jax.devices()
        mesh = jax.make_mesh((len(devices),), (BATCH_AXIS,), (AxisType.Auto,), devices=devices)
        self.replicas = len(devices)
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.split = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))

    def replicate(self, tree: Any) -> Any:
        """The same host values on every device (each process gives its own, identical copy)."""
        return jax.tree.map(lambda leaf: jax.device_put(np.asarray(leaf), self.replicated), tree)

    def shard(self, rows: np.ndarray) -> jax.Array:
        """Rows split over the devices; each process copies only its devices' slices (every process has all)."""
        return jax.make_array_from_callback(rows.shape, self.split, lambda index: rows[index])

    def valid_rows(self, count: int) -> np.ndarray:
        """`count` rows padded to a multiple of the replicas: True for a row, False for padding."""
        valid = np.zeros(-(-count // self.replicas) * self.replicas, bool)
        valid[:count] = True
        return valid
