"""AniPortrait's Lmk2Video stages through the training loop on the synthetic set (whose
clips carry their exact face meshes): what trains, what stays frozen, what is evaluated."""

import jax
import numpy as np
import pytest

from configs import aniportrait as cfg_lib
from jaxtalk.models.aniportrait import lmk2video
from jaxtalk.models.latent_diffusion import frames
from jaxtalk.tasks import aniportrait as task_lib
from tests.tasks import helpers
from tests.train.helpers import as_flags, override

# The tiny recipe with one UNet level (and PoseGuider level) instead of two: what these tests
# check is which networks train, stay frozen and are evaluated, and XLA's compile time grows
# faster than the program. The UNet's levels are checked by tests/models and the release key
# lists.
ONE_LEVEL = {
    "model.unet.block_out_channels": (32,),
    "model.unet.cross_attention": (True,),
    "model.pose_guider.block_out_channels": (32,),
    "frozen": ("model/reference/up_blocks_0/.*",),  # the last up level, as the recipe's
}


def tiny_config(data_dir, steps, variant="tiny_stage1"):
    c = override(cfg_lib.get_config(variant), ONE_LEVEL)
    c.data.data_dir = data_dir
    c.data.samples_per_clip = 4  # the test split has 2 clips
    c.batch_size = 4  # as helpers.train_tiny's runs
    c.total_steps = steps
    c.diffusion.sample_steps = 2
    return c


def train_tiny(variant, data_dir, workdir, steps, *extra, save_every=0):
    return helpers.train_tiny(
        f"aniportrait.py:{variant}",
        data_dir,
        workdir,
        steps,
        *as_flags(ONE_LEVEL),
        *extra,
        save_every=save_every,
    )


def leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def stage1_run(synthetic_64, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("aniportrait") / "stage1")
    return workdir, train_tiny("tiny_stage1", synthetic_64, workdir, 2, save_every=1)


def test_stage1_trains_the_three_networks_but_the_last_reference_block(stage1_run, synthetic_64):
    from jaxtalk.train import checkpoints

    workdir, out = stage1_run
    assert np.isfinite(out["model/weighted_mse"]) and out["nonfinite"] == 0.0
    for key in ("eval/psnr", "eval/psnr_copy", "eval/psnr_shuffled"):
        assert np.isfinite(out[key]), key
    trained = checkpoints.group_variables(workdir, "model", 2)
    assert set(trained["params"]) == set(task_lib.NETWORKS)
    task = task_lib.build(tiny_config(synthetic_64, 2))
    first = checkpoints.group_variables(workdir, "model", 1)  # what the second step moved

    def moved(a, b):
        return max(float(np.abs(x - y).max()) for x, y in zip(leaves(a), leaves(b)))

    params, start = trained["params"], first["params"]
    last = f"up_blocks_{len(task.pipe.unet_config.block_out_channels) - 1}"
    assert moved(params["reference"][last], start["reference"][last]) == 0  # config.frozen
    assert moved(params["reference"]["down_blocks_0"], start["reference"]["down_blocks_0"]) > 0
    for name in ("denoiser", "pose_guider"):
        assert moved(params[name], start[name]) > 0, name
    # the PoseGuider's BatchNorms ran in train mode: their statistics moved
    stats = trained["batch_stats"]["pose_guider"]
    assert moved(stats, first["batch_stats"]["pose_guider"]) > 0


def test_stage2_trains_only_the_motion_modules(stage1_run, synthetic_64, tmp_path):
    from jaxtalk.train import checkpoints

    workdir, _ = stage1_run
    stage2 = str(tmp_path / "stage2")
    out = train_tiny("tiny_stage2", synthetic_64, stage2, 2, f"--config.base.workdir={workdir}")
    stage1 = checkpoints.group_variables(workdir, "model", 2)
    base = checkpoints.group_variables(stage2, "base", 2)["params"]
    for name in task_lib.NETWORKS:
        got, want = leaves(base[name]["params"]), leaves(stage1["params"][name])
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    motion = checkpoints.group_variables(stage2, "motion", 2)["params"]
    assert set(motion) <= {
        "down_blocks_0",
        "down_blocks_1",
        "mid_block",
        "up_blocks_0",
        "up_blocks_1",
    }
    assert "mid_block" in motion  # v2: a mid-block module
    for key in ("eval/flicker", "eval/flicker_stage1", "eval/psnr", "eval/psnr_stage1"):
        assert np.isfinite(out[key]), key
    # the motion modules' zero-initialised outputs moved off zero: they now change the video
    proj_out = [v for p, v in jax.tree_util.tree_leaves_with_path(motion) if "proj_out" in str(p)]
    assert proj_out and max(float(np.abs(np.asarray(v)).max()) for v in proj_out) > 0
    assert out["eval/flicker"] != out["eval/flicker_stage1"]


def test_stage2_without_a_base_is_a_clear_error(synthetic_64):
    config = tiny_config(synthetic_64, 1, variant="tiny_stage2")
    with pytest.raises(ValueError, match="base.workdir"):
        task_lib.build(config).frozen_sources()


def test_split_and_join_motion_are_inverse():
    tree = {
        "conv_in": {"kernel": 1},
        "down_blocks_0": {"resnets_0": {"w": 2}, "motion_modules_0": {"proj_out": {"w": 3}}},
        "mid_block": {"motion_modules_0": {"w": 4}},
    }
    unet, motion = lmk2video.split_motion(tree)
    assert unet == {"conv_in": {"kernel": 1}, "down_blocks_0": {"resnets_0": {"w": 2}}}
    assert motion == {
        "down_blocks_0": {"motion_modules_0": {"proj_out": {"w": 3}}},
        "mid_block": {"motion_modules_0": {"w": 4}},
    }
    assert lmk2video.join_motion(unet, motion) == tree


def test_patches_are_an_exact_2x2_space_to_depth():
    images = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 8, 6, 3))
    latents = frames.patchify(images, 2)
    assert latents.shape == (2, 3, 4, 3, 12)
    # vector (i, j) holds the block rows 2i..2i+1, columns 2j..2j+1, row-major, RGB last
    block = images[1, 2, 4:6, 2:4].reshape(-1)
    np.testing.assert_array_equal(latents[1, 2, 2, 1], block)
    np.testing.assert_array_equal(frames.unpatchify(latents, 2), images)
    with pytest.raises(ValueError, match="7x6 do not split into 2x2"):
        frames.patchify(images[:, :, :7], 2)


def test_tiny_diffuses_patches_and_a_mismatched_unet_is_an_error():
    c = cfg_lib.get_config("tiny_stage1")
    model = lmk2video.Lmk2Video.from_config(c.model, motion=False)
    assert model.latent == "patches" and model.latent_shape((2, 1, 32, 32, 3)) == (2, 1, 16, 16, 12)
    c.model.unet.in_channels = c.model.unet.out_channels = 3
    with pytest.raises(ValueError, match="'patches' diffuses 12 channels.*3/3"):
        lmk2video.Lmk2Video.from_config(c.model, motion=False)
