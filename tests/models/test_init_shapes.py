"""The existing parameters' shape check that flax runs on every apply, remembered per kind of
initializer: the same errors, fewer traces."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models import init_shapes as lib
from jaxtalk.models import param_hook  # installs the Scope.param it extends


class Two(nn.Module):
    width: int = 3

    @nn.compact
    def __call__(self, x):
        x = nn.Dense(self.width)(x)
        return nn.Dense(2, kernel_init=nn.initializers.variance_scaling(2.0, "fan_in", "normal"))(x)


def traces(monkeypatch) -> list:
    seen = []
    traced = lib._traced_structure

    def counting(init_fn, args, kwargs):
        seen.append(args)
        return traced(init_fn, args, kwargs)

    monkeypatch.setattr(lib, "_traced_structure", counting)
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


class Stack(nn.Module):
    """Same-kind layers (three 4x4 Dense), a partitioned kernel, BatchNorm statistics (not
    parameters) and a lifted transform."""

    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.Dense(4)(x)
        x = nn.remat(nn.Dense)(4)(x)
        part = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("a", "b"))
        x = nn.Dense(6, kernel_init=part, param_dtype=jnp.bfloat16)(x)
        return nn.BatchNorm(use_running_average=False)(x)


def test_eval_shape_init_gives_init_s_tree_tracing_each_kind_of_initializer_once(monkeypatch):
    seen = traces(monkeypatch)
    x = jnp.ones((2, 4))
    want = jax.eval_shape(Stack().init, jax.random.PRNGKey(0), x)
    assert seen == []  # plain eval_shape traces every initializer inline, nothing remembered
    got = param_hook.eval_shape_init(Stack().init, jax.random.PRNGKey(0), x)
    assert jax.tree.structure(got) == jax.tree.structure(want)  # the partitioning box kept
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    # 4x4 kernel, 4 bias (shared by the four 4-wide layers), 4x6 bf16 kernel, 6 bf16 bias,
    # BatchNorm's 6 scale and bias (one kind each): the statistics are variables, not traced
    assert len(seen) == 6, seen
    param_hook.eval_shape_init(Stack().init, jax.random.PRNGKey(1), x)
    assert len(seen) == 6


@pytest.mark.filterwarnings("ignore:Explicitly requested dtype float64")
def test_what_is_remembered_follows_the_x64_flag():
    init, args = nn.initializers.zeros, ((2,), jnp.float64)
    assert lib.init_structure(init, args, {}).dtype == jnp.float32  # x64 off: canonicalised
    with jax.enable_x64(True):
        assert lib.init_structure(init, args, {}).dtype == jnp.float64
