"""LIA / AniTalker stage-1 / StyleGAN2-D modules: sizes, forward, modes, gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.lia.discriminator import Discriminator, minibatch_stddev
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.train.grouped_init import grouped_initializers

TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)


def n_params(tree):
    return int(sum(np.prod(v.shape) for v in jax.tree_util.tree_leaves(tree)))


def shapes(model, *args):
    return nn.unbox(eval_shape_init(model.init, jax.random.PRNGKey(0), *args))["params"]


def test_full_size_parameter_counts_match_the_release():
    x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
    lia = shapes(LIAGenerator(), x, x)
    assert n_params(lia) == 45_116_317
    assert n_params(lia["enc"]) == 22_696_532 and n_params(lia["dec"]) == 22_419_785
    assert "to_rgb1" in lia["dec"]  # unused in the forward pass, kept for exact export
    assert n_params(shapes(AniTalkerMotion(), x, x)) == 46_923_173
    assert n_params(shapes(Discriminator(256), x)) == 24_001_089


def test_kernels_carry_logical_axes():
    x = jnp.zeros((1, 32, 32, 3))
    boxed = eval_shape_init(LIAGenerator(**TINY).init, jax.random.PRNGKey(0), x, x)["params"]
    specs = nn.get_partition_spec(boxed)
    assert tuple(specs["enc"]["net_app"]["convs_1"]["conv1"]["conv"]["kernel"]) == (
        None,
        None,
        "conv_in",
        "conv_out",
    )
    assert tuple(specs["enc"]["fc_0"]["kernel"]) == ("embed", "mlp")


@pytest.fixture(scope="module")
def tiny_lia():
    model = LIAGenerator(**TINY)
    rng = np.random.default_rng(0)
    src, drv, start = (
        jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)) for _ in range(3)
    )
    variables = jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), src, drv)
    return model, nn.unbox(variables), src, drv, start


def test_lia_forward_shapes_modes_and_methods(tiny_lia):
    model, v, src, drv, start = tiny_lia
    out = jax.jit(model.apply)(v, src, drv)
    assert out["image"].shape == (2, 32, 32, 3) and out["flow"].shape == (2, 32, 32, 2)
    assert out["mask"].shape == (2, 32, 32, 1)
    assert all(np.all(np.isfinite(np.asarray(a))) for a in jax.tree_util.tree_leaves(out))
    assert np.all(np.asarray(out["mask"]) > 0) and np.all(np.asarray(out["mask"]) < 1)
    # the pieces a train step drives give the same result as the forward pass
    enc = model.apply(v, src, method="encode_source")
    alpha = model.apply(v, drv, method="encode_motion")
    assert [f.shape[1] for f in enc["feats"]] == [8, 16, 32]
    again = model.apply(v, enc["wa"], enc["feats"], alpha, method="render")
    np.testing.assert_allclose(np.asarray(again["image"]), np.asarray(out["image"]), atol=1e-4)
    # relative mode: wa + D(a) - D(a_start) + D(a_src); equals absolute when start == source
    a_start = model.apply(v, start, method="encode_motion")
    rel = model.apply(v, src, drv, a_start)
    assert np.abs(np.asarray(rel["image"]) - np.asarray(out["image"])).max() > 1e-4
    same = model.apply(v, src, drv, enc["alpha"])
    np.testing.assert_allclose(np.asarray(same["image"]), np.asarray(out["image"]), atol=1e-4)
    # the no-driving forward renders wa alone
    none = model.apply(v, src)
    assert none["image"].shape == (2, 32, 32, 3)


def test_direction_basis_orthonormal_and_differentiable(tiny_lia):
    model, v, src, drv, _ = tiny_lia
    q = np.asarray(model.apply(v, method="directions"))
    assert q.shape == (32, 5)
    np.testing.assert_allclose(q.T @ q, np.eye(5), atol=1e-4)

    def loss(params):
        return jnp.mean(jnp.abs(model.apply({"params": params}, src, drv)["image"] - drv))

    grads = jax.jit(jax.grad(loss))(v["params"])
    g = np.asarray(grads["dec"]["direction"]["weight"])
    assert np.all(np.isfinite(g)) and np.abs(g).sum() > 0
    assert np.abs(np.asarray(grads["enc"]["fc_4"]["kernel"])).sum() > 0
    assert np.abs(np.asarray(grads["dec"]["to_rgb1"]["bias"])).sum() == 0  # unused, as released


def test_grouped_and_scaled_input_impls_agree(tiny_lia):
    model, v, src, drv, _ = tiny_lia
    grouped = LIAGenerator(**TINY, impl="grouped")
    np.testing.assert_allclose(
        np.asarray(grouped.apply(v, src, drv)["image"]),
        np.asarray(model.apply(v, src, drv)["image"]),
        atol=1e-4,
    )


def test_bfloat16_compute_runs():
    model = LIAGenerator(**TINY, dtype=jnp.bfloat16)
    x = jnp.zeros((1, 32, 32, 3))
    v = nn.unbox(jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), x, x))
    out = jax.jit(model.apply)(v, x, x)
    assert out["image"].dtype == jnp.bfloat16 and out["grid"].dtype == jnp.float32
    assert jax.tree_util.tree_leaves(v)[0].dtype == jnp.float32


def test_anitalker_encode_render_and_latents():
    cfg = dict(TINY, style_dim=64)  # every stage but the last is projected by HAL
    model = AniTalkerMotion(**cfg)
    rng = np.random.default_rng(1)
    src, drv = (
        jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)) for _ in range(2)
    )
    v = nn.unbox(jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), src, drv))
    p = v["params"]["enc"]
    assert sorted(p["hal"]) == ["fc1", "fc2", "fc3", "fc4", "ws"] and p["hal"]["ws"].shape == (5,)
    assert sorted(p["net_decouping"]) == [
        "identity_excluded_net",
        "identity_net",
        "identity_net_density",
    ]
    out = jax.jit(model.apply)(v, src, drv)
    assert out["image"].shape == (2, 32, 32, 3)
    for side in ("source", "driving"):
        assert out[side]["id_emb"].shape == (2, 64) and out[side]["alpha"].shape == (2, 5)
    e = model.apply(v, drv, method="encode")
    np.testing.assert_allclose(
        np.asarray(e["alpha"]), np.asarray(out["driving"]["alpha"]), atol=1e-4
    )
    s = model.apply(v, src, method="encode")
    r = model.apply(v, s["h"], s["feats"], e["alpha"], method="render")
    np.testing.assert_allclose(np.asarray(r["image"]), np.asarray(out["image"]), atol=1e-4)
    # the density net reads the identity latent (as released), not h
    dens = model.apply(
        v, s["id_emb"], method=lambda m, x: m.enc.net_decouping.identity_net_density(x)
    )
    np.testing.assert_allclose(np.asarray(dens), np.asarray(s["id_density_emb"]), atol=1e-4)


def test_discriminator_and_minibatch_stddev():
    x = np.random.default_rng(0).standard_normal((8, 4, 4, 3)).astype(np.float32)
    got = np.asarray(minibatch_stddev(jnp.asarray(x), 4))
    # the release: view(group, -1, ...) -> groups are {b, b + 2, b + 4, b + 6}
    y = x.reshape(4, 2, 4, 4, 3)
    std = np.sqrt(y.var(0) + 1e-8).mean(axis=(1, 2, 3))
    assert got.shape == (8, 4, 4, 4)
    np.testing.assert_allclose(got[:, 0, 0, 3], np.tile(std, 4), rtol=1e-5)
    np.testing.assert_array_equal(got[..., :3], x)
    d = Discriminator(32, width=1 / 16)
    img = jnp.zeros((4, 32, 32, 3))
    v = jax.jit(grouped_initializers(d.init))(jax.random.PRNGKey(0), img)
    assert jax.jit(d.apply)(v, img).shape == (4, 1)


def test_flow_init_scale_starts_from_the_identity_warp_with_the_same_parameters():
    rng = np.random.default_rng(1)
    src, drv = (
        jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)) for _ in range(2)
    )
    flows = {}
    for scale in (1.0, 0.01):
        model = AniTalkerMotion(**TINY, flow_init_scale=scale)
        v = nn.unbox(jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), src, drv))
        flows[scale] = np.abs(np.asarray(model.apply(v, src, drv)["flow"])).max()
        kernels = {k: v["params"]["dec"][f"to_flows_{k}"]["conv"]["kernel"] for k in range(3)}
        assert all(0.3 * scale < np.std(np.asarray(x)) < 3 * scale for x in kernels.values())
    assert n_params(shapes(AniTalkerMotion(**TINY, flow_init_scale=0.01), src, drv)) == n_params(
        shapes(AniTalkerMotion(**TINY), src, drv)
    )
    # the release's init warps by a sizeable part of the image; the small init barely warps
    assert flows[1.0] > 0.2 and flows[0.01] < 0.05, flows


def test_hal_deepest_logit_starts_with_the_deepest_stage_and_keeps_the_parameters():
    x = jnp.zeros((1, 32, 32, 3))

    def hal_weights(model):  # the whole init traced, only these compiled (XLA drops the rest)
        init = lambda rng: nn.unbox(model.init(rng, x, x))["params"]["enc"]["hal"]["ws"]  # noqa: E731
        return np.asarray(jax.jit(init)(jax.random.PRNGKey(0)))

    equal, deep = AniTalkerMotion(**TINY), AniTalkerMotion(**TINY, hal_deepest_logit=6.0)
    np.testing.assert_array_equal(hal_weights(equal), np.zeros(5))
    np.testing.assert_array_equal(ws := hal_weights(deep), [0, 0, 0, 0, 6])
    assert shapes(equal, x, x) == shapes(deep, x, x)
    assert float(jax.nn.softmax(ws)[-1]) > 0.95
