"""The SD UNet's convolutional pieces, NHWC with frames folded into the batch: the residual
block with a timestep projection (diffusers' ResnetBlock2D, "default" time norm, pre-norm,
SiLU) and the stride-2 conv / nearest-x2 + conv resamplers. The UNet inflated over frames
uses them unchanged: AniPortrait's InflatedConv3d and InflatedGroupNorm are these 2-D
layers applied frame by frame. MegActor's resnets run torch.nn.GroupNorm on (B, C, F, H, W),
statistics over all frames of a video: `video_norm=True` with the call's `frames`."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers.torch_nn import conv, dense, group_norm
from jaxtalk.models.layers.upsampled_conv import UpsampledConv


class ResnetBlock2D(nn.Module):
    """norm1 -> SiLU -> conv1 (+ time_emb_proj(SiLU(temb))) -> norm2 -> SiLU -> dropout ->
    conv2, plus the input (through a 1x1 conv_shortcut when the width changes), divided by
    `output_scale`. `temb` (N, T) or None (no time_emb_proj then, as in the VAE). With
    `video_norm`, x is (B*F, H, W, C) and both norms take their statistics over the F frames
    of each video together."""

    features: int
    groups: int = 32
    eps: float = 1e-5
    dropout: float = 0.0
    deterministic: bool = True
    output_scale: float = 1.0
    video_norm: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, temb=None, frames: int = 1):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        frames = frames if self.video_norm else 1
        norm1 = group_norm("norm1", self.groups, self.eps, **kw)
        h = conv(self.features, 3, padding=1, name="conv1", **kw)(
            jax.nn.silu(norm_over_frames(norm1, x, frames))
        )
        if temb is not None:
            t = dense(self.features, ("embed", "mlp"), "time_emb_proj", **kw)(jax.nn.silu(temb))
            h = h + t[:, None, None, :]
        h = norm_over_frames(group_norm("norm2", self.groups, self.eps, **kw), h, frames)
        h = nn.Dropout(self.dropout)(jax.nn.silu(h), deterministic=self.deterministic)
        h = conv(self.features, 3, padding=1, name="conv2", **kw)(h)
        if x.shape[-1] != self.features:
            x = conv(self.features, 1, name="conv_shortcut", **kw)(x)
        out = x + h
        return out if self.output_scale == 1.0 else out / self.output_scale


def norm_over_frames(norm: nn.Module, x, frames: int):
    """`norm` (a GroupNorm: statistics over every non-batch axis) of (B*F, H, W, C) with the
    F frames of a video normalised together, as torch.nn.GroupNorm on (B, C, F, H, W)."""
    if frames == 1:
        return norm(x)
    n, h, w, c = x.shape
    return norm(x.reshape(n // frames, frames * h, w, c)).reshape(x.shape)


class Downsample2D(nn.Module):
    """A 3x3 stride-2 conv with padding 1 (`conv`)."""

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        return conv(self.features, 3, stride=2, padding=1, name="conv", **kw)(x)


def nearest_resize(x, size: tuple[int, int]):
    """F.interpolate(mode="nearest") of (N, H, W, C) to `size`: source index floor(i * in /
    out); exactly a 2x repeat when the size doubles."""
    h, w = x.shape[1:3]
    if size == (2 * h, 2 * w):
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    rows = np.floor(np.arange(size[0]) * (h / size[0])).astype(np.int32)
    cols = np.floor(np.arange(size[1]) * (w / size[1])).astype(np.int32)
    return x[:, rows][:, :, cols]


class Upsample2D(nn.Module):
    """Nearest upsampling (x2, or to `size` when given) then a 3x3 conv (`conv`; the x2
    case computed at x's resolution: jaxtalk/models/layers/upsampled_conv.py)."""

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, size: tuple[int, int] | None = None):
        size = (2 * x.shape[1], 2 * x.shape[2]) if size is None else tuple(size)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if size == (2 * x.shape[1], 2 * x.shape[2]):  # the conv runs at x's resolution
            return UpsampledConv(self.features, 3, 2, name="conv", **kw)(x)
        return conv(self.features, 3, padding=1, name="conv", **kw)(nearest_resize(x, size))
