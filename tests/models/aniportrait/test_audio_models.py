"""Audio2Mesh / Audio2Pose: released parameter counts (through jax.eval_shape), the
biased causal mask and position table against hand-computed values, and at tiny widths:
the zero-initialised mesh head, teacher forcing = the cached rollout on its own poses,
dropout only in training, the length limit."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models.aniportrait.audio2mesh import Audio2Mesh
from jaxtalk.models.aniportrait.audio2pose import (
    Audio2Pose,
    alibi_slopes,
    causal_alibi_bias,
    rollout,
    sinusoid_table,
)
from jaxtalk.models.audio import hubert as H
from jaxtalk.models.param_hook import eval_shape_init

TINY_AUDIO = H.HubertConfig(
    hidden_size=16,
    num_layers=1,
    num_heads=2,
    intermediate_size=16,
    conv_dim=(8,) * 7,
    pos_conv_kernel=4,
    pos_conv_groups=2,
    conv_bias=False,
    feat_extract_norm="group",
    stable_layer_norm=False,
)
TINY_POSE = dict(audio=TINY_AUDIO, latent_dim=16, num_layers=2, num_heads=4, ffn_dim=32, num_ids=3)
WAV = np.random.default_rng(0).standard_normal((2, 6400)).astype(np.float32)
FRAMES = 10


def count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_released_parameter_counts():
    wav = jnp.zeros((1, 16000))
    mesh = eval_shape_init(lambda: Audio2Mesh().init(jax.random.PRNGKey(0), wav, 30))
    pose = jax.eval_shape(
        lambda: Audio2Pose().init(
            jax.random.PRNGKey(0), wav, jnp.zeros((1, 30, 6)), jnp.zeros((1,), jnp.int32)
        )
    )
    assert count(nn.unbox(mesh)["params"]) == 95_485_692
    assert count(nn.unbox(pose)["params"]) == 120_058_758
    assert set(nn.unbox(pose)) == {"params"}  # the position table is not a parameter


def test_alibi_slopes_and_causal_bias():
    np.testing.assert_array_equal(alibi_slopes(8), 2.0 ** -np.arange(1, 9))
    # Not a power of two: the 4-head set plus every other slope of the 8-head set.
    np.testing.assert_array_equal(alibi_slopes(6), [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3])
    bias = np.asarray(causal_alibi_bias(8, np.arange(4), 4))
    assert bias.shape == (8, 4, 4)
    np.testing.assert_array_equal(
        bias[0],
        [
            [0, -np.inf, -np.inf, -np.inf],
            [-0.5, 0, -np.inf, -np.inf],
            [-1.0, -0.5, 0, -np.inf],
            [-1.5, -1.0, -0.5, 0],
        ],
    )
    np.testing.assert_array_equal(bias[7, 3], -(2.0**-8) * np.array([3, 2, 1, 0]))
    # One row at a traced position is the same row of the full matrix.
    row = jax.jit(lambda i: causal_alibi_bias(8, i[None], 4))(jnp.asarray(2))
    np.testing.assert_array_equal(np.asarray(row)[:, 0], bias[:, 2])


def test_position_table():
    table = sinusoid_table(600, 512)
    assert table.shape == (600, 512) and table.dtype == np.float32
    np.testing.assert_allclose(
        table[7, 0::2], np.sin(7 * 10000.0 ** (-np.arange(0, 512, 2) / 512)), atol=1e-5
    )
    np.testing.assert_allclose(
        table[7, 1::2], np.cos(7 * 10000.0 ** (-np.arange(0, 512, 2) / 512)), atol=1e-5
    )


def test_mesh_head_starts_at_zero_offsets_and_can_average_states():
    model = Audio2Mesh(TINY_AUDIO, latent_dim=8)
    variables = model.init(jax.random.PRNGKey(0), WAV, FRAMES)
    out = model.apply(variables, WAV, FRAMES)
    assert out.shape == (2, FRAMES, 1404) and not np.any(np.asarray(out))  # zero-init out_fn
    params = jax.tree.map(lambda x: x + 0.1, nn.unbox(variables["params"]))
    last = model.apply({"params": params}, WAV, FRAMES)
    mean = Audio2Mesh(TINY_AUDIO, latent_dim=8, only_last_features=False).apply(
        {"params": params}, WAV, FRAMES
    )
    states = H.HubertModel(TINY_AUDIO).apply(
        {"params": params["audio_encoder"]}, WAV, frames=FRAMES
    )
    head = lambda x: (
        (x @ params["in_fn"]["kernel"] + params["in_fn"]["bias"])
        @ params[  # noqa: E731
            "out_fn"
        ]["kernel"]
        + params["out_fn"]["bias"]
    )
    np.testing.assert_allclose(last, head(states[-1]), atol=1e-5)
    np.testing.assert_allclose(mean, head(sum(states) / len(states)), atol=1e-5)


@pytest.fixture(scope="module")
def pose_model():
    model = Audio2Pose(**TINY_POSE)
    variables = model.init(
        jax.random.PRNGKey(1), WAV, jnp.zeros((2, FRAMES, 6)), jnp.zeros((2,), jnp.int32)
    )
    return model, {"params": nn.unbox(variables["params"])}


def test_rollout_is_teacher_forcing_on_its_own_poses(pose_model):
    model, variables = pose_model
    identity = jnp.array([0, 2])
    poses = jax.jit(lambda v, w: rollout(model, v, w, FRAMES, identity))(variables, WAV)
    assert poses.shape == (2, FRAMES, 6)
    forced = model.apply(variables, WAV, poses, identity)
    np.testing.assert_allclose(forced, poses, atol=1e-5)
    # The poses move over time and depend on the identity.
    assert float(jnp.abs(poses[:, 1:] - poses[:, :1]).max()) > 1e-3
    other = rollout(model, variables, WAV, FRAMES, jnp.array([1, 1]))
    assert float(jnp.abs(other - poses).max()) > 1e-3
    # Teacher forcing on other poses gives other predictions after the first frame only.
    shifted = model.apply(variables, WAV, poses + 1.0, identity)
    np.testing.assert_allclose(shifted[:, 0], poses[:, 0], atol=1e-5)
    assert float(jnp.abs(shifted[:, 1:] - poses[:, 1:]).max()) > 1e-3


def test_dropout_only_in_training(pose_model):
    model, variables = pose_model
    poses = jnp.ones((2, FRAMES, 6))
    identity = jnp.array([0, 1])
    a = model.apply(variables, WAV, poses, identity)
    b = model.apply(variables, WAV, poses, identity)
    np.testing.assert_array_equal(a, b)
    train = model.apply(
        variables, WAV, poses, identity, train=True, rngs={"dropout": jax.random.PRNGKey(0)}
    )
    assert float(jnp.abs(train - a).max()) > 1e-4


def test_longer_than_the_position_table_is_an_error(pose_model):
    model, variables = pose_model
    short = Audio2Pose(**TINY_POSE, max_len=8)
    with pytest.raises(ValueError, match="at most 8 frames"):
        short.apply(variables, WAV, jnp.zeros((2, FRAMES, 6)), jnp.zeros((2,), jnp.int32))
