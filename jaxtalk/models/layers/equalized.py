"""Equalized-learning-rate layers of StyleGAN2 / LIA, NHWC.

The released code stores raw N(0, 1) weights and multiplies them by a constant
(1/sqrt(fan_in), times `lr_mul` for linears) at every call. We keep exactly that: the
raw weight is the parameter and the scale is applied at run time, so Adam sees the same
parameterisation as in the release (training dynamics match) and import/export is a
pure layout change.

Logical axes: conv kernels HWIO `(None, None, "conv_in", "conv_out")`, conv biases
`("conv_out",)`, linear kernels `("embed", "mlp")`, linear biases `("mlp",)`.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.conv_kernel_grad import by_phases, conv_general_dilated, phase_taps
from jaxtalk.models.layers.torch_nn import conv_bias
from jaxtalk.models.layers.upfirdn import Blur
from jaxtalk.models.layers.weight_cache import cached, cached_only

CONV_AXES = (None, None, "conv_in", "conv_out")
DENSE_AXES = ("embed", "mlp")
_DN = ("NHWC", "HWIO", "NHWC")


def fused_leaky_relu(x, bias=None, negative_slope: float = 0.2, scale: float = math.sqrt(2.0)):
    """leaky_relu(x + bias, 0.2) * sqrt(2), the StyleGAN2 'fused' activation."""
    if bias is not None:
        x = x + bias.astype(x.dtype)
    return jnp.where(x >= 0, x, x * negative_slope) * jnp.asarray(scale, x.dtype)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU(0.2) * sqrt(2); torch bias (1, C, 1, 1) is stored as (C,)."""

    negative_slope: float = 0.2
    scale: float = math.sqrt(2.0)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        return fused_leaky_relu(x.astype(self.dtype), bias, self.negative_slope, self.scale)


class EqualConv2d(nn.Module):
    """Conv2d whose raw N(0,1) kernel is scaled by 1/sqrt(in * k * k) at run time."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    use_bias: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        cin, k = x.shape[-1], self.kernel_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), CONV_AXES),
            (k, k, cin, self.features),
            self.param_dtype,
        )
        scale = 1.0 / math.sqrt(cin * k * k)
        p, strides = self.padding, (self.stride, self.stride)
        weight = cached(self, "kernel", lambda: (kernel * scale).astype(self.dtype))
        taps = None
        if by_phases(x, weight, strides):
            taps = cached_only(self, "phase_taps", lambda: phase_taps(weight, strides))
        y = conv_general_dilated(
            x.astype(self.dtype),
            weight,
            strides,
            [(p, p), (p, p)],
            dimension_numbers=_DN,
            phase_taps=taps,
        )
        if self.use_bias:
            y = y + conv_bias(self, self.features, self.param_dtype).astype(self.dtype)
        return y


class EqualLinear(nn.Module):
    """Linear with raw kernel N(0, 1/lr_mul), scale lr_mul/sqrt(in); bias times lr_mul.

    `activation=True` is the release's `activation='fused_lrelu'` (bias inside the
    fused leaky ReLU).
    """

    features: int
    use_bias: bool = True
    bias_init: float = 0.0
    lr_mul: float = 1.0
    activation: bool = False
    kernel_axes: Sequence[str | None] = DENSE_AXES
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        din = x.shape[-1]
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(
                nn.initializers.normal(1.0 / self.lr_mul), tuple(self.kernel_axes)
            ),
            (din, self.features),
            self.param_dtype,
        )
        scale = self.lr_mul / math.sqrt(din)
        y = jnp.dot(
            x.astype(self.dtype),
            cached(self, "kernel", lambda: (kernel * scale).astype(self.dtype)),
        )
        if not self.use_bias:
            return y
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(
                nn.initializers.constant(self.bias_init), (self.kernel_axes[-1],)
            ),
            (self.features,),
            self.param_dtype,
        )
        bias = bias * self.lr_mul
        if self.activation:
            return fused_leaky_relu(y, bias)
        return y + bias.astype(self.dtype)


class ConvLayer(nn.Module):
    """The release's ConvLayer: [Blur] -> EqualConv2d -> [FusedLeakyReLU | leaky ReLU].

    Submodules: `conv` (EqualConv2d; bias only when `use_bias and not activate`) and `act`
    (FusedLeakyReLU, when `activate and use_bias`). Downsampling blurs with
    pad ((p+1)//2, p//2), p = len(blur) - 2 + k - 1, then convolves with stride 2.
    """

    features: int
    kernel_size: int
    downsample: bool = False
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    use_bias: bool = True
    activate: bool = True
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        if self.downsample:
            p = (len(self.blur_kernel) - 2) + (k - 1)
            x = Blur(tuple(self.blur_kernel), pad=((p + 1) // 2, p // 2), dtype=self.dtype)(x)
            stride, padding = 2, 0
        else:
            stride, padding = 1, k // 2
        x = EqualConv2d(
            self.features,
            k,
            stride=stride,
            padding=padding,
            use_bias=self.use_bias and not self.activate,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            name="conv",
        )(x)
        if self.activate:
            if self.use_bias:
                x = FusedLeakyReLU(dtype=self.dtype, param_dtype=self.param_dtype, name="act")(x)
            else:
                x = jax.nn.leaky_relu(x, 0.2)  # the release's ScaledLeakyReLU (no scale)
        return x


class ResBlock(nn.Module):
    """conv1 (3x3) -> conv2 (3x3, downsample); skip 1x1 downsample; (out + skip)/sqrt(2)."""

    features: int
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(blur_kernel=self.blur_kernel, dtype=self.dtype, param_dtype=self.param_dtype)
        out = ConvLayer(x.shape[-1], 3, name="conv1", **kw)(x)
        out = ConvLayer(self.features, 3, downsample=True, name="conv2", **kw)(out)
        skip = ConvLayer(
            self.features, 1, downsample=True, activate=False, use_bias=False, name="skip", **kw
        )(x)
        return (out + skip) * jnp.asarray(1.0 / math.sqrt(2.0), out.dtype)
