"""AnimateDiff's motion module (the "Vanilla" temporal module of AnimateDiff v2/v3, as
AniPortrait and MegActor run it): attention over the frames of every pixel.

x (B*F, H, W, C), frames folded into the batch as the 2-D UNet layers see them ->
GroupNorm(32, eps 1e-6) per frame -> Linear proj_in -> transformer blocks, each: for every
attention block, pre-LayerNorm, the sinusoidal frame-position table added, self-attention
over the F frames (batch B*H*W, 8 heads, no q/k/v bias) and a residual; then pre-LayerNorm
GEGLU feed-forward (x4, exact GELU) and a residual -> Linear proj_out (zero-initialised, so
a fresh module is the identity) -> + x.

Parameter names mirror the release's below its `temporal_transformer.` level
(`transformer_blocks_0/attention_blocks_1/to_out_0`, ...), so
jaxtalk/convert/motion_module.py maps them one rule per key. The released `pos_encoder.pe` tables are buffers, not parameters: the module
computes the same table (`position_table`) and the converter checks a file's against it.
`MotionModule(channels)` is the factory the inflated UNet calls after each block.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.latent_diffusion.transformer import Attention, GEGLUFeedForward
from jaxtalk.models.layers.torch_nn import dense, group_norm, layer_norm

Dtype = Any


def position_table(max_len: int, dim: int) -> np.ndarray:
    """The release's PositionalEncoding buffer (max_len, dim), in float64: sin at even
    channels, cos at odd ones, frequencies 10000^(-2i/dim)."""
    position = np.arange(max_len, dtype=np.float64)[:, None]
    freq = np.exp(np.arange(0, dim, 2, dtype=np.float64) * (-math.log(10000.0) / dim))
    table = np.zeros((max_len, dim), np.float64)
    table[:, 0::2] = np.sin(position * freq)
    table[:, 1::2] = np.cos(position * freq)[:, : dim // 2]
    return table


def _to_frames(x, frames: int):
    """(B*F, HW, C) -> (B*HW, F, C): each pixel's sequence over its video's frames."""
    bf, hw, c = x.shape
    return x.reshape(bf // frames, frames, hw, c).transpose(0, 2, 1, 3).reshape(-1, frames, c)


def _from_frames(x, hw: int):
    """The inverse of `_to_frames`."""
    bhw, frames, c = x.shape
    return x.reshape(bhw // hw, hw, frames, c).transpose(0, 2, 1, 3).reshape(-1, hw, c)


class TemporalTransformerBlock(nn.Module):
    """Pre-LN temporal attention blocks, each with its residual, then the pre-LN FF."""

    heads: int = 8
    max_len: int = 32
    position_encoding: bool = True
    attention_blocks: int = 2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, frames: int):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.attention_blocks):
            # "Temporal_Self" attention: over frames, the position table added first
            h = _to_frames(layer_norm(f"norms_{i}", **kw)(x), frames)
            if self.position_encoding:
                h = h + jnp.asarray(position_table(self.max_len, h.shape[-1])[:frames], h.dtype)
            h = Attention(self.heads, h.shape[-1], name=f"attention_blocks_{i}", **kw)(h)
            x = _from_frames(h, x.shape[1]) + x
        return GEGLUFeedForward(x.shape[-1], name="ff", **kw)(layer_norm("ff_norm", **kw)(x)) + x


class MotionModule(nn.Module):
    """AnimateDiff's VanillaTemporalModule (its TemporalTransformer3DModel, whose params the
    release nests under `temporal_transformer.`, here at the top): `MotionModule(channels)(x,
    frames)` with x (B*F, H, W, channels). GroupNorm -> proj_in -> blocks -> proj_out
    (zero-init) -> residual. The defaults are AnimateDiff v2/v3's (1 block of 2 temporal
    self-attentions, 8 heads, position table of 32 frames)."""

    channels: int
    heads: int = 8
    num_blocks: int = 1
    attention_blocks: int = 2
    max_len: int = 32
    position_encoding: bool = True
    norm_groups: int = 32
    attention_dim_div: int = 1
    remat: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def _check(self, x, frames: int):
        if x.ndim != 4 or x.shape[-1] != self.channels:
            raise ValueError(
                f"MotionModule({self.channels}) takes (B*F, H, W, {self.channels}), got {x.shape}"
            )
        if x.shape[0] % frames:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of {frames} frames")
        if self.position_encoding and frames > self.max_len:
            raise ValueError(
                f"{frames} frames exceed the motion module's position table ({self.max_len}); "
                "sample longer videos with context windows"
            )

    @nn.compact
    def __call__(self, x, frames: int):
        self._check(x, frames)
        bf, height, width, channels = x.shape
        inner = self.heads * (channels // self.heads // self.attention_dim_div)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = group_norm("norm", self.norm_groups, 1e-6, **kw)(x)
        h = dense(inner, ("embed", "mlp"), name="proj_in", **kw)(h.reshape(bf, -1, channels))
        block = (
            nn.remat(TemporalTransformerBlock, static_argnums=(2,))
            if self.remat
            else TemporalTransformerBlock
        )
        for i in range(self.num_blocks):
            h = block(
                heads=self.heads,
                max_len=self.max_len,
                position_encoding=self.position_encoding,
                attention_blocks=self.attention_blocks,
                name=f"transformer_blocks_{i}",
                **kw,
            )(h, frames)
        zero = nn.initializers.zeros_init()
        h = dense(channels, ("mlp", "embed"), name="proj_out", kernel_init=zero, **kw)(h)
        return h.reshape(bf, height, width, channels) + x
