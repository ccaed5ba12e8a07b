"""Batch placement from the logical axis rules, and activation constraints that change
nothing numerically."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from configs.common import LOGICAL_AXIS_RULES
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.train import sharding
from jaxtalk.train.data import to_global


def test_batch_sharding_from_the_rules_is_todays_placement():
    for shape in (
        {"data": -1, "fsdp": 1, "tensor": 1},
        {"data": 2, "fsdp": 2, "tensor": 2},
        {"data": 1, "fsdp": -1, "tensor": 1},
    ):
        mesh = sharding.make_mesh(shape)
        today = NamedSharding(mesh, P(("data", "fsdp")))
        for ndim in (1, 3, 5):
            s = sharding.batch_sharding(mesh, LOGICAL_AXIS_RULES, ndim)
            assert s.is_equivalent_to(today, ndim) and s.spec == today.spec
        batch = to_global({"x": np.zeros((8, 4, 3), np.float32)}, mesh, LOGICAL_AXIS_RULES)
        assert batch["x"].sharding.is_equivalent_to(today, 3)
    # Rules of runs saved before `activation_batch` existed: their "batch" rule.
    old = tuple(r for r in LOGICAL_AXIS_RULES if r[0] != sharding.BATCH)
    assert sharding.batch_sharding(mesh, old, 2).spec == today.spec


def test_activation_constraints_are_a_no_op_numerically():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 4, "tensor": 1})

    def f(x, w):
        return jnp.sum(constrain(jnp.tanh(x @ w)) @ w.T)

    x = jax.device_put(
        np.random.default_rng(0).normal(size=(8, 16)).astype(np.float32),
        sharding.batch_sharding(mesh, LOGICAL_AXIS_RULES, 2),
    )
    w = jnp.full((16, 16), 0.1)
    plain = jax.jit(f).lower(x, w)
    with sharding.activation_context(mesh, LOGICAL_AXIS_RULES):
        constrained = jax.jit(f).lower(x, w)
    assert "sharding_constraint" in constrained.as_text()
    assert "sharding_constraint" not in plain.as_text()
    assert float(plain.compile()(x, w)) == float(constrained.compile()(x, w))
    with nn.logical_axis_rules(LOGICAL_AXIS_RULES):  # no mesh: eager and unconstrained
        np.testing.assert_array_equal(constrain(np.ones((2, 3))), np.ones((2, 3)))
