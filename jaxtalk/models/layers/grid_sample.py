"""`torch.nn.functional.grid_sample` with PyTorch semantics, channels-last.

- `grid_sample_2d(x (N, H, W, C), grid (N, Ho, Wo, 2))`: bilinear; grid[..., 0] is x
  (width), grid[..., 1] is y (height), both in [-1, 1].
- `grid_sample_3d(x (N, D, H, W, C), grid (N, Do, Ho, Wo, 3))`: trilinear; grid (x, y, z).

padding_mode 'zeros' (out-of-range corners contribute 0, as PyTorch) or 'border'
(coordinates clamped); `align_corners` as in PyTorch (default False). Implemented with
one vectorised gather per corner, so it is differentiable w.r.t. both the input
(scatter-add) and the grid (through the interpolation weights), like PyTorch's.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


def _unnormalize(coord, size: int, align_corners: bool):
    if align_corners:
        return (coord + 1.0) * 0.5 * (size - 1)
    return ((coord + 1.0) * size - 1.0) * 0.5


def _sample(x, grid, align_corners: bool, padding_mode: str):
    """x: (N, *S, C) with S spatial sizes (outermost first); grid (N, *O, len(S)) with the
    coordinates ordered innermost axis first (x, y[, z])."""
    if padding_mode not in ("zeros", "border"):
        raise ValueError(f"padding_mode {padding_mode!r} not supported (zeros | border)")
    n, c = x.shape[0], x.shape[-1]
    sizes = x.shape[1:-1]
    nd = len(sizes)
    if grid.shape[-1] != nd or grid.shape[0] != n:
        raise ValueError(f"grid {grid.shape} does not match input {x.shape}")
    out_shape = grid.shape[1:-1]
    grid = grid.reshape(n, -1, nd)
    grid = grid.astype(jnp.promote_types(grid.dtype, jnp.float32))
    # coordinate for spatial axis a (outermost first) is grid[..., nd - 1 - a]
    coords = []
    for a, size in enumerate(sizes):
        u = _unnormalize(grid[..., nd - 1 - a], size, align_corners)
        if padding_mode == "border":
            u = jnp.clip(u, 0.0, size - 1.0)
        coords.append(u)
    lo = [jnp.floor(u) for u in coords]
    frac = [u - f for u, f in zip(coords, lo)]
    lo = [f.astype(jnp.int32) for f in lo]
    flat = x.reshape(n, -1, c)
    strides = [1] * nd
    for a in range(nd - 2, -1, -1):
        strides[a] = strides[a + 1] * sizes[a + 1]
    gather = jax.vmap(lambda arr, idx: arr[idx])
    out = None
    for corner in itertools.product((0, 1), repeat=nd):
        weight, valid, index = None, None, 0
        for a, bit in enumerate(corner):
            i = lo[a] + bit
            wa = frac[a] if bit else 1.0 - frac[a]
            va = (i >= 0) & (i < sizes[a])
            weight = wa if weight is None else weight * wa
            valid = va if valid is None else valid & va
            # lax.clamp / lax.select: one primitive each, where jnp.clip / jnp.where are
            # nested jits of their own (8 corners of every 3-D warp of a train step)
            index = index + lax.clamp(np.int32(0), i, np.int32(sizes[a] - 1)) * strides[a]
        weight = lax.select(valid, weight, jnp.zeros_like(weight)).astype(x.dtype)
        term = gather(flat, index) * weight[..., None]
        out = term if out is None else out + term
    return out.reshape((n,) + tuple(out_shape) + (c,))


def grid_sample_2d(x, grid, align_corners: bool = False, padding_mode: str = "zeros"):
    """Bilinear grid_sample: x (N, H, W, C), grid (N, Ho, Wo, 2) -> (N, Ho, Wo, C)."""
    return _sample(x, grid, align_corners, padding_mode)


def grid_sample_3d(x, grid, align_corners: bool = False, padding_mode: str = "zeros"):
    """Trilinear grid_sample: x (N, D, H, W, C), grid (N, Do, Ho, Wo, 3) -> (N, Do, Ho, Wo, C)."""
    return _sample(x, grid, align_corners, padding_mode)
