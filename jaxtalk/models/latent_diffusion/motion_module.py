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
import jax
import jax.numpy as jnp
import numpy as np

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


def _attend(q, k, v, heads: int):
    """softmax(q k^T / sqrt(d)) v per head over short sequences (N, L, heads * d): the plain
    product, with the softmax in float32 or wider."""
    n, length, inner = q.shape
    split = lambda a: a.reshape(n, a.shape[1], heads, inner // heads)
    q, k, v = split(q), split(k), split(v)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k) * (inner // heads) ** -0.5
    weights = jax.nn.softmax(logits.astype(jnp.promote_types(q.dtype, jnp.float32)), axis=-1)
    out = jnp.einsum("nhqk,nkhd->nqhd", weights.astype(v.dtype), v)
    return out.reshape(n, length, inner)


class _FrameAttentionOptions(nn.Module):
    """The options every module that attends over frames takes."""

    heads: int = 8
    max_len: int = 32
    position_encoding: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32


class TemporalAttention(_FrameAttentionOptions):
    """Self-attention over frames ("Temporal_Self" VersatileAttention) on (B*F, HW, C)."""

    @nn.compact
    def __call__(self, x, frames: int):
        bf, hw, c = x.shape
        b = bf // frames
        h = x.reshape(b, frames, hw, c).transpose(0, 2, 1, 3).reshape(b * hw, frames, c)
        if self.position_encoding:
            h = h + jnp.asarray(position_table(self.max_len, c)[:frames], h.dtype)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q, k, v = (
            dense(c, ("embed", "heads"), name=n, use_bias=False, **kw)(h)
            for n in ("to_q", "to_k", "to_v")
        )
        out = dense(c, ("heads", "embed"), name="to_out_0", **kw)(_attend(q, k, v, self.heads))
        return out.reshape(b, hw, frames, c).transpose(0, 2, 1, 3).reshape(bf, hw, c)


class GEGLUFeedForward(nn.Module):
    """diffusers' FeedForward with GEGLU: proj to 2 x mult x dim, value * gelu(gate) (exact
    GELU), proj back."""

    mult: int = 4
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        dim, kw = x.shape[-1], dict(dtype=self.dtype, param_dtype=self.param_dtype)
        value, gate = jnp.split(
            dense(2 * self.mult * dim, ("embed", "mlp"), name="net_0_proj", **kw)(x), 2, -1
        )
        return dense(dim, ("mlp", "embed"), name="net_2", **kw)(
            value * jax.nn.gelu(gate, approximate=False)
        )


class TemporalTransformerBlock(_FrameAttentionOptions):
    """Pre-LN temporal attention blocks, each with its residual, then the pre-LN FF."""

    attention_blocks: int = 2

    @nn.compact
    def __call__(self, x, frames: int):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        for i in range(self.attention_blocks):
            attention = TemporalAttention(
                self.heads, self.max_len, self.position_encoding, name=f"attention_blocks_{i}", **kw
            )
            x = attention(layer_norm(f"norms_{i}", **kw)(x), frames) + x
        return GEGLUFeedForward(name="ff", **kw)(layer_norm("ff_norm", **kw)(x)) + x


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
