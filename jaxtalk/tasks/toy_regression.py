"""A small, fast task that exercises every path of the loop; not a talking-face model.

An MLP regresses a fixed random nonlinear teacher from synthetic inputs. A second trained
group (a "critic" that predicts the per-example error) gives two optimizers in one step,
and a third group (a fixed input projection) has no optimizer, so it stays frozen. The
loop's tests, the multi-host test and the loop-overhead benchmark all run on it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from jaxtalk.train.data import iterate, local_batches
from jaxtalk.train.task import LossOutput, Task


class MLP(nn.Module):
    hidden: int
    out: int
    depth: int = 2
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = nn.Dense(
                self.hidden,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), ("embed", "mlp")
                ),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
                name=f"hidden_{i}",
            )(x)
            x = nn.gelu(x)
            # Back to the embed width so every hidden layer is (embed, mlp).
            x = nn.Dense(
                x.shape[-1] if i < self.depth - 1 else self.out,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=nn.with_logical_partitioning(
                    nn.initializers.lecun_normal(), ("mlp", "embed")
                ),
                name=f"out_{i}",
            )(x)
        return x


class Projection(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(
            self.features,
            use_bias=False,
            kernel_init=nn.with_logical_partitioning(nn.initializers.orthogonal(), (None, "embed")),
        )(x)


class _TeacherSource:
    """Deterministic examples: x ~ N(0, 1) seeded by index, y = sin(x @ A) @ B."""

    def __init__(self, size: int, in_dim: int, out_dim: int, first_seed: int = 0):
        rng = np.random.default_rng(1234)
        self._a = rng.standard_normal((in_dim, 32)).astype(np.float32) / np.sqrt(in_dim)
        self._b = rng.standard_normal((32, out_dim)).astype(np.float32) / np.sqrt(32)
        self._size, self._in_dim, self._first_seed = size, in_dim, first_seed

    def __len__(self):
        return self._size

    def __getitem__(self, index: int):
        x = np.random.default_rng(self._first_seed + index).standard_normal(self._in_dim)
        x = x.astype(np.float32)
        return {"x": x, "y": (np.sin(x @ self._a) @ self._b).astype(np.float32)}


def _poison(batch_index: int, batch: dict, nan_batches: frozenset) -> dict:
    """Fault injection for the loop's NaN-guard test: NaN inputs in chosen batches."""
    if batch_index in nan_batches:
        batch = dict(batch, x=np.full_like(batch["x"], np.nan))
    return batch


class ToyRegression(Task):
    EVAL_MODES = ()  # no evaluation protocol: `jaxtalk eval` refuses its runs

    def __init__(self, config):
        self.config = config
        t = config.toy
        dtype = jnp.dtype(config.dtype)
        self.proj = Projection(t.width)
        self.model = MLP(hidden=t.hidden, out=t.out_dim, depth=t.depth, dtype=dtype)
        self.critic = MLP(hidden=t.hidden, out=1, depth=1, dtype=dtype)

    def init(self, rng, batch):
        r1, r2, r3 = jax.random.split(rng, 3)
        h = jnp.zeros(batch["x"].shape[:-1] + (self.config.toy.width,))
        params = {
            "projection": self.proj.init(r1, batch["x"])["params"],
            "model": self.model.init(r2, h)["params"],
        }
        if self.config.toy.critic:
            params["critic"] = self.critic.init(r3, h)["params"]
        return params, {}

    def _predict(self, params, x):
        h = self.proj.apply({"params": params["projection"]}, x)
        return h, self.model.apply({"params": params["model"]}, h).astype(jnp.float32)

    def _model_loss(self, params, model_state, batch, rng):
        _, pred = self._predict(params, batch["x"])
        mse = jnp.mean((pred - batch["y"]) ** 2)
        return LossOutput(mse, {"mse": mse})

    def _critic_loss(self, params, model_state, batch, rng):
        h, pred = self._predict(params, batch["x"])
        err = jax.lax.stop_gradient(jnp.mean((pred - batch["y"]) ** 2, axis=-1))
        guess = self.critic.apply({"params": params["critic"]}, h)[..., 0].astype(jnp.float32)
        loss = jnp.mean((guess - err) ** 2)
        return LossOutput(loss, {"critic_mse": loss})

    def losses(self):
        out = [("model", self._model_loss)]
        if self.config.toy.critic:
            out.append(("critic", self._critic_loss))
        return out

    def eval_step(self, params, model_state, batch, rng):
        _, pred = self._predict(params, batch["x"])
        return {"mse": jnp.mean((pred - batch["y"]) ** 2)}

    def samples(self, params, model_state, batch, rng):
        # A picture of predictions against targets: one row per example.
        _, pred = self._predict(params, batch["x"][:4])
        rows = jnp.concatenate([pred, batch["y"][:4]], axis=-1)
        img = jnp.clip(0.5 + 0.25 * rows, 0, 1)[:, None, :, None]
        return {"pred_vs_target": jnp.repeat(jnp.repeat(img, 8, 1), 3, -1)[None, :, :, 0]}

    def data(self, split, *, global_batch_size, seed, process_index, process_count):
        t = self.config.toy
        train = split == "train"
        source = _TeacherSource(
            t.train_examples if train else t.eval_examples,
            t.in_dim,
            t.out_dim,
            first_seed=0 if train else 10**9,
        )
        ds = local_batches(
            source,
            train=train,
            seed=seed,
            global_batch_size=global_batch_size,
            process_index=process_index,
            process_count=process_count,
        )
        if train and t.nan_at_batches:
            nan_batches = frozenset(t.nan_at_batches)
            ds = ds.map_with_index(lambda i, b: _poison(i, b, nan_batches))
        return iterate(ds)


def build(config):
    return ToyRegression(config)
