"""AnimateDiff motion module: shapes, identity at init, frame mixing, remat, errors, and
parity with the release's module (AniPortrait's src/models/motion_module.py, run under torch
only when ANIPORTRAIT_CODE points at a checkout of Zejun-Yang/AniPortrait).

The release builds its position table in float32 (a buffer that `.double()` only widens), so
the float64 comparison gives the torch module the float64 table; the float32 one keeps the
release's own table."""

import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import mapping
from jaxtalk.convert import motion_module as convert
from jaxtalk.models.latent_diffusion.motion_module import MotionModule, position_table
from jaxtalk.models.param_hook import eval_shape_init
from jaxtalk.train.grouped_init import grouped_initializers

CODE = os.environ.get("ANIPORTRAIT_CODE")
B, F, H, W, C = 2, 5, 3, 2, 32


def _init(module, x, frames):
    return jax.jit(grouped_initializers(module.init), static_argnums=2)(
        jax.random.PRNGKey(0), x, frames
    )


def _apply(module, variables, x, frames):
    return jax.jit(module.apply, static_argnums=2)(variables, x, frames)


def _randomized(variables, seed=1, scale=0.2):
    """Every parameter replaced by a random one (proj_out included, which starts at zero)."""
    leaves, tree = jax.tree_util.tree_flatten(nn.unbox(variables))
    keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree,
        [scale * jax.random.normal(k, a.shape, a.dtype) for k, a in zip(keys, leaves)],
    )


def test_fresh_module_is_the_identity_and_shapes_hold():
    x = jax.random.normal(jax.random.PRNGKey(2), (B * F, H, W, C))
    m = MotionModule(C)
    v = _init(m, x, F)
    np.testing.assert_array_equal(_apply(m, v, x, F), x)  # proj_out is zero
    out = _apply(m, _randomized(v), x, F)
    assert out.shape == x.shape and float(jnp.abs(out - x).max()) > 0.1
    assert _apply(m, _randomized(v), x[: 2 * 3], 3).shape == (6, H, W, C)
    pe = position_table(32, C)
    np.testing.assert_allclose(
        pe[3, :4],
        [np.sin(3), np.cos(3), np.sin(3 * 1e4 ** (-2 / C)), np.cos(3 * 1e4 ** (-2 / C))],
        rtol=1e-12,
    )


def test_frames_mix_within_a_video_only():
    """Attention runs over the frames of one video: an output frame depends on the other
    frames of its video, never on another video of the batch."""
    m = MotionModule(C)
    x = jax.random.normal(jax.random.PRNGKey(3), (B * F, H, W, C))
    v = _randomized(_init(m, x, F))
    jac = jax.jit(jax.grad(lambda x: m.apply(v, x, F)[0, 0, 0, 0]))(x)  # video 0, frame 0
    per_frame = np.abs(np.asarray(jac)).reshape(B, F, -1).max(-1)
    assert np.all(per_frame[0] > 1e-4) and np.all(per_frame[1] == 0)
    # without the position table attention is permutation-equivariant over frames
    flat = MotionModule(C, position_encoding=False)
    perm = np.array([2, 0, 4, 1, 3])
    xv = x.reshape(B, F, H, W, C)
    a = _apply(flat, v, xv[:, perm].reshape(x.shape), F).reshape(B, F, H, W, C)
    b = _apply(flat, v, x, F).reshape(B, F, H, W, C)[:, perm]
    np.testing.assert_allclose(a, b, atol=1e-5)
    pos = _apply(m, v, xv[:, perm].reshape(x.shape), F).reshape(B, F, H, W, C)
    assert float(jnp.abs(pos - _apply(m, v, x, F).reshape(B, F, H, W, C)[:, perm]).max()) > 1e-3


def test_remat_gives_the_same_output_and_gradients():
    x = jax.random.normal(jax.random.PRNGKey(4), (B * F, H, W, C))
    plain, remat = MotionModule(C), MotionModule(C, remat=True)
    v = _randomized(_init(plain, x, F))
    remat_shapes = eval_shape_init(lambda r: remat.init(r, x, F), jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(nn.unbox(remat_shapes)) == jax.tree_util.tree_structure(v)
    loss = lambda m: jax.jit(jax.grad(lambda p: jnp.sum(m.apply(p, x, F) ** 2)))(v)
    np.testing.assert_allclose(_apply(remat, v, x, F), _apply(plain, v, x, F), atol=1e-6)
    for g1, g2 in zip(
        jax.tree_util.tree_leaves(loss(plain)), jax.tree_util.tree_leaves(loss(remat))
    ):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5)


def test_bad_inputs():
    m = MotionModule(C)
    x = jnp.zeros((B * F, H, W, C))
    v = _init(m, x, F)
    with pytest.raises(ValueError, match="multiple of"):
        m.apply(v, x, 3)
    with pytest.raises(ValueError, match="takes"):
        m.apply(v, x[..., :16], F)
    with pytest.raises(ValueError, match="position table"):
        m.apply(v, jnp.zeros((33, 1, 1, C)), 33)


def test_float64_stays_float64():
    with jax.enable_x64(True):
        m = MotionModule(C, dtype=jnp.float64, param_dtype=jnp.float64)
        x = jnp.asarray(np.random.RandomState(0).randn(B * F, H, W, C))
        v = _randomized(_init(m, x, F))
        assert _apply(m, v, x, F).dtype == jnp.float64


# ----------------------------------------------------------------------------- release parity


def _release_module(torch, max_len=32):
    sys.path.insert(0, CODE)
    from src.models.motion_module import VanillaTemporalModule

    return VanillaTemporalModule(
        C,
        num_attention_heads=8,
        num_transformer_block=1,
        attention_block_types=("Temporal_Self", "Temporal_Self"),
        temporal_position_encoding=True,
        temporal_position_encoding_max_len=max_len,
        zero_initialize=True,
    ).eval()


@pytest.mark.skipif(not CODE, reason="ANIPORTRAIT_CODE (a Zejun-Yang/AniPortrait checkout) not set")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_parity_with_the_release(dtype):
    torch = pytest.importorskip("torch")
    pytest.importorskip("diffusers")
    pytest.importorskip("einops")
    tdtype = getattr(torch, dtype)
    ref = _release_module(torch)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in ref.named_parameters():  # every tensor random, proj_out included
            p.copy_(
                0.1 * torch.randn(p.shape, generator=gen)
                + (1.0 if "norm" in name and name.endswith("weight") else 0.0)
            )
    ref = ref.to(tdtype)
    state = {k: v.detach().to(torch.float64).numpy() for k, v in ref.state_dict().items()}
    pe_keys = convert.position_keys("")
    np.testing.assert_allclose(state[pe_keys[0]][0], position_table(32, C), atol=2e-6)
    if dtype == "float64":  # the release's table is float32 even in a double model
        with torch.no_grad():
            for k in pe_keys:
                ref.get_submodule(k.rsplit(".", 1)[0]).pe.copy_(
                    torch.from_numpy(position_table(32, C)[None])
                )
    params_state = {k: v for k, v in state.items() if k not in pe_keys}
    m = MotionModule(C, dtype=getattr(jnp, dtype), param_dtype=getattr(jnp, dtype))
    with jax.enable_x64(dtype == "float64"):
        shapes = nn.unbox(
            jax.eval_shape(
                lambda r: m.init(r, jnp.zeros((B * F, H, W, C)), F), jax.random.PRNGKey(0)
            )
        )
        params = mapping.to_params(
            params_state, convert.module_rules("", "params"), shapes, dtype=np.dtype(dtype)
        )
        x = np.random.RandomState(1).randn(B, C, F, H, W)
        with torch.no_grad():
            want = ref(torch.from_numpy(x).to(tdtype), None, None).to(torch.float64).numpy()
        x_folded = x.transpose(0, 2, 3, 4, 1).reshape(B * F, H, W, C)
        got = np.asarray(m.apply(params, jnp.asarray(x_folded, dtype), F), np.float64)
    want = want.transpose(0, 2, 3, 4, 1).reshape(B * F, H, W, C)
    err = float(np.max(np.abs(got - want)))
    rel = float(np.linalg.norm(got - want) / np.linalg.norm(want))
    top = float(np.abs(want).max())
    print(
        f"\nmotion module {dtype}: max |diff| {err:.2e} (max |out| {top:.1f}), relative L2 {rel:.2e}"
    )
    if dtype == "float64":
        assert err < 1e-9, err
    else:
        assert err < 1e-5 and rel < 1e-5, (err, rel)
    assert float(np.abs(want - x_folded).max()) > 0.1  # the module did something
