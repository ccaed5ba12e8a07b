"""Training the toy family: reproduce the driving frame from the source and the driving frame."""

import jax.numpy as jnp
import numpy as np

from jaxtalk.train.data import iterate, local_batches
from jaxtalk.train.task import LossOutput, Task
from tests.toy_family.model import ToyPortrait


class _Frames:
    """Deterministic random uint8 (source, driving) pairs, seeded by index."""

    def __init__(self, size, count):
        self.size, self.count = size, count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        rng = np.random.default_rng(index)
        frames = rng.integers(0, 256, (2, self.size, self.size, 3), dtype=np.uint8)
        return {"source": frames[0], "driving": frames[1]}


class ToyPortraitTask(Task):
    PIXEL_KEYS = ("source", "driving")
    EVAL_MODES = ()

    def __init__(self, config):
        self.config, self.model = config, ToyPortrait()

    def init(self, rng, batch):
        batch = self.preprocess(batch)
        return {"model": self.model.init(rng, batch["source"], batch["driving"])["params"]}, {}

    def _l1(self, params, batch):
        batch = self.preprocess(batch)
        out = self.model.apply({"params": params["model"]}, batch["source"], batch["driving"])
        return jnp.mean(jnp.abs(out - batch["driving"])), out

    def losses(self):
        def loss(params, model_state, batch, rng):
            l1, _ = self._l1(params, batch)
            return LossOutput(l1, {"l1": l1})

        return [("model", loss)]

    def eval_step(self, params, model_state, batch, rng):
        return {"l1": self._l1(params, batch)[0]}

    def samples(self, params, model_state, batch, rng):
        return {"reconstruction": (self._l1(params, batch)[1][:2] + 1) / 2}

    def data(self, split, *, global_batch_size, seed, process_index, process_count):
        ds = local_batches(
            _Frames(self.config.toy.size, 64),
            train=split == "train",
            seed=seed,
            global_batch_size=global_batch_size,
            process_index=process_index,
            process_count=process_count,
        )
        return iterate(ds)


def build(config):
    return ToyPortraitTask(config)
