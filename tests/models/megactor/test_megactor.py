"""MegActor's networks: full-size parameter counts through jax.eval_shape (REFERENCE.md's
figures), the DrivenEncoder's start (FiLM output at zero) and shape checks, the frames'
shared GroupNorm statistics, and the tiny denoiser end to end."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk.models.latent_diffusion.resnet import ResnetBlock2D
from jaxtalk.models.megactor import MEGACTOR, TINY, DrivenEncoder, MegActor
from jaxtalk.models.megactor import driven_encoder as de
from jaxtalk.models.megactor.denoiser import widen_conv_in
from jaxtalk.models.param_hook import eval_shape_init


def _count(tree):
    flat = traverse_util.flatten_dict(tree)
    return sum(int(np.prod(v.shape)) for v in flat.values()), len(flat)


def _inputs(cfg, b=2, f=3, side=8, tokens=5, seed=0):
    rng = np.random.default_rng(seed)
    r = cfg.driven.reference_side
    px = side * cfg.driven.downsampling
    return (
        rng.standard_normal((b, f, side, side, 4)),
        np.array([3.0, 700.0][:b]),
        rng.standard_normal((b, tokens, cfg.unet.cross_attention_dim)),
        rng.uniform(size=(b, f, px, px, 3)),
        rng.uniform(size=(b, r, r, 3)),
        rng.standard_normal((b, side, side, 4)),
        rng.standard_normal((b, side, side, 4)),
        (rng.uniform(size=(b, side, side, 1)) > 0.5).astype(np.float64),
    )


def test_full_size_counts():
    shapes = [jax.ShapeDtypeStruct(np.shape(a), jnp.float32) for a in _inputs(MEGACTOR, 1, 2)]
    tree = eval_shape_init(MegActor(MEGACTOR).init, jax.random.PRNGKey(0), *shapes)
    params = nn.unbox(tree)["params"]
    unet = traverse_util.flatten_dict(params["unet"])
    motion = {k: v for k, v in unet.items() if any(p.startswith("motion_modules") for p in k)}
    unet_n, unet_keys = _count(params["unet"])
    motion_n, motion_keys = _count(motion)
    driven_n, driven_keys = _count(params["driven_encoder"])
    # REFERENCE.md: UNet + DrivenEncoder 870,047,324 (740 keys; DrivenEncoder 10,500,440);
    # v3 motion modules 417,137,600 (560 keys less 40 position tables); ReferenceNet
    # 857,066,560 (662 keys)
    assert driven_n == 10_500_440 and driven_keys == 54
    assert unet_n - motion_n + driven_n == 870_047_324
    assert unet_keys - motion_keys + driven_keys == 740
    assert (motion_n, motion_keys) == (417_137_600, 520)
    assert _count(params["reference_net"]) == (857_066_560, 662)
    assert params["unet"]["conv_in"]["kernel"].shape == (3, 3, 13, 320)
    assert "motion_modules_0" not in params["unet"]["mid_block"]


def test_driven_encoder_starts_without_the_reference_and_checks_sizes():
    enc = DrivenEncoder(de.TINY)
    rng = np.random.default_rng(1)
    driving = jnp.asarray(rng.uniform(size=(2, 3, 32, 32, 3)), jnp.float32)
    refs = jnp.asarray(rng.uniform(size=(2, 64, 64, 3)), jnp.float32)
    v = nn.unbox(enc.init(jax.random.PRNGKey(0), driving, refs))
    out = enc.apply(v, driving, refs)
    assert out.shape == (2, 3, 4, 4, 4)
    # the FiLM output layer starts at zero: another reference changes nothing
    np.testing.assert_array_equal(out, enc.apply(v, driving, refs[::-1]))
    film = v["params"]["film"]["refer_linears_out_0"]
    assert not np.any(film["kernel"]) and not np.any(film["bias"])
    # once it is trained, the reference modulates every frame of its own video only
    params = jax.tree_util.tree_map(lambda a: a, v["params"])
    params["film"]["refer_linears_out_0"]["kernel"] = jnp.full_like(film["kernel"], 0.3)
    moved = enc.apply({"params": params}, driving, refs.at[1].set(1.0 - refs[1]))
    base = enc.apply({"params": params}, driving, refs)
    assert float(jnp.abs(moved[1] - base[1]).max(axis=(1, 2, 3)).min()) > 1e-4
    np.testing.assert_array_equal(moved[0], base[0])
    # conv kernels start He-normal (std sqrt(2 / fan_in)), biases zero
    k = v["params"]["film"]["convs"]["refer_convs_16"]["kernel"]
    assert abs(float(jnp.std(k)) / np.sqrt(2 / (9 * 8)) - 1) < 0.2
    assert not np.any(v["params"]["spatial"]["spatial_conv_layers_0_2"]["bias"])
    with pytest.raises(ValueError, match=r"reference image must be \(B, 64, 64, 3\)"):
        enc.apply(v, driving, refs[:, :32, :32])
    with pytest.raises(ValueError, match="not divisible by 8"):
        enc.apply(v, driving[:, :, :28], refs)
    with pytest.raises(ValueError, match="pass the reference image"):
        enc.apply(v, driving)


def test_release_layer_specs():
    """The release's conv stacks: driving 3->3, 3->16 s2, ..., 64->128 s1; reference
    3->4, 4->8 s2, 8->8, ..., 512->512 k4 valid at torch indices 0, 2, ..., 30."""
    drive = de.driving_convs(de.RELEASE)
    assert [(f, k, s) for _, f, k, s, _ in drive] == [
        (3, 3, 1), (16, 4, 2), (16, 3, 1), (32, 4, 2),
        (32, 3, 1), (64, 4, 2), (64, 3, 1), (128, 3, 1),
    ]  # fmt: skip
    ref = de.reference_convs(de.RELEASE)
    assert [n for n, *_ in ref] == [f"refer_convs_{i}" for i in range(0, 32, 2)]
    assert [f for _, f, *_ in ref] == [
        4,
        8,
        8,
        16,
        16,
        32,
        32,
        64,
        64,
        128,
        128,
        256,
        256,
        512,
        512,
        512,
    ]
    assert ref[-1][2:] == (4, 1, 0) and de.RELEASE.reference_side == 512


def test_video_norm_shares_statistics_over_frames():
    """MegActor's resnets normalise a video's frames together (torch.nn.GroupNorm on
    (B, C, F, H, W)): scaling one frame changes the others' outputs, unlike per frame."""
    x = jax.random.normal(jax.random.PRNGKey(2), (2 * 3, 4, 4, 16))
    frames = 3
    joint, single = ResnetBlock2D(16, groups=4, video_norm=True), ResnetBlock2D(16, groups=4)
    v = single.init(jax.random.PRNGKey(0), x)
    scaled = x.at[0].multiply(5.0)
    d_joint = joint.apply(v, scaled, None, frames) - joint.apply(v, x, None, frames)
    d_single = single.apply(v, scaled, None, frames) - single.apply(v, x, None, frames)
    assert float(jnp.abs(d_joint[1:3]).max()) > 1e-3  # the same video's other frames
    np.testing.assert_allclose(d_joint[3:], 0, atol=1e-6)  # never another video
    np.testing.assert_allclose(d_single[1:], 0, atol=1e-6)
    # one frame per video: the same as per frame
    np.testing.assert_allclose(joint.apply(v, x, None, 1), single.apply(v, x), atol=1e-6)


def random_params(module, args, seed=3):
    """Params of `module` drawn without running its init: kernels N(0, 1 / fan_in), norm
    scales 1 + N(0, 0.1), biases N(0, 0.1) (the zero-initialised layers too)."""
    shapes = eval_shape_init(module.init, jax.random.PRNGKey(0), *args)
    flat = traverse_util.flatten_dict(nn.unbox(shapes)["params"])
    rng = np.random.default_rng(seed)
    out = {}
    for path, leaf in flat.items():
        noise = rng.standard_normal(leaf.shape).astype(np.float32)
        if leaf.ndim >= 2:
            out[path] = noise / np.sqrt(np.prod(leaf.shape[:-1]))
        else:
            out[path] = (1.0 if path[-1] == "scale" else 0.0) + 0.1 * noise
    return traverse_util.unflatten_dict(out)


FAST = {"xla_backend_optimization_level": 0}


def test_tiny_denoiser_runs_and_uses_every_input():
    model = MegActor(TINY)
    args = [jnp.asarray(a, jnp.float32) for a in _inputs(TINY)]
    v = {"params": random_params(model, args)}
    run = jax.jit(model.apply, compiler_options=FAST)
    out = run(v, *args)
    assert out.shape == args[0].shape and bool(jnp.all(jnp.isfinite(out)))
    for i in (3, 4, 5, 6, 7):  # driving, reference image, ReferenceNet input, concat, mask
        changed = list(args)
        changed[i] = changed[i][::-1]
        assert float(jnp.abs(run(v, *changed) - out).max()) > 1e-4, i
    # the unconditional sample ignores the reference bank
    uncond = jnp.array([False, True])
    masked = run(v, *args[:5], args[5][::-1], *args[6:], uncond)
    np.testing.assert_allclose(masked[0], run(v, *args, uncond)[0], atol=1e-6)
    # the two halves give the whole
    bank = jax.jit(
        lambda v, *a: model.apply(v, *a, method=MegActor.reference_bank), compiler_options=FAST
    )(v, args[5], args[1], args[2])
    assert bank and all(not k.startswith("down_blocks.") for k in bank)
    half = jax.jit(
        lambda v, *a: model.apply(v, *a, method=MegActor.denoise), compiler_options=FAST
    )(v, *args[:5], args[6], args[7], bank)
    np.testing.assert_allclose(half, out, atol=1e-5)


def test_widen_conv_in():
    kernel = jnp.arange(3 * 3 * 4 * 5, dtype=jnp.float32).reshape(3, 3, 4, 5)
    wide = widen_conv_in(kernel)
    assert wide.shape == (3, 3, 13, 5)
    np.testing.assert_array_equal(wide[:, :, :4], kernel)
    assert not np.any(wide[:, :, 4:])


def test_config_checks_the_input_channels():
    import dataclasses

    with pytest.raises(ValueError, match="13 input channels"):
        dataclasses.replace(MEGACTOR, unet=dataclasses.replace(MEGACTOR.unet, in_channels=4))
