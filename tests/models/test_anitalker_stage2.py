"""AniTalker stage-2 DiffusionPredictor: released sizes, control semantics, call structure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, HubertLayerMix, init_inputs
from jaxtalk.models.param_hook import eval_shape_init

# reference/keys/anitalker_stage2_state_dict.txt ("===== <type> nkeys N params P")
RELEASED = {
    "hubert_audio_only": 39_573_677,
    "hubert_pose_only": 40_301_104,
    "hubert_full_control": 41_753_394,
    "mfcc_pose_only": 26_488_855,
    "mfcc_full_control": 27_941_145,
}

TINY = dict(
    motion_start_dim=6,
    speech_dim=8,
    fusion_dim=4,
    speech_layers=1,
    decoder_layers=1,
    hubert_dim=5,
    hubert_layers=3,
    mfcc_dim=7,
    mfcc_hidden=6,
    kernel_size=3,
    lstm_hidden=4,
    motion_dim=3,
)


@pytest.mark.parametrize("infer_type", sorted(RELEASED))
def test_parameter_count_equals_release(infer_type):
    model = DiffusionPredictor(infer_type=infer_type)
    shapes = eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), *init_inputs(model)))
    count = sum(x.size for x in jax.tree.leaves(nn.meta.unbox(shapes["params"])))
    assert count == RELEASED[infer_type]
    assert "batch_stats" in shapes  # conformer BatchNorms
    # every param carries logical axis names for the sharding rules
    leaves = jax.tree.leaves(shapes["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert all(isinstance(leaf, nn.Partitioned) for leaf in leaves)


def _tiny(infer_type, frames=6, batch=2, seed=0):
    model = DiffusionPredictor(infer_type=infer_type, **TINY)
    rng = np.random.RandomState(seed)
    inputs = [rng.randn(*np.shape(a)).astype(np.float32) for a in init_inputs(model, batch, frames)]
    inputs[-1] = np.array([999.0, 3.0][:batch], np.float32)
    # Random values on the init shapes: compiling the RNG-based init is far slower on CPU.
    shapes = nn.meta.unbox(eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), *inputs)))
    variables = {
        "params": jax.tree.map(
            lambda s: rng.randn(*s.shape).astype(np.float32) * 0.3, shapes["params"]
        ),
        "batch_stats": jax.tree.map(
            lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes["batch_stats"]
        ),
    }
    return model, variables, inputs


def test_controls_replace_predictions_and_change_the_output():
    model, variables, inputs = _tiny("hubert_full_control")
    b, t = inputs[3].shape[:2]
    pose = np.full((b, t, 3), 0.25, np.float32)

    @jax.jit
    def run(variables, inputs):  # one compilation for the three calls
        return (
            model.apply(variables, *inputs),
            model.apply(
                variables,
                *inputs,
                location=jnp.full((b, t), 0.5),
                scale=jnp.float32(0.3),
                pose=pose,
            ),
            model.apply(variables, *inputs, pose=pose),
        )

    (eps_free, pred), (eps_ctrl, pred_ctrl), (_, pred_pose) = run(variables, inputs)
    assert {k: v.shape for k, v in pred.items()} == {
        "location": (b, t, 1),
        "scale": (b, t, 1),
        "pose": (b, t, 3),
    }
    np.testing.assert_array_equal(pred_ctrl["pose"], pose)
    np.testing.assert_allclose(pred_ctrl["location"], 0.5)
    np.testing.assert_allclose(pred_ctrl["scale"], 0.3)
    assert np.abs(np.asarray(eps_ctrl) - np.asarray(eps_free)).max() > 1e-4
    # Only pose controlled: location and scale still come from the predictors.
    np.testing.assert_allclose(pred_pose["location"], pred["location"], atol=1e-6)


def test_call_equals_condition_then_denoise():
    model, variables, inputs = _tiny("mfcc_pose_only")
    start, dstart, audio, xt, t = inputs

    @jax.jit
    def both(variables, inputs):
        eps, _ = model.apply(variables, *inputs)
        cond, _ = model.apply(variables, audio, method=model.condition)
        return eps, model.apply(variables, cond, start, dstart, xt, t, method=model.denoise)

    eps, eps2 = both(variables, inputs)
    np.testing.assert_allclose(np.asarray(eps), np.asarray(eps2), atol=1e-6)
    assert eps.shape == xt.shape


def test_audio_only_variant_has_no_adapter_and_train_mode_updates_stats():
    model, variables, inputs = _tiny("hubert_audio_only")
    assert "variance_adapter" not in variables["params"]
    (eps, pred), updates = jax.jit(
        lambda v, x: model.apply(
            v, *x, train=True, mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(3)}
        )
    )(variables, inputs)
    assert pred == {}
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updates["batch_stats"])
    assert any(np.abs(np.asarray(a) - np.asarray(b)).max() > 0 for a, b in zip(before, after))


def test_frame_mismatch_is_a_clear_error():
    model, variables, inputs = _tiny("hubert_pose_only")
    inputs[3] = inputs[3][:, :-1]
    with pytest.raises(ValueError, match="frames"):
        jax.eval_shape(lambda v: model.apply(v, *inputs), variables)


def test_layer_mix_starts_as_the_mean_of_the_hidden_states():
    states = np.random.RandomState(0).randn(2, 4, 3, 5).astype(np.float32)
    mix = HubertLayerMix(3)
    variables = mix.init(jax.random.PRNGKey(0), states)
    np.testing.assert_allclose(mix.apply(variables, states), states.mean(2), atol=1e-6)
    w = np.array([0.0, 1.0, -1.0], np.float32)
    soft = np.exp(w) / np.exp(w).sum()
    np.testing.assert_allclose(
        mix.apply({"params": {"weights": w}}, states),
        np.einsum("btlc,l->btc", states, soft),
        atol=1e-6,
    )


def test_jit_and_grad_through_the_denoiser():
    model, variables, inputs = _tiny("mfcc_pose_only")

    def loss(params):
        eps, pred = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, *inputs
        )
        return jnp.mean(eps**2) + sum(jnp.mean(v**2) for v in pred.values())

    grads = jax.jit(jax.grad(loss))(variables["params"])
    norms = [float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)]
    assert all(np.isfinite(norms)) and max(norms) > 0
