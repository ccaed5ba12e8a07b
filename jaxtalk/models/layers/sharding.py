"""Activation sharding constraints at block boundaries, by logical axis names.

`constrain(x)` pins the leading (batch) dimension of an activation to the mesh axes the
logical axis rules give `activation_batch` (data and fsdp in every config), so XLA keeps
activations batch-sharded between blocks instead of choosing layouts from the sharded
kernels. It is `nn.with_logical_constraint`, a no-op outside a mesh and rules context (a
model applied eagerly, in tests or at inference); the training step and evaluation trace
under that context (`jaxtalk.train.sharding.activation_context`).
"""

from __future__ import annotations

from flax import linen as nn

BATCH = "activation_batch"


def constrain(x, names=None):
    """`x` constrained to logical `names` per dim (default: the batch dim only; dims
    without a name, or whose name has no rule, are replicated)."""
    names = (BATCH,) if names is None else tuple(names)
    return nn.with_logical_constraint(x, names + (None,) * (x.ndim - len(names)))
