"""aniportrait_audio (Audio2Mesh / Audio2Pose training): configs, targets and helpers, short
runs of both kinds through the loop, and the tiny recipes' learning checks on held-out
synthetic clips: Audio2Mesh's mouth opening follows the speech (and not shuffled speech),
Audio2Pose's L1 falls below a constant pose."""

import re
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from configs import aniportrait_audio as cfg_lib
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.tasks import aniportrait_audio as task_lib
from tests.tasks import helpers


def test_paper_variants_carry_the_released_architecture():
    mesh, pose = cfg_lib.get_config("mesh_paper"), cfg_lib.get_config("pose_paper")
    assert (mesh.model.kind, pose.model.kind) == ("mesh", "pose")
    assert pose.model.num_layers == 8 and pose.model.num_heads == 8 and pose.model.ffn_dim == 1024
    assert pose.model.num_ids == 100 and pose.model.max_len == 600 and pose.model.dropout == 0.1
    assert mesh.audio.hidden_size == 768 and mesh.audio.num_layers == 12 and mesh.audio.pretrained
    assert mesh.model.latent_dim == 512 and mesh.model.only_last_features
    frozen = [re.compile(p) for p in mesh.frozen]
    assert any(r.fullmatch("model/audio_encoder/feature_extractor/conv_3/kernel") for r in frozen)
    assert not any(
        r.fullmatch("model/audio_encoder/layers_0/attention/q_proj/kernel") for r in frozen
    )
    assert "face_mesh" in mesh.data.attributes and "head_pose" in pose.data.attributes
    assert not pose.model.normalize_pose  # the release's raw units, as imported weights have them
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("lips_tiny")
    # The paper model built from the config is the released one (parameter count).
    shapes = eval_shape_init(lambda: task_lib.build(pose).init(jax.random.PRNGKey(0), {})[0])
    assert sum(x.size for x in jax.tree.leaves(shapes["model"])) == 120_058_758
    assert set(shapes) == {"model", "pose_stats"}


def test_targets_and_helpers():
    rng = np.random.default_rng(0)
    mesh = rng.normal(size=(2, 5, 468, 3)).astype(np.float32)
    opening = np.array([[3.0, 1.0, 2.0, 0.5, 4.0], [0.2, 1.0, 2.0, 3.0, 4.0]], np.float32)
    mesh[:, :, 14] = mesh[:, :, 13] + opening[..., None] * np.array([0.0, 0.6, 0.8], np.float32)
    flat = jnp.asarray(mesh.reshape(2, 5, -1))
    np.testing.assert_allclose(task_lib.mouth_opening(flat), opening, rtol=1e-5)
    closed = task_lib.reference_mesh(flat, "closed")
    np.testing.assert_array_equal(closed, flat[jnp.arange(2), jnp.array([3, 0])])
    np.testing.assert_array_equal(task_lib.reference_mesh(flat, "first"), flat[:, 0])
    angles = rng.uniform(-40, 40, size=(7, 3))
    np.testing.assert_allclose(
        task_lib.euler_xyz(jnp.asarray(angles)),
        Rotation.from_euler("xyz", angles, degrees=True).as_matrix(),
        atol=1e-5,
    )
    wav = jnp.asarray(rng.normal(3.0, 5.0, size=(2, 800)))
    normed = task_lib.normalize_audio(wav)
    np.testing.assert_allclose(normed.mean(-1), 0.0, atol=1e-5)
    np.testing.assert_allclose(normed.std(-1), 1.0, atol=1e-4)
    pred, target = jnp.ones((2, 3, 6)), jnp.zeros((2, 3, 6))
    assert float(task_lib.masked_l1(pred, target, jnp.array([True, True]))) == 1.0
    assert float(task_lib.masked_l1(pred.at[1].set(9.0), target, jnp.array([True, False]))) == 1.0


def tiny_config(kind, data_dir, steps):
    c = cfg_lib.get_config(f"{kind}_tiny")
    c.data.data_dir = data_dir
    helpers.in_process_run(c, steps)
    return c


def test_mesh_tiny_runs_through_the_loop(synthetic_64, tmp_path):
    """A few steps in this process (one device); Audio2Pose runs the loop in its learning
    check below."""
    config = tiny_config("mesh", synthetic_64, steps=3)
    out = helpers.one_device_train(config, str(tmp_path / "run"))
    assert np.isfinite(out["model/loss"]) and np.isfinite(out["eval/l1"])
    assert "eval/mouth_correlation" in out
    check_samples(task_lib.build(config), out["state"].params, "mesh")


def check_samples(task, params, kind):
    batch = next(task.data("test", global_batch_size=2, seed=0, process_index=0, process_count=1))
    assert "frames" not in batch and batch["audio"].shape == (2, 16 * 640)
    ((name, video),) = jax.jit(task.samples)(params, {}, batch, jax.random.PRNGKey(0)).items()
    assert name == f"audio2{kind}" and video.shape == (2, 16, 64, 128, 3)
    assert float(video.max()) == 1.0 and float(video.min()) == 0.0


def held_out_batches(task, n=2):
    it = task.data("test", global_batch_size=8, seed=0, process_index=0, process_count=1)
    return [next(it) for _ in range(n)]


# The learning tests' training length. At 150 steps (2026-12-06) the held-out mouth
# correlation was 0.85 (shuffled audio 0.14; the test needs > 0.5 and a 0.3 lead) and the pose
# L1 0.60 of the constant pose's 0.91 (needs < 0.77); at 300, 0.87 and 0.58.
STEPS = 150


def train_tiny(kind, data_dir, workdir, steps):
    """`jaxtalk train` of the tiny recipe in a one-device process (no 8-way all-reduce
    waiting on a starved thread of a loaded 2-core machine) -> (params by group, seconds)."""
    from jaxtalk.train import checkpoints
    from tests.train.helpers import REPO, run_cli

    start = time.time()
    run_cli(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "train",
            f"--config={REPO}/configs/aniportrait_audio.py:{kind}_tiny",
            f"--workdir={workdir}",
            f"--config.data.data_dir={data_dir}",
            f"--config.total_steps={steps}",
            "--config.log.progress_bar=False",
            "--config.log.tensorboard=False",
            "--config.eval.every_steps=0",
            f"--config.checkpoint.every_steps={steps}",
            "--config.checkpoint.async_save=False",
        ],
        devices=1,
        # STEPS steps: optimised kernels pay for their longer compile
        fast_compile=False,
    )
    took = time.time() - start
    groups = ("model", "pose_stats") if kind == "pose" else ("model",)
    return {g: checkpoints.group_variables(workdir, g, steps)["params"] for g in groups}, took


def test_mesh_tiny_mouth_follows_held_out_speech(synthetic_64, tmp_path):
    """After STEPS steps the predicted inner-lip distance (reference + predicted offsets)
    correlates with the true one on the held-out speaker's clips; with the audio shuffled
    between windows it does not."""
    params, took = train_tiny("mesh", synthetic_64, str(tmp_path / "run"), STEPS)
    task = task_lib.build(tiny_config("mesh", synthetic_64, STEPS))
    predict = jax.jit(task.predict)
    real, shuffled, true = [], [], []
    for batch in held_out_batches(task):
        ref, offsets = task.mesh_targets(batch)
        other = np.roll(batch["audio"], 4, axis=0)  # windows of other times / clips
        for out, audio in ((real, None), (shuffled, other)):
            pred = predict(params, batch, audio=audio)
            out.append(task_lib.mouth_opening(ref[:, None] + pred))
        true.append(task_lib.mouth_opening(ref[:, None] + offsets))
    real, shuffled, true = (np.concatenate(x).ravel() for x in (real, shuffled, true))
    r_real, r_shuffled = np.corrcoef(real, true)[0, 1], np.corrcoef(shuffled, true)[0, 1]
    print(
        f"\nmesh_tiny: held-out mouth-opening correlation {r_real:.3f} (shuffled audio "
        f"{r_shuffled:.3f}), {len(true)} frames; training {STEPS} steps took {took:.0f} s"
    )
    assert r_real > 0.5 and r_real > abs(r_shuffled) + 0.3


def test_pose_tiny_l1_falls_below_a_constant_pose(synthetic_64, tmp_path):
    """After STEPS steps the held-out teacher-forced L1 (in the measured pose units) is below
    that of always predicting the training mean pose; the free-running rollout's is printed."""
    params, took = train_tiny("pose", synthetic_64, str(tmp_path / "run"), STEPS)
    stats = {k: np.asarray(v) for k, v in params["pose_stats"].items()}
    assert np.all(stats["std"] < 10.0) and not np.allclose(stats["std"], 1.0)  # measured
    task = task_lib.build(tiny_config("pose", synthetic_64, STEPS))
    step = jax.jit(task.eval_step)
    found = [step(params, {}, b, jax.random.PRNGKey(0)) for b in held_out_batches(task)]
    mean = {k: float(np.mean([f[k] for f in found])) for k in found[0]}
    print(
        f"\npose_tiny held-out L1 (pose / std): teacher-forced {mean['l1']:.3f}, rollout "
        f"{mean['rollout_l1']:.3f}, constant mean pose {mean['constant_l1']:.3f}; "
        f"training {STEPS} steps took {took:.0f} s"
    )
    assert mean["l1"] < 0.85 * mean["constant_l1"]
    check_samples(task, params, "pose")
