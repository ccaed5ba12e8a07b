"""LivePortrait's shared conv blocks (the release's src/modules/util.py), NHWC / NDHWC.

Every block is conv -> torch BatchNorm -> activation in the release's order, with the
release's sub-module names (`conv`, `norm`, `conv1`, `norm1`, ...) so the converter
(`jaxtalk/convert/liveportrait.py`) maps one rule per state_dict key.

- `SameBlock2d`: conv3 + BN + ReLU (LeakyReLU slope 0.01 in W's `third`).
- `DownBlock2d` / `DownBlock3d`: conv3 + BN + ReLU, then average pooling 2x2 / (1, 2, 2)
  (the depth axis is never pooled).
- `UpBlock3d`: nearest upsampling (1, 2, 2), then conv3 + BN + ReLU.
- `ResBlock3d`: pre-activation, x + conv2(relu(norm2(conv1(relu(norm1(x)))))).
- `Hourglass`: `num_blocks` DownBlock3d (channels min(max_features, block_expansion *
  2^(i+1))), then as many UpBlock3d, each followed by a concat [up, skip] with the encoder
  output of its level, and a final conv3 + BN + ReLU over block_expansion + in channels.
  H and W must be divisible by 2^num_blocks (the release: 5 levels on 64x64; a 64x64 tiny
  image gives 16x16 features, so tiny configs use fewer levels).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.conv3d import Conv3d
from jaxtalk.models.layers.torch_nn import TorchBatchNorm, conv
from jaxtalk.models.layers.upsampled_conv import UpsampledConv

LEAKY_SLOPE = 0.01  # torch.nn.LeakyReLU's default, as SameBlock2d(lrelu=True) uses it


def same_conv(
    features: int, ndim: int, kernel_size: int, name: str, upsample: int = 1, **kw
) -> nn.Module:
    """A size-preserving conv (padding k // 2), of its input nearest-upsampled over H, W by
    `upsample` when > 1: 2-D, or 3-D through `Conv3d` (same params as a flax Conv; 2-D convs
    over depth slices on CPU, where XLA's 3-D conv is slow). The upsampled convs run at the
    input's resolution (jaxtalk/models/layers/upsampled_conv.py)."""
    if ndim == 3:
        k = (kernel_size,) * 3
        return Conv3d(features, k, kernel_size // 2, upsample=upsample, name=name, **kw)
    if upsample > 1:
        return UpsampledConv(features, kernel_size, upsample, name=name, **kw)
    return conv(features, (kernel_size,) * ndim, padding=kernel_size // 2, name=name, **kw)


def avg_pool_hw(x):
    """AvgPool2d(2) on (B, H, W, C) or AvgPool3d((1, 2, 2)) on (B, D, H, W, C)."""
    window = (1,) * (x.ndim - 4) + (2, 2)
    return nn.avg_pool(x, window, strides=window)


class ConvNormAct(nn.Module):
    """[nearest x2 up ->] conv (k, padding k // 2) -> BatchNorm -> ReLU / LeakyReLU
    [-> average pool /2], over H and W; 2-D (NHWC) or 3-D (NDHWC) by `ndim`."""

    features: int
    ndim: int = 2
    resample: str = "same"  # "same" | "down" (pool after) | "up" (upsample before)
    kernel_size: int = 3
    leaky: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.resample not in ("same", "down", "up"):
            raise ValueError(f"resample must be same, down or up, not {self.resample!r}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        k = self.kernel_size
        up = 2 if self.resample == "up" else 1  # the conv computes the upsampling
        x = same_conv(self.features, self.ndim, k, "conv", upsample=up, **kw)(x)
        x = TorchBatchNorm(name="norm", **kw)(x, train)
        x = nn.leaky_relu(x, LEAKY_SLOPE) if self.leaky else nn.relu(x)
        return avg_pool_hw(x) if self.resample == "down" else x


class SameBlock2d(ConvNormAct):
    """Resolution-preserving conv-BN-ReLU (LeakyReLU with `leaky`)."""


class DownBlock2d(ConvNormAct):
    """conv-BN-ReLU, then AvgPool2d(2)."""

    resample: str = "down"


class DownBlock3d(ConvNormAct):
    """3-D conv-BN-ReLU, then AvgPool3d((1, 2, 2))."""

    ndim: int = 3
    resample: str = "down"


class UpBlock3d(ConvNormAct):
    """Nearest upsampling (1, 2, 2), then 3-D conv-BN-ReLU."""

    ndim: int = 3
    resample: str = "up"


class ResBlock3d(nn.Module):
    """Pre-activation residual block at constant channels: norm1, ReLU, conv1, norm2, ReLU,
    conv2, + x."""

    kernel_size: int = 3
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        k, c = self.kernel_size, x.shape[-1]
        h = x
        for i in (1, 2):
            h = nn.relu(TorchBatchNorm(name=f"norm{i}", **kw)(h, train))
            h = same_conv(c, 3, k, f"conv{i}", **kw)(h)
        return h + x


_HOURGLASS_FIELDS = ("block_expansion", "num_blocks", "max_features", "dtype", "param_dtype")


class HourglassPart(nn.Module):
    """The fields the hourglass and its encoder and decoder share."""

    block_expansion: int = 32
    num_blocks: int = 5
    max_features: int = 1024
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def width(self, level: int) -> int:
        """Channels at encoder depth `level` (0 = the first block's input width):
        min(max_features, block_expansion * 2^level)."""
        return min(self.max_features, self.block_expansion * 2**level)

    def shared_fields(self) -> dict:
        return {f: getattr(self, f) for f in _HOURGLASS_FIELDS}


class HourglassEncoder(HourglassPart):
    """`num_blocks` DownBlock3d (block i: width(i + 1) channels); returns [input, every
    level's output]."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        outs = [x]
        for i in range(self.num_blocks):
            outs.append(
                DownBlock3d(self.width(i + 1), name=f"down_blocks_{i}", **kw)(outs[-1], train)
            )
        return outs


class HourglassDecoder(HourglassPart):
    """UpBlock3d per level, deepest first (level l: width(l) channels), each output
    concatenated with its skip as [up, skip]; then conv3-BN-ReLU at the
    block_expansion + input channels that leaves."""

    @nn.compact
    def __call__(self, outs, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        skips = list(outs)
        h = skips.pop()
        for j, level in enumerate(reversed(range(self.num_blocks))):
            h = UpBlock3d(self.width(level), name=f"up_blocks_{j}", **kw)(h, train)
            h = jnp.concatenate([h, skips.pop()], axis=-1)
        h = same_conv(h.shape[-1], 3, 3, "conv", **kw)(h)
        return nn.relu(TorchBatchNorm(name="norm", **kw)(h, train))


class Hourglass(HourglassPart):
    """3-D U-Net over (B, D, H, W, C) that pools H and W only; output channels
    block_expansion + C."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        step = 2**self.num_blocks
        if x.ndim != 5 or x.shape[2] % step or x.shape[3] % step:
            raise ValueError(
                f"Hourglass(num_blocks={self.num_blocks}) needs (B, D, H, W, C) with H and W "
                f"divisible by {step}, got {x.shape}"
            )
        outs = HourglassEncoder(name="encoder", **self.shared_fields())(x, train)
        return HourglassDecoder(name="decoder", **self.shared_fields())(outs, train)
