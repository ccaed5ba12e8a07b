"""Running the toy recipe in this process or in fresh processes, and reading its checkpoints."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import orbax.checkpoint as ocp

from tests import cli_processes
from tests.conftest import FAST_COMPILE

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def toy_config(**overrides):
    from configs import toy_regression

    c = toy_regression.get_config("tiny")
    c.log.progress_bar = False
    c.log.tensorboard = False
    return override(c, overrides)


def override(config, overrides: dict):
    """`config` with each dotted key of `overrides` set, e.g. {"model.unet.layers": 1} (as
    `as_flags` gives them to a `jaxtalk` command line)."""
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    return config


def as_flags(overrides: dict) -> list[str]:
    """{"model.unet.block_out_channels": (32,)} -> ["--config.model.unet.block_out_channels=(32,)"]."""
    return [f"--config.{key}={value!r}" for key, value in overrides.items()]


def cli_env(devices: int = 8, fast_compile: bool = True) -> dict:
    """The environment of a `jaxtalk` command: CPU, `devices` simulated devices, and XLA's
    fast compile (unoptimised kernels) unless `fast_compile` is False, for a command that
    runs hundreds of steps, where optimised kernels pay for their longer compile."""
    flags = f"--xla_force_host_platform_device_count={devices}"
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        PYTHONPATH=REPO,
        XLA_FLAGS=f"{flags} {FAST_COMPILE}" if fast_compile else flags,
    )
    for k in ("JAXTALK_COORDINATOR_ADDRESS", "JAXTALK_NUM_PROCESSES", "JAXTALK_PROCESS_ID"):
        env.pop(k, None)
    return env


def train_command(workdir, *overrides: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jaxtalk.cli",
        "train",
        f"--config={REPO}/configs/toy_regression.py:tiny",
        f"--workdir={workdir}",
        "--config.log.progress_bar=False",
        "--config.log.tensorboard=False",
        *overrides,
    ]


def run_cli(
    args: list[str], devices: int = 8, check: bool = True, fast_compile: bool = True
) -> subprocess.CompletedProcess:
    proc = cli_processes.run(args, env=cli_env(devices, fast_compile), cwd=REPO, timeout=600)
    if check and proc.returncode:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def saved_state(workdir, step: int) -> dict:
    """The arrays of a saved train state, as numpy, flattened to 'a/b/c' names."""
    path = os.path.join(os.path.abspath(workdir), "checkpoints", str(step), "state")
    tree = ocp.StandardCheckpointer().restore(path)
    flat = {}

    def walk(prefix, node):
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, (list, tuple))
            else None
        )
        if items is not None:
            for k, v in items:
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif node is not None:
            flat[prefix] = np.asarray(node)

    walk("", tree)
    return flat


def checkpoint_steps(workdir) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []
