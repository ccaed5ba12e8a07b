"""LIA building blocks against independent numpy implementations of the released ops."""

import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models.layers import equalized, grid_sample, modulated, upfirdn

RNG = np.random.default_rng(0)


def init_params(module, *args):
    return jax.tree_util.tree_map(np.asarray, nn.unbox(module.init(jax.random.PRNGKey(1), *args)))[
        "params"
    ]


# ----------------------------------------------------------------------------- numpy refs


def np_upfirdn2d(x, kernel2d, up, down, pad):
    """The release's upfirdn2d_native, NHWC, written with explicit loops over taps."""
    n, h, w, c = x.shape
    p0, p1 = pad
    z = np.zeros((n, h * up, w * up, c), x.dtype)
    z[:, ::up, ::up] = x
    z = np.pad(z, [(0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0)), (0, 0)])
    z = z[:, max(-p0, 0) : z.shape[1] - max(-p1, 0), max(-p0, 0) : z.shape[2] - max(-p1, 0)]
    kh, kw = kernel2d.shape
    flipped = kernel2d[::-1, ::-1]
    oh, ow = z.shape[1] - kh + 1, z.shape[2] - kw + 1
    out = np.zeros((n, oh, ow, c))
    for i, j in itertools.product(range(kh), range(kw)):
        out += z[:, i : i + oh, j : j + ow] * flipped[i, j]
    return out[:, ::down, ::down]


def np_grid_sample(x, grid, align_corners):
    """Bilinear / trilinear grid_sample, zeros padding, one output point at a time."""
    c = x.shape[-1]
    sizes = x.shape[1:-1]
    nd = len(sizes)
    out = np.zeros(grid.shape[:-1] + (c,))
    for idx in np.ndindex(*grid.shape[:-1]):
        b = idx[0]
        coords = []
        for a in range(nd):  # spatial axis a (outermost first) <- grid[..., nd-1-a]
            g = grid[idx][nd - 1 - a]
            s = sizes[a]
            coords.append((g + 1) / 2 * (s - 1) if align_corners else ((g + 1) * s - 1) / 2)
        acc = np.zeros(c)
        for corner in itertools.product((0, 1), repeat=nd):
            wgt, pos, ok = 1.0, [], True
            for a, bit in enumerate(corner):
                f = math.floor(coords[a])
                i = f + bit
                wgt *= (coords[a] - f) if bit else (1 - (coords[a] - f))
                ok &= 0 <= i < sizes[a]
                pos.append(i)
            if ok:
                acc += wgt * x[(b,) + tuple(pos)]
        out[idx] = acc
    return out


def np_conv2d(x, w, stride=1, pad=0, groups=1):
    """Cross-correlation NHWC x HWIO (I per group)."""
    x = np.pad(x, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    n, h, wd, cin = x.shape
    kh, kw, ig, cout = w.shape
    og = cout // groups
    oh, ow = (h - kh) // stride + 1, (wd - kw) // stride + 1
    out = np.zeros((n, oh, ow, cout))
    for g in range(groups):
        xs = x[..., g * ig : (g + 1) * ig]
        ws = w[..., g * og : (g + 1) * og]
        for i, j in itertools.product(range(kh), range(kw)):
            patch = xs[:, i : i + stride * oh : stride, j : j + stride * ow : stride]
            out[..., g * og : (g + 1) * og] += patch @ ws[i, j]
    return out


def np_conv_transpose2d(x, w, stride):
    """torch conv_transpose2d(padding=0) by scattering; w[kh, kw, i, o] = torch w[i, o, kh, kw]."""
    n, h, wd, _ = x.shape
    k = w.shape[0]
    out = np.zeros((n, (h - 1) * stride + k, (wd - 1) * stride + k, w.shape[3]))
    for qh, qw in itertools.product(range(h), range(wd)):
        for th, tw in itertools.product(range(k), range(k)):
            out[:, qh * stride + th, qw * stride + tw] += x[:, qh, qw] @ w[th, tw]
    return out


def np_modulated_conv(x, kernel, mod_w, mod_b, style, demodulate, up):
    """The release's ModulatedConv2d, per sample, with explicit per-sample weights."""
    b, _, _, cin = x.shape
    k = kernel.shape[0]
    s = style @ (mod_w / np.sqrt(style.shape[1])) + mod_b  # EqualLinear, bias_init 1
    outs = []
    for n in range(b):
        w = kernel / np.sqrt(cin * k * k) * s[n][None, None, :, None]
        if demodulate:
            w = w / np.sqrt((w**2).sum(axis=(0, 1, 2), keepdims=True) + 1e-8)
        if up:
            y = np_conv_transpose2d(x[n : n + 1], w, 2)
            y = np_upfirdn2d(y, upfirdn.make_kernel([1, 3, 3, 1]) * 4, 1, 1, (1, 1))
        else:
            y = np_conv2d(x[n : n + 1], w, pad=k // 2)
        outs.append(y)
    return np.concatenate(outs)


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize(
    "up,down,pad,sep",
    [
        (1, 1, (2, 1), True),
        (2, 1, (2, 1), True),
        (1, 2, (1, 1), True),
        (2, 1, (1, 1), True),
        (1, 1, (-1, 2), True),
        (2, 2, (0, -1), False),
    ],
)
def test_upfirdn2d_matches_numpy(up, down, pad, sep):
    x = RNG.standard_normal((2, 9, 7, 3)).astype(np.float32)
    taps = np.array([1.0, 3.0, 2.0, 1.0])  # asymmetric: checks the flip
    k2 = np.outer(taps, taps) / taps.sum() ** 2 if sep else RNG.standard_normal((3, 4))
    got = upfirdn.upfirdn2d(jnp.asarray(x), taps / taps.sum() if sep else k2, up, down, pad)
    np.testing.assert_allclose(
        np.asarray(got), np_upfirdn2d(x, k2, up, down, pad), rtol=1e-5, atol=1e-5
    )


def test_blur_upsample_downsample_layers():
    x = RNG.standard_normal((1, 8, 8, 2)).astype(np.float32)
    k = upfirdn.make_kernel([1, 3, 3, 1])
    np.testing.assert_allclose(
        np.asarray(upfirdn.upsample(jnp.asarray(x))),
        np_upfirdn2d(x, k * 4, 2, 1, (2, 1)),
        atol=1e-5,
    )
    np.testing.assert_allclose(
        np.asarray(upfirdn.downsample(jnp.asarray(x))), np_upfirdn2d(x, k, 1, 2, (1, 1)), atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(upfirdn.Blur((1, 3, 3, 1), (1, 1), 2)(jnp.asarray(x))),
        np_upfirdn2d(x, k * 4, 1, 1, (1, 1)),
        atol=1e-5,
    )
    assert upfirdn.upsample(jnp.asarray(x)).shape == (1, 16, 16, 2)


@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_2d_matches_numpy(align_corners):
    x = RNG.standard_normal((2, 5, 6, 3)).astype(np.float32)
    grid = RNG.uniform(-1.3, 1.3, (2, 4, 7, 2)).astype(np.float32)  # some points outside
    grid[0, 0, 0] = [-1.0, 1.0]
    got = grid_sample.grid_sample_2d(jnp.asarray(x), jnp.asarray(grid), align_corners)
    np.testing.assert_allclose(np.asarray(got), np_grid_sample(x, grid, align_corners), atol=1e-5)


@pytest.mark.parametrize("align_corners", [False, True])
def test_grid_sample_3d_matches_numpy(align_corners):
    x = RNG.standard_normal((2, 4, 5, 3, 2)).astype(np.float32)
    grid = RNG.uniform(-1.2, 1.2, (2, 3, 2, 4, 3)).astype(np.float32)
    got = grid_sample.grid_sample_3d(jnp.asarray(x), jnp.asarray(grid), align_corners)
    np.testing.assert_allclose(np.asarray(got), np_grid_sample(x, grid, align_corners), atol=1e-5)


def test_grid_sample_identity_and_gradients():
    x = jnp.asarray(RNG.standard_normal((1, 6, 6, 2)).astype(np.float32))
    lin = (np.arange(6) * 2 + 1) / 6 - 1  # pixel centres, align_corners=False
    gx, gy = np.meshgrid(lin, lin)
    grid = jnp.asarray(np.stack([gx, gy], -1)[None].astype(np.float32))
    np.testing.assert_allclose(
        np.asarray(grid_sample.grid_sample_2d(x, grid)), np.asarray(x), atol=1e-6
    )
    g = jax.grad(lambda gr: jnp.sum(grid_sample.grid_sample_2d(x, gr) ** 2))(grid + 0.05)
    assert np.all(np.isfinite(np.asarray(g))) and np.abs(np.asarray(g)).sum() > 0


@pytest.mark.parametrize("k,groups", [(3, 1), (4, 1), (3, 2), (1, 1)])
def test_conv_transpose2d_matches_numpy(k, groups):
    x = RNG.standard_normal((1, 5, 4, 2 * groups)).astype(np.float32)
    w = RNG.standard_normal((k, k, 2, 3 * groups)).astype(np.float32)
    got = np.asarray(modulated.conv_transpose2d(jnp.asarray(x), jnp.asarray(w), 2, groups))
    want = np.concatenate(
        [
            np_conv_transpose2d(x[..., g * 2 : (g + 1) * 2], w[..., g * 3 : (g + 1) * 3], 2)
            for g in range(groups)
        ],
        -1,
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("up,demod", [(False, True), (True, True), (False, False), (True, False)])
@pytest.mark.parametrize("impl", ["scaled_input", "grouped"])
def test_modulated_conv_matches_numpy(up, demod, impl):
    x = RNG.standard_normal((2, 6, 6, 4)).astype(np.float32)
    style = RNG.standard_normal((2, 8)).astype(np.float32)
    m = modulated.ModulatedConv2d(5, 3, demodulate=demod, upsample=up, impl=impl)
    p = init_params(m, x, style)
    p["modulation"]["bias"] = p["modulation"]["bias"] + 0.3
    got = np.asarray(m.apply({"params": p}, x, style))
    want = np_modulated_conv(
        x,
        np.asarray(p["kernel"]),
        np.asarray(p["modulation"]["kernel"]),
        np.asarray(p["modulation"]["bias"]),
        style,
        demod,
        up,
    )
    assert got.shape == ((2, 12, 12, 5) if up else (2, 6, 6, 5))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_equalized_layers_apply_runtime_scale():
    x = RNG.standard_normal((2, 5, 5, 3)).astype(np.float32)
    conv = equalized.EqualConv2d(4, 3, padding=1)
    p = init_params(conv, x)
    got = np.asarray(conv.apply({"params": p}, x))
    np.testing.assert_allclose(got, np_conv2d(x, p["kernel"] / np.sqrt(27), pad=1), atol=1e-4)
    lin = equalized.EqualLinear(6, lr_mul=0.5, bias_init=0.2, activation=True)
    pv = init_params(lin, x[:, 0, 0])
    y = x[:, 0, 0] @ (pv["kernel"] * 0.5 / np.sqrt(3)) + pv["bias"] * 0.5
    want = np.where(y >= 0, y, 0.2 * y) * np.sqrt(2)
    np.testing.assert_allclose(np.asarray(lin.apply({"params": pv}, x[:, 0, 0])), want, atol=1e-5)


def test_noise_injection_and_constant_input():
    n = modulated.NoiseInjection()
    x = jnp.ones((1, 2, 2, 3))
    v = n.init(jax.random.PRNGKey(0), x)
    assert np.array_equal(np.asarray(n.apply(v, x)), np.asarray(x))
    p = {"params": {"weight": jnp.array([0.5])}}
    np.testing.assert_allclose(np.asarray(n.apply(p, x, 2 * x)), 2.0)
    c = modulated.ConstantInput(7)
    v = c.init(jax.random.PRNGKey(0), 3)
    assert c.apply(v, 3).shape == (3, 4, 4, 7)
