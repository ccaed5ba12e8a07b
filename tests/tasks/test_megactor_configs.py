"""MegActor's configs carry the release's values, and the paper networks have the released
sizes (abstract init only: nothing full-size is computed)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import megactor as cfg_lib
from jaxtalk.diffusion import recipes
from jaxtalk.models.aniportrait.lmk2video import join_motion
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.tasks import megactor as task_lib


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_paper_configs_carry_the_release_settings(stage):
    c = cfg_lib.get_config(f"paper_{stage}")
    group = "model" if stage == "stage1" else "motion"
    assert list(c.optimizers) == [group]  # stage 2 trains the motion modules only
    opt = c.optimizers[group]
    assert (opt.name, opt.lr, opt.weight_decay, opt.clip_norm) == ("adamw", 1e-5, 0.01, 1.0)
    assert (opt.b1, opt.b2, opt.eps, opt.schedule, opt.warmup_steps) == (
        0.9,
        0.999,
        1e-8,
        "constant",
        0,
    )
    # train_batch_size 1, gradient_accumulation_steps 2
    assert (c.batch_size, c.grad_accum_steps) == (2, 2)
    assert c.data.kind == "driving_video" and c.data.image_size == 512
    assert (c.data.num_frames, c.data.frame_stride) == (12, 2)
    assert c.model.latent == "vae" and c.model.context == "clip"
    assert c.data.driving_grayscale
    swap, warp = (0.1, 0.0) if stage == "stage1" else (0.5, 0.25)
    assert c.data.swap_rate + c.data.style_rate == pytest.approx(swap)
    assert c.data.swap_rate == c.data.style_rate
    assert c.data.warp_rate == warp
    assert c.checkpoint.every_steps == 1000 and c.eval.every_steps == 100
    assert c.dtype == "bfloat16"
    r = c.diffusion.recipe
    assert r.train.process.beta_schedule == "scaled_linear" and r.train.process.zero_terminal_snr
    assert (r.train.prediction, r.train.noise_offset) == ("eps", 0.1)
    assert (r.train.snr_gamma, r.train.uncond_ratio) == (0.0, 0.0)
    assert c.diffusion.sample_steps == 25 and r.guidance_scale == 4.5
    assert (r.context.size, r.context.overlap) == (16, 8)
    assert not c.diffusion.sample_train_betas
    net = c.model.megactor
    assert net.unet.in_channels == 13 and net.motion_modules and net.motion_heads == 8


def test_unknown_variant_and_stage_are_errors():
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("paper")
    c = cfg_lib.get_config("tiny_stage1")
    c.stage = "stage3"
    with pytest.raises(ValueError, match="config.stage"):
        task_lib.build(c)


@pytest.mark.parametrize("variant", ["tiny_stage1", "tiny_stage2"])
def test_tiny_departs_from_the_release_only_in_v_prediction(variant):
    c = cfg_lib.get_config(variant)
    release = recipes.to_dict(recipes.megactor())
    for part in ("train", "sample"):
        assert c.diffusion.recipe[part].prediction == "v"
        got = dict(c.diffusion.recipe[part].to_dict(), prediction="eps")
        assert got == release[part], part
    recipe, ddim = recipes.of_run(c.diffusion)
    assert recipe.train.prediction == ddim.prediction == "v"  # trained and sampled alike


def test_paper_networks_have_the_released_sizes():
    task = task_lib.build(cfg_lib.get_config("paper_stage2"))
    f = 2
    batch = {
        "reference": jnp.zeros((1, 512, 512, 3), jnp.uint8),
        "reference_background": jnp.zeros((1, 512, 512, 3), jnp.uint8),
        "reference_background_mask": jnp.zeros((1, 512, 512, 1), jnp.float32),
        "frames": jnp.zeros((1, f, 512, 512, 3), jnp.uint8),
        "driving": jnp.zeros((1, f, 512, 512, 3), jnp.uint8),
    }
    params, _ = eval_shape_init(task.init, jax.random.PRNGKey(0), batch)
    params = nn.unbox(params)
    base = params["base"]
    # REFERENCE.md / issue 17: UNet + DrivenEncoder 870,047,324, the v3 motion modules
    # 417,137,600 (none in the mid block), the ReferenceNet 857,066,560; the DrivenEncoder
    # alone 10,500,440; the frozen sd-vae-ft-mse and CLIP ViT-L/14 + projection
    assert count(base["unet"]) + count(base["driven_encoder"]) == 870_047_324
    assert count(base["driven_encoder"]) == 10_500_440
    assert count(params["motion"]) == 417_137_600
    assert "mid_block" not in params["motion"]
    assert count(base["reference_net"]) == 857_066_560
    assert count(params["vae"]) == 83_653_863
    assert count(params["image_encoder"]) == 303_966_208
    # stage 1 trains all of it as one group
    s1 = task_lib.build(cfg_lib.get_config("paper_stage1"))
    p1, _ = eval_shape_init(s1.init, jax.random.PRNGKey(0), batch)
    p1 = nn.unbox(p1)
    assert set(p1) == {"model", "vae", "image_encoder"}
    assert count(p1["model"]) == 870_047_324 + 417_137_600 + 857_066_560
    joined = join_motion(base["unet"], params["motion"])
    assert count(joined) == count(p1["model"]["unet"])


def test_stage2_without_stage1_networks_says_how_to_give_them():
    task = task_lib.build(cfg_lib.get_config("tiny_stage2"))
    with pytest.raises(ValueError, match=r"base\.workdir=RUN .*megactor.*base\.weights=FILE"):
        task.frozen_sources()


@pytest.mark.parametrize("variant", ["tiny_stage1", "tiny_stage2"])
def test_tiny_trains_on_the_swapped_and_stylised_streams_half_of_the_time(variant):
    c = cfg_lib.get_config(variant)
    assert c.data.swap_rate == c.data.style_rate == 0.25
