"""The patch discriminator LivePortrait's stage 1 trains against (not released).

The paper builds on face-vid2vid, whose discriminator is FOMM's: `num_blocks` down blocks
(spectral-normalised 4x4 conv without padding; instance norm with affine from the second
block on; LeakyReLU 0.2; 2x2 average pooling except after the last), then a spectral-
normalised 1x1 conv to one logit per patch. `MultiScaleDiscriminator` runs one such network
per image scale (FOMM anti-aliases its pyramid with a Gaussian; here an r x r average
pool does it, r = 1 / scale, which the models layer can do without the losses'), returning every block's features for the
feature-matching loss. Spectral norm has PyTorch's semantics (u, v in `batch_stats`; the
power iteration runs with `train=True`, which needs `mutable=["batch_stats"]`).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.spade import instance_norm
from jaxtalk.models.layers.spectral_norm import SpectralNormConv

LEAKY_SLOPE = 0.2


class DownBlock(nn.Module):
    features: int
    norm: bool
    pool: bool
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = SpectralNormConv(
            self.features, 4, padding=0, dtype=self.dtype, param_dtype=self.param_dtype, name="conv"
        )(x, train)
        if self.norm:
            scale, bias = torch_nn.norm_affine(self, self.features, self.param_dtype)
            x = (instance_norm(x) * scale + bias).astype(self.dtype)
        x = nn.leaky_relu(x, LEAKY_SLOPE)
        if self.pool:
            x = nn.avg_pool(x, (2, 2), (2, 2))
        return x


class PatchDiscriminator(nn.Module):
    """image (B, H, W, 3) in [0, 1] -> (block features, logits (B, h, w, 1))."""

    block_expansion: int = 64
    num_blocks: int = 4
    max_features: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        features = []
        x = x.astype(self.dtype)
        for i in range(self.num_blocks):
            if min(x.shape[1:3]) < 4:
                raise ValueError(
                    f"PatchDiscriminator: a {x.shape[1]}x{x.shape[2]} input is too small for "
                    f"{self.num_blocks} blocks (block {i} sees {x.shape[1:3]})"
                )
            width = min(self.max_features, self.block_expansion * 2 ** (i + 1))
            x = DownBlock(
                width, norm=i != 0, pool=i != self.num_blocks - 1, name=f"down_{i}", **kw
            )(x, train)
            features.append(x)
        logits = SpectralNormConv(1, 1, padding=0, name="conv", **kw)(x, train)
        return features, logits


class MultiScaleDiscriminator(nn.Module):
    """{scale: (features, logits)} for each scale in `scales` (1 = full resolution)."""

    scales: Sequence[float] = (1.0,)
    block_expansion: int = 64
    num_blocks: int = 4
    max_features: int = 512
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image, train: bool = False):
        out = {}
        for scale in self.scales:
            name = f"disc_{str(scale).replace('.', '_')}"
            disc = PatchDiscriminator(
                self.block_expansion,
                self.num_blocks,
                self.max_features,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=name,
            )
            r = int(round(1.0 / scale))
            x = nn.avg_pool(image, (r, r), (r, r)) if r > 1 else image
            out[scale] = disc(x, train)
        return out
