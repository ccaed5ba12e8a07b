"""`lax.conv_general_dilated` with a faster kernel gradient on CPU.

Why: XLA's CPU backend computes a 2-D conv's kernel gradient as one more convolution, whose
window is the whole image and whose batch is the input channels. For a batch of images (or
the depth slices of a 3-D conv, conv3d.py) that runs at 12-50 GFLOP/s on the 2-core CPU
where the forward conv and the input gradient run at 100-200: LivePortrait W's hourglass
conv (142 channels, 16 slices of 64x64) took 4.4 s per kernel gradient, 14% of W's whole
training step. `benchmarks/conv_kernel_grad.py` measures the two ways side by side.

Here, for a stride-1, undilated, ungrouped, channels-last 2-D conv, the kernel gradient is
kh matmuls instead ("rows"): for kernel row i, the padded input's rows i .. i + Ho as (P, Cin) against the output gradient shifted by each kernel column j and
stacked on channels as (P, kw * Cout), where P counts every (image, row, padded column):

    dK[i, j, c, d] = sum_{n, h, w'} xp[n, h + i, w', c] * dy[n, h, w' - j, d]

(dy zero outside its width). The stacked gradient is built once for all rows, and each
matmul's inner dimension is the whole batch's pixels, which is what a CPU matmul does best.
(With fewer input than output channels, the input's columns are the side stacked instead.)
XLA's own gradient is a little faster at a few shapes (one image with many channels: 0.94x;
an RGB input conv: 0.81x, milliseconds) and up to 10x slower at others (one output channel,
a batch of maps), so every such conv on CPU takes this form. The forward conv and
the input gradient are XLA's in every case; only where the kernel gradient comes from
changes, so results agree to float rounding.

Other backends (GPU, TPU) keep XLA's gradient. $JAXTALK_CONV_KERNEL_GRAD=xla|rows overrides
the choice (for benchmarks and tests).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

METHODS = ("auto", "xla", "rows")
_CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")


def method() -> str:
    """The kernel-gradient method in effect: $JAXTALK_CONV_KERNEL_GRAD, else rows on CPU."""
    chosen = os.environ.get("JAXTALK_CONV_KERNEL_GRAD") or "auto"
    if chosen not in METHODS:
        raise ValueError(f"JAXTALK_CONV_KERNEL_GRAD must be one of {METHODS}, not {chosen!r}")
    if chosen == "auto":
        return "rows" if jax.default_backend() == "cpu" else "xla"
    return chosen


def conv_general_dilated(
    lhs,
    rhs,
    window_strides,
    padding,
    lhs_dilation=None,
    rhs_dilation=None,
    dimension_numbers=None,
    feature_group_count=1,
    batch_group_count=1,
    precision=None,
    preferred_element_type=None,
):
    """`lax.conv_general_dilated`, with the rows kernel gradient where it applies (see the
    module docstring); also usable as flax `nn.Conv(conv_general_dilated=...)`."""
    pads = _row_pads(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
    )  # fmt: skip
    if pads is not None:
        return _conv(lhs, rhs, pads, tuple(int(s) for s in window_strides))
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
    )  # fmt: skip


def _row_pads(lhs, rhs, strides, padding, lhs_dil, rhs_dil, dn, groups, batch_groups,
              precision, preferred):  # fmt: skip
    """The explicit ((top, bottom), (left, right)) padding when the rows gradient applies,
    else None."""
    if lhs.ndim != 4 or groups != 1 or batch_groups != 1:
        return None
    if precision is not None or preferred is not None or method() != "rows":
        return None
    if any(s < 1 for s in strides) or any(d != 1 for d in (lhs_dil or ()) + (rhs_dil or ())):
        return None
    if dn is None or lax.conv_dimension_numbers(
        lhs.shape, rhs.shape, dn
    ) != lax.conv_dimension_numbers(lhs.shape, rhs.shape, _CHANNELS_LAST):
        return None
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
    pads = tuple((int(a), int(b)) for a, b in padding)
    return pads if min(min(p) for p in pads) >= 0 else None


def _xla_conv(x, kernel, pads, strides=(1, 1)):
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_CHANNELS_LAST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, kernel, pads, strides):
    return _xla_conv(x, kernel, pads, strides)


def _conv_fwd(x, kernel, pads, strides):
    return _xla_conv(x, kernel, pads, strides), (x, kernel)


def _conv_bwd(pads, strides, residuals, dy):
    x, kernel = residuals
    if strides == (1, 1):
        _, input_vjp = jax.vjp(lambda x_: _xla_conv(x_, kernel, pads), x)
        (dx,) = input_vjp(dy)
    else:
        dx = input_grad_phases(dy, kernel, x.shape, pads, strides)
    dk = kernel_grad(x, dy, kernel.shape[:2], pads, strides)
    return dx, dk.astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def kernel_grad(x, dy, kernel_size, pads, strides=(1, 1)):
    """dK (kh, kw, Cin, Cout) of the conv of x (N, H, W, Cin) padded by `pads` with
    `strides`, given its output gradient dy (N, Ho, Wo, Cout). A strided conv is the sum of
    stride-1 convs, one per phase (a, b) of the padded input, xp[:, a::sh, b::sw], with the
    kernel taps K[a::sh, b::sw]; each phase's taps get the rows gradient of that phase."""
    sh, sw = strides
    if (sh, sw) == (1, 1):
        return kernel_grad_rows(x, dy, kernel_size, pads)
    kh, kw = kernel_size
    (top, bottom), (left, right) = pads
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    _, ho, wo, _ = dy.shape
    acc = jnp.promote_types(jnp.result_type(x, dy), jnp.float32)
    dk = jnp.zeros((kh, kw, x.shape[-1], dy.shape[-1]), acc)
    for a in range(min(sh, kh)):
        qa = -(-(kh - a) // sh)  # the taps a, a + sh, ... of this phase
        for b in range(min(sw, kw)):
            qb = -(-(kw - b) // sw)
            phase = xp[:, a::sh, b::sw][:, : ho + qa - 1, : wo + qb - 1]
            taps = kernel_grad_rows(phase, dy, (qa, qb), ((0, 0), (0, 0)))
            dk = dk.at[a::sh, b::sw].set(taps)
    return dk


def input_grad_phases(dy, kernel, x_shape, pads, strides):
    """dx of a strided conv (`kernel_grad`'s terms) without XLA's zero-dilated output
    gradient: each phase's input gradient is the full stride-1 correlation of dy with that
    phase's taps, flipped; the phases are then interleaved and the padding cut off."""
    sh, sw = strides
    kh, kw, cin, _ = kernel.shape
    n, height, width, _ = x_shape
    (top, bottom), (left, right) = pads
    hp, wp = height + top + bottom, width + left + right
    lh, lw = -(-hp // sh), -(-wp // sw)  # rows and columns per phase
    phases = []
    for a in range(sh):
        row = []
        for b in range(sw):
            taps = kernel[a::sh, b::sw][::-1, ::-1].transpose(0, 1, 3, 2)  # (qa, qb, Cout, Cin)
            qa, qb = taps.shape[:2]
            if qa == 0 or qb == 0:  # a kernel smaller than the stride: no tap reads here
                row.append(jnp.zeros((n, lh, lw, cin), dy.dtype))
                continue
            g = _xla_conv(dy, taps, ((qa - 1, qa - 1), (qb - 1, qb - 1)))
            row.append(jnp.pad(g, ((0, 0), (0, lh - g.shape[1]), (0, lw - g.shape[2]), (0, 0))))
        phases.append(jnp.stack(row, axis=3))  # (N, lh, lw, sw, Cin)
    dxp = jnp.stack(phases, axis=2).reshape(n, lh * sh, lw * sw, cin)
    return dxp[:, top : top + height, left : left + width]


def kernel_grad_rows(x, dy, kernel_size, pads):
    """dK (kh, kw, Cin, Cout) of the stride-1 conv of x (N, H, W, Cin) padded by `pads`,
    given the output gradient dy (N, Ho, Wo, Cout), as kh matmuls (module docstring). The
    side with fewer channels is the one shifted and stacked kw times: dy as above, or, for
    fewer input channels (an RGB image's first conv), the input's kw shifted columns
    against dy itself."""
    kh, kw = kernel_size
    (top, bottom), (left, right) = pads
    xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    n, ho, wo, cout = dy.shape
    cin, wp = x.shape[-1], xp.shape[2]  # wp = wo + kw - 1
    acc = jnp.promote_types(jnp.result_type(x, dy), jnp.float32)

    def matmul(a, b):  # a (P, M), b (P, K) -> a^T b (M, K), accumulated in >= float32
        return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=acc)

    rows = []
    if cin < cout:
        flat_dy = dy.reshape(n * ho * wo, cout)
        for i in range(kh):
            xi = xp[:, i : i + ho]
            shifted = jnp.concatenate([xi[:, :, j : j + wo] for j in range(kw)], axis=-1)
            rows.append(matmul(shifted.reshape(-1, kw * cin), flat_dy).reshape(kw, cin, cout))
        return jnp.stack(rows)
    dyp = jnp.pad(dy, ((0, 0), (0, 0), (kw - 1, kw - 1), (0, 0)))
    shifted = [dyp[:, :, kw - 1 - j : kw - 1 - j + wp] for j in range(kw)]
    stacked = jnp.concatenate(shifted, axis=-1).reshape(n * ho * wp, kw * cout)
    for i in range(kh):
        xi = xp[:, i : i + ho].reshape(n * ho * wp, cin)
        rows.append(matmul(xi, stacked).reshape(cin, kw, cout).transpose(1, 0, 2))
    return jnp.stack(rows)
