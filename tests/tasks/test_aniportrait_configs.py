"""AniPortrait's Lmk2Video configs carry the release's values, and the paper networks have
the released sizes (abstract init only: nothing full-size is computed)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import aniportrait as cfg_lib
from jaxtalk.diffusion import recipes
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.tasks import aniportrait as task_lib


def count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_paper_configs_carry_the_release_settings(stage):
    c = cfg_lib.get_config(f"paper_{stage}")
    group = "model" if stage == "stage1" else "motion"
    assert list(c.optimizers) == [group]  # stage 2 trains the motion modules only
    opt = c.optimizers[group]
    assert (opt.name, opt.lr, opt.weight_decay, opt.clip_norm) == ("adamw", 1e-5, 0.01, 1.0)
    assert (opt.b1, opt.b2, opt.eps, opt.schedule) == (0.9, 0.999, 1e-8, "constant")
    assert c.data.image_size == 512 and c.model.latent == "vae" and c.model.context == "clip"
    assert c.data.kind == "landmark_video" and c.data.pose_release_canvas
    assert c.model.pose_range == "01"  # dataset_face.py divides the drawings by 255
    if stage == "stage1":
        assert (c.batch_size, c.total_steps, c.data.num_frames) == (8, 300_000, 1)
        assert c.frozen == ("model/reference/up_blocks_3/.*",)
        assert not c.model.unet.remat
    else:
        assert (c.batch_size, c.total_steps, c.data.num_frames) == (4, 40_000, 16)
        assert (c.data.frame_stride, c.data.frame_stride_alt) == (1, 4)
        assert c.model.unet.remat  # gradient checkpointing
    # the paired schedules: train on scaled-linear + zero SNR, sample DDIM over linear
    r = c.diffusion.recipe
    assert r.train.process.beta_schedule == "scaled_linear" and r.train.process.zero_terminal_snr
    assert (r.train.prediction, r.train.snr_gamma, r.train.noise_offset) == ("v", 5.0, 0.05)
    assert r.train.uncond_ratio == 0.1
    assert r.sample.process.beta_schedule == "linear" and r.sample.process.zero_terminal_snr
    assert (r.sample.timestep_spacing, r.sample.steps_offset) == ("trailing", 1)
    assert c.diffusion.sample_steps == 25 and r.guidance_scale == 3.5
    assert (r.context.size, r.context.overlap) == (16, 4)
    assert not c.diffusion.sample_train_betas


@pytest.mark.parametrize("variant", ["tiny_stage1", "tiny_stage2"])
def test_tiny_departs_from_the_release_diffusion_only_in_sampling_unguided(variant):
    c = cfg_lib.get_config(variant)
    assert c.diffusion.recipe.guidance_scale == 1.0
    got = dict(c.diffusion.recipe.to_dict(), guidance_scale=3.5)
    assert got == recipes.to_dict(recipes.aniportrait())
    assert c.model.latent == "patches"


def test_unknown_variant_and_stage_are_errors():
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("paper")
    c = cfg_lib.get_config("tiny_stage1")
    c.stage = "stage3"
    with pytest.raises(ValueError, match="config.stage"):
        task_lib.build(c)


def test_paper_networks_have_the_released_sizes():
    c = cfg_lib.get_config("paper_stage2")
    task = task_lib.build(c)
    f = 2
    batch = {
        "reference": jnp.zeros((1, 512, 512, 3), jnp.uint8),
        "reference_landmark_image": jnp.zeros((1, 512, 512, 3), jnp.uint8),
        "frames": jnp.zeros((1, f, 512, 512, 3), jnp.uint8),
        "landmark_images": jnp.zeros((1, f, 512, 512, 3), jnp.uint8),
    }
    params, state = eval_shape_init(task.init, jax.random.PRNGKey(0), batch)
    params = nn.unbox(params)
    base = params["base"]
    # REFERENCE.md: the ReferenceNet (no conv_norm_out / conv_out), the SD1.5 UNet, the
    # PoseGuider's parameters (and its 10,310 BatchNorm running statistics), the v2
    # motion modules; the frozen sd-vae-ft-mse and CLIP ViT-L/14 + projection
    assert count(base["reference"]["params"]) == 859_508_800
    assert count(base["denoiser"]["params"]) == 859_520_964
    assert count(base["pose_guider"]["params"]) == 167_518_523
    assert count(base["pose_guider"]["batch_stats"]) == 10_310
    assert count(params["motion"]) == 453_209_280
    assert count(params["vae"]) == 83_653_863
    assert count(params["image_encoder"]) == 303_966_208


def test_stage2_without_stage1_networks_says_how_to_give_them():
    task = task_lib.build(cfg_lib.get_config("tiny_stage2"))
    with pytest.raises(ValueError, match=r"base\.workdir=RUN .*aniportrait.*base\.weights=FILE"):
        task.frozen_sources()
