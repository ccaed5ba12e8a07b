"""`lax.conv_general_dilated` with faster gradients on CPU.

Why: XLA's CPU backend computes a 2-D conv's kernel gradient as one more convolution, whose
window is the whole image and whose batch is the input channels. For a batch of images (or
the depth slices of a 3-D conv, conv3d.py) that runs at 12-50 GFLOP/s on the 2-core CPU
where the forward conv and the input gradient run at 100-200: LivePortrait W's hourglass
conv (142 channels, 16 slices of 64x64) took 4.4 s per kernel gradient, 14% of W's whole
training step. Strided convs are slower still (LIA's encoder, batch 8): a stride-2 conv's
forward pass runs at about 45 GFLOP/s, its input gradient convolves a zero-dilated output
gradient, and its kernel gradient ran at 5-47 GFLOP/s. `benchmarks/conv_kernel_grad.py`
measures the two ways side by side.

Here, for a stride-1, undilated, ungrouped, channels-last 2-D conv, the kernel gradient is
kh matmuls instead ("rows"): for kernel row i, the padded input's rows i .. i + Ho as
(P, Cin) against the output gradient shifted by each kernel column j and stacked on
channels as (P, kw * Cout), where P counts every (image, row, padded column):

    dK[i, j, c, d] = sum_{n, h, w'} xp[n, h + i, w', c] * dy[n, h, w' - j, d]

(dy zero outside its width). The stacked gradient is built once for all rows, and each
matmul's inner dimension is the whole batch's pixels, which is what a CPU matmul does best.
(With fewer input than output channels, the input's columns are the side stacked instead.)
XLA's own gradient is a little faster at a few shapes (one image with many channels: 0.94x;
an RGB input conv: 0.81x, milliseconds) and up to 10x slower at others (one output channel,
a batch of maps), so every such conv on CPU takes this form. The forward conv and the input
gradient are XLA's; only where the kernel gradient comes from changes, so results agree to
float rounding.

A strided conv is the sum of stride-1 convs over the phases of its input (`_phase_sum`):
its gradients are those of the sum (each phase's kernel gradient by rows; both gradients
together 2.1-3.3x XLA's at LIA's encoder shapes), and its forward pass is the sum where
that is faster.

Other backends (GPU, TPU) keep XLA's convs and gradients. $JAXTALK_CONV_KERNEL_GRAD=xla|rows
overrides the choice (for benchmarks and tests).
"""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
from jax import lax

METHODS = ("auto", "xla", "rows")
_CHANNELS_LAST = ("NHWC", "HWIO", "NHWC")
_TRANSPOSED = ("NHWC", "HWOI", "NHWC")  # the kernel read with its channel axes swapped


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
    phase_taps=None,
):
    """`lax.conv_general_dilated`, with the rows kernel gradient (and strided convs by
    phases) where it applies (see the module docstring); also usable as flax
    `nn.Conv(conv_general_dilated=...)`. `phase_taps`: `phase_taps(rhs, strides)` computed
    beforehand (inference's weight cache), used by a forward pass by phases instead of
    slicing the kernel on every call (no custom gradient then)."""
    pads = _row_pads(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, batch_group_count, precision, preferred_element_type,
    )  # fmt: skip
    if pads is not None:
        strides = tuple(int(s) for s in window_strides)
        if strides == (1, 1):
            return _conv(lhs, rhs, pads)
        if phase_taps is not None and _by_phases(lhs, rhs):
            return _phase_sum(lhs, rhs, pads, strides, phase_taps)
        return _strided_conv(lhs, rhs, pads, strides)
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


def _pad(x, rows, cols):
    """Zeros around an NHWC map's rows and columns: lax.pad, which traces as one primitive
    where jnp.pad is a nested jit of its own (hundreds per train step)."""
    return lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (*rows, 0), (*cols, 0), (0, 0, 0)))


def _xla_conv(x, kernel, pads):
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=_CHANNELS_LAST)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv(x, kernel, pads):
    return _xla_conv(x, kernel, pads)


def _conv_fwd(x, kernel, pads):
    return _xla_conv(x, kernel, pads), (x, kernel)


def _input_grad(dy, kernel, pads):
    """The stride-1 conv's input gradient as jax's own transpose rule writes it (the output
    gradient convolved with the flipped kernel, its in and out channels swapped by the
    dimension numbers), without tracing a `jax.vjp` of the conv for every conv."""
    (kh, kw), ((top, bottom), (left, right)) = kernel.shape[:2], pads
    pads_t = ((kh - 1 - top, kh - 1 - bottom), (kw - 1 - left, kw - 1 - right))
    flipped = lax.rev(kernel, (0, 1))
    return lax.conv_general_dilated(dy, flipped, (1, 1), pads_t, dimension_numbers=_TRANSPOSED)


def _conv_bwd(pads, residuals, dy):
    x, kernel = residuals
    dx = _input_grad(dy, kernel, pads)
    return dx, kernel_grad_rows(x, dy, kernel.shape[:2], pads).astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def _phases(kernel, strides) -> list[tuple[int, int]]:
    """The input phases (a, b) a strided conv reads."""
    (sh, sw), (kh, kw) = strides, kernel.shape[:2]
    return [(a, b) for a in range(min(sh, kh)) for b in range(min(sw, kw))]


def phase_taps(kernel, strides) -> list:
    """The kernel taps K[a::sh, b::sw] of each phase of a strided conv, in `_phase_sum`'s
    order: they depend on the weights alone."""
    return [kernel[a :: strides[0], b :: strides[1]] for a, b in _phases(kernel, strides)]


def _phase_sum(x, kernel, pads, strides, taps=None):
    """A strided conv as the sum of stride-1 convs, one per phase (a, b) of the padded
    input, xp[:, a::sh, b::sw], with the kernel taps K[a::sh, b::sw] (the other phases are
    never read); each phase's kernel gradient is then the rows form's."""
    sh, sw = strides
    kh, kw = kernel.shape[:2]
    xp = _pad(x, *pads)
    ho, wo = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    y = None
    for (a, b), k in zip(_phases(kernel, strides), taps or phase_taps(kernel, strides)):
        qa, qb = k.shape[:2]
        phase = xp[:, a::sh, b::sw][:, : ho + qa - 1, : wo + qb - 1]
        term = _conv(phase, k, ((0, 0), (0, 0)))
        y = term if y is None else y + term
    return y


def by_phases(x, kernel, strides) -> bool:
    """Whether `conv_general_dilated` runs this NHWC / HWIO conv's forward pass by phases
    (and would use `phase_taps`)."""
    return tuple(strides) != (1, 1) and method() == "rows" and _by_phases(x, kernel)


def _by_phases(x, kernel) -> bool:
    """Whether a strided conv's forward pass runs by phases (see `_strided_conv`)."""
    return x.shape[-1] >= 128 and kernel.shape[0] * kernel.shape[1] > 1


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided_conv(x, kernel, pads, strides):
    """A strided conv whose gradients are those of `_phase_sum`, and whose forward pass is
    the phase sum where that is faster: with 128 or more input channels (LIA's stride-2
    encoder convs: 1.1-1.7x XLA's), and XLA's own with fewer (64 channels: 0.65x) or a 1x1
    kernel."""
    if _by_phases(x, kernel):
        return _phase_sum(x, kernel, pads, strides)
    return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=_CHANNELS_LAST)


def _strided_fwd(x, kernel, pads, strides):
    return _strided_conv(x, kernel, pads, strides), (x, kernel)


def _strided_bwd(pads, strides, residuals, dy):
    x, kernel = residuals
    _, vjp = jax.vjp(lambda x_, k_: _phase_sum(x_, k_, pads, strides), x, kernel)
    return vjp(dy)


_strided_conv.defvjp(_strided_fwd, _strided_bwd)


def kernel_grad_rows(x, dy, kernel_size, pads):
    """dK (kh, kw, Cin, Cout) of the stride-1 conv of x (N, H, W, Cin) padded by `pads`,
    given the output gradient dy (N, Ho, Wo, Cout), as kh matmuls (module docstring). The
    side with fewer channels is the one shifted and stacked kw times: dy as above, or, for
    fewer input channels (an RGB image's first conv), the input's kw shifted columns
    against dy itself."""
    kh, kw = kernel_size
    (top, bottom), (left, right) = pads
    xp = _pad(x, (top, bottom), (left, right))
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
    dyp = _pad(dy, (0, 0), (kw - 1, kw - 1))
    shifted = [dyp[:, :, kw - 1 - j : kw - 1 - j + wp] for j in range(kw)]
    stacked = jnp.concatenate(shifted, axis=-1).reshape(n * ho * wp, kw * cout)
    for i in range(kh):
        xi = xp[:, i : i + ho].reshape(n * ho * wp, cin)
        rows.append(matmul(xi, stacked).reshape(cin, kw, cout).transpose(1, 0, 2))
    return jnp.stack(rows)
