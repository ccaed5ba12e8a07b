"""Zero-mean, unit-variance normalisation over chosen axes, with PyTorch's numerics.

`standardize(x, axes, eps)` = (x - mean) / sqrt(mean((x - mean)^2) + eps): the two-pass
biased variance that torch's LayerNorm / InstanceNorm compute (flax's nn.LayerNorm defaults
to E[x^2] - E[x]^2, which loses digits when the mean is large). Statistics and result are in
at least float32 (float64 stays float64); callers apply their affine and cast back.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def standardize(x, axes, eps: float):
    hi = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(hi)
    centred = xf - xf.mean(axes, keepdims=True)
    var = jnp.square(centred).mean(axes, keepdims=True)
    return centred * jax.lax.rsqrt(var + eps)
