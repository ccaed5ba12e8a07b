"""Weak scaling of a real training step over two processes on this machine, against what
the projection method (jaxtalk/train/scaling.py) predicts for it.

Two processes (launch/local.py: a coordinator on localhost, gloo collectives), each pinned
to its own CPU core with one device, alternate two programs over --rounds rounds in the
same run: the recipe's step on the process's own device alone (batch B, no communication;
both processes at once, so the cores are as busy as in the other case) and the step
data-parallel over both processes (global batch 2B). Measured efficiency = alone /
together (medians). The prediction: alone + the compiled two-process step's collectives
timed by the method's ring formulas, with the link's bandwidth and latency measured in the
same run (all-reduces of 4 KB and of --probe_mb MB between the processes) and the latency
paid per array a collective carries (gloo reduces them one by one);
gloo runs collectives after the compute, so the serial bound is the one to compare. Also
timed alone: an all-reduce of arrays shaped as the parameters (what the step's gradient
all-reduce carries, leaf by leaf).

  python benchmarks/weak_scaling_cpu.py [--recipe toy_regression:large] [--batch 8]
      [--rounds 5] [--steps 3] [--data_dir data/synthetic]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _median_seconds(fn, steps: int) -> float:
    from _timing import seconds  # noqa: PLC0415 (beside this script)

    return statistics.median(seconds(fn) for _ in range(steps))


def worker(args) -> None:
    pid = int(os.environ["JAXTALK_PROCESS_ID"])
    os.sched_setaffinity(0, {pid % os.cpu_count()})  # one core each, before XLA's threads
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    from jaxtalk.train import communication, distributed, scaling, sharding

    name, variant = args.recipe.split(":")
    config = importlib.import_module(f"configs.{name}").get_config(variant)
    if args.data_dir:  # a recipe reading records: the synthetic set prepared there
        config.data.data_dir, config.data.mixture = args.data_dir, ""
    distributed.maybe_initialize(config.distributed)
    rules = tuple(tuple(r) for r in config.logical_axis_rules)

    def build(devices):
        config.batch_size = args.batch * len(devices)
        mesh = Mesh(np.array(devices).reshape(-1, 1, 1), ("data", "fsdp", "tensor"))
        built = scaling.task_step(config, mesh, rules)
        with sharding.activation_context(mesh, rules):
            compiled = built.step.lower(built.state, built.batch).compile()
        holder = {"state": built.init()}

        def run():
            holder["state"], metrics = compiled(holder["state"], built.batch)
            jax.block_until_ready(metrics)

        run()  # warm-up
        return run, compiled, built.state.params

    alone, _, _ = build(jax.local_devices())
    together, compiled, params = build(jax.devices())
    everyone = Mesh(np.array(jax.devices()), ("data",))

    def all_reduce(shapes):
        """Sums over the processes of arrays of these shapes, as one jitted program."""
        spread = NamedSharding(everyone, P("data"))
        xs = [jax.make_array_from_process_local_data(spread, np.ones((1, *s), np.float32))
              for s in shapes]  # fmt: skip
        summed = jax.jit(lambda xs: [x.sum(0) for x in xs])
        jax.block_until_ready(summed(xs))
        return lambda: jax.block_until_ready(summed(xs))

    small, large = all_reduce([(1024,)]), all_reduce([(args.probe_mb * 2**18,)])
    # the parameters' shapes: what the step's gradient all-reduce carries, leaf by leaf
    gradients = all_reduce([x.shape for x in jax.tree.leaves(params)])
    rounds = {"alone": [], "together": [], "latency": [], "large": [], "gradients": []}
    for _ in range(args.rounds):  # A, B, A, B ...
        rounds["alone"].append(_median_seconds(alone, args.steps))
        rounds["together"].append(_median_seconds(together, args.steps))
        rounds["latency"].append(_median_seconds(small, 20))
        rounds["large"].append(_median_seconds(large, 3))
        rounds["gradients"].append(_median_seconds(gradients, 3))
    med = {k: statistics.median(v) for k, v in rounds.items()}
    # a two-device ring all-reduce moves the whole buffer once each way: S / bandwidth
    bandwidth = args.probe_mb * 2**20 / max(med["large"] - med["latency"], 1e-9)
    link = scaling.Chip("gloo over localhost", 0.0, bandwidth, bandwidth, 0, med["latency"])
    ops = communication.collective_ops(compiled)
    comm = sum(scaling.collective_seconds(o.kind, o.bytes, 2, 1, link, o.operands) for o in ops)
    if pid == 0:
        print(json.dumps({
            "run": "weak_scaling", "recipe": args.recipe, "per_process_batch": args.batch,
            "processes": jax.process_count(),
            "alone_s": round(med["alone"], 4), "together_s": round(med["together"], 4),
            "alone_s_range": [round(min(rounds["alone"]), 4), round(max(rounds["alone"]), 4)],
            "together_s_range": [round(min(rounds["together"]), 4),
                                 round(max(rounds["together"]), 4)],
            "collectives": len(ops), "collective_bytes": sum(o.bytes for o in ops),
            "collective_arrays": sum(o.operands for o in ops),
            "latency_s": round(med["latency"], 6), "bandwidth_gb_s": round(bandwidth / 1e9, 3),
            "predicted_comm_s": round(comm, 4),
            "parameters_all_reduce_s": round(med["gradients"], 4),
            "efficiency_measured": round(med["alone"] / med["together"], 3),
            "efficiency_predicted": round(med["alone"] / (med["alone"] + comm), 3),
        }), flush=True)  # fmt: skip


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="toy_regression:large")
    ap.add_argument("--batch", type=int, default=8, help="per process")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="timed per round and program")
    ap.add_argument("--probe_mb", type=int, default=64, help="the bandwidth probe's size")
    ap.add_argument("--data_dir", default="", help="records for a recipe that reads them")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    sys.path.insert(0, os.path.dirname(HERE))
    from launch.local import launch

    command = [sys.executable, os.path.abspath(__file__), "--worker", *sys.argv[1:]]
    sys.exit(launch(command, num_processes=2, devices_per_process=1))


if __name__ == "__main__":
    main()
