"""liveportrait: the variants, stage 1 through the loop (every loss term finite, the
discriminator and the spectral-norm / BatchNorm state updated), stage 2 on the frozen base
(only the MLPs and the ratio regressor move), and `jaxtalk export --workdir=RUN
--release=liveportrait` of both runs: a stage-1 run writes the four base-model files, a
stitching run its frozen base plus retargeting_models/stitching_retargeting_module.pth;
`jaxtalk import --release=liveportrait`'s converter reads each back to the run's own
variables, bit for bit. The run's kind decides what is exported (no --group); a group or
release that cannot be exported is a one-line error. One stage-1 and one stage-2 run serve
every test here (each is a minute of compiling on 2 cores)."""

import os
import re

import jax
import numpy as np
import pytest
from absl import flags

from configs import liveportrait as cfg_lib
from jaxtalk.commands import export
from jaxtalk.convert import liveportrait, releases, torch_pickle, weights
from jaxtalk.errors import InputError
from jaxtalk.tasks import liveportrait as task_lib
from jaxtalk.train import checkpoints
from tests.tasks import helpers

BASE_FILES = sorted(n.filename for n in liveportrait.BASE_NETWORKS)


def test_variants():
    paper = cfg_lib.get_config("paper")
    assert paper.model.input_size == 256 and paper.data.image_size == 512
    assert paper.stage == "base" and paper.batch_size == 32
    opt = paper.optimizers.generator
    assert (opt.lr, opt.b1, opt.b2) == (2e-4, 0.5, 0.999)  # face-vid2vid
    loss = paper.loss
    assert (loss.equivariance, loss.keypoint_prior, loss.head_pose, loss.deformation_prior) == (
        10.0,
        10.0,
        20.0,
        5.0,
    )
    assert (loss.sigma_affine, loss.sigma_tps, loss.prior_dt, loss.prior_zt) == (
        0.05,
        0.005,
        0.1,
        0.33,
    )
    assert tuple(loss.regions) == ("full", "face", "lip") and loss.feature_matching == 10.0
    stitching = cfg_lib.get_config("stitching")
    assert stitching.stage == "stitching"
    assert set(stitching.optimizers) == {"stitching", "lip", "eye", "ratio"}
    tiny = cfg_lib.get_config("tiny")
    assert tiny.model.input_size == 64 and tiny.model.spade.upscale == 1
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("huge")


def test_landmark_guidance_follows_the_mouth_and_the_eyelids(synthetic_64):
    """The Wing loss's targets are the configured mesh points, and on the synthetic set the
    tiny recipe's first two (inner lips) and last four (eyelids) open with the data's mouth
    and blink: guidance that can teach M expression, not only pose."""
    config = cfg_lib.get_config("tiny")
    config.data.data_dir = synthetic_64
    task = task_lib.build(config)
    batch = next(task.data("train", global_batch_size=32, seed=0, process_index=0, process_count=1))
    lm, valid = map(np.asarray, task.guide_landmarks(batch))
    mesh = np.asarray(batch["face_mesh_xy"]).reshape(32, 2, -1, 2) * 2 - 1
    points = list(config.loss.landmark_points)
    np.testing.assert_array_equal(lm, np.concatenate([mesh[:, 0], mesh[:, 1]])[:, points])
    assert lm.shape == (64, 8, 2) and valid.all()
    mouth = np.concatenate([batch["mouth"][:, 0, 0], batch["mouth"][:, 1, 0]])
    blink = np.concatenate([batch["blink"][:, 0, 0], batch["blink"][:, 1, 0]])
    lips = lm[:, 1, 1] - lm[:, 0, 1]  # lower minus upper inner lip
    lids = (lm[:, 5, 1] - lm[:, 4, 1]) + (lm[:, 7, 1] - lm[:, 6, 1])
    assert np.corrcoef(lips, mouth)[0, 1] > 0.9
    assert np.corrcoef(lids, blink)[0, 1] < -0.9
    config.loss.landmark_points = tuple(range(11))
    with pytest.raises(ValueError, match="11 points for 10 keypoints"):
        task_lib.build(config)


def tiny_config(data_dir, steps, variant="tiny", **loss):
    c = helpers.shallow_liveportrait(cfg_lib.get_config(variant))
    c.data.data_dir = data_dir
    c.data.samples_per_clip = 4  # the test split has 2 clips
    c.batch_size = 4
    helpers.in_process_run(c, steps)
    c.samples.every_steps = 0
    c.loss.update(loss)
    return c


@pytest.fixture(scope="module")
def runs(synthetic_64, tmp_path_factory):
    """{"stage1": (workdir, metrics), "stage2": ...}: two steps of the base model with the GAN
    and feature-matching terms on (the discriminator group trains too), then two steps of the
    stitching stage on it, saved after each step."""
    root = tmp_path_factory.mktemp("lp")
    stage1, stage2 = str(root / "stage1"), str(root / "stage2")
    config = tiny_config(synthetic_64, 2, adversarial=0.1, feature_matching=1.0)
    first = helpers.one_device_train(config, stage1)
    config = tiny_config(synthetic_64, 2, variant="tiny_stitching")
    config.base.workdir = stage1
    config.checkpoint.every_steps = 1
    return {"stage1": (stage1, first), "stage2": (stage2, helpers.one_device_train(config, stage2))}


@pytest.fixture
def workdirs(runs):
    """(stage-1 run, stitching run on it)."""
    return runs["stage1"][0], runs["stage2"][0]


def test_stage1_trains_through_the_loop(runs):
    _, out = runs["stage1"]
    for term in (
        "l1_full",
        "l1_lip",
        "equivariance",
        "keypoint_prior",
        "head_pose",
        "deformation_prior",
        "landmark",
        "adversarial_full",
        "feature_matching_face",
        "adversarial_lip",
    ):
        assert np.isfinite(out[f"generator/{term}"]), term
    assert np.isfinite(out["discriminator/hinge_face"]) and out["nonfinite"] == 0.0
    for key in ("eval/psnr", "eval/psnr_copy_source", "eval/psnr_own_keypoints", "eval/ssim"):
        assert np.isfinite(out[key]), key
    state = out["state"]
    assert set(state.params) == {"generator", "discriminator"}
    assert set(state.params["generator"]) == set(task_lib.BASE)
    stats = state.model_state["batch_stats"]
    assert set(stats["discriminator"]) == {"full", "face", "lip"}
    assert "spade" in stats["generator"]  # G's spectral-norm vectors
    # F's BatchNorm running statistics left their initial zeros / ones (training mode ran)
    leaves = [np.asarray(a) for a in jax.tree.leaves(stats["generator"]["appearance"])]
    assert any(np.any((a != 0) & (a != 1)) for a in leaves)


def test_tiny_learning_rate_rule_covers_motion_extractor_only(runs):
    """The tiny recipe slows M (config.lr_multipliers); a renamed param tree would turn the
    rule into a silent no-op, so check it against the trained params' paths."""
    from jaxtalk.train import optim

    ((pattern, factor),) = optim.parse_lr_multipliers(cfg_lib.get_config("tiny").lr_multipliers)
    generator = runs["stage1"][1]["state"].params["generator"]
    names = [
        optim._path_name("generator", p) for p, _ in jax.tree_util.tree_leaves_with_path(generator)
    ]
    slowed = {n.split("/")[1] for n in names if re.fullmatch(pattern, n)}
    assert slowed == {"motion"} and factor < 1.0


def test_stage2_trains_only_the_mlps(runs, synthetic_64):
    workdir, _ = runs["stage1"]
    stage2, out = runs["stage2"]
    config = tiny_config(synthetic_64, 2, variant="tiny_stitching")
    config.base.workdir = workdir
    state = out["state"]
    assert set(state.params) == {"base", "stitching", "lip", "eye", "ratio"}
    base = checkpoints.group_variables(workdir, "generator")
    for name in task_lib.BASE:
        got = jax.tree.leaves(state.params["base"][name]["params"])
        want = jax.tree.leaves(base["params"][name])
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    task = task_lib.build(config)
    batch = next(task.data("train", global_batch_size=4, seed=0, process_index=0, process_count=1))
    for name in ("stitching", "lip", "eye", "ratio"):
        first = checkpoints.group_variables(stage2, name, 1)["params"]
        moved = [  # by the second step
            float(np.abs(np.asarray(a) - np.asarray(b)).max())
            for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(state.params[name]))
        ]
        assert max(moved) > 0, name
    for key in ("stitching/outside_l1", "lip/ratio_error", "eye/outside_l1", "ratio/loss"):
        assert np.isfinite(out[key]), key
    for key in ("outside_l1_stitched", "lip_ratio_error", "lip_ratio_error_shuffled",
                "eye_ratio_error", "ratio_mouth_error", "ratio_blink_error"):  # fmt: skip
        assert np.isfinite(out[f"eval/{key}"]), key

    # cross-reenactment (`jaxtalk eval --modes=cross`): driven by the next example's clip
    outputs = jax.jit(task.eval_outputs, static_argnames="mode")  # one compile per mode
    cross = outputs(state.params, state.model_state, batch, None, mode="cross")
    own = outputs(state.params, state.model_state, batch, None, mode="self")
    assert set(cross) == {"prediction", "driving", "source"} and "target" in own
    assert cross["prediction"].shape == own["prediction"].shape
    np.testing.assert_array_equal(cross["driving"], np.roll(own["driving"], 1, axis=0))
    assert np.isfinite(cross["prediction"]).all()
    assert np.abs(cross["prediction"] - own["prediction"]).max() > 1e-3

    # `jaxtalk animate --workdir`: stage 1 animates without the MLPs, stage 2 with its own
    from jaxtalk import inference

    first = inference.open_animator(workdir, chunk=2)
    second = inference.open_animator(stage2, chunk=2)
    assert first.size == 64 and not first.mlps and set(second.mlps) == {"stitching", "lip", "eye"}
    for name in ("stitching", "lip", "eye"):
        for a, b in zip(jax.tree.leaves(second.mlps[name]), jax.tree.leaves(state.params[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    source = frames[0]
    plain = first.animate(source, frames)
    stitched = second.animate(source, frames, stitching=True)
    assert plain.shape == stitched.shape == (2, 64, 64, 3)
    with pytest.raises(inference.AnimationError, match="stitching"):
        first.animate(source, frames, stitching=True)


def test_stage2_without_a_base_is_a_clear_error(synthetic_64):
    config = tiny_config(synthetic_64, 1, variant="tiny_stitching")
    with pytest.raises(ValueError, match="base.workdir"):
        task_lib.build(config).frozen_sources()


def jaxtalk_export(*args: str) -> None:
    """`jaxtalk export ARGS` in this process: the command's flags parsed, then its main."""
    flags.FLAGS.unparse_flags()
    try:
        export.main(flags.FLAGS(["jaxtalk export", *args]))
    finally:
        flags.FLAGS.unparse_flags()


def reimported(directory, tmp_path) -> dict:
    """The directory through `jaxtalk import --release=liveportrait`'s converter."""
    out = str(tmp_path / f"{os.path.basename(directory)}.safetensors")
    return weights.load(releases.import_release("liveportrait", directory, output=out))


def assert_same(got, want, what):
    got_leaves = jax.tree_util.tree_leaves_with_path(got)
    want_leaves = jax.tree_util.tree_leaves_with_path(want)
    assert [p for p, _ in got_leaves] == [p for p, _ in want_leaves], what
    for (path, a), (_, b) in zip(got_leaves, want_leaves):
        assert np.asarray(a).dtype == np.asarray(b).dtype, (what, path)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{what} {path}")


def assert_base_is(back, base):
    """The re-imported base networks equal the run's generator (params and batch_stats)."""
    for net in liveportrait.BASE_NETWORKS:
        assert_same(back["params"][net.group], base["params"][net.group], net.group)
        if net.group in base["batch_stats"]:
            assert_same(back["batch_stats"][net.group], base["batch_stats"][net.group], net.group)
    assert sorted(back["batch_stats"]) == sorted(base["batch_stats"])


def test_stage1_run_exports_the_base_model(workdirs, tmp_path):
    stage1, _ = workdirs
    out = tmp_path / "lp"
    jaxtalk_export(f"--workdir={stage1}", "--release=liveportrait", f"--out={out}")
    assert sorted(os.listdir(out / "base_models")) == BASE_FILES
    assert not (out / "retargeting_models").exists()
    back = reimported(out, tmp_path)
    assert sorted(back["params"]) == sorted(n.group for n in liveportrait.BASE_NETWORKS)
    assert_base_is(back, checkpoints.group_variables(stage1, "generator"))
    # --group=generator, the stage-1 path as it was, writes the same files
    out2 = tmp_path / "lp2"
    jaxtalk_export(
        f"--workdir={stage1}", "--group=generator", "--release=liveportrait", f"--out={out2}"
    )
    for name in BASE_FILES:
        first, second = (torch_pickle.load(str(d / "base_models" / name)) for d in (out, out2))
        assert list(first) == list(second), name
        assert_same(first, second, name)


def test_stitching_run_exports_base_and_retargeting_file(workdirs, tmp_path):
    stage1, stage2 = workdirs
    out = tmp_path / "lp"
    jaxtalk_export(f"--workdir={stage2}", "--release=liveportrait", f"--out={out}")
    assert sorted(os.listdir(out / "base_models")) == BASE_FILES
    assert (out / liveportrait.RETARGETING_FILE).is_file()
    back = reimported(out, tmp_path)
    assert_base_is(back, checkpoints.group_variables(stage1, "generator"))  # the frozen base
    for name in liveportrait.RETARGETING_ENTRIES:  # the trained MLPs
        trained = checkpoints.group_variables(stage2, name)["params"]
        assert_same(back["params"][name], trained, name)
    assert back["model_config"]["key_prefix"]["stitching"] == liveportrait.MODULE_PREFIX

    # --group=base: the frozen base alone
    jaxtalk_export(f"--workdir={stage2}", "--group=base", "--release=liveportrait", f"--out={out}b")
    assert sorted(os.listdir(tmp_path / "lpb")) == ["base_models"]
    # no --release: the same networks as a weights file that animate / export read
    jaxtalk_export(f"--workdir={stage2}", f"--out={tmp_path / 'lp.safetensors'}")
    stored = weights.load(str(tmp_path / "lp.safetensors"))
    assert stored["model_config"]["kind"] == "liveportrait"
    assert_same(stored["params"]["lip"], back["params"]["lip"], "lip")


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("--group=stitching", "--release=liveportrait"),
            "group 'stitching' of a liveportrait stitching run",
        ),
        (("--group=generator", "--release=liveportrait"), "group 'base': its base networks alone"),
        (("--release=lia",), "exports to --release=liveportrait or --release=liveportrait_animals"),
    ],
    ids=["mlp-group", "stage1-group-on-stitching-run", "other-release"],
)
def test_wrong_choices_are_one_line_errors(workdirs, tmp_path, args, message):
    _, stage2 = workdirs
    with pytest.raises(InputError) as e:
        jaxtalk_export(f"--workdir={stage2}", *args, f"--out={tmp_path / 'x'}")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)
