"""The stage-1 patch discriminator: FOMM's layout (parameter count by hand), torch-semantics
spectral norm (u, v outside params, updated only in training), multi-scale outputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

# Spectral norm and instance norm land with the LivePortrait models; until then this skips.
pytest.importorskip("jaxtalk.models.layers.spectral_norm")

from jaxtalk.models.liveportrait.discriminator import MultiScaleDiscriminator  # noqa: E402
from jaxtalk.models.param_hook import eval_shape_init  # noqa: E402


def _count(tree):
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nn.unbox(tree)))


def test_default_layout_parameter_count():
    d = MultiScaleDiscriminator()
    shapes = eval_shape_init(d.init, jax.random.PRNGKey(0), jnp.zeros((1, 256, 256, 3)))
    # 4x4 convs 3->128, 128->256, 256->512, 512->512 (+ bias; instance-norm affine from the
    # second block on), then a 1x1 conv 512->1
    want = (
        (16 * 3 * 128 + 128)
        + (16 * 128 * 256 + 256 + 2 * 256)
        + (16 * 256 * 512 + 512 + 2 * 512)
        + (16 * 512 * 512 + 512 + 2 * 512)
        + (512 + 1)
    )
    assert _count(shapes["params"]) == want == 6_826_369
    stats = nn.unbox(shapes["batch_stats"])["disc_1_0"]
    assert stats["down_0"]["conv"]["u"].shape == (128,)
    assert stats["down_0"]["conv"]["v"].shape == (3 * 16,)


def test_multi_scale_features_and_spectral_norm_state():
    d = MultiScaleDiscriminator(scales=(1.0, 0.5), block_expansion=8, num_blocks=3, max_features=32)
    x = jax.random.uniform(jax.random.PRNGKey(1), (2, 64, 64, 3))
    v = nn.unbox(d.init(jax.random.PRNGKey(0), x))
    out = d.apply(v, x)
    feats, logits = out[1.0]
    assert [f.shape for f in feats] == [(2, 30, 30, 16), (2, 13, 13, 32), (2, 10, 10, 32)]
    assert logits.shape == (2, 10, 10, 1) and out[0.5][1].shape == (2, 2, 2, 1)
    # eval leaves u, v alone; a training call runs one power iteration and stores it
    _, same = d.apply(v, x, mutable=["batch_stats"])
    u0 = v["batch_stats"]["disc_1_0"]["down_1"]["conv"]["u"]
    np.testing.assert_array_equal(same["batch_stats"]["disc_1_0"]["down_1"]["conv"]["u"], u0)
    _, new = d.apply(v, x, train=True, mutable=["batch_stats"])
    u1 = new["batch_stats"]["disc_1_0"]["down_1"]["conv"]["u"]
    assert float(jnp.abs(u1 - u0).max()) > 1e-3
    np.testing.assert_allclose(float(jnp.linalg.norm(u1)), 1.0, rtol=1e-5)
    # gradients reach the image (the generator learns through D)
    g = jax.grad(lambda img: d.apply(v, img)[1.0][1].sum())(x)
    assert float(jnp.abs(g).sum()) > 0
