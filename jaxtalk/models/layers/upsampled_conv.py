"""A 'same' convolution of a nearest-upsampled map, computed at the low resolution.

conv_k(upsample_nearest(x, f)) with an odd kernel k and padding k // 2 reads, for an output
row f*i + a, the input rows f*i + a + t - k // 2 (t < k), which all lie in the low-resolution
rows i + floor((a + t - k // 2) / f): at most a couple of distinct rows. Folding the kernel
taps that read the same low-resolution row gives, per output phase (a, b), a small kernel
(2x2, 2x1 or 1x1 for k = 3) applied to x itself; the f*f phase outputs interleave into the
result. Same sums as the upsampled conv, in 4/9 of its multiply-adds at f = 2 and 1/4 at
f = 4 for k = 3 (zero padding agrees: a padded high-resolution row maps to a padded
low-resolution one). LivePortrait's SPADE convs read the feature map upsampled 2x and 4x,
its dense-motion hourglass upsamples before each 3-D conv, and diffusers' Upsample2D is a
nearest 2x followed by a 3x3 conv.

`phase_convs` returns the phases' outputs before they interleave, so a caller summing several
convs (the depth taps of a 3-D conv) interleaves once (`interleave`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxtalk.models.layers.conv_kernel_grad import conv_general_dilated
from jaxtalk.models.layers.torch_nn import conv_bias, torch_kernel_init

MIN_POSITIONS = 256


def upsample_nearest(x, factor: int = 2):
    """nn.Upsample(scale_factor=factor) (nearest) on (..., H, W, C)."""
    return jnp.repeat(jnp.repeat(x, factor, axis=-3), factor, axis=-2)


def _fold(factor: int, size: int) -> list[tuple[tuple[int, ...], int, np.ndarray]]:
    """Per axis: groups of output phases that read the same low-resolution offsets, as
    (phases, lowest offset, fold matrix (offsets, size)) with fold[o, t] = 1 where tap t of
    those phases reads offset lo + o."""
    pad = size // 2
    groups: dict[tuple[int, ...], list[int]] = {}
    for phase in range(factor):
        offsets = tuple((phase + t - pad) // factor for t in range(size))
        groups.setdefault(offsets, []).append(phase)
    out = []
    for offsets, phases in groups.items():
        lo = offsets[0]
        fold = np.zeros((offsets[-1] - lo + 1, size), np.float32)
        fold[np.asarray(offsets) - lo, np.arange(size)] = 1.0
        out.append((tuple(phases), lo, fold))
    return out


def _fold_axis(kernel, fold, axis: int):
    """kernel's taps along `axis` summed per folded offset (fold[o, t] = 1: tap t reads offset
    o), as one-tap slices and plain adds: an einsum over the taps became a slow transposing
    dot on large kernels, and lax slices trace several times faster than indexing (the
    folds were an eighth of a tiny LivePortrait train step's trace)."""
    offsets = []
    for taps in fold:
        first, *rest = np.flatnonzero(taps)
        total = lax.slice_in_dim(kernel, first, first + 1, axis=axis)
        for t in rest:
            total = lax.add(total, lax.slice_in_dim(kernel, t, t + 1, axis=axis))
        offsets.append(total)
    return lax.concatenate(offsets, axis)


def _conv(x, kernel, pads):
    return conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))


def phase_convs(x, kernel, factor: int) -> dict[tuple[int, int], Any]:
    """{(row phase, column phase): its output (B, H, W, Cout)} of the 'same' conv of
    `kernel` (kh, kw, Cin, Cout; odd sizes) over upsample_nearest(x, factor), x NHWC."""
    kh, kw, cin, cout = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"upsampled conv needs an odd kernel, got {kernel.shape[:2]}")
    out = {}
    kernel = kernel.astype(jnp.promote_types(kernel.dtype, jnp.float32))
    for rows, row_lo, row_fold in _fold(factor, kh):
        by_rows = _fold_axis(kernel, row_fold, 0)  # (offsets, kw, Cin, Cout)
        for cols, col_lo, col_fold in _fold(factor, kw):
            # every phase of the group shares the folded kernel and the padding
            folded = _fold_axis(by_rows, col_fold, 1).astype(x.dtype)
            pads = (
                (-row_lo, row_lo + row_fold.shape[0] - 1),
                (-col_lo, col_lo + col_fold.shape[0] - 1),
            )
            y = _conv(x, folded, pads)
            for a in rows:
                for b in cols:
                    out[(a, b)] = y
    return out


def interleave(phases: dict[tuple[int, int], Any], factor: int):
    """The phase outputs (B, H, W, C) -> (B, factor*H, factor*W, C), phase (a, b) at rows
    factor*i + a, columns factor*j + b."""
    rows = [jnp.stack([phases[(a, b)] for b in range(factor)], axis=3) for a in range(factor)]
    y = jnp.stack(rows, axis=2)  # (B, H, f, W, f, C)
    b, h, _, w, _, c = y.shape
    return y.reshape(b, h * factor, w * factor, c)


def worth_phases(dims, factor: int) -> bool:
    """Whether the phases pay for a sample whose (depth and) H, W are `dims`: folding the
    kernel costs about as much as a conv over a few dozen positions, so below MIN_POSITIONS
    low-resolution positions per sample the plain upsample-then-conv is as fast or faster
    (measured on the 2-core CPU: 16 depth slices of 4x4, 1,024 -> 512 channels: 1.6x faster;
    of 2x2: 0.7x). Decided per sample, not per batch, so that a frame's result does not
    depend on the batch it is drawn in (chunks, exported functions of any batch).
    $JAXTALK_UPSAMPLED_CONV=plain turns the phases off (for benchmarks), read when traced."""
    if os.environ.get("JAXTALK_UPSAMPLED_CONV", "phases") not in ("phases", "plain"):
        raise ValueError("JAXTALK_UPSAMPLED_CONV must be phases or plain")
    if os.environ.get("JAXTALK_UPSAMPLED_CONV") == "plain":
        return False
    return factor > 1 and math.prod(dims) >= MIN_POSITIONS


def conv_nearest_upsampled(x, kernel, factor: int):
    """conv(upsample_nearest(x, factor), kernel, stride 1, padding k // 2), NHWC x HWIO."""
    if not worth_phases(x.shape[1:3], factor):
        pads = ((kernel.shape[0] // 2,) * 2, (kernel.shape[1] // 2,) * 2)
        return _conv(upsample_nearest(x, factor), kernel.astype(x.dtype), pads)
    return interleave(phase_convs(x, kernel, factor), factor)


class UpsampledConv(nn.Module):
    """torch's Conv2d(k, padding k // 2) applied to nn.Upsample(scale_factor=`factor`)(x),
    with `torch_nn.conv`'s parameters (`kernel` HWIO, `bias`), computed at x's resolution."""

    features: int
    kernel_size: int = 3
    factor: int = 2
    use_bias: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable = torch_kernel_init

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(self.kernel_init, (None, None, "conv_in", "conv_out")),
            (k, k, x.shape[-1], self.features),
            self.param_dtype,
        )
        y = conv_nearest_upsampled(x.astype(self.dtype), kernel, self.factor)
        if self.use_bias:
            y = y + conv_bias(self, self.features, self.param_dtype).astype(self.dtype)
        return y
