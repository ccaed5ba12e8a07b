"""MegActor's stages through the training loop on the synthetic set (whose clips carry
swapped / stylised companion streams and background masks): what trains, what stays frozen,
what is evaluated."""

import functools

import jax
import numpy as np
import pytest

from configs import megactor as cfg_lib
from jaxtalk.models.aniportrait.lmk2video import split_motion
from jaxtalk.models.pixels import to_01
from jaxtalk.tasks import megactor as task_lib
from jaxtalk.train import checkpoints
from tests.tasks import helpers


def tiny_config(data_dir, steps, variant="tiny_stage1"):
    c = cfg_lib.get_config(variant)
    c.data.data_dir = data_dir
    c.data.num_frames = 2
    c.data.samples_per_clip = 4  # the test split has 2 clips
    c.batch_size = 4  # as helpers.train_tiny's runs
    c.total_steps = steps
    c.diffusion.sample_steps = 2
    return c


def train_tiny(variant, data_dir, workdir, steps, *extra, save_every=0):
    return helpers.train_tiny(
        f"megactor.py:{variant}",
        data_dir,
        workdir,
        steps,
        "--config.data.num_frames=2",
        *extra,
        save_every=save_every,
    )


def leaves(tree):
    return [np.asarray(a) for a in jax.tree.leaves(tree)]


def moved(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(leaves(a), leaves(b)))


def first_batch(task):
    return next(task.data("train", global_batch_size=4, seed=0, process_index=0, process_count=1))


@pytest.fixture(scope="module")
def stage1_run(synthetic_64, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("megactor") / "stage1")
    return workdir, train_tiny("tiny_stage1", synthetic_64, workdir, 2, save_every=1)


def test_stage1_trains_unet_motion_modules_reference_net_and_driven_encoder(stage1_run):
    workdir, out = stage1_run
    assert np.isfinite(out["model/mse"]) and out["nonfinite"] == 0.0
    for key in ("eval/psnr", "eval/psnr_copy", "eval/psnr_cross"):
        assert np.isfinite(out[key]), key
    trained = checkpoints.group_variables(workdir, "model", 2)["params"]
    assert set(trained) == {"unet", "driven_encoder", "reference_net"}
    start = checkpoints.group_variables(workdir, "model", 1)["params"]  # the second step moves
    unet, motion = split_motion(trained["unet"])
    unet0, motion0 = split_motion(start["unet"])
    assert motion, "the tiny UNet has motion modules"
    for name, a, b in [
        ("unet", unet, unet0),
        ("motion", motion, motion0),
        ("driven_encoder", trained["driven_encoder"], start["driven_encoder"]),
        ("reference_net", trained["reference_net"], start["reference_net"]),
    ]:
        assert moved(a, b) > 0, name


def test_stage2_trains_only_the_motion_modules(stage1_run, synthetic_64, tmp_path):
    workdir, _ = stage1_run
    stage2 = str(tmp_path / "stage2")
    out = train_tiny("tiny_stage2", synthetic_64, stage2, 2, f"--config.base.workdir={workdir}")
    stage1 = checkpoints.group_variables(workdir, "model", 2)["params"]
    base = checkpoints.group_variables(stage2, "base", 2)["params"]
    motion = checkpoints.group_variables(stage2, "motion", 2)["params"]
    want_unet, want_motion = split_motion(stage1["unet"])
    for name, want in [
        ("unet", want_unet),
        ("driven_encoder", stage1["driven_encoder"]),
        ("reference_net", stage1["reference_net"]),
    ]:
        got = leaves(base[name])
        assert len(got) == len(leaves(want)), name
        for a, b in zip(got, leaves(want)):
            np.testing.assert_array_equal(a, b)
    assert set(motion) <= {"down_blocks_0", "down_blocks_1", "up_blocks_0", "up_blocks_1"}
    # v3: no mid-block module; the motion modules trained away from stage 1's
    assert moved(motion, want_motion) > 0
    assert np.isfinite(out["eval/psnr"])


def test_stage2_without_a_base_is_a_clear_error(synthetic_64):
    config = tiny_config(synthetic_64, 1, variant="tiny_stage2")
    with pytest.raises(ValueError, match="base.workdir"):
        task_lib.build(config).frozen_sources()


def test_cross_eval_outputs_drive_each_source_with_another_example(stage1_run, synthetic_64):
    """Cross mode compiled (its sampling loop); self mode's outputs only traced: the run's
    own evaluation has sampled it."""
    workdir, _ = stage1_run
    config = tiny_config(synthetic_64, 2)
    task = task_lib.build(config)
    batch = first_batch(task)
    params = {"model": checkpoints.group_variables(workdir, "model", 2)["params"]}
    rng = jax.random.PRNGKey(0)
    cross = jax.jit(functools.partial(task.eval_outputs, mode="cross"))(params, {}, batch, rng)
    own = jax.eval_shape(functools.partial(task.eval_outputs, mode="self"), params, {}, batch, rng)
    n, f = batch["frames"].shape[:2]
    assert set(cross) == {"prediction", "source", "driving"}
    assert set(own) == {"prediction", "target", "source", "driving"}
    for v in (*cross.values(), *own.values()):
        assert v.shape == (n * f, 32, 32, 3)
    for v in cross.values():
        assert 0.0 <= float(v.min()) and float(v.max()) <= 1.0
    seen = task.preprocess(batch)  # what self mode is driven by and starts from
    driving = np.asarray(to_01(seen["driving"]))
    np.testing.assert_allclose(
        np.asarray(cross["driving"]).reshape(n, f, 32, 32, 3), np.roll(driving, 1, axis=0)
    )
    source = np.repeat(np.asarray(to_01(seen["reference"])), f, axis=0)
    np.testing.assert_allclose(cross["source"], source)
    with pytest.raises(ValueError, match="eval mode"):
        task.eval_outputs(params, {}, batch, rng, mode="audio")


def test_a_run_animates_with_its_own_networks_and_sampler(stage1_run, synthetic_64):
    from jaxtalk import inference
    from jaxtalk.inference.animator import Driver

    workdir, _ = stage1_run
    animator = inference.open_animator(workdir, driver=Driver.VIDEO)
    task = task_lib.build(tiny_config(synthetic_64, 2))
    # the run's sampler: its steps, over its training betas (sample_train_betas), not the
    # release's 25 steps over linear betas
    assert animator.ddim == task.sample_config and animator.ddim.num_steps == 2
    trained = checkpoints.group_variables(workdir, "model", 2)["params"]
    for a, b in zip(leaves(animator.variables["megactor"]), leaves(trained)):
        np.testing.assert_array_equal(a, b)
    source = np.full((32, 32, 3), 128, np.uint8)
    video = animator.animate(source, np.zeros((3, 32, 32, 3), np.uint8))
    assert video.shape == (3, 32, 32, 3) and video.dtype == np.uint8
