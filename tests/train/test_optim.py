"""Per-sub-tree learning-rate multipliers (config.lr_multipliers)."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

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
