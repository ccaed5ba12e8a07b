"""layers/conv3d.Conv3d: the params of `torch_nn.conv` (names, shapes, logical axes, init
values), and every way of computing it equals XLA's 3-D conv and torch.nn.functional.conv3d."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models.layers import conv3d
from jaxtalk.models.layers.torch_nn import conv

CASES = [((3, 3, 3), 1), ((7, 7, 7), 3), ((1, 1, 1), 0), ((3, 1, 1), 0)]


@pytest.mark.parametrize("kernel, padding", CASES)
def test_params_are_those_of_torch_nn_conv(kernel, padding):
    x = jnp.zeros((1, 6, 5, 4, 3))
    ours = conv3d.Conv3d(4, kernel, padding).init(jax.random.PRNGKey(1), x)
    theirs = conv(4, kernel, padding=padding).init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(np.shape, nn.unbox(ours)) == jax.tree.map(np.shape, nn.unbox(theirs))
    assert jax.tree.all(jax.tree.map(np.array_equal, nn.unbox(ours), nn.unbox(theirs)))
    axes = nn.get_partition_spec(ours)["params"]
    assert axes == nn.get_partition_spec(theirs)["params"]
    assert tuple(axes["kernel"]) == (None, None, None, "conv_in", "conv_out")


def _input_and_variables(kernel, padding):
    """A random input and the float64 module's variables with a non-zero bias."""
    x = np.random.default_rng(0).standard_normal((2, 6, 5, 4, 3))
    module = conv3d.Conv3d(4, kernel, padding, dtype=jnp.float64, param_dtype=jnp.float64)
    with jax.enable_x64(True):
        variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
        variables = jax.tree.map(lambda a: a + 0.1, nn.unbox(variables))
    return module, x, variables


@pytest.mark.parametrize("method", ["native", "slices", "concat", "patches"])
@pytest.mark.parametrize("kernel, padding", CASES)
def test_every_method_is_the_same_conv(method, kernel, padding):
    module, x, variables = _input_and_variables(kernel, padding)
    with jax.enable_x64(True):
        got = module.clone(method=method).apply(variables, jnp.asarray(x))
        want = conv(4, kernel, padding=padding, dtype=jnp.float64, param_dtype=jnp.float64).apply(
            variables, jnp.asarray(x)
        )
        assert got.shape == want.shape == (2, 6 - kernel[0] + 1 + 2 * padding) + got.shape[2:]
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-12)


@pytest.mark.parametrize("kernel, padding", CASES)
def test_the_conv_is_torchs_conv3d(kernel, padding):
    torch = pytest.importorskip("torch")
    module, x, variables = _input_and_variables(kernel, padding)
    with jax.enable_x64(True):
        got = module.clone(method="native").apply(variables, jnp.asarray(x))
    k = np.asarray(variables["params"]["kernel"]).transpose(4, 3, 0, 1, 2)
    ref = torch.nn.functional.conv3d(
        torch.from_numpy(x.transpose(0, 4, 1, 2, 3)),
        torch.from_numpy(k.copy()),
        torch.from_numpy(np.array(variables["params"]["bias"])),
        padding=padding,
    )
    np.testing.assert_allclose(np.asarray(got), ref.numpy().transpose(0, 2, 3, 4, 1), atol=1e-12)


def test_auto_picks_by_backend_and_bad_methods_fail(monkeypatch):
    monkeypatch.delenv("JAXTALK_CONV3D", raising=False)
    cpu = jax.default_backend() == "cpu"
    assert conv3d.resolve("auto") == ("slices" if cpu else "native")
    # on CPU, maps smaller than the kernel go to the matmul form; explicit methods stay
    assert conv3d.pick("auto", (1, 16, 2, 2, 8), (3, 3, 3)) == ("patches" if cpu else "native")
    assert conv3d.pick("auto", (1, 16, 4, 4, 8), (3, 3, 3)) == ("slices" if cpu else "native")
    assert conv3d.pick("auto", (1, 16, 2, 2, 8), (3, 1, 1)) == ("slices" if cpu else "native")
    assert conv3d.pick("slices", (1, 16, 2, 2, 8), (3, 3, 3)) == "slices"
    monkeypatch.setenv("JAXTALK_CONV3D", "native")
    assert conv3d.pick("auto", (1, 16, 2, 2, 8), (3, 3, 3)) == "native"
    with pytest.raises(ValueError, match="conv3d method"):
        conv3d.resolve("fft")
