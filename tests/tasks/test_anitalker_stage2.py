"""anitalker_stage2: configs, labels and features, a short tiny training run with a
frozen stage-1 group, and the lip-sync probe machinery."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import anitalker_stage2 as cfg_lib
from jaxtalk.evaluate import lipsync_probe
from jaxtalk.models.anitalker import stage2 as a2m_model
from jaxtalk.models.anitalker.stage2 import INFER_TYPES
from jaxtalk.models.audio import mfcc as mfcc_lib
from jaxtalk.tasks import anitalker_stage2 as task_lib
from jaxtalk.train.train import ConfigError
from tests.tasks import helpers


def test_variants_follow_the_release():
    paper = cfg_lib.get_config("paper")
    assert paper.model.infer_type == "hubert_full_control"
    assert paper.data.num_frames == 126 and paper.batch_size == 64  # 125 + hint frame
    assert paper.optimizers.model.lr == 1e-4 and paper.optimizers.model.clip_norm == 1.0
    assert paper.ema.model == 0.9999
    for infer_type in INFER_TYPES:
        assert cfg_lib.get_config(infer_type).model.infer_type == infer_type
    assert cfg_lib.get_config("tiny").model.infer_type.startswith("mfcc")
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("hubert_everything")


def test_attribute_labels_from_pose_and_landmarks():
    b, t = 2, 4
    pose = np.tile(np.array([45.0, -90.0, 9.0], np.float32), (b, t + 1, 1))
    points = np.array([[0.3, 0.4], [0.7, 0.4], [0.55, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32)
    batch = {
        "pose": jnp.asarray(pose),
        "pose_valid": jnp.array([True, False]),
        "landmarks_xy": jnp.asarray(np.tile(points.reshape(-1), (b, t + 1, 1))),
        "landmarks_xy_valid": jnp.array([True, True]),
    }
    labels = task_lib.attribute_labels(batch)
    np.testing.assert_allclose(labels["pose"][0][0, 0], [0.5, -1.0, 0.1], rtol=1e-6)
    assert labels["pose"][0].shape == (b, t, 3)  # hint frame dropped
    np.testing.assert_allclose(labels["location"][0][..., 0], 0.55)  # nose x
    spread = np.linalg.norm(points - points.mean(0), axis=-1).mean()
    np.testing.assert_allclose(labels["scale"][0][..., 0], spread, rtol=1e-6)
    # An invalid example drops out of the masked loss.
    pred = jnp.zeros((b, t, 3)).at[1].set(100.0)
    np.testing.assert_allclose(
        task_lib.masked_mse(pred, labels["pose"][0], labels["pose"][1]),
        np.mean(np.square([0.5, -1.0, 0.1])),
        rtol=1e-6,
    )


def test_window_mfcc_is_the_slice_of_the_whole_window():
    t, pad = 5, 1
    audio = np.random.RandomState(0).randn((t + 1 + 2 * pad) * 640).astype(np.float32) * 0.1
    feats = task_lib.window_mfcc(audio, t, pad)
    assert feats.shape == (4 * t, 39)
    np.testing.assert_array_equal(feats, mfcc_lib.anitalker_mfcc(audio)[8 : 8 + 4 * t])


def test_ridge_probe_and_correlation():
    rng = np.random.RandomState(0)
    x = rng.randn(500, 6)
    y = x @ np.array([1.0, -2.0, 0.0, 0.5, 0.0, 0.0]) + 3.0
    w, b = lipsync_probe.fit_ridge(x, y, ridge=1e-6)
    np.testing.assert_allclose(x @ w + b, y, atol=1e-3)
    assert lipsync_probe.pearson(y, 2 * y + 1) == pytest.approx(1.0)
    assert abs(lipsync_probe.pearson(y, rng.randn(500))) < 0.2


def tiny_config(data_dir, stage1_weights, steps):
    c = cfg_lib.get_config("tiny")
    c.data.data_dir = data_dir
    c.stage1.weights = stage1_weights
    c.model.update(dict(speech_dim=32, fusion_dim=16, mfcc_hidden=32, decoder_layers=1))
    helpers.in_process_run(c, steps)
    c.diffusion.sample_steps = 4
    c.diffusion.normalize_windows = 8  # one batch of codes for the statistics (tiny: 64)
    return c


def test_tiny_trains_with_frozen_stage1_and_the_probe_runs(synthetic_64, stage1_weights, tmp_path):
    config = tiny_config(synthetic_64, stage1_weights, steps=6)
    workdir = str(tmp_path / "run")
    out = helpers.one_device_train(config, workdir)
    assert np.isfinite(out["model/loss"]) and "model/pose_mse" in out
    assert {"eval/eps_mse", "eval/location_mse", "eval/scale_mse"} <= set(out)
    state = out["state"]
    # The stage-1 group is the loaded file, untouched; the predictor and its BN stats moved.
    from jaxtalk.convert import weights

    loaded = weights.load(stage1_weights)["params"]
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(state.params["stage1"]["model"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    stats = jax.tree.leaves(state.model_state["batch_stats"]["model"])
    assert any(np.any(np.asarray(s) != np.asarray(s).flat[0]) for s in stats)
    # The code statistics were measured on the frozen stage 1's codes, not left at 0 / 1.
    motion = {k: np.asarray(v) for k, v in state.params["motion_stats"].items()}
    assert motion["mean"].shape == motion["std"].shape == (config.stage1.motion_dim,)
    assert np.all(motion["std"] > 0) and np.abs(motion["mean"]).max() > 1e-3
    assert not np.allclose(motion["std"], 1.0)

    result = lipsync_probe.evaluate_run(workdir, train_windows=16, test_windows=8, batch_size=8)
    assert set(result) == {"real", "shuffled", "encoded"}
    assert all(-1.0 <= v <= 1.0 for v in result.values())
    assert result["real"] != result["shuffled"]  # the audio reaches the samples

    # `animate --mode=audio` on the run reads the statistics back and un-normalises with them.
    from jaxtalk.inference.audio_driven import AudioAnimator

    animator = AudioAnimator.from_paths(workdir)
    np.testing.assert_array_equal(np.asarray(animator.motion_stats["mean"]), motion["mean"])
    wav = (0.3 * np.sin(np.arange(8000) * 2 * np.pi * 150 / 16000)).astype(np.float32)
    codes, _ = animator.motion_codes(np.zeros((64, 64, 3), np.uint8), wav, ddim_steps=3)
    bound = np.abs(motion["mean"]) + animator.clip_x0 * motion["std"] * animator.motion_scale
    assert codes.shape == (12, config.stage1.motion_dim)
    assert np.all(np.abs(np.asarray(codes)) <= bound + 1e-4)  # x0 clamp in normalised units

    # Samples: hint | ground truth | generated, per example a video in [0, 1].
    task = task_lib.build(config)
    batch = next(task.data("test", global_batch_size=2, seed=0, process_index=0, process_count=1))
    video = jax.jit(task.samples)(state.params, state.model_state, batch, jax.random.PRNGKey(0))[
        "speech_driven"
    ]
    assert video.shape == (2, config.data.num_frames - 1, 64, 3 * 64, 3)
    assert float(video.min()) >= 0.0 and float(video.max()) <= 1.0


def test_missing_stage1_is_a_clear_error(synthetic_64):
    c = cfg_lib.get_config("tiny")
    c.data.data_dir = synthetic_64
    with pytest.raises(ValueError, match="stage1.workdir"):
        task_lib.build(c).frozen_sources()


def test_a_stage1_of_another_architecture_is_a_clear_error(synthetic_64, stage1_weights, tmp_path):
    config = tiny_config(synthetic_64, stage1_weights, steps=1)
    config.stage1.width = 2 * config.stage1.width  # the weights are the tiny width
    with pytest.raises(ConfigError) as e:
        helpers.one_device_train(config, str(tmp_path / "run"))
    message = str(e.value)
    assert "frozen group 'stage1'" in message and stage1_weights in message
    kernel = "['dec']['convs_1']['conv']['kernel']: (3, 3, 32, 32) but the model has (3, 3, 64, 64)"
    assert kernel in message


def test_motion_normalisation_round_trips_and_standardises():
    rng = np.random.default_rng(0)
    codes = rng.normal([-4.0, 0.5, 2.0], [0.3, 1.2, 0.01], size=(4, 50, 3)).astype(np.float32)
    stats = task_lib.code_statistics(codes)
    np.testing.assert_allclose(stats["mean"], codes.reshape(-1, 3).mean(0), rtol=1e-5)
    x0 = np.asarray(a2m_model.to_diffusion(codes, stats, 0.5))
    np.testing.assert_allclose(x0.reshape(-1, 3).std(0), 2.0, rtol=1e-4)  # unit std / 0.5
    np.testing.assert_allclose(a2m_model.from_diffusion(x0, stats, 0.5), codes, atol=1e-5)
    # Without statistics: the release's plain scaling.
    np.testing.assert_allclose(a2m_model.to_diffusion(codes, None, 0.5), codes / 0.5)
    assert task_lib.code_statistics(np.ones((10, 2)))["std"].min() == 1e-3


def _dir_bytes(path):
    import os

    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def test_checkpoints_hold_no_stage1_and_resume_rebuilds_it_bitwise(
    synthetic_64, stage1_weights, tmp_path
):
    """A stage-2 checkpoint holds what stage 2 trains plus a record of the stage-1 source;
    a resumed run reloads stage 1 from it and continues exactly like an uninterrupted one;
    a missing or changed source is a one-line error naming it."""
    import json
    import os
    import shutil

    from jaxtalk.errors import InputError
    from jaxtalk.train import checkpoints
    from tests.train.helpers import saved_state

    source = str(tmp_path / "stage1.safetensors")
    shutil.copy(stage1_weights, source)

    def config(source, steps):  # no evaluation: these runs check what is saved and restored
        c = tiny_config(synthetic_64, source, steps)
        c.eval.every_steps = 0
        return c

    straight = helpers.one_device_train(config(source, 2), str(tmp_path / "straight"))
    workdir = str(tmp_path / "run")
    helpers.one_device_train(config(source, 1), workdir)
    flat = saved_state(workdir, 1)
    assert not any(k.startswith("params/stage1") for k in flat) and "params/model" in "".join(flat)
    record = checkpoints.frozen_record(workdir, 1)
    assert record["stage1"]["source"] == {"weights": source} and record["stage1"]["fingerprint"]
    stage1_bytes = os.path.getsize(source)
    assert _dir_bytes(os.path.join(workdir, "checkpoints")) < stage1_bytes

    c = config("", 2)  # the recorded source is used, not the config
    c.checkpoint.every_steps = 1
    resumed = helpers.one_device_train(c, workdir)
    for a, b in zip(jax.tree.leaves(straight["state"]), jax.tree.leaves(resumed["state"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Readers (export, animate, the probe) get stage 1 from the same source.
    s1 = checkpoints.group_variables(workdir, "stage1/model")["params"]
    from jaxtalk.convert import weights

    for a, b in zip(jax.tree.leaves(weights.load(source)["params"]), jax.tree.leaves(s1)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert "stage1" in checkpoints.eval_variables(workdir)["params"]

    c.total_steps = 3
    params = weights.load(source)
    weights.save(
        {
            "params": jax.tree.map(lambda x: np.asarray(x) + 1, params["params"]),
            "model_config": params["model_config"],
        },
        source,
    )
    with pytest.raises(checkpoints.FrozenSourceError, match="stage1.*fingerprint") as e:
        helpers.one_device_train(c, workdir)
    assert isinstance(e.value, InputError) and "\n" not in str(e.value)
    os.remove(source)
    with pytest.raises(checkpoints.FrozenSourceError, match=f"stage1.*{json.dumps(source)}"):
        helpers.one_device_train(c, workdir)
