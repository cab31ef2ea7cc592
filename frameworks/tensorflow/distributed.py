"""Joining a distributed run through TensorFlow's own strategies (engine.start_world calls `join`).

- `TF_CONFIG` set (one per process, as TensorFlow documents it): MultiWorkerMirroredStrategy over the workers it
  names, each training on all of its local GPUs (or its CPU).
- Else a Slurm step of several tasks (`srun` sets SLURM_PROCID, SLURM_STEP_NUM_TASKS, SLURM_STEP_NODELIST,
  SLURM_STEP_TASKS_PER_NODE): the same strategy, the cluster resolved by TensorFlow's SlurmClusterResolver.
- Else MirroredStrategy over this process's devices: every GPU, or every logical CPU device (one unless configured).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
from collections.abc import Callable, Iterator

import tensorflow as tf

from .config import Config
from .world import World, WorldError

_WORKER_JOBS = ("chief", "worker")  # the task types MultiWorkerMirroredStrategy trains on
_SLURM_STEP = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
_ABORTED = "Collective ops is aborted by: "  # how TensorFlow's UnavailableError names the cause
_SLURM_PORT_BASE = 8888  # SlurmClusterResolver's default: tasks on a node listen on 8888, 8889, ...


def join(config: Config) -> World:
    del config  # every setting comes from the launcher's environment
    strategy = _strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return World(strategy="mirrored", replicas=strategy.num_replicas_in_sync)
    resolver = strategy.cluster_resolver
    jobs = resolver.cluster_spec().as_dict()
    # The chief is task 0: the "chief" task if TF_CONFIG names one, else worker 0 (TensorFlow's rule).
    index = resolver.task_id + (1 if resolver.task_type == "worker" and "chief" in jobs else 0)
    return World(
        strategy="multi_worker_mirrored",
        processes=sum(len(jobs.get(job, [])) for job in _WORKER_JOBS),
        process_index=index,
        replicas=strategy.num_replicas_in_sync,
        barrier=_barrier(strategy),
    )


def strategy(world: World) -> tf.distribute.Strategy | None:
    """The strategy `world` was joined with; None for one process without one (the plain path)."""
    return None if world.strategy == World().strategy else _strategy()


@contextlib.contextmanager
def peers_reachable() -> Iterator[None]:
    """A collective op whose peer process stopped fails within seconds (its connection closes, or TensorFlow's
    heartbeat times out): one line, not a graph traceback. Every process saw the chief's last checkpoint (the runner
    waits for it), so all of them resume from it."""
    try:
        yield
    except tf.errors.UnavailableError as error:
        cause = next((line for line in error.message.splitlines() if line.startswith(_ABORTED)), _ABORTED + "?")
        raise WorldError(
            f"another process of this run stopped or cannot be reached ({cause.removeprefix(_ABORTED).rstrip(':')}); "
            "relaunch all of them, with --resume to continue from the last checkpoint"
        ) from None


@functools.cache  # one per process: MultiWorkerMirroredStrategy can start its collective runtime only once
def _strategy() -> tf.distribute.Strategy:
    # Asked before the strategy exists: listing physical devices does not start TensorFlow's runtime.
    gpus = len(tf.config.list_physical_devices("GPU"))
    # As TensorFlow's multi-worker guide advises: NCCL between GPUs, RING (gRPC) on CPUs.
    implementation = tf.distribute.experimental.CommunicationImplementation
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementation.NCCL if gpus else implementation.RING
    )
    if os.environ.get("TF_CONFIG"):
        _check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if all(name in os.environ for name in _SLURM_STEP) and int(os.environ["SLURM_STEP_NUM_TASKS"]) > 1:
        return tf.distribute.MultiWorkerMirroredStrategy(_slurm_resolver(gpus), communication_options=options)
    return tf.distribute.MirroredStrategy()


def _check_tf_config(text: str) -> None:
    try:
        tf_config = json.loads(text)
        task_type, index = tf_config["task"]["type"], tf_config["task"]["index"]
        tf_config["cluster"][task_type][index]  # this task's address
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise WorldError(
            f"TF_CONFIG must name the cluster and this task in it, as TensorFlow documents ({error!r}); "
            "see README 'Scale out'"
        ) from None
    if task_type not in _WORKER_JOBS:
        raise WorldError(f"TF_CONFIG: task type {task_type!r}; MultiWorkerMirroredStrategy trains on chief/worker")


def _slurm_resolver(gpus: int) -> tf.distribute.cluster_resolver.ClusterResolver:
    """The step's tasks as TensorFlow workers: hosts from SLURM_STEP_NODELIST, this task from SLURM_PROCID.

    SlurmClusterResolver gives the k-th task on a node port base+k (base: the first of SLURM_STEP_RESV_PORTS when
    `srun --resv-ports` reserved some, else 8888). It hands out ports only with GPUs (one per `gpus_per_task` of
    `gpus_per_node`), fails without nvidia-smi and rewrites CUDA_VISIBLE_DEVICES; so it is told of one GPU per task,
    enough for every task of a node, and leaves devices alone: Slurm binds GPUs to tasks, each worker trains on
    those it sees (all workers must see as many).
    """
    tasks = int(os.environ["SLURM_STEP_NUM_TASKS"])
    reserved = re.match(r"\d+", os.environ.get("SLURM_STEP_RESV_PORTS", ""))  # e.g. 12000-12003
    port_base = int(reserved.group()) if reserved else _SLURM_PORT_BASE
    try:
        slurm = tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=port_base, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False
        )
        cluster = slurm.cluster_spec()  # also sets task_type and task_id
    except (RuntimeError, ValueError) as error:
        raise WorldError(f"Slurm step: {error}") from None
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        cluster, task_type=slurm.task_type, task_id=slurm.task_id, num_accelerators={"GPU": gpus}, rpc_layer="grpc"
    )


def _barrier(strategy: tf.distribute.Strategy) -> Callable[[], None]:
    """An all-reduce across every replica of every worker: it returns only once all of them have joined it."""

    def one() -> tf.Tensor:
        return tf.constant(1)

    @tf.function
    def all_reduce() -> tf.Tensor:
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(one), axis=None)

    @peers_reachable()
    def wait() -> None:
        all_reduce().numpy()  # waits for the result, not only for the op to be queued

    return wait
