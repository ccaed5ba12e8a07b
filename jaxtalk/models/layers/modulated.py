"""StyleGAN2 modulated convolution, noise injection, constant input and StyledConv, NHWC.

`ModulatedConv2d` reproduces the release: weight = scale * W * style_in, demodulated by
rsqrt(sum(weight^2 over in, kh, kw) + 1e-8) per sample and output channel; the upsampling
variant is the release's grouped `conv_transpose2d(stride=2)` followed by
Blur(pad ((p+1)//2+1, p//2+1), kernel*4); the downsampling one blurs then convolves with
stride 2.

Two implementations with the same result (tested against each other):
- `impl="scaled_input"` (default): modulation and demodulation are applied to the
  activations (x * s, conv with the shared kernel, * d), which is exact algebra and runs
  as an ordinary batched convolution on every backend;
- `impl="grouped"`: the release's per-sample weights as one grouped convolution
  (feature_group_count = batch).
The stride-2 transposed convolution is computed by sub-pixel decomposition (one ordinary
convolution per output phase, then interleaving), which avoids lhs-dilated convolutions
(slow on CPU) and the 4x zero-inserted work.

The scaled kernel and demodulation's sum_{kh,kw} W^2 depend on the weights alone: inference
reads them from a weight cache (jaxtalk/models/layers/weight_cache.py).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from jaxtalk.models.layers.conv_kernel_grad import conv_general_dilated
from jaxtalk.models.layers.equalized import CONV_AXES, EqualLinear, FusedLeakyReLU
from jaxtalk.models.layers.upfirdn import blur
from jaxtalk.models.layers.weight_cache import cached

_DN = ("NHWC", "HWIO", "NHWC")


def conv_transpose2d(x, kernel, stride: int = 2, feature_group_count: int = 1):
    """PyTorch `conv_transpose2d(x, w, stride, padding=0)` for NHWC x and an HWIO `kernel`
    with I = input channels (per group) and O = output channels, i.e. `kernel[kh, kw, i, o]`
    = torch `w[i, o, kh, kw]`. Output size (H - 1) * stride + k.

    Sub-pixel decomposition: output phase (a, b) (rows s*m + a, columns s*n + b) is an
    ordinary correlation of x with the taps K[a::s, b::s] (reversed), so every multiply
    is a useful one (no zero-inserted input) and no lhs-dilated convolution is needed.
    """
    n, h, w_, _ = x.shape
    k, cout, s = kernel.shape[0], kernel.shape[3], stride
    out_h, out_w = (h - 1) * s + k, (w_ - 1) * s + k
    mh, mw = -(-out_h // s), -(-out_w // s)
    rows = []
    for a in range(s):
        cols = []
        for b in range(s):
            sub = kernel[a::s, b::s][::-1, ::-1]  # window offset taps-1-i <-> tap a + s*i
            th, tw = sub.shape[:2]
            if th == 0 or tw == 0:
                cols.append(jnp.zeros((n, mh, mw, cout), x.dtype))
                continue
            # explicit pad + VALID: XLA:CPU's kernel gradient is ~10x slower with the
            # asymmetric padding expressed inside the convolution
            xp = jnp.pad(x, [(0, 0), (th - 1, mh - h), (tw - 1, mw - w_), (0, 0)])
            cols.append(
                conv_general_dilated(
                    xp,
                    sub.astype(x.dtype),
                    (1, 1),
                    "VALID",
                    dimension_numbers=_DN,
                    feature_group_count=feature_group_count,
                )
            )
        rows.append(jnp.stack(cols, axis=3))  # (n, mh, mw, s_b, cout)
    y = jnp.stack(rows, axis=2)  # (n, mh, s_a, mw, s_b, cout)
    y = y.reshape(n, mh * s, mw * s, cout)
    return y[:, :out_h, :out_w, :]


class ModulatedConv2d(nn.Module):
    """The release's ModulatedConv2d. Params: `kernel` (k, k, in, out) raw N(0,1) (torch
    `weight` (1, out, in, k, k)) and `modulation` (EqualLinear(style_dim -> in, bias 1))."""

    features: int
    kernel_size: int
    demodulate: bool = True
    upsample: bool = False
    downsample: bool = False
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    impl: str = "scaled_input"  # or "grouped" (the release's formulation)
    init_scale: float = 1.0  # std of the raw kernel at init (the release: 1)
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, style):
        b, _, _, cin = x.shape
        k, cout = self.kernel_size, self.features
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.normal(self.init_scale), CONV_AXES),
            (k, k, cin, cout),
            self.param_dtype,
        )
        s = EqualLinear(
            cin, bias_init=1.0, dtype=self.dtype, param_dtype=self.param_dtype, name="modulation"
        )(style)  # (B, in)
        hi = jnp.promote_types(self.dtype, jnp.float32)  # modulation math in >= fp32
        s = s.astype(hi)
        w = cached(self, "kernel", lambda: kernel.astype(hi) * (1.0 / math.sqrt(cin * k * k)))
        d = None
        if self.demodulate:  # sum_{kh,kw,i} (w * s_i)^2 = s^2 @ sum_{kh,kw} w^2
            energy = cached(self, "tap_energy", lambda: jnp.sum(w * w, axis=(0, 1)))
            d = lax.rsqrt(jnp.dot(s * s, energy) + 1e-8)  # (B, out)
        x = x.astype(self.dtype)
        if self.impl == "scaled_input":
            y = self._conv(x * s[:, None, None, :].astype(self.dtype), w.astype(self.dtype), 1)
            if d is not None:
                y = y * d[:, None, None, :].astype(self.dtype)
        elif self.impl == "grouped":
            wb = w[None] * s[:, None, None, :, None]  # (B, k, k, in, out)
            if d is not None:
                wb = wb * d[:, None, None, None, :]
            wg = wb.transpose(1, 2, 3, 0, 4).reshape(k, k, cin, b * cout)
            h, w_ = x.shape[1:3]
            xg = x.transpose(1, 2, 0, 3).reshape(1, h, w_, b * cin)
            y = self._conv(xg, wg.astype(self.dtype), b)
            y = y.reshape(y.shape[1], y.shape[2], b, cout).transpose(2, 0, 1, 3)
        else:
            raise ValueError(f"unknown ModulatedConv2d impl {self.impl!r}")
        return y

    def _conv(self, x, w, groups):
        k = self.kernel_size
        if self.upsample:
            y = conv_transpose2d(x, w, 2, feature_group_count=groups)
            p = (len(self.blur_kernel) - 2) - (k - 1)
            return blur(y, self.blur_kernel, ((p + 1) // 2 + 1, p // 2 + 1), upsample_factor=2)
        if self.downsample:
            p = (len(self.blur_kernel) - 2) + (k - 1)
            x = blur(x, self.blur_kernel, ((p + 1) // 2, p // 2))
            return conv_general_dilated(
                x, w, (2, 2), "VALID", dimension_numbers=_DN, feature_group_count=groups
            )
        p = k // 2
        return conv_general_dilated(
            x, w, (1, 1), [(p, p), (p, p)], dimension_numbers=_DN, feature_group_count=groups
        )


class NoiseInjection(nn.Module):
    """x + weight * noise; a no-op without noise (the release never passes noise)."""

    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, noise=None):
        weight = self.param(
            "weight",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
            (1,),
            self.param_dtype,
        )
        if noise is None:
            return x
        return x + weight.astype(x.dtype) * noise.astype(x.dtype)


class ConstantInput(nn.Module):
    """A learned (1, size, size, C) tensor repeated over the batch (torch (1, C, s, s))."""

    channels: int
    size: int = 4
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, batch: int):
        const = self.param(
            "input",
            nn.with_logical_partitioning(
                nn.initializers.normal(1.0), (None, None, None, "conv_out")
            ),
            (1, self.size, self.size, self.channels),
            self.param_dtype,
        )
        return jnp.broadcast_to(
            const.astype(self.dtype), (batch, self.size, self.size, self.channels)
        )


class StyledConv(nn.Module):
    """ModulatedConv2d (`conv`) -> NoiseInjection (`noise`) -> FusedLeakyReLU (`activate`)."""

    features: int
    kernel_size: int
    upsample: bool = False
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    demodulate: bool = True
    impl: str = "scaled_input"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, style, noise=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        out = ModulatedConv2d(
            self.features,
            self.kernel_size,
            demodulate=self.demodulate,
            upsample=self.upsample,
            blur_kernel=self.blur_kernel,
            impl=self.impl,
            name="conv",
            **kw,
        )(x, style)
        out = NoiseInjection(name="noise", **kw)(out, noise)
        return FusedLeakyReLU(name="activate", **kw)(out)
