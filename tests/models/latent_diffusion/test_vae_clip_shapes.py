"""AutoencoderKL and the CLIP image tower: exact sizes at full scale (through
jax.eval_shape only), tiny forward shapes, the posterior's arithmetic, the logical axis
names, CLIP's preprocessing against transformers' CLIPImageProcessor."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import clip_vision as clip_convert
from jaxtalk.convert import sd_vae
from jaxtalk.models.latent_diffusion import clip_vision as C
from jaxtalk.models.latent_diffusion import vae as V
from jaxtalk.models.param_hook import eval_shape_init


def random_params(model, *inputs, seed=0, scale=0.1):
    """Params shaped as `model.init` makes them, filled from numpy (jitting the
    initialisers would cost far more than the test's forward)."""
    shapes = nn.unbox(eval_shape_init(model.init, jax.random.PRNGKey(0), *inputs))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: jnp.asarray(rng.standard_normal(s.shape) * scale, s.dtype), shapes
    )


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_full_vae_size_and_shapes():
    model = V.AutoencoderKL(V.SD_VAE)
    images = jax.ShapeDtypeStruct((2, 512, 512, 3), jnp.float32)
    variables = eval_shape_init(model.init, jax.random.PRNGKey(0), images)
    params = nn.unbox(variables)["params"]
    assert _count(params) == 83_653_863
    assert len(jax.tree.leaves(params)) == len(sd_vae.rules_for(V.SD_VAE)) == 248
    posterior = jax.eval_shape(
        lambda v, x: model.apply(v, x, method=model.encode), variables, images
    )
    assert posterior.mean.shape == posterior.logvar.shape == (2, 64, 64, 4)
    decoded = jax.eval_shape(
        lambda v, z: model.apply(v, z, method=model.decode), variables, posterior.mean
    )
    assert decoded.shape == (2, 512, 512, 3)
    assert V.SD_VAE.scaling_factor == V.LATENT_SCALE == 0.18215
    assert V.downsampling_factor(V.SD_VAE) == 8


def test_every_vae_kernel_has_logical_axes():
    boxed = jax.eval_shape(
        V.AutoencoderKL(V.TINY_VAE).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3))
    )["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    kernels = [x for x in leaves if len(x.names) == 4]
    assert kernels and all(x.names[2:] == ("conv_in", "conv_out") for x in kernels)


def test_tiny_vae_runs_and_samples():
    model = V.AutoencoderKL(V.TINY_VAE)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 12, 10, 3))
    variables = random_params(model, x)

    @jax.jit
    def run(variables, x):
        posterior = model.apply(variables, x, method=model.encode)
        samples = [posterior.sample(jax.random.PRNGKey(k)) for k in (2, 3)]
        decoded = model.apply(variables, samples[0], method=model.decode)
        latents = model.apply(variables, x, jax.random.PRNGKey(2), method=model.encode_latents)
        again = model.apply(variables, latents, method=model.decode_latents)
        return posterior, samples, decoded, latents, again

    posterior, (a, b), decoded, latents, again = run(variables, x)
    np.testing.assert_allclose(latents, a * V.LATENT_SCALE, rtol=1e-6)
    np.testing.assert_allclose(again, decoded, rtol=1e-4, atol=1e-5)
    reconstructed = jax.eval_shape(model.apply, variables, x, jax.random.PRNGKey(4))
    assert posterior.mean.shape == (2, 6, 5, 4)  # odd sizes: the (0, 1) pad rounds up
    assert a.shape == posterior.mean.shape and not np.allclose(a, b)
    np.testing.assert_allclose(
        (a - posterior.mean) / posterior.std,
        jax.random.normal(jax.random.PRNGKey(2), a.shape),
        rtol=1e-4,
        atol=1e-4,
    )
    assert decoded.shape == reconstructed.shape == (2, 12, 10, 3)


def test_posterior_clamps_logvar_and_kl():
    moments = jnp.concatenate(
        [jnp.full((1, 2, 2, 1), 0.5), jnp.asarray([[[[-40.0], [25.0]], [[0.0], [1.0]]]])], -1
    )
    p = V.DiagonalGaussian.from_moments(moments)
    np.testing.assert_array_equal(p.logvar[0, :, :, 0], [[-30.0, 20.0], [0.0, 1.0]])
    lv = np.array([-30.0, 20.0, 0.0, 1.0])
    want = 0.5 * np.sum(0.25 + np.exp(lv) - 1 - lv)
    np.testing.assert_allclose(p.kl(), [want], rtol=1e-6)


def test_full_clip_size_and_outputs():
    model = C.CLIPVisionModelWithProjection(C.CLIP_VIT_L14)
    pixels = jax.ShapeDtypeStruct((3, 224, 224, 3), jnp.float32)
    variables = eval_shape_init(model.init, jax.random.PRNGKey(0), pixels)
    params = nn.unbox(variables)["params"]
    assert _count(params) == 303_966_208
    assert len(jax.tree.leaves(params)) == len(clip_convert.rules_for(C.CLIP_VIT_L14)) == 392
    out = jax.eval_shape(model.apply, variables, pixels)
    assert out.image_embeds.shape == (3, 768)
    assert out.last_hidden_state.shape == (3, 257, 1024)
    assert out.token_embeds.shape == (3, 257, 768)


def test_clip_token_option_and_pooled_token():
    cfg = C.TINY_CLIP
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 28, 28, 3))
    normed = C.CLIPVisionModelWithProjection(cfg)
    raw = C.CLIPVisionModelWithProjection(cfg, token_post_layernorm=False)
    variables = random_params(normed, x)
    a, b = jax.jit(lambda v, x: (normed.apply(v, x), raw.apply(v, x)))(variables, x)
    # the class token projected after post_layernorm is image_embeds (MegActor's tokens)
    np.testing.assert_allclose(a.token_embeds[:, 0], a.image_embeds, rtol=1e-5, atol=1e-6)
    kernel = variables["params"]["visual_projection"]["kernel"]
    np.testing.assert_allclose(b.token_embeds, a.last_hidden_state @ kernel, rtol=1e-5, atol=1e-5)
    assert not np.allclose(a.token_embeds, b.token_embeds)
    with pytest.raises(ValueError, match="positions"):
        jax.eval_shape(normed.apply, variables, jnp.zeros((1, 35, 35, 3)))


def test_clip_preprocess_matches_transformers():
    transformers = pytest.importorskip("transformers")
    processor = transformers.CLIPImageProcessor()  # AniPortrait's: the defaults
    rng = np.random.default_rng(0)
    for shape in ((300, 400, 3), (512, 512, 3), (231, 180, 3)):
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        want = processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)
        got = C.preprocess(image)[0]
        assert got.shape == (224, 224, 3)
        np.testing.assert_allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        C.preprocess(np.zeros((8, 8, 3), np.float32))


def test_float64_stays_float64_and_bfloat16_runs():
    from tests.models.test_float64 import not_float64

    vae_x = np.zeros((1, 8, 8, 3))
    clip_x = np.zeros((1, 28, 28, 3))
    with jax.enable_x64(True):
        f64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)
        vae = V.AutoencoderKL(V.TINY_VAE, **f64)
        clip = C.CLIPVisionModelWithProjection(C.TINY_CLIP, **f64)
        for model, x in ((vae, vae_x), (clip, clip_x)):
            params = random_params(model, x)
            assert not_float64(lambda p, x: model.apply(p, x), params, jnp.asarray(x)) == []
    bf16 = C.CLIPVisionModelWithProjection(C.TINY_CLIP, dtype=jnp.bfloat16)
    out = jax.eval_shape(bf16.apply, random_params(bf16, clip_x), clip_x.astype(np.float32))
    assert out.image_embeds.dtype == out.token_embeds.dtype == jnp.bfloat16
    bf16 = V.AutoencoderKL(V.TINY_VAE, dtype=jnp.bfloat16)
    assert jax.eval_shape(bf16.apply, random_params(bf16, vae_x), vae_x).dtype == jnp.bfloat16
