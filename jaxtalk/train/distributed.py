"""Joining a multi-process JAX run.

`jax.distributed.initialize()` must run before any other JAX call. With
`initialize=auto` it runs when the environment describes a cluster that JAX can read on
its own (SLURM, Cloud TPU, Open MPI, Kubernetes via JAX_COORDINATOR_ADDRESS), or when the
config gives a coordinator explicitly (the local multi-process launcher does).
"""

from __future__ import annotations

import os

import jax

_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "MEGASCALE_COORDINATOR_ADDRESS", "JAX_COORDINATOR_ADDRESS")
_initialized = False


def _wants_cluster(cfg) -> bool:
    if cfg.initialize == "yes":
        return True
    if cfg.initialize == "no":
        return False
    if cfg.initialize != "auto":
        raise ValueError(f"config.distributed.initialize={cfg.initialize!r}: auto, yes or no")
    if cfg.coordinator_address:
        return True
    if os.environ.get("SLURM_JOB_ID") and int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return False  # an interactive SLURM allocation running one process
    return any(os.environ.get(k) for k in _CLUSTER_ENV)


def maybe_initialize(cfg) -> None:
    global _initialized
    if _initialized or not _wants_cluster(cfg):
        return
    kwargs = {}
    if cfg.coordinator_address:
        kwargs = dict(coordinator_address=cfg.coordinator_address,
                      num_processes=cfg.num_processes, process_id=cfg.process_id)
    if "cpu" in os.environ.get("JAX_PLATFORMS", ""):
        # Cross-process collectives on CPU go through gloo.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    _initialized = True
