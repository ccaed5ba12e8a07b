"""grouped_initializers: flax init with each kind of random initializer computed once for all
its parameters gives flax's own values, bit for bit, whatever the module does at init."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import errors

from jaxtalk.train import grouped_init
from jaxtalk.train.grouped_init import grouped_initializers


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(8)(nn.relu(nn.Dense(8)(x)))


class Net(nn.Module):
    """Twins (the Dense and conv layers), partitioned kernels, zero biases, batch statistics,
    an initializer that closes over the input, a variable computed from a parameter at init,
    and blocks under nn.remat (their keys live in an inner trace)."""

    @nn.compact
    def __call__(self, x, train=True):
        for _ in range(3):
            x = x + Block()(x)
        conv = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("a", None, None, "b"))
        img = jnp.tile(x.reshape(x.shape[0], 2, 4, 1), 4)
        for _ in range(2):
            img = nn.Conv(4, (3, 3), kernel_init=conv)(img) + img
        x = x + img.reshape(x.shape[0], -1)[:, :8]
        scale = self.param("scale", lambda k, s: x.mean() * jax.random.normal(k, s), (8,))
        kernel = self.param("kernel", nn.initializers.normal(0.5), (8, 8))
        norm = self.variable("stats", "kernel_norm", lambda: jnp.linalg.norm(kernel))
        x = nn.BatchNorm(use_running_average=not train)(x @ kernel * scale / norm.value)
        for _ in range(2):
            x = x + nn.remat(Block)()(x)
        return x


def _both(fn, *args, level=3):
    """fn's variables and grouped_initializers(fn)'s, compiled at XLA backend optimisation
    `level` (the suite's default is 0: conftest)."""
    options = {"xla_backend_optimization_level": level}
    return [jax.jit(f).lower(*args).compile(options)(*args) for f in (fn, grouped_initializers(fn))]


def _assert_identical(a, b, rtol=0.0, atol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)  # boxes and their axis names too
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=rtol, atol=atol)


def test_the_same_variables_as_flax_init_bit_for_bit():
    x = jnp.linspace(-1, 1, 16).reshape(2, 8)
    plain, grouped = _both(Net().init, jax.random.PRNGKey(3), x)
    assert set(plain) == {"params", "batch_stats", "stats"}
    _assert_identical(plain, grouped)
    # the variable init computed from a parameter saw the real kernel, not a placeholder
    kernel = nn.unbox(grouped["params"]["kernel"])
    np.testing.assert_allclose(grouped["stats"]["kernel_norm"], np.linalg.norm(kernel), rtol=1e-6)
    # and the values are usable: apply runs on them as on flax's
    y = Net().apply(grouped, x, train=False)
    np.testing.assert_array_equal(y, Net().apply(plain, x, train=False))


def test_without_llvm_optimisations_the_same_values_to_rounding():
    """At -O0 XLA's CPU rounding depends on the surrounding program (fusion): even the
    initializer that closes over the input, which runs the same way in both, may differ in
    the last bits (the truncated normal's erf_inv magnifies them near zero). The keys and
    initializers are the same: the values agree to float32 rounding."""
    x = jnp.linspace(-1, 1, 16).reshape(2, 8)
    _assert_identical(*_both(Net().init, jax.random.PRNGKey(3), x, level=0), rtol=1e-5, atol=1e-7)


def test_twins_share_one_random_generator():
    """The six Dense kernels outside nn.remat draw their numbers in one generator call, the
    two partitioned conv kernels in another; the rest (under nn.remat, or alone) one each."""
    x = jnp.ones((2, 8))

    def count(jaxpr):
        subs = [
            p.jaxpr if hasattr(p, "jaxpr") else p for e in jaxpr.eqns for p in e.params.values()
        ]
        return sum(e.primitive.name == "random_bits" for e in jaxpr.eqns) + sum(
            count(j) for j in subs if hasattr(j, "eqns")
        )

    def random_calls(fn):
        return count(jax.make_jaxpr(fn)(jax.random.PRNGKey(0), x).jaxpr)

    plain, grouped = random_calls(Net().init), random_calls(grouped_initializers(Net().init))
    assert (plain, grouped) == (14, 8)


def test_groups_split_at_the_memory_bound(monkeypatch):
    """With groups bounded to one parameter each, every initializer runs alone: same values."""
    monkeypatch.setattr(grouped_init, "MAX_GROUP_BYTES", 1)
    x = jnp.ones((2, 8))
    _assert_identical(*_both(Net().init, jax.random.PRNGKey(1), x))


def test_several_inits_and_split_keys_in_one_function():
    """Two modules initialised from keys split inside the function (as the tasks do)."""

    def init(rng, x):
        a, b = jax.random.split(rng)
        return {"first": Block().init(a, x), "second": Block().init(b, x)}

    _assert_identical(*_both(init, jax.random.PRNGKey(2), jnp.ones((1, 8))))


def test_a_nondeterministic_init_is_an_error():
    calls = []

    class Changing(nn.Module):
        @nn.compact
        def __call__(self, x):
            calls.append(1)
            return nn.Dense(4, name=f"dense_{len(calls)}")(x)

    with pytest.raises(RuntimeError, match="must be deterministic"):
        jax.jit(grouped_initializers(Changing().init))(jax.random.PRNGKey(0), jnp.ones((1, 4)))


def test_a_name_used_twice_is_flax_s_error():
    class Twice(nn.Module):
        @nn.compact
        def __call__(self, x):
            self.param("w", nn.initializers.normal(), (2,))
            return self.param("w", nn.initializers.normal(), (2,))

    for fn in (Twice().init, grouped_initializers(Twice().init)):
        with pytest.raises(errors.NameInUseError):
            jax.jit(fn)(jax.random.PRNGKey(0), jnp.ones(2))
