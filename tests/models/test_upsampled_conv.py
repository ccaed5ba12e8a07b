"""layers/upsampled_conv: a conv of a nearest-upsampled map computed at the low resolution
is the conv of the upsampled map (values and gradients), with `torch_nn.conv`'s params; and
the users (SPADE, LivePortrait's up blocks through Conv3d) keep their parameter trees."""

from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from jaxtalk.models.layers import conv3d, upsampled_conv
from jaxtalk.models.layers.spade import SPADE
from jaxtalk.models.layers.torch_nn import conv

X64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def upsample_then_conv(x, kernel, factor):
    pads = [(kernel.shape[0] // 2,) * 2, (kernel.shape[1] // 2,) * 2]
    up = upsampled_conv.upsample_nearest(x, factor)
    return lax.conv_general_dilated(
        up, kernel, (1, 1), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("factor", [1, 2, 3, 4])
@pytest.mark.parametrize("kernel", [(3, 3), (1, 1), (5, 3)])
def test_phases_are_the_upsampled_conv_and_its_gradient(factor, kernel, monkeypatch):
    monkeypatch.setattr(upsampled_conv, "MIN_POSITIONS", 0)  # phases even on this small map
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 5, 7, 3)))
        k = jnp.asarray(rng.standard_normal(kernel + (3, 4)))
        cotangent = jnp.asarray(rng.standard_normal((2, 5 * factor, 7 * factor, 4)))

        @partial(jax.jit, static_argnums=2)  # one program per side, not op by op
        def values_and_grads(x, k, f):
            grads = jax.grad(lambda x, k: jnp.sum(f(x, k, factor) * cotangent), (0, 1))(x, k)
            return f(x, k, factor), grads

        (got, got_grads), (want, want_grads) = (
            values_and_grads(x, k, f)
            for f in (upsampled_conv.conv_nearest_upsampled, upsample_then_conv)
        )
        assert got.shape == (2, 5 * factor, 7 * factor, 4)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        for a, b in zip(got_grads, want_grads):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-11)


def test_small_maps_upsample_first_and_large_ones_use_phases(monkeypatch):
    with pytest.raises(ValueError, match="odd kernel"):
        upsampled_conv.phase_convs(jnp.zeros((1, 4, 4, 2)), jnp.zeros((2, 2, 2, 2)), 2)
    calls = []
    monkeypatch.setattr(upsampled_conv, "phase_convs", lambda *a: calls.append(a[0].shape) or {})
    x, k = jnp.zeros((8, 8, 8, 2)), jnp.zeros((3, 3, 2, 2))
    assert upsampled_conv.conv_nearest_upsampled(x, k, 2).shape == (8, 16, 16, 2)
    assert not calls  # 64 positions per sample: below MIN_POSITIONS
    assert not upsampled_conv.worth_phases((16, 16), 1)
    assert upsampled_conv.worth_phases((16, 16), 2)
    assert upsampled_conv.worth_phases((16, 4, 4), 2)  # depth slices count
    assert not upsampled_conv.worth_phases((8, 8), 2)  # per sample: the batch does not


def test_module_params_are_those_of_torch_nn_conv():
    x = jnp.zeros((1, 16, 16, 3))
    ours = upsampled_conv.UpsampledConv(4, 3, 2).init(jax.random.PRNGKey(1), x)
    theirs = conv(4, 3, padding=1).init(jax.random.PRNGKey(1), x)
    assert jax.tree.all(jax.tree.map(np.array_equal, nn.unbox(ours), nn.unbox(theirs)))
    assert nn.get_partition_spec(ours) == nn.get_partition_spec(theirs)
    with jax.enable_x64(True):
        variables = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) + 0.1, nn.unbox(theirs))
        x = jnp.asarray(np.random.default_rng(1).standard_normal((1, 16, 16, 3)))
        got = upsampled_conv.UpsampledConv(4, 3, 2, **X64).apply(variables, x)
        want = conv(4, 3, padding=1, **X64).apply(variables, upsampled_conv.upsample_nearest(x))
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", ["slices", "native", "patches", "concat"])
def test_conv3d_upsample_is_the_conv_of_the_upsampled_volume(method):
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 4, 8, 8, 3)))  # 4 slices of 8x8 per sample: phases
        module = conv3d.Conv3d(5, (3, 3, 3), 1, upsample=2, method=method, **X64)
        variables = nn.unbox(module.init(jax.random.PRNGKey(0), x))
        plain = conv3d.Conv3d(5, (3, 3, 3), 1, method="native", **X64)
        assert jax.tree.map(np.shape, variables) == jax.tree.map(
            np.shape, nn.unbox(plain.init(jax.random.PRNGKey(0), x))
        )
        got = module.apply(variables, x)
        want = plain.apply(variables, upsampled_conv.upsample_nearest(x))
        assert got.shape == (2, 4, 16, 16, 5)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_spade_keeps_its_params_and_values(factor):
    rng = np.random.default_rng(3)
    with jax.enable_x64(True):
        seg = jnp.asarray(rng.standard_normal((1, 16, 16, 6)))  # 256 positions: phases
        x = jnp.asarray(rng.standard_normal((1, 16 * factor, 16 * factor, 5)))
        spade = SPADE(hidden=7, **X64)
        variables = nn.unbox(spade.init(jax.random.PRNGKey(0), x, seg))
        assert set(variables["params"]) == {"mlp_shared", "mlp_gamma", "mlp_beta"}
        shared = variables["params"]["mlp_shared"]
        assert shared["kernel"].shape == (3, 3, 6, 7) and shared["bias"].shape == (7,)
        # the same SPADE with seg handed over already upsampled runs the plain conv
        big = upsampled_conv.upsample_nearest(seg, factor)
        np.testing.assert_allclose(
            spade.apply(variables, x, seg), spade.apply(variables, x, big), rtol=0, atol=1e-12
        )


def test_the_environment_turns_the_phases_off_for_benchmarks(monkeypatch):
    monkeypatch.setenv("JAXTALK_UPSAMPLED_CONV", "plain")
    assert not upsampled_conv.worth_phases((64, 64), 2)
    monkeypatch.setenv("JAXTALK_UPSAMPLED_CONV", "phases")
    assert upsampled_conv.worth_phases((64, 64), 2)
    monkeypatch.setenv("JAXTALK_UPSAMPLED_CONV", "fast")
    with pytest.raises(ValueError, match="phases or plain"):
        upsampled_conv.worth_phases((64, 64), 2)
