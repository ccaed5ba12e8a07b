"""Per-sub-tree learning-rate multipliers (config.lr_multipliers) and optimizers that update a
group as one vector (optimizers.G.flatten)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common
from jaxtalk.train import optim
from jaxtalk.train import train as train_lib
from tests.train.helpers import toy_config


def _one_step(tx, params):
    grads = {"enc": {"mlp": {"kernel": jnp.ones(3)}, "conv": {"kernel": jnp.ones(3)}}}
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def test_matching_params_get_their_factor_and_the_rest_are_untouched():
    params = {"enc": {"mlp": {"kernel": jnp.zeros(3)}, "conv": {"kernel": jnp.zeros(3)}}}
    rules = optim.parse_lr_multipliers(["generator/enc/mlp/.*=0.01", "generator/.*=0.5"])
    for base, step in ((optax.sgd(1.0), 1.0), (optax.adam(1e-3), 1e-3)):
        updates = _one_step(optim.scale_learning_rate(base, "generator", rules), params)
        # The first matching rule wins: mlp gets 0.01, conv the catch-all 0.5.
        np.testing.assert_allclose(updates["enc"]["mlp"]["kernel"], -0.01 * step, rtol=1e-5)
        np.testing.assert_allclose(updates["enc"]["conv"]["kernel"], -0.5 * step, rtol=1e-5)
    other_group = _one_step(optim.scale_learning_rate(optax.sgd(1.0), "critic", rules[:1]), params)
    np.testing.assert_allclose(other_group["enc"]["mlp"]["kernel"], -1.0)


@pytest.mark.parametrize(
    "entry", ["generator/enc", "generator/enc=fast", "generator/(=0.1", "=0.1"]
)
def test_malformed_entries_are_refused_with_the_expected_form(entry):
    with pytest.raises(ValueError, match="expected 'REGEX=FACTOR'"):
        optim.parse_lr_multipliers([entry])


def test_the_loop_reports_a_malformed_entry_as_a_config_error(tmp_path):
    with pytest.raises(train_lib.ConfigError, match="lr_multipliers entry 'model/.*'"):
        train_lib.train(toy_config(lr_multipliers=("model/.*",)), str(tmp_path))


def _group_optimizer(flatten: bool):
    """AdamW with clipping (at a norm the gradients exceed), a frozen sub-tree and a
    per-sub-tree lr: every wrapper the loop puts around a group's optimizer."""
    c = common.optimizer_config("adamw", lr=1e-2, weight_decay=0.1, clip_norm=0.5)
    c.flatten = flatten
    tx = optim.optimizer(c, total_steps=10)
    tx = optim.freeze(tx, "g", ("g/frozen/.*",))
    return optim.scale_learning_rate(tx, "g", optim.parse_lr_multipliers(["g/slow/.*=0.1"]))


def test_a_flattened_optimizer_takes_the_per_array_steps_with_one_state_vector():
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "frozen": {"kernel": jax.random.normal(keys[0], (3, 2))},
        "slow": {"kernel": jax.random.normal(keys[1], (4,))},
        "fast": {"kernel": jax.random.normal(keys[2], (2, 5)), "bias": jnp.zeros(5)},
    }
    runs = {}
    for flatten in (False, True):
        tx, p = _group_optimizer(flatten), params
        state = tx.init(p)
        for i in range(3):
            grads = jax.tree.map(lambda x: jnp.cos(x + i), p)
            updates, state = tx.update(grads, state, p)
            p = optax.apply_updates(p, updates)
        runs[flatten] = p, state
    (per_array, per_array_state), (flat, flat_state) = runs[False], runs[True]
    for a, b in zip(jax.tree.leaves(per_array), jax.tree.leaves(flat)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(flat["frozen"]["kernel"], params["frozen"]["kernel"])
    assert not np.allclose(flat["slow"]["kernel"], params["slow"]["kernel"])
    # Adam's moments: one vector over the trained arrays (4 + 10 + 5) instead of one per array
    sizes = lambda s: sorted(x.size for x in jax.tree.leaves(s) if x.ndim)  # noqa: E731
    assert sizes(flat_state) == [19, 19]
    assert sizes(per_array_state) == [4, 4, 5, 5, 10, 10]


def test_a_flattened_optimizer_is_refused_on_a_mesh_that_shards_params(tmp_path):
    config = toy_config(**{"optimizers.model.flatten": True, "mesh.data": 4, "mesh.fsdp": 2})
    with pytest.raises(train_lib.ConfigError, match=r"optimizers.model.flatten .*'fsdp': 2"):
        train_lib.train(config, str(tmp_path))


def test_a_run_resumes_only_with_the_layout_it_saved(tmp_path):
    config = toy_config(total_steps=1)
    config.checkpoint.async_save = False
    train_lib.train(config, str(tmp_path))
    config.total_steps = 2
    config.optimizers.model.flatten = True
    with pytest.raises(train_lib.ConfigError, match="flatten=False"):
        train_lib.train(config, str(tmp_path))
