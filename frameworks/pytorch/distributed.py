"""Joining a distributed run started by torchrun, and what DistributedDataParallel training needs besides.

torchrun starts one process per device and tells each its place through the environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT): on one host with `--standalone`, over many through its c10d rendezvous
(`--nnodes --rdzv-backend=c10d --rdzv-endpoint=HOST:PORT --rdzv-id=ID`). Processes talk over NCCL on GPUs and gloo
on CPUs. `training.batch_size` is the global batch: each of the N replicas takes batch_size / N rows of it.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from .config import Config
from .world import World, WorldError

STRATEGY = "ddp"
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def join(config: Config) -> World:
    """Join the process group torchrun set up; one line naming the launch when this process was not started by it."""
    if missing := [name for name in TORCHRUN_VARIABLES if name not in os.environ]:
        raise WorldError(
            f"distributed.enabled=true needs torchrun's environment ({', '.join(missing)} unset): launch with "
            "`make train-distributed NPROC=N` or `torchrun --standalone --nproc-per-node=N train.py ... "
            "distributed.enabled=true`"
        )
    size = int(os.environ["WORLD_SIZE"])
    if config.training.batch_size % size:
        raise WorldError(
            f"training.batch_size={config.training.batch_size} does not split evenly over {size} replicas; "
            f"choose a multiple of {size}"
        )
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return World(
        strategy=STRATEGY,
        processes=dist.get_world_size(),
        process_index=dist.get_rank(),
        replicas=dist.get_world_size(),
        barrier=dist.barrier,
        shutdown=dist.destroy_process_group,
    )


def rank_seed(seed: int, rank: int) -> int:
    """Rank 0 keeps the run's seed (its dropout draws those of a one-process run); each other rank gets its own,
    hashed from (seed, rank), so no two replicas drop the same units."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def sum_over_replicas(*values: float) -> list[float]:
    """Each value summed over every process (float64: counts stay exact)."""
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else None
    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()


def gathered(value: Any) -> list[Any]:
    """`value` from every process, in rank order (the chief saves them all, each rank restores its own)."""
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values
