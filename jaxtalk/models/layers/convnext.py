"""ConvNeXt-V2 (Woo et al. 2023) in Flax, NHWC, with the PyTorch reference's numerics.

Written once for every family that uses it (LivePortrait's motion extractor is
ConvNeXt-V2-tiny: depths (3, 3, 9, 3), dims (96, 192, 384, 768)):

- `LayerNorm`: LayerNorm over the channel (last) axis with PyTorch's two-pass variance
  (`standardize`); the reference's "channels_first" LayerNorm is this one in NHWC. eps 1e-6
  as ConvNeXt uses.
- `GRN`: global response normalisation, gamma * (x * N(x)) + beta + x with
  N(x) = ||x||_HW / (mean_C ||x||_HW + 1e-6).
- `ConvNeXtV2Block`: dwconv 7x7 -> LayerNorm -> Linear 4d -> exact (erf) GELU -> GRN ->
  Linear d -> residual (V2 has no layer scale; drop path is training-only and 0 here).
- `ConvNeXtV2`: stem (conv 4x4 stride 4 + LayerNorm), then per stage a downsampling layer
  (LayerNorm + conv 2x2 stride 2; none before the first stage) and `depths[i]` blocks.
  Returns the last stage's feature map; heads (pooling, classifiers) belong to the caller.

Statistics run in at least float32 (float64 stays float64).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.models.layers.standardize import standardize

CONVNEXT_V2_TINY = dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))


class LayerNorm(nn.Module):
    """LayerNorm over the last axis with PyTorch's two-pass variance; params scale, bias."""

    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        scale, bias = torch_nn.norm_affine(self, x.shape[-1], self.param_dtype)
        y = standardize(x, -1, self.eps)
        return (y * scale.astype(y.dtype) + bias.astype(y.dtype)).astype(self.dtype)


class GRN(nn.Module):
    """Global Response Normalization on NHWC; params gamma, beta (C,), zero-initialised."""

    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        init = nn.with_logical_partitioning(nn.initializers.zeros_init(), ("norm",))
        gamma = self.param("gamma", init, (c,), self.param_dtype)
        beta = self.param("beta", init, (c,), self.param_dtype)
        hi = jnp.promote_types(self.dtype, jnp.float32)
        xf = x.astype(hi)
        gx = jnp.sqrt(jnp.sum(jnp.square(xf), axis=(1, 2), keepdims=True))
        nx = gx / (gx.mean(-1, keepdims=True) + self.eps)
        y = gamma.astype(hi) * (xf * nx) + beta.astype(hi) + xf
        return y.astype(self.dtype)


class ConvNeXtV2Block(nn.Module):
    """One ConvNeXt-V2 residual block at width `dim` (inferred from the input)."""

    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        dim = x.shape[-1]
        h = torch_nn.conv(dim, 7, padding=3, feature_group_count=dim, name="dwconv", **kw)(x)
        h = LayerNorm(self.eps, name="norm", **kw)(h)
        h = torch_nn.dense(4 * dim, ("embed", "mlp"), name="pwconv1", **kw)(h)
        h = jax.nn.gelu(h, approximate=False)
        h = GRN(name="grn", **kw)(h)
        h = torch_nn.dense(dim, ("mlp", "embed"), name="pwconv2", **kw)(h)
        return x + h


class ConvNeXtV2(nn.Module):
    """ConvNeXt-V2 trunk: (B, H, W, C_in) -> (B, H/32, W/32, dims[-1]) for 4 stages.

    Submodules: `stem` + `stem_norm`; `down{i}_norm` + `down{i}` for i >= 1;
    `stage{i}_{j}` blocks."""

    depths: Sequence[int] = CONVNEXT_V2_TINY["depths"]
    dims: Sequence[int] = CONVNEXT_V2_TINY["dims"]
    eps: float = 1e-6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        if len(self.depths) != len(self.dims):
            raise ValueError(f"ConvNeXtV2: {len(self.depths)} depths but {len(self.dims)} dims")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = x.astype(self.dtype)
        for i, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            if i == 0:
                x = torch_nn.conv(dim, 4, stride=4, name="stem", **kw)(x)
                x = LayerNorm(self.eps, name="stem_norm", **kw)(x)
            else:
                x = LayerNorm(self.eps, name=f"down{i}_norm", **kw)(x)
                x = torch_nn.conv(dim, 2, stride=2, name=f"down{i}", **kw)(x)
            for j in range(depth):
                x = constrain(ConvNeXtV2Block(self.eps, name=f"stage{i}_{j}", **kw)(x))
        return x
