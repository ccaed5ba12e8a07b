"""The existing parameters' shape check that flax runs on every apply, remembered per kind of
initializer: the same errors, fewer traces."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxtalk.train.grouped_init  # noqa: F401 - installs the Scope.param it extends
from jaxtalk.train import init_shapes as lib


class Two(nn.Module):
    width: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width)(x)
        return nn.Dense(2, kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "normal"))(x)


def traces(monkeypatch) -> list:
    seen = []
    traced = lib._traced_shapes

    def counting(init_fn, args, kwargs):
        seen.append(args)
        return traced(init_fn, args, kwargs)

    monkeypatch.setattr(lib, "_traced_shapes", counting)
    monkeypatch.setattr(lib, "_remembered", {})
    return seen


def test_each_kind_of_initializer_is_traced_once_across_applies(monkeypatch):
    seen = traces(monkeypatch)
    x = jnp.ones((1, 4))
    params = Two().init(jax.random.PRNGKey(0), x)
    first = Two().apply(params, x)
    assert len(seen) == 4  # two kernels and two biases, each its own shape or initializer
    np.testing.assert_array_equal(Two().apply(params, x), first)
    assert len(seen) == 4


def test_a_wrong_shape_is_still_flax_s_error_when_remembered(monkeypatch):
    traces(monkeypatch)
    x = jnp.ones((1, 4))
    params = Two().init(jax.random.PRNGKey(0), x)
    Two().apply(params, x)  # every check remembered
    wider = Two(width=5).init(jax.random.PRNGKey(0), x)
    with pytest.raises(
        flax.errors.ScopeParamShapeError, match=r"generate shape \(4, 3\).*has shape \(4, 5\)"
    ):
        Two().apply(wider, x)


def test_initializers_that_differ_in_a_closed_over_value_are_told_apart():
    a = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    b = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    same = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
    assert a is not same and lib._fingerprint(a) == lib._fingerprint(same)
    assert lib._fingerprint(a) != lib._fingerprint(b)
    assert lib._fingerprint(((3, 4),)) != lib._fingerprint(((3.0, 4),))


def test_a_closure_over_an_array_is_traced_every_time(monkeypatch):
    seen = traces(monkeypatch)
    table = jnp.zeros((3, 2))

    def from_table(key, shape):
        return table[: shape[0]]

    for _ in range(2):
        assert lib.init_shapes(from_table, ((2,),), {}) == [(2, 2)]
    assert len(seen) == 2 and lib._remembered == {}
