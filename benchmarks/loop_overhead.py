"""What the training loop itself costs, measured on the toy recipe.

Prints steps/s of the same model (a) with logging and checkpoints off, (b) with logging at
the default interval, (c) with async checkpoints of a ~200 MB state, the time each
checkpoint blocked the loop, and the loop's per-step wait for data.

  python benchmarks/loop_overhead.py [--steps=400] [--large_steps=30]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import jax

from configs import common, toy_regression
from jaxtalk.train.train import train


def _run(config, label):
    with tempfile.TemporaryDirectory() as workdir:
        out = train(config, workdir)
    rate = config.total_steps / out["loop_seconds"]
    row = {
        "run": label,
        "steps_per_sec": round(rate, 2),
        "data_wait_ms": round(out.get("perf/data_wait_ms", float("nan")), 3),
    }
    if out["checkpoint_block_seconds"]:
        row["checkpoint_block_s_max"] = round(max(out["checkpoint_block_seconds"]), 3)
        row["checkpoints"] = len(out["checkpoint_block_seconds"])
    print(json.dumps(row), flush=True)
    return row


def _quiet(config, steps):
    config.total_steps = steps
    config.log.every_steps = steps  # one line at the end
    config.log.progress_bar = False
    config.log.tensorboard = False
    config.eval.every_steps = 0
    config.samples.every_steps = 0
    config.checkpoint.every_steps = 0
    return config


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--large_steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].device_kind}")
    default_log_every = common.base_config().log.every_steps

    def logged_config():
        c = _quiet(toy_regression.get_config("default"), args.steps)
        c.log.every_steps = default_log_every
        c.log.tensorboard = True
        return c

    # Alternate the two runs and keep each one's best, so machine noise hits both alike.
    base, logged = [], []
    for _ in range(args.repeats):
        base.append(
            _run(
                _quiet(toy_regression.get_config("default"), args.steps),
                "no logging, no checkpoints",
            )
        )
        logged.append(
            _run(logged_config(), f"logging every {default_log_every} steps + TensorBoard")
        )
    best = lambda rows: max(r["steps_per_sec"] for r in rows)  # noqa: E731
    overhead = 100 * (best(base) / best(logged) - 1)
    print(f"logging overhead: {overhead:.2f}% of step time")

    large = _quiet(toy_regression.get_config("large"), args.large_steps)
    state_mb = _state_megabytes(large)
    _run(large, f"large state ({state_mb:.0f} MB), no checkpoints")
    large = _quiet(toy_regression.get_config("large"), args.large_steps)
    large.checkpoint.every_steps = 10
    _run(large, f"large state ({state_mb:.0f} MB), async checkpoint every 10 steps")


def _state_megabytes(config) -> float:
    t = config.toy
    params = (
        t.in_dim * t.width + t.depth * (2 * t.width * t.hidden + t.hidden) + t.width * t.out_dim
    )
    return 4 * params * 4 / 1e6  # params + EMA + Adam mu and nu, float32


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    main()
