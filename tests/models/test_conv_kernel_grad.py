"""layers/conv_kernel_grad: the conv and both its gradients equal lax.conv_general_dilated's
(float64, to rounding) for every padding form it takes over; everything else goes to lax
unchanged; the method is chosen by backend and can be forced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtalk.models.layers import conv_kernel_grad as ckg

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = [
    # (x shape, kernel shape, padding[, strides: (1, 1) if not given])
    ((2, 9, 7, 3), (3, 3, 3, 5), ((1, 1), (1, 1))),  # fewer input channels: x stacked
    ((1, 9, 7, 6), (3, 3, 6, 2), ((1, 1), (1, 1))),  # one image, fewer output channels
    ((3, 8, 8, 4), (7, 7, 4, 2), ((3, 3), (3, 3))),
    ((2, 6, 10, 3), (3, 5, 3, 4), ((0, 2), (1, 3))),  # asymmetric, rectangular kernel
    ((2, 5, 5, 2), (1, 1, 2, 3), ((0, 0), (0, 0))),
    ((2, 6, 6, 2), (3, 3, 2, 3), "SAME"),
    ((2, 6, 6, 2), (4, 4, 2, 3), "VALID"),
    # strided: one stride-1 gradient per phase of the input
    ((2, 9, 9, 4), (3, 3, 4, 6), ((0, 0), (0, 0)), (2, 2)),  # a blurred downsampling conv
    ((2, 8, 8, 6), (1, 1, 6, 4), ((0, 0), (0, 0)), (2, 2)),  # a skip connection's 1x1
    ((2, 11, 10, 3), (4, 5, 3, 2), ((1, 2), (0, 1)), (3, 2)),  # unequal strides, ragged
    ((1, 7, 7, 2), (3, 3, 2, 3), "SAME", (2, 2)),
    ((1, 7, 7, 128), (3, 3, 128, 2), ((1, 0), (0, 1)), (2, 2)),  # the forward by phases too
]
CASES = [case + ((1, 1),) * (4 - len(case)) for case in CASES]


def _loss(conv, padding, strides=(1, 1), **kw):
    def loss(x, k):
        y = conv(x, k, strides, padding, dimension_numbers=NHWC, **kw)
        return jnp.sum(jnp.sin(y) * jnp.arange(y.size, dtype=y.dtype).reshape(y.shape) / y.size)

    return loss


@pytest.mark.parametrize("x_shape, k_shape, padding, strides", CASES)
def test_rows_gradient_equals_xla(monkeypatch, x_shape, k_shape, padding, strides):
    monkeypatch.setenv("JAXTALK_CONV_KERNEL_GRAD", "rows")
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x, k = (jnp.asarray(rng.standard_normal(s)) for s in (x_shape, k_shape))
        assert ckg._row_pads(x, k, strides, padding, None, None, NHWC, 1, 1, None, None)
        ours, theirs = (
            jax.jit(jax.value_and_grad(_loss(conv, padding, strides), (0, 1)))(x, k)
            for conv in (ckg.conv_general_dilated, lax.conv_general_dilated)
        )  # jitted: one program each (op by op, each op compiles on its own)
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
            assert a.shape == b.shape
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-12)


def test_rows_gradient_in_bfloat16_accumulates_in_float32(monkeypatch):
    monkeypatch.setenv("JAXTALK_CONV_KERNEL_GRAD", "rows")
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((4, 16, 16, 8)), jnp.bfloat16)
    k = jnp.asarray(rng.standard_normal((3, 3, 8, 8)), jnp.bfloat16)
    grad = jax.jit(jax.grad(_loss(ckg.conv_general_dilated, "SAME"), 1))(x, k)
    exact = jax.jit(jax.grad(_loss(lax.conv_general_dilated, "SAME"), 1))(
        x.astype(jnp.float32), k.astype(jnp.float32)
    )
    assert grad.dtype == jnp.bfloat16
    scale = float(jnp.max(jnp.abs(exact)))
    assert float(jnp.max(jnp.abs(grad.astype(jnp.float32) - exact))) < 0.02 * scale


@pytest.mark.parametrize(
    "change",
    [
        dict(lhs_dilation=(2, 2), padding=((1, 1), (1, 1))),
        dict(rhs_dilation=(2, 2)),
        dict(feature_group_count=3, k_shape=(3, 3, 1, 3)),
        dict(padding=((-1, 1), (1, 1))),
        dict(precision=lax.Precision.HIGHEST),
        dict(dimension_numbers=("NCHW", "OIHW", "NCHW"), x_shape=(2, 3, 8, 8), k_shape=(3, 3, 3, 3)),
        dict(x_shape=(2, 8, 8, 8, 3), k_shape=(3, 3, 3, 3, 3), window_strides=(1, 1, 1),
             padding="SAME", dimension_numbers=("NDHWC", "DHWIO", "NDHWC")),
    ],
)  # fmt: skip
def test_other_convs_go_to_lax(monkeypatch, change):
    monkeypatch.setenv("JAXTALK_CONV_KERNEL_GRAD", "rows")
    args = dict(x_shape=(2, 8, 8, 3), k_shape=(3, 3, 3, 3), window_strides=(1, 1),
                padding="SAME", dimension_numbers=NHWC)  # fmt: skip
    args.update(change)
    x, k = jnp.ones(args.pop("x_shape")), jnp.ones(args.pop("k_shape"))
    traced = str(jax.make_jaxpr(lambda x, k: ckg.conv_general_dilated(x, k, **args))(x, k))
    assert "custom_vjp" not in traced and "conv_general_dilated" in traced
    taken = str(jax.make_jaxpr(lambda x, k: ckg.conv_general_dilated(x, k, (1, 1), "SAME",
                                                                     dimension_numbers=NHWC))(
        jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 3))))  # fmt: skip
    assert "custom_vjp" in taken


def test_method_by_backend_and_override(monkeypatch):
    monkeypatch.delenv("JAXTALK_CONV_KERNEL_GRAD", raising=False)
    assert ckg.method() == ("rows" if jax.default_backend() == "cpu" else "xla")
    monkeypatch.setenv("JAXTALK_CONV_KERNEL_GRAD", "xla")
    assert ckg.method() == "xla"
    x, k = jnp.ones((2, 8, 8, 3)), jnp.ones((3, 3, 3, 3))
    traced = str(jax.make_jaxpr(lambda x, k: ckg.conv_general_dilated(x, k, (1, 1), "SAME",
                                                                      dimension_numbers=NHWC))(x, k))  # fmt: skip
    assert "custom_vjp" not in traced
    monkeypatch.setenv("JAXTALK_CONV_KERNEL_GRAD", "fft")
    with pytest.raises(ValueError, match="JAXTALK_CONV_KERNEL_GRAD"):
        ckg.method()


def test_second_order_gradients_equal_xla(monkeypatch):
    """An R1-style penalty (the gradient of a gradient, as the discriminators' regularisers
    take it) through a stride-1 and a strided conv."""
    monkeypatch.setenv("JAXTALK_CONV_KERNEL_GRAD", "rows")
    rng = np.random.default_rng(2)

    def penalty(conv):
        def d(x, k1, k2):
            h = jnp.tanh(conv(x, k1, (1, 1), "SAME", dimension_numbers=NHWC))
            return jnp.sum(jnp.sin(conv(h, k2, (2, 2), ((0, 0), (0, 0)), dimension_numbers=NHWC)))

        def r1(k1, k2, x):
            return jnp.sum(jax.grad(d)(x, k1, k2) ** 2)

        return jax.jit(jax.grad(r1, (0, 1)))

    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 9, 9, 3)))
        k1, k2 = (jnp.asarray(rng.standard_normal(s)) for s in ((3, 3, 3, 4), (3, 3, 4, 130)))
        ours = penalty(ckg.conv_general_dilated)(k1, k2, x)
        theirs = penalty(lax.conv_general_dilated)(k1, k2, x)
        for a, b in zip(ours, theirs):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
