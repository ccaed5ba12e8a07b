"""A 3-D convolution whose parameters are exactly `torch_nn.conv`'s (flax nn.Conv: `kernel`
(kd, kh, kw, Cin, Cout) with logical axes (None, None, None, conv_in, conv_out), `bias`
(Cout), PyTorch's init), so converters and checkpoints do not see which way it computes.

Why: XLA's CPU backend runs 3-D convolutions far below the speed of its 2-D ones
(LivePortrait's W most of all: its 7x7x7 mask conv, 142 -> 22 channels over a 16x64x64
volume; `benchmarks/liveportrait_frame.py --conv3d native,slices` measures it). On CPU a
conv with kd > 1 is therefore computed as kd 2-D convs over the B*D depth slices, one per kernel depth tap,
summed (`method="slices"`; zero padding in depth by slicing a padded volume), or as one
2-D conv over the kd depth-shifted copies concatenated on channels, kernel
(kh, kw, kd*Cin, Cout) (`"concat"`: fewer, larger convs, kd times the input memory).
A kd = 1 conv is a 2-D conv on (B*D, H, W, C) either way. `"patches"` gathers every tap's
shifted volume on channels and makes the conv one matmul (im2col): kd*kh*kw times the input
memory, so only for small volumes. Other backends keep XLA's own 3-D conv (`"native"`);
"auto" picks by backend (on CPU: slices, or patches where a map is smaller than the kernel,
see `pick`), or takes $JAXTALK_CONV3D when set (for benchmarks: `JAXTALK_CONV3D=native`
gives XLA's 3-D conv on CPU too). All are the same sums, so results agree to float rounding.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxtalk.models.layers.conv_kernel_grad import conv_general_dilated
from jaxtalk.models.layers.torch_nn import conv_bias, torch_kernel_init
from jaxtalk.models.layers.upsampled_conv import (
    interleave,
    phase_convs,
    upsample_nearest,
    worth_phases,
)

METHODS = ("auto", "native", "slices", "concat", "patches")


def _conv2d(x, kernel, padding):
    return conv_general_dilated(
        x, kernel, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


def conv3d_slices(x, kernel, padding):
    """NDHWC x DHWIO, stride 1, `padding` ((d0, d1), (h0, h1), (w0, w1)): sum over depth taps."""
    kd = kernel.shape[0]
    b, d, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
    depth = x.shape[1] - kd + 1
    out = None
    for j in range(kd):
        tap = _conv2d(x[:, j : j + depth].reshape(b * depth, h, w, c), kernel[j], padding[1:])
        out = tap if out is None else out + tap
    return out.reshape((b, depth) + out.shape[1:])


def conv3d_slices_upsampled(x, kernel, padding, factor):
    """conv3d_slices of upsample_nearest over H, W by `factor`, each depth tap's 2-D conv
    computed at x's resolution (`upsampled_conv.phase_convs`), the phases summed over the
    taps and interleaved once. Needs H and W padding k // 2 ('same')."""
    kd = kernel.shape[0]
    b, d, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
    depth = x.shape[1] - kd + 1
    total = None
    for j in range(kd):
        tap = phase_convs(x[:, j : j + depth].reshape(b * depth, h, w, c), kernel[j], factor)
        total = tap if total is None else {k: total[k] + v for k, v in tap.items()}
    out = interleave(total, factor)
    return out.reshape((b, depth) + out.shape[1:])


def conv3d_concat(x, kernel, padding):
    """The same conv as one 2-D conv over the depth-shifted copies stacked on channels."""
    kd, kh, kw, cin, cout = kernel.shape
    b, _, h, w, c = x.shape
    x = jnp.pad(x, ((0, 0), padding[0], (0, 0), (0, 0), (0, 0)))
    depth = x.shape[1] - kd + 1
    stacked = jnp.concatenate([x[:, j : j + depth] for j in range(kd)], axis=-1)
    flat = kernel.transpose(1, 2, 0, 3, 4).reshape(kh, kw, kd * cin, cout)
    out = _conv2d(stacked.reshape(b * depth, h, w, kd * c), flat, padding[1:])
    return out.reshape((b, depth) + out.shape[1:])


def conv3d_patches(x, kernel, padding):
    """The same conv as one matmul: the kd*kh*kw shifted views of the padded volume stacked
    on channels (tap-major, as the kernel's (kd, kh, kw, Cin) flattens) times the kernel."""
    kd, kh, kw, _, cout = kernel.shape
    x = jnp.pad(x, ((0, 0),) + tuple(tuple(p) for p in padding) + ((0, 0),))
    d, h, w = (x.shape[1] - kd + 1, x.shape[2] - kh + 1, x.shape[3] - kw + 1)
    views = [
        x[:, i : i + d, j : j + h, k : k + w]
        for i in range(kd)
        for j in range(kh)
        for k in range(kw)
    ]
    return jnp.concatenate(views, -1) @ kernel.reshape(-1, cout)


def conv3d_native(x, kernel, padding):
    return lax.conv_general_dilated(
        x, kernel, (1, 1, 1), padding, dimension_numbers=("NDHWC", "DHWIO", "NDHWC")
    )


def conv3d(x, kernel, padding, method: str, upsample: int = 1):
    """The conv of `kernel` over x (nearest-upsampled over H, W by `upsample` first) by a
    resolved `method`."""
    same = all(k == 2 * p[0] + 1 == sum(p) + 1 for k, p in zip(kernel.shape[1:3], padding[1:]))
    if method == "slices" and same and worth_phases(x.shape[1:4], upsample):
        return conv3d_slices_upsampled(x, kernel, padding, upsample)
    if upsample > 1:
        x = upsample_nearest(x, upsample)
    if method == "concat" and kernel.shape[0] > 1:
        return conv3d_concat(x, kernel, padding)
    compute = {"native": conv3d_native, "patches": conv3d_patches}.get(method, conv3d_slices)
    return compute(x, kernel, padding)  # slices; a depth-1 kernel is one 2-D conv


def resolve(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"conv3d method must be one of {METHODS}, not {method!r}")
    if method == "auto":
        method = os.environ.get("JAXTALK_CONV3D") or (
            "slices" if jax.default_backend() == "cpu" else "native"
        )
        if method not in METHODS[1:]:
            raise ValueError(f"JAXTALK_CONV3D must be one of {METHODS[1:]}, not {method!r}")
    return method


def pick(method: str, shape: Sequence[int], kernel_size: Sequence[int]) -> str:
    """`resolve(method)`, except that on CPU "auto" takes patches for a volume whose H or W
    is smaller than the kernel's: XLA's CPU 2-D conv leaves its fast path there (measured,
    a 3x3 conv on 16 maps of 2x2, 512 -> 1024 channels: 348 ms as a 2-D conv, against 14.5
    ms on 4x4 maps with four times the FLOPs; as one matmul, 13 ms). W's hourglass reaches
    such maps at 128 px input."""
    resolved = resolve(method)
    small = min(shape[2:4]) < max(kernel_size[1:])
    if method == "auto" and resolved == "slices" and small and not os.environ.get("JAXTALK_CONV3D"):
        return "patches"
    return resolved


class Conv3d(nn.Module):
    """torch.nn.Conv3d(stride 1, symmetric zero padding) on (B, D, H, W, C); with
    `upsample` f > 1, on F.interpolate(x, scale_factor=(1, f, f)) (nearest), which depth
    slices compute at x's resolution (`conv3d_slices_upsampled`)."""

    features: int
    kernel_size: Sequence[int] = (3, 3, 3)
    padding: int = 0
    use_bias: bool = True
    upsample: int = 1
    method: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(torch_kernel_init, (None,) * 3 + ("conv_in", "conv_out")),
            tuple(self.kernel_size) + (x.shape[-1], self.features),
            self.param_dtype,
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        padding = ((self.padding, self.padding),) * 3
        f = self.upsample
        upsampled = x.shape[:2] + (f * x.shape[2], f * x.shape[3], x.shape[4])
        method = pick(self.method, upsampled, kernel.shape[:3])
        out = conv3d(x, kernel, padding, method, f)
        if self.use_bias:
            out = out + conv_bias(self, self.features, self.param_dtype).astype(self.dtype)
        return out
