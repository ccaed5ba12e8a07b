"""The toy family's recipe: `--config=tests/toy_family/config.py:tiny`."""

import ml_collections

from configs import common


def get_config(arg: str = "tiny"):
    c = common.base_config()
    c.task = "tests.toy_family.task"
    c.toy = ml_collections.ConfigDict(dict(size=8))
    c.optimizers = ml_collections.ConfigDict({"model": common.optimizer_config("adam", lr=1e-2)})
    c.batch_size = 8
    c.total_steps = 1
    c.log.every_steps = 1
    c.eval.every_steps = 1
    c.eval.num_batches = 1
    c.samples.every_steps = 1
    c.checkpoint.every_steps = 1
    return c
