"""The weight cache (jaxtalk/models/layers/weight_cache.py): inference computes weight-only
arrays once per model and renders the same frames with them; init never creates one."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.inference.video_driven import MotionAnimator
from jaxtalk.models.layers.equalized import EqualConv2d
from jaxtalk.models.layers.weight_cache import WEIGHT_CACHE, weight_cache
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.train.grouped_init import grouped_initializers

TINY = dict(size=32, style_dim=32, motion_dim=5, width=1 / 16)


def _setup():
    model = LIAGenerator(**TINY)
    rng = np.random.default_rng(0)
    src, drv = (jnp.asarray(rng.uniform(-1, 1, (2, 32, 32, 3)), jnp.float32) for _ in "ab")
    variables = nn.unbox(
        jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(0), src[:1], drv[:1])
    )
    return model, variables, src, drv


def test_the_cache_holds_each_demodulated_conv_and_renders_the_same_frames():
    model, variables, src, drv = _setup()
    assert set(variables) == {"params"}  # init makes no cache
    cache = weight_cache(model, variables, src[:1], drv[:1])
    paths = {
        "/".join(k.key for k in path) for path, _ in jax.tree_util.tree_leaves_with_path(cache)
    }
    # demodulation's tap sums: the StyledConvs (the constant input's conv1, two per
    # resolution 8..32), not the undemodulated ToRGB / ToFlow convs
    assert {p for p in paths if p.endswith("tap_energy")} == {"dec/conv1/conv/tap_energy"} | {
        f"dec/convs_{i}/conv/tap_energy" for i in range(6)
    }
    # every equalized or modulated layer's scaled kernel (but to_rgb1's, which the forward
    # pass never runs), and the motion basis
    kernels = {
        "/".join(k.key for k in path)
        for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"])
        if path[-1].key == "kernel" and path[1].key != "to_rgb1"
    }
    assert {p for p in paths if p.endswith("kernel")} == kernels
    assert "dec/direction/basis" in paths
    kernel = variables["params"]["dec"]["convs_0"]["conv"]["kernel"]
    np.testing.assert_allclose(
        cache["dec"]["convs_0"]["conv"]["tap_energy"],
        np.sum(np.asarray(kernel, np.float64) ** 2, axis=(0, 1)) / (kernel.shape[2] * 9),
        rtol=1e-5,
    )

    def frames(v):
        return jax.jit(lambda v: model.apply(v, src, drv)["image"])(v)

    # the same frames (the motion basis's QR, in its own program, rounds a little apart:
    # up to 1.3e-5 seen with the tests' older kernel emitter)
    np.testing.assert_allclose(
        frames({**variables, WEIGHT_CACHE: cache}), frames(variables), rtol=0, atol=1e-4
    )
    # the cache is read, not recomputed: another model's cache changes the frames
    other = nn.unbox(
        jax.jit(grouped_initializers(model.init))(jax.random.PRNGKey(1), src[:1], drv[:1])
    )
    stale = weight_cache(model, other, src[:1], drv[:1])
    assert (
        float(jnp.abs(frames({**variables, WEIGHT_CACHE: stale}) - frames(variables)).max()) > 1e-3
    )


def test_the_video_animator_renders_like_the_model():
    model, variables, src, drv = _setup()
    animator = MotionAnimator("lia", variables, dict(TINY, kind="lia"))
    source = np.asarray((src[0] + 1) * 127.5, np.uint8)
    driving = np.asarray((drv + 1) * 127.5, np.uint8)
    state = animator.prepare(source)
    state, steps = animator.start(state, driving, mode="absolute")
    got = np.asarray(animator.drive(state, steps))
    x = lambda a: jnp.asarray(a, jnp.float32) / 127.5 - 1  # noqa: E731
    want = jax.jit(lambda v: model.apply(v, x(source[None]).repeat(2, 0), x(driving))["image"])(
        variables
    )
    np.testing.assert_allclose(got, np.asarray(want), atol=1e-4)  # other fusions


def test_a_strided_conv_by_phases_reads_its_phase_taps_from_the_cache():
    """CPU strided convs with >= 128 input channels run by phases
    (jaxtalk/models/layers/conv_kernel_grad.py); their kernels' phase slices are cached."""
    conv = EqualConv2d(16, 3, stride=2, padding=1)
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 9, 9, 128)), jnp.float32)
    variables = jax.jit(grouped_initializers(conv.init))(jax.random.PRNGKey(0), x)
    cache = weight_cache(conv, variables, x)
    taps = cache["phase_taps"]
    assert [t.shape[:2] for t in taps] == [(2, 2), (2, 1), (1, 2), (1, 1)]
    np.testing.assert_array_equal(taps[1], cache["kernel"][0::2, 1::2])
    y = jax.jit(conv.apply)(variables, x)
    np.testing.assert_allclose(
        jax.jit(conv.apply)({**variables, WEIGHT_CACHE: cache}, x), y, atol=1e-6
    )
    stale = dict(cache, phase_taps=[t * 2 for t in taps])
    np.testing.assert_allclose(
        jax.jit(conv.apply)({**variables, WEIGHT_CACHE: stale}, x), 2 * y, rtol=1e-5, atol=1e-6
    )
    # fewer channels: XLA's strided conv, no taps cached
    small = jnp.zeros((1, 9, 9, 8))
    assert set(
        weight_cache(
            conv, jax.jit(grouped_initializers(conv.init))(jax.random.PRNGKey(0), small), small
        )
    ) == {"kernel"}
