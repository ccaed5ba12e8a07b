"""upfirdn2d (upsample, FIR filter, downsample) and the Blur / Upsample / Downsample
layers of StyleGAN2 / LIA, NHWC, with the release's `upfirdn2d_native` semantics.

`upfirdn2d` zero-inserts `up - 1` samples after every input sample, pads (negative pads
crop), convolves with the kernel (a true convolution, i.e. correlation with the flipped
kernel, as the release does) and keeps every `down`-th sample. Separable kernels (the
only kind the releases use, given as 1-D taps) are applied as two 1-D passes of shifted
slices, which XLA fuses into a handful of elementwise loops; 2-D kernels fall back to a
depthwise convolution.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax


def make_kernel(k: Sequence[float] | np.ndarray) -> np.ndarray:
    """The release's make_kernel: outer product of a 1-D kernel, normalised to sum 1."""
    k = np.asarray(k, dtype=np.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def _pad_axis(x, axis: int, p0: int, p1: int):
    if p0 < 0:
        x = lax.slice_in_dim(x, -p0, x.shape[axis], axis=axis)
        p0 = 0
    if p1 < 0:
        x = lax.slice_in_dim(x, 0, x.shape[axis] + p1, axis=axis)
        p1 = 0
    if p0 or p1:
        cfg = [(0, 0)] * x.ndim
        cfg[axis] = (p0, p1)
        x = jnp.pad(x, cfg)
    return x


def _upsample_axis(x, axis: int, up: int):
    if up == 1:
        return x
    shape = list(x.shape)
    x = jnp.expand_dims(x, axis + 1)
    cfg = [(0, 0)] * x.ndim
    cfg[axis + 1] = (0, up - 1)
    x = jnp.pad(x, cfg)
    shape[axis] *= up
    return x.reshape(shape)


def _fir_axis(x, axis: int, taps: np.ndarray):
    """y[i] = sum_j x[i + j] * taps[K-1-j]  (true convolution, 'valid')."""
    flipped = np.asarray(taps, np.float64)[::-1]
    n = x.shape[axis] - len(taps) + 1
    out = None
    for j, t in enumerate(flipped):
        if t == 0:
            continue
        term = lax.slice_in_dim(x, j, j + n, axis=axis) * jnp.asarray(t, x.dtype)
        out = term if out is None else out + term
    return out


def upfirdn2d(
    x, kernel, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0), gain: float = 1.0
):
    """x: (N, H, W, C); `kernel`: 1-D taps k (applied separably: the 2-D kernel is
    outer(k, k) * gain, k used as given, not normalised) or a 2-D kernel (times gain).
    `pad` = (before, after), the same on both spatial axes; negative values crop.
    """
    kernel = np.asarray(kernel, np.float64)
    p0, p1 = pad
    x = _upsample_axis(_upsample_axis(x, 1, up), 2, up)
    x = _pad_axis(_pad_axis(x, 1, p0, p1), 2, p0, p1)
    if kernel.ndim == 1:
        x = _fir_axis(x, 1, kernel * gain)
        x = _fir_axis(x, 2, kernel)
    else:
        kh, kw = kernel.shape
        c = x.shape[-1]
        w = jnp.asarray((kernel * gain)[::-1, ::-1].copy(), x.dtype)
        w = jnp.broadcast_to(w[:, :, None, None], (kh, kw, 1, c))
        x = lax.conv_general_dilated(
            x, w, (1, 1), "VALID", feature_group_count=c, dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
    if down > 1:
        x = x[:, ::down, ::down, :]
    return x


def _taps(kernel: Sequence[float]) -> np.ndarray:
    k = np.asarray(kernel, np.float64)
    if k.ndim != 1:
        raise ValueError(f"blur kernels are given as 1-D taps, got shape {k.shape}")
    return k / k.sum()


def blur(x, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
    """The release's Blur: upfirdn2d with make_kernel(kernel) * factor**2."""
    return upfirdn2d(x, _taps(kernel), pad=pad, gain=float(upsample_factor**2))


def upsample(x, kernel: Sequence[float] = (1, 3, 3, 1), factor: int = 2):
    """The release's Upsample: up=factor, kernel * factor**2, pad ((p+1)//2+f-1, p//2)."""
    p = len(kernel) - factor
    return upfirdn2d(
        x, _taps(kernel), up=factor, pad=((p + 1) // 2 + factor - 1, p // 2), gain=float(factor**2)
    )


def downsample(x, kernel: Sequence[float] = (1, 3, 3, 1), factor: int = 2):
    """The release's Downsample: down=factor, pad ((p+1)//2, p//2)."""
    p = len(kernel) - factor
    return upfirdn2d(x, _taps(kernel), down=factor, pad=((p + 1) // 2, p // 2))


class Blur(nn.Module):
    """Parameter-free blur; the release's `kernel` buffer is implied by `kernel`."""

    kernel: Sequence[float] = (1, 3, 3, 1)
    pad: tuple[int, int] = (0, 0)
    upsample_factor: int = 1
    dtype: jnp.dtype = jnp.float32

    def __call__(self, x):
        return blur(x.astype(self.dtype), self.kernel, self.pad, self.upsample_factor)
