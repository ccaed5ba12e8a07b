"""Run any jaxtalk command as N cooperating processes on this machine.

Each process gets its own share of the CPU (or of the GPUs, with --gpus_per_process) and
joins the run through a coordinator on localhost; JAX's CPU collectives use gloo. This is
the multi-host path on one machine: the same program, the same flags, `jax.process_count()`
equal to N.

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      jaxtalk train --config=configs/toy_regression.py:tiny --workdir=runs/toy2

Exits with the first non-zero exit status; a failing process stops the others.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(
    command: list[str],
    num_processes: int,
    devices_per_process: int = 0,
    gpus_per_process: int = 0,
    log_dir: str | None = None,
) -> int:
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for pid in range(num_processes):
        env = dict(
            os.environ,
            JAXTALK_COORDINATOR_ADDRESS=address,
            JAXTALK_NUM_PROCESSES=str(num_processes),
            JAXTALK_PROCESS_ID=str(pid),
        )
        if gpus_per_process:
            first = pid * gpus_per_process
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + i) for i in range(gpus_per_process))
        else:
            env["JAX_PLATFORMS"] = "cpu"
            if devices_per_process:
                flags = env.get("XLA_FLAGS", "").split()
                flags = [f for f in flags if "xla_force_host_platform_device_count" not in f]
                flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
                env["XLA_FLAGS"] = " ".join(flags)
        out = None
        if log_dir:
            os.makedirs(log_dir, exist_ok=True)
            out = open(os.path.join(log_dir, f"process_{pid}.log"), "w")
        procs.append(
            subprocess.Popen(
                command, env=env, stdout=out, stderr=subprocess.STDOUT if out else None
            )
        )
    status = 0
    while procs:
        for p in list(procs):
            code = p.poll()
            if code is None:
                continue
            procs.remove(p)
            if code and not status:
                status = code
                for other in procs:
                    other.terminate()
        time.sleep(0.1)
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num_processes", type=int, default=2)
    parser.add_argument(
        "--devices_per_process",
        type=int,
        default=0,
        help="simulated CPU devices per process (0: one)",
    )
    parser.add_argument(
        "--gpus_per_process",
        type=int,
        default=0,
        help="give each process this many GPUs via CUDA_VISIBLE_DEVICES",
    )
    parser.add_argument("--log_dir", default=None, help="one log file per process here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- jaxtalk <command> ...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    return launch(
        command, args.num_processes, args.devices_per_process, args.gpus_per_process, args.log_dir
    )


if __name__ == "__main__":
    sys.exit(main())
