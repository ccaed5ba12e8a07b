"""Activation sharding constraints at block boundaries, by logical axis names.

`constrain(x)` pins the leading (batch) dimension of an activation to the mesh axes the
logical axis rules give `activation_batch` (data and fsdp in every config), so XLA keeps
activations batch-sharded between blocks instead of choosing layouts from the sharded
kernels. It is `nn.with_logical_constraint`, a no-op outside a mesh and rules context (a
model applied eagerly, in tests or at inference); the training step and evaluation trace
under that context (`jaxtalk.train.sharding.activation_context`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import linen as nn

BATCH = "activation_batch"


def constrain(x, names=None):
    """`x` constrained to logical `names` per dim (default: the batch dim only; dims
    without a name, or whose name has no rule, are replicated)."""
    names = (BATCH,) if names is None else tuple(names)
    return nn.with_logical_constraint(x, names + (None,) * (x.ndim - len(names)))


def join_batches(*xs):
    """Arrays of one batch size B as one batch of len(xs) * B for a single pass through a
    per-example network, interleaved (xs[0][0], xs[1][0], xs[0][1], ...) rather than
    concatenated: each device keeps its own rows of every input. A concatenation of
    batch-sharded arrays makes XLA move whole activations between devices (3.7 GB per device
    per AniTalker stage-1 step on 8 devices, benchmarks/scaling_projection.py)."""
    return jnp.stack(xs, 1).reshape((len(xs) * xs[0].shape[0],) + xs[0].shape[1:])


def split_batches(x, k: int) -> list:
    """The inverse of `join_batches` on an array or a pytree of arrays: k batches."""
    parts = jax.tree.map(lambda a: a.reshape((a.shape[0] // k, k) + a.shape[1:]), x)
    return [jax.tree.map(lambda a, i=i: a[:, i], parts) for i in range(k)]
