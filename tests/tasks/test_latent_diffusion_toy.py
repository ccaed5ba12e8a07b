"""latent_diffusion_toy: the data, a few steps of the tiny recipe through the training loop,
the reference reaching the denoiser, and the evaluation figures."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import latent_diffusion_toy as cfg_lib
from jaxtalk.tasks import latent_diffusion_toy as task_lib
from tests.tasks import helpers


def short_config(steps: int):
    c = cfg_lib.get_config("tiny")
    c.batch_size = 8
    helpers.in_process_run(c, steps)
    c.toy.eval_examples = 8
    # One UNet level: what this file checks (the loop, the evaluation, the reference's reach)
    # does not depend on the depth, which tests/models/latent_diffusion covers; the step
    # compiles in ~6 s instead of ~9.
    c.toy.widths, c.toy.cross_attention = (16,), (True,)
    c.diffusion.sample_steps = 2
    return c


def test_recipe_is_aniportraits_and_variants_are_checked():
    c = cfg_lib.get_config("tiny")
    train_obj = c.diffusion.recipe.train
    assert train_obj.prediction == "v" and train_obj.snr_gamma == 5.0
    assert train_obj.noise_offset == 0.05 and train_obj.uncond_ratio == 0.1
    assert train_obj.process.zero_terminal_snr and c.diffusion.recipe.train_spacing == "trailing"
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("paper")


def test_target_is_the_reference_colour():
    task = task_lib.build(short_config(1))
    batch = next(task.data("test", global_batch_size=4, seed=0, process_index=0, process_count=1))
    ref, target = batch["reference"], batch["target"]
    assert ref.shape == target.shape == (4, 16, 16, 4)
    centre = target[:, 8, 8]
    # The colour fills the reference's square (side 4): at least 16 pixels equal it exactly.
    hits = np.all(ref == centre[:, None, None], axis=-1).sum(axis=(1, 2))
    assert np.all(hits >= 16) and np.all(target[:, 0, 0] == 0)
    assert not np.allclose(centre[0], centre[1])


def test_a_few_steps_train_and_the_reference_matters(tmp_path):
    config = short_config(steps=3)
    out = helpers.one_device_train(config, str(tmp_path / "run"))
    assert np.isfinite(out["model/loss"]) and np.isfinite(out["model/weighted_mse"])
    keys = {f"eval/loss_{k}" for k in ("cond", "uncond")}
    keys |= {f"eval/sample_mse_{k}" for k in ("cond", "guided", "uncond")}
    assert keys <= set(out)
    assert all(np.isfinite(out[k]) for k in keys)

    # The trained model's prediction changes when the reference is switched off.
    task = task_lib.build(config)
    params = out["state"].params
    batch = next(task.data("test", global_batch_size=4, seed=0, process_index=0, process_count=1))
    ref = jnp.asarray(batch["reference"])
    bank_of, denoise = jax.jit(task.bank), jax.jit(task.denoise)  # one compile each
    bank = bank_of(params, ref)
    x_t = jax.random.normal(jax.random.PRNGKey(0), ref.shape)
    t = jnp.full((4,), 500, jnp.int32)
    on = denoise(params, x_t, t, bank, jnp.ones((4,), bool))
    off = denoise(params, x_t, t, bank, jnp.zeros((4,), bool))
    assert float(jnp.max(jnp.abs(on - off))) > 1e-4
    # ... and with a different reference.
    other = denoise(params, x_t, t, bank_of(params, ref[::-1]), jnp.ones((4,), bool))
    assert float(jnp.max(jnp.abs(on - other))) > 1e-4
