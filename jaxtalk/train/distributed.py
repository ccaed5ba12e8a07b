"""Joining a multi-process JAX run.

`jax.distributed.initialize()` must run before any other JAX call. With
`initialize=auto` it runs when the environment describes a cluster that JAX can read on
its own (SLURM, Cloud TPU, Open MPI, Kubernetes via JAX_COORDINATOR_ADDRESS), or when a
coordinator is given explicitly: in the config, or in the environment variables
JAXTALK_COORDINATOR_ADDRESS / JAXTALK_NUM_PROCESSES / JAXTALK_PROCESS_ID that
`launch/local.py` sets for every process it starts.
"""

from __future__ import annotations

import os

import jax

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
