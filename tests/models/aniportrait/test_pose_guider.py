"""AniPortrait's PoseGuider: the release's size through jax.eval_shape, torch BatchNorm
semantics in train and eval mode (the reference branch moves the statistics only), and its
features feeding the inflated UNet at tiny widths."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk.models.aniportrait.pose_guider import RELEASE, TINY, PoseGuider
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.train.grouped_init import grouped_initializers


def _count(tree) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))


def _flat(tree) -> dict:
    return {"/".join(k): v for k, v in traverse_util.flatten_dict(dict(tree)).items()}


def test_release_size_and_feature_shapes():
    guider = PoseGuider(RELEASE)
    pose, ref = jnp.zeros((1, 2, 512, 512, 3)), jnp.zeros((1, 512, 512, 3))
    shapes = nn.unbox(eval_shape_init(guider.init, jax.random.PRNGKey(0), pose, ref))
    # the release's nn.Parameters (REFERENCE.md's 167,518,523), then its running statistics;
    # with the 15 num_batches_tracked counters the state_dict has 184 keys
    assert _count(shapes["params"]) == 167_518_523
    assert _count(shapes["batch_stats"]) == 10_310
    assert len(_flat(shapes["params"])) + len(_flat(shapes["batch_stats"])) + 15 == 184
    feats = jax.eval_shape(lambda v: guider.apply(v, pose, ref), shapes)
    assert [f.shape for f in feats] == [
        (1, 2, 64, 64, 320),
        (1, 2, 32, 32, 320),
        (1, 2, 16, 16, 640),
        (1, 2, 8, 8, 1280),
        (1, 2, 8, 8, 1280),
    ]
    params = _flat(shapes["params"])
    assert params["cross_attn1/proj_in/kernel"].shape == (1, 1, 320, 1408)
    assert "cross_attn4/transformer_blocks_0/attn2/to_q/kernel" not in params


@pytest.fixture(scope="module")
def tiny():
    guider = PoseGuider(TINY)
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    pose = jax.random.uniform(keys[0], (2, 3, 32, 32, 3), minval=-1, maxval=1)
    ref = jax.random.uniform(keys[1], (2, 32, 32, 3), minval=-1, maxval=1)
    variables = nn.unbox(jax.jit(grouped_initializers(guider.init))(keys[2], pose, ref))
    # non-trivial running statistics and a non-zero final_proj, so eval mode shows them
    stats = jax.tree_util.tree_map(
        lambda a: a + jax.random.uniform(keys[3], a.shape, minval=0.1, maxval=0.5),
        variables["batch_stats"],
    )
    params = variables["params"]
    fp = params["final_proj"]
    params = {
        **params,
        "final_proj": {
            "kernel": jax.random.normal(keys[3], fp["kernel"].shape) * 0.2,
            "bias": fp["bias"] + 0.1,
        },
    }
    return guider, {"params": params, "batch_stats": stats}, pose, ref


def test_init_follows_the_release():
    guider = PoseGuider(TINY)
    v = nn.unbox(
        jax.jit(grouped_initializers(guider.init))(
            jax.random.PRNGKey(0), jnp.zeros((1, 1, 16, 16, 3))
        )
    )
    assert np.all(np.asarray(v["params"]["final_proj"]["kernel"]) == 0)
    assert np.asarray(v["params"]["scale"]).tolist() == [2.0]
    first = v["batch_stats"]["conv_layers"]["layers_0"]["norm"]
    assert np.all(np.asarray(first["mean"]) == 0) and np.all(np.asarray(first["var"]) == 1)


def test_eval_mode_uses_running_stats_and_ignores_the_reference(tiny):
    guider, v, pose, ref = tiny
    with_ref = guider.apply(v, pose, ref)
    alone = guider.apply(v, pose)
    other = guider.apply(v, pose, ref * 0.5 + 0.3)
    frame = guider.apply(v, pose[:, 1])  # single frames (N, H, W, 3) -> (N, h, w, c)
    assert [f.shape for f in with_ref] == [(2, 3, 4, 4, 32), (2, 3, 2, 2, 32), (2, 3, 2, 2, 64)]
    for a, b, c, d in zip(with_ref, alone, other, frame):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_allclose(a[:, 1], d, atol=1e-5)
    # eval normalises each frame on its own: a frame's features do not depend on the others
    np.testing.assert_allclose(guider.apply(v, pose[:, :1])[-1], with_ref[-1][:, :1], atol=1e-5)
    assert float(jnp.abs(with_ref[0]).max()) > 0


def test_train_mode_batch_statistics_and_torch_running_update(tiny):
    guider, v, pose, ref = tiny
    feats, upd = guider.apply(v, pose, ref, train=True, mutable=["batch_stats"])
    feats_noref, upd_noref = guider.apply(v, pose, None, train=True, mutable=["batch_stats"])
    # the reference never reaches the output, only the statistics
    for a, b in zip(feats, feats_noref):
        np.testing.assert_array_equal(a, b)
    # train mode normalises with the batch statistics: features depend on the other frames
    assert not np.allclose(
        guider.apply(v, pose[:, :1], train=True, mutable=["batch_stats"])[0][-1], feats[-1][:, :1]
    )
    # the first BatchNorm, by hand: conv, then the running update with momentum 0.1 from the
    # unbiased variance, the pose's batch first and the reference's after it
    p = v["params"]["conv_layers"]["layers_0"]["conv"]
    old = v["batch_stats"]["conv_layers"]["layers_0"]["norm"]

    def conv_out(x):
        x = x.reshape((-1,) + x.shape[-3:])
        y = jax.lax.conv_general_dilated(
            x, p["kernel"], (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        y = np.asarray(y + p["bias"], np.float64).reshape(-1, y.shape[-1])
        return y.mean(0), y.var(0, ddof=1)

    mean, var = np.asarray(old["mean"], np.float64), np.asarray(old["var"], np.float64)
    for x in (pose, ref):
        m, s = conv_out(x)
        mean, var = 0.9 * mean + 0.1 * m, 0.9 * var + 0.1 * s
        if x is pose:
            got = upd_noref["batch_stats"]["conv_layers"]["layers_0"]["norm"]
            np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(got["var"], var, rtol=1e-5, atol=1e-6)
    got = upd["batch_stats"]["conv_layers"]["layers_0"]["norm"]
    np.testing.assert_allclose(got["mean"], mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["var"], var, rtol=1e-5, atol=1e-6)
    # every BatchNorm moved (the last level's included)
    moved = jax.tree_util.tree_map(
        lambda a, b: bool(np.any(np.asarray(a) != np.asarray(b))),
        upd["batch_stats"],
        v["batch_stats"],
    )
    assert all(jax.tree_util.tree_leaves(moved))


def test_features_feed_the_inflated_unet(tiny):
    guider, v, pose, ref = tiny
    feats = guider.apply(v, pose, ref)
    unet = ld.UNet3DConditionModel(ld.TINY)
    latents = jax.random.normal(jax.random.PRNGKey(5), (2, 3, 4, 4, 4))
    context = jnp.zeros((2, 1, ld.TINY.cross_attention_dim))
    t = jnp.array([10, 20])
    uv = jax.jit(grouped_initializers(unet.init))(jax.random.PRNGKey(6), latents, t, context)
    apply = jax.jit(unet.apply)
    out = apply(uv, latents, t, context, None, None, feats)
    plain = apply(uv, latents, t, context, None, None, [jnp.zeros_like(f) for f in feats])
    assert out.shape == latents.shape
    assert float(jnp.abs(out - plain).max()) > 1e-4
