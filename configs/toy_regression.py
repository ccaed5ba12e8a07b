"""The loop's own test recipe: an MLP regressing a fixed teacher (see jaxtalk/tasks/toy_regression.py).

Variants: `tiny` (seconds on a CPU; the tests), `default`, `large` (a ~200 MB state for
the checkpoint benchmark).
"""

import ml_collections

from configs import common


def get_config(arg: str = "default"):
    c = common.base_config()
    c.task = "toy_regression"
    c.toy = ml_collections.ConfigDict(
        dict(
            in_dim=16,
            width=64,
            hidden=128,
            out_dim=8,
            depth=2,
            critic=True,
            train_examples=4096,
            eval_examples=256,
            nan_at_batches=(),  # fault injection: batch indices whose inputs are NaN
        )
    )
    c.optimizers = ml_collections.ConfigDict(
        {
            "model": common.optimizer_config("adam", lr=3e-3, clip_norm=1.0),
            "critic": common.optimizer_config("adam", lr=1e-3),
        }
    )
    c.ema = ml_collections.ConfigDict({"model": 0.99})
    c.batch_size = 64
    c.total_steps = 2000
    c.log.every_steps = 100
    c.eval.every_steps = 500
    c.checkpoint.every_steps = 500

    if arg == "tiny":
        c.batch_size = 16
        c.total_steps = 60
        c.log.every_steps = 10
        c.eval.every_steps = 30
        c.eval.num_batches = 2
        c.samples.every_steps = 30
        c.checkpoint.every_steps = 20
    elif arg == "large":
        c.toy.width, c.toy.hidden, c.toy.depth = 1024, 2048, 3  # ~200 MB with EMA and Adam state
        c.toy.critic = False
        c.batch_size = 64
        c.total_steps = 30
    elif arg != "default":
        raise ValueError(f"unknown variant {arg!r} of toy_regression (tiny, default, large)")
    return c
