"""SPADE (Park et al. 2019) blocks as the NVlabs/SPADE family releases them, NHWC.

- `instance_norm`: nn.InstanceNorm2d(affine=False): per sample and channel over H, W,
  biased variance, eps 1e-5, no running statistics.
- `resize_nearest`: F.interpolate(mode='nearest') to a given size (source index
  floor(dst * in / out)).
- `SPADE`: instance_norm(x) * (1 + gamma(seg)) + beta(seg), where the segmentation map is
  resized to x's size, then a shared conv 3x3 + ReLU (`mlp_shared`) and two convs 3x3
  (`mlp_gamma`, `mlp_beta`). Where seg is upsampled by an integer factor, `mlp_shared`
  runs at seg's resolution (`UpsampledConv`: the same sums in fewer multiply-adds).
- `SPADEResnetBlock`: x_s + conv_1(act(norm_1(conv_0(act(norm_0(x)))))) with
  act = leaky_relu(0.2) and fmiddle = min(fin, fout); when fin != fout the shortcut is
  learned, x_s = conv_s(norm_s(x)) (1x1, no bias, no activation), else x_s = x. The convs
  are spectrally normalised (`SpectralNormConv`, torch semantics), as in 'spectralinstance'
  generators.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.spectral_norm import SpectralNormConv
from jaxtalk.models.layers.standardize import standardize
from jaxtalk.models.layers.upsampled_conv import UpsampledConv

INSTANCE_NORM_EPS = 1e-5
LEAKY_SLOPE = 0.2


def instance_norm(x, eps: float = INSTANCE_NORM_EPS):
    """Normalise each sample's channels over H, W (stats in >= float32)."""
    return standardize(x, (1, 2), eps).astype(x.dtype)


def resize_nearest(x, size: tuple[int, int]):
    """F.interpolate(x, size, mode='nearest') on NHWC: source index floor(i * in / out)."""
    rows = (jnp.arange(size[0]) * x.shape[1]) // size[0]
    cols = (jnp.arange(size[1]) * x.shape[2]) // size[1]
    return x[:, rows][:, :, cols]


class SPADE(nn.Module):
    """Spatially-adaptive normalisation of `x` by the segmentation map `seg`."""

    hidden: int = 128
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, seg):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        normalized = instance_norm(x)
        factor = x.shape[1] // seg.shape[1]
        if x.shape[1:3] == (factor * seg.shape[1], factor * seg.shape[2]):
            # an integer upsampling: the conv runs at seg's resolution (upsampled_conv.py)
            shared = UpsampledConv(self.hidden, 3, factor, name="mlp_shared", **kw)(seg)
        else:
            seg = resize_nearest(seg, x.shape[1:3])
            shared = torch_nn.conv(self.hidden, 3, name="mlp_shared", padding=1, **kw)(seg)
        actv = nn.relu(shared)
        gamma = torch_nn.conv(x.shape[-1], 3, name="mlp_gamma", padding=1, **kw)(actv)
        beta = torch_nn.conv(x.shape[-1], 3, name="mlp_beta", padding=1, **kw)(actv)
        return normalized * (1 + gamma) + beta


class SPADEResnetBlock(nn.Module):
    """SPADE residual block fin -> `features` (fin inferred from the input)."""

    features: int
    hidden: int = 128
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def _conv(self, features, kernel_size, name, use_bias=True):
        return SpectralNormConv(
            features,
            kernel_size,
            kernel_size // 2,
            use_bias=use_bias,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name=name,
        )

    @nn.compact
    def __call__(self, x, seg, train: bool = False):
        fin, fout = x.shape[-1], self.features
        fmiddle = min(fin, fout)
        kw = dict(hidden=self.hidden, dtype=self.dtype, param_dtype=self.param_dtype)
        conv_0 = self._conv(fmiddle, 3, "conv_0")
        conv_1 = self._conv(fout, 3, "conv_1")
        if fin != fout:
            x_s = self._conv(fout, 1, "conv_s", use_bias=False)(
                SPADE(name="norm_s", **kw)(x, seg), train=train
            )
        else:
            x_s = x
        dx = conv_0(nn.leaky_relu(SPADE(name="norm_0", **kw)(x, seg), LEAKY_SLOPE), train=train)
        dx = conv_1(nn.leaky_relu(SPADE(name="norm_1", **kw)(dx, seg), LEAKY_SLOPE), train=train)
        return x_s + dx
