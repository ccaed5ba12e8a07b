"""The step's NaN guard (jaxtalk/train/step.py): an update is dropped when a loss is not
finite, when only a gradient is (the loss itself finite), and when the gradients' norm
overflows; a finite step goes through. Each with the gradients' norm taken per array and
over their concatenation (a group whose optimizer is flattened)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxtalk.train import state as state_lib
from jaxtalk.train.step import train_step
from jaxtalk.train.task import LossOutput


def _step(loss_of_w, flat):
    params = {"g": {"w": jnp.array([1.0, 0.0, 2.0]), "v": jnp.ones((2, 2))}}
    optimizers = {"g": optax.sgd(0.1)}
    state = state_lib.create(params, {}, optimizers, {"g": 0.9}, jax.random.PRNGKey(0))

    def loss_fn(p, model_state, batch, rng):
        return LossOutput(loss=loss_of_w(p["g"]["w"]))

    new, metrics = train_step(
        state, {"x": jnp.zeros((2,))}, losses=[("g", loss_fn)], optimizers=optimizers,
        ema_decays={"g": 0.9}, flat_groups=frozenset({"g"} if flat else ()),
    )  # fmt: skip
    return state, new, metrics


@pytest.mark.parametrize(
    "loss_of_w",
    [
        lambda w: jnp.sum(w) * jnp.nan,  # the loss
        lambda w: 0.0 * jnp.sum(jnp.sqrt(w)),  # a gradient only: d sqrt(w) at 0 is inf, 0 * inf
        lambda w: jnp.sum(w * 1e30),  # finite gradients of 1e30 whose squares overflow
    ],
    ids=["loss", "gradient_only", "norm_overflow"],
)
@pytest.mark.parametrize("flat", [False, True], ids=["per_array", "one_vector"])
def test_a_non_finite_step_is_dropped(loss_of_w, flat):
    state, new, metrics = _step(loss_of_w, flat)
    assert float(metrics["nonfinite"]) == 1.0 and int(new.skipped_steps) == 1
    assert int(new.step) == 1
    for before, after in zip(jax.tree.leaves(state.params), jax.tree.leaves(new.params)):
        np.testing.assert_array_equal(np.asarray(before), np.asarray(after))
    np.testing.assert_array_equal(np.asarray(new.ema_params["g"]["w"]), [1.0, 0.0, 2.0])


@pytest.mark.parametrize("flat", [False, True], ids=["per_array", "one_vector"])
def test_a_finite_step_updates(flat):
    _, new, metrics = _step(lambda w: jnp.sum(w**2), flat)
    assert float(metrics["nonfinite"]) == 0.0 and int(new.skipped_steps) == 0
    np.testing.assert_allclose(np.asarray(new.params["g"]["w"]), [0.8, 0.0, 1.6], rtol=1e-6)
    assert float(metrics["g/grad_norm"]) == pytest.approx(np.sqrt(4 + 16), rel=1e-6)
