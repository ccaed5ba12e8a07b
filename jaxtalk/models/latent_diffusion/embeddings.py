"""Diffusion-timestep embedding of the SD UNet: a sinusoidal table (diffusers'
`Timesteps`) and the two-layer MLP on it (`TimestepEmbedding`: linear_1, SiLU, linear_2)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import dense


def timestep_features(
    timesteps,
    dim: int,
    flip_sin_to_cos: bool = True,
    freq_shift: float = 0.0,
    max_period: float = 10000.0,
    dtype: Any = jnp.float32,
):
    """(B,) timesteps -> (B, dim) [sin | cos] of t * max_period^(-i / (dim/2 - shift)),
    halves swapped when `flip_sin_to_cos`. Computed in float32 as diffusers does (in
    float64 for a float64 model, which diffusers would still compute in float32), then cast
    to `dtype`."""
    hi = jnp.promote_types(dtype, jnp.float32)
    half = dim // 2
    exponent = -math.log(max_period) * jnp.arange(half, dtype=hi) / (half - freq_shift)
    angles = jnp.asarray(timesteps, hi)[:, None] * jnp.exp(exponent)[None, :]
    sin, cos = jnp.sin(angles), jnp.cos(angles)
    emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb.astype(dtype)


class TimestepEmbedding(nn.Module):
    """linear_1 -> SiLU -> linear_2 (diffusers' TimestepEmbedding, act "silu")."""

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = dense(self.features, ("embed", "mlp"), "linear_1", **kw)(x)
        return dense(self.features, ("mlp", "embed"), "linear_2", **kw)(jax.nn.silu(x))
