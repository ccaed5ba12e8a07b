"""Joining a multi-process JAX run.

`jax.distributed.initialize()` must run before any other JAX call. With
`initialize=auto` it runs when the environment describes a cluster that JAX can read on
its own (SLURM, Cloud TPU, Open MPI, Kubernetes via JAX_COORDINATOR_ADDRESS), or when a
coordinator is given explicitly: in the config, or in the environment variables
JAXTALK_COORDINATOR_ADDRESS / JAXTALK_NUM_PROCESSES / JAXTALK_PROCESS_ID that
`launch/local.py` sets for every process it starts.

`Preemption` tells the loop when to save and stop because the job is being preempted
(SIGTERM on TPU VMs, spot GPUs, SLURM and Kubernetes).
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import numpy as np
from absl import logging

_CLUSTER_ENV = (
    "SLURM_JOB_ID",
    "OMPI_COMM_WORLD_SIZE",
    "TPU_WORKER_HOSTNAMES",
    "MEGASCALE_COORDINATOR_ADDRESS",
    "JAX_COORDINATOR_ADDRESS",
)
_initialized = False


def _explicit(cfg) -> dict:
    """Coordinator settings from the config, else from JAXTALK_* variables, else none."""
    address = cfg.coordinator_address or os.environ.get("JAXTALK_COORDINATOR_ADDRESS", "")
    if not address:
        return {}
    num = cfg.num_processes or int(os.environ.get("JAXTALK_NUM_PROCESSES", "0"))
    pid = cfg.process_id if cfg.process_id >= 0 else int(os.environ.get("JAXTALK_PROCESS_ID", "-1"))
    if num <= 0 or pid < 0:
        raise ValueError(
            f"coordinator {address} given without the number of processes "
            f"({num}) and this process's id ({pid})"
        )
    return dict(coordinator_address=address, num_processes=num, process_id=pid)


def _wants_cluster(cfg) -> bool:
    if cfg.initialize == "yes":
        return True
    if cfg.initialize == "no":
        return False
    if cfg.initialize != "auto":
        raise ValueError(f"config.distributed.initialize={cfg.initialize!r}: auto, yes or no")
    if _explicit(cfg):
        return True
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False  # an interactive SLURM allocation running one process
    return any(os.environ.get(k) for k in _CLUSTER_ENV)


def maybe_initialize(cfg) -> None:
    global _initialized
    if _initialized or not _wants_cluster(cfg):
        return
    kwargs = _explicit(cfg)
    if "cpu" in os.environ.get("JAX_PLATFORMS", ""):
        # Cross-process collectives on CPU go through gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    _initialized = True


def all_processes(flag: bool) -> bool:
    """True when `flag` is true on every process (a collective: all processes must call)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.int32(flag))))


class Preemption:
    """`reached(step)`: the job is being preempted and every process should save at `step`.

    One process: a SIGTERM handler sets a flag, checked at each step boundary. Several
    processes must save at the same step, and a flag is not that: the signal reaches them
    at different steps (or only some of them). JAX's preemption sync manager, started by
    `jax.distributed.initialize` (`jax_enable_preemption_service`, on by default), catches
    SIGTERM in C++, tells the coordination service, and all processes agree on the step after
    the fastest one's; `reached_preemption_sync_point(step)` is then true at that same step
    everywhere. It costs a lock per step, where an all-reduce of the flag would stall the
    asynchronous dispatch of every step on a host-device round trip. A Python handler would
    replace the C++ one, so none is installed there.

    A context manager: the previous SIGTERM handler comes back on exit.
    """

    def __init__(self):
        self.signalled = False
        self._previous = None
        self._sync = jax.process_count() > 1 and jax.config.jax_enable_preemption_service

    def __enter__(self) -> "Preemption":
        if jax.process_count() > 1:
            if not self._sync:
                logging.warning(
                    "jax_enable_preemption_service is off: SIGTERM will not save a checkpoint"
                )
        elif threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        self.signalled = True

    def reached(self, step: int) -> bool:
        """Called at every step boundary with the step just finished, on every process."""
        if self._sync:
            from jax.experimental import multihost_utils

            return multihost_utils.reached_preemption_sync_point(step)
        return self.signalled
