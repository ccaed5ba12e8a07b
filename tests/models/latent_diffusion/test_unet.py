"""The SD1.5 UNet family: full-size parameter counts and key lists through jax.eval_shape
only (SD1.5, AniPortrait's and MegActor's ReferenceNets, the inflated UNet's motion-module
slots), logical axis names on every kernel, and on the tiny config: forward shapes, the
inflated UNet's frame folding, reference attention (recording, reading, per-sample off,
mid+up only), rematerialisation (same output and gradients)."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from jaxtalk.convert import sd_unet
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.layers.torch_nn import dense
from jaxtalk.models.param_hook import eval_shape_init

# Tiny inputs: 2 samples, 16x16 latents, 5 context tokens.
B, SIDE, TOKENS, FRAMES = 2, 16, 5, 3


class TemporalMix(nn.Module):
    """A stand-in motion module: x + proj(mean over each sample's frames), so frames of a
    sample mix and samples do not."""

    channels: int

    @nn.compact
    def __call__(self, x, frames):
        seq = x.reshape((-1, frames) + x.shape[1:])
        mean = jnp.broadcast_to(seq.mean(axis=1, keepdims=True), seq.shape).reshape(x.shape)
        return x + dense(self.channels, ("embed", "mlp"), "proj")(mean)


def temporal_mix_rules(torch_prefix, path):
    return sd_unet.linear(f"{torch_prefix}.proj", f"{path}/proj")


def shapes_of(model, sample, context):
    return eval_shape_init(model.init, jax.random.PRNGKey(0), sample, jnp.zeros((1,)), context)


def counts(tree):
    flat = traverse_util.flatten_dict(nn.unbox(tree)["params"])
    return len(flat), sum(int(np.prod(v.shape)) for v in flat.values())


def random_params(shapes, seed=0, scale=0.2):
    """Every parameter random (biases and the zero-initialised layers included), from an
    eval_shape tree: quicker than compiling init, and nothing can hide behind a zero."""
    rng = np.random.default_rng(seed)
    leaves, tree = jax.tree_util.tree_flatten(nn.unbox(shapes)["params"])
    values = []
    for leaf in leaves:
        v = rng.standard_normal(leaf.shape) * scale
        if len(leaf.shape) > 1:  # kernels: fan-in scaling keeps activations O(1)
            v = v / np.sqrt(np.prod(leaf.shape[:-1])) / scale
        values.append(jnp.asarray(v, leaf.dtype))
    return {"params": jax.tree_util.tree_unflatten(tree, values)}


def tiny_inputs(seed=0, frames=None):
    rng = np.random.default_rng(seed)
    lead = (B,) if frames is None else (B, frames)
    sample = rng.standard_normal(lead + (SIDE, SIDE, 4)).astype(np.float32)
    context = rng.standard_normal((B, TOKENS, 32)).astype(np.float32)
    return sample, np.array([10.0, 700.0], np.float32), context


FULL = (jnp.zeros((1, 64, 64, 4)), jnp.zeros((1, 77, 768)))


@pytest.mark.parametrize(
    "config,keys,params",
    [
        (ld.SD15, 686, 859_520_964),
        (ld.ANIPORTRAIT_REFERENCE, 682, 859_508_800),
        (ld.MEGACTOR_REFERENCE, 662, 857_066_560),
    ],
)
def test_full_size_counts(config, keys, params):
    model = ld.UNet2DConditionModel(config, return_bank=True)
    assert counts(shapes_of(model, *FULL)) == (keys, params)
    assert len(sd_unet.unet_rules(config)) == keys


def test_key_list_equals_diffusers():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    with torch.device("meta"):
        reference = diffusers.UNet2DConditionModel(cross_attention_dim=768)
    want = [(k, tuple(v.shape)) for k, v in reference.state_dict().items()]
    shapes = sd_unet.param_shapes(ld.SD15)
    flat = sd_unet.flatten_params(shapes)
    got = [
        (r.torch_key, r.layout.to_torch(np.empty(flat[r.param_path].shape, np.int8)).shape)
        for r in sd_unet.unet_rules(ld.SD15)
    ]
    assert got == want  # same keys, same order, same shapes


def test_inflated_unet_motion_slots_full_size():
    """One slot after each resnet / attention pair: 8 down, 12 up, 1 mid (AniPortrait's v2
    layout; 20 without the mid one), named as the releases name them."""
    model = ld.UNet3DConditionModel(ld.SD15, motion_module=TemporalMix, motion_mid=True)
    shapes = shapes_of(model, jnp.zeros((1, 2, 64, 64, 4)), FULL[1])
    flat = traverse_util.flatten_dict(nn.unbox(shapes)["params"])
    slots = sorted({"/".join(k[:-2]) for k in flat if "motion_modules" in "/".join(k)})
    assert len(slots) == 21
    assert "mid_block/motion_modules_0" in slots and "up_blocks_3/motion_modules_2" in slots
    widths = {"/".join(k[:-2]): v.shape[0] for k, v in flat.items() if k[-2:] == ("proj", "kernel")}
    assert widths["down_blocks_0/motion_modules_1"] == 320
    assert widths["up_blocks_0/motion_modules_0"] == 1280
    rules = sd_unet.unet_rules(ld.SD15, temporal_mix_rules, motion_mid=True)
    keys = [r.torch_key for r in rules if ".motion_modules." in r.torch_key]
    assert len(keys) == 42 and "mid_block.motion_modules.0.proj.weight" in keys
    assert "down_blocks.3.motion_modules.1.proj.bias" in keys
    no_mid = ld.UNet3DConditionModel(ld.SD15, motion_module=TemporalMix)
    extra = counts(shapes_of(no_mid, jnp.zeros((1, 2, 64, 64, 4)), FULL[1]))[0] - 686
    assert extra == 40  # 20 slots x (kernel, bias)


def test_every_kernel_has_logical_axes():
    boxed = shapes_of(ld.UNet2DConditionModel(ld.TINY), *tiny_inputs()[::2])["params"]
    leaves = jax.tree_util.tree_leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    assert leaves and all(isinstance(x, nn.LogicallyPartitioned) for x in leaves)
    for leaf in leaves:
        assert len(leaf.names) == leaf.value.ndim
        if leaf.value.ndim >= 2:  # kernels: both channel axes are named
            assert None not in leaf.names[-2:], leaf.names


@functools.lru_cache
def tiny_params(config=ld.TINY, motion=False):
    model = ld.UNet3DConditionModel(config, motion_module=TemporalMix if motion else None)
    sample, _, context = tiny_inputs(frames=FRAMES)
    return random_params(shapes_of(model, jnp.asarray(sample[:1]), jnp.asarray(context[:1])))


# Compile time dominates these tests; XLA's backend optimisations buy nothing at tiny sizes.
FAST_COMPILE = {"xla_backend_optimization_level": 0}
_JITTED = {}


def jitted(fn, key):
    if key not in _JITTED:
        _JITTED[key] = jax.jit(fn, compiler_options=FAST_COMPILE)
    return _JITTED[key]


def apply(model, params, *args):
    return jitted(model.apply, repr(model))(params, *args)


def test_tiny_forward_shapes_and_folding():
    params = tiny_params()
    sample, t, context = tiny_inputs(frames=FRAMES)
    flat = ld.UNet2DConditionModel(ld.TINY)
    out2d = apply(flat, params, sample[:, 0], t, context)
    assert out2d.shape == (B, SIDE, SIDE, 4) and np.isfinite(np.asarray(out2d)).all()
    # Without motion modules the inflated UNet is the 2-D one on every frame.
    out3d = apply(ld.UNet3DConditionModel(ld.TINY), params, sample, t, context)
    assert out3d.shape == (B, FRAMES, SIDE, SIDE, 4)
    np.testing.assert_allclose(out3d[:, 0], out2d, atol=1e-5)
    # An odd size takes the upsampler's forwarded size (diffusers' upsample_size).
    odd = apply(flat, params, sample[:, 0, :15, :13], t, context)
    assert odd.shape == (B, 15, 13, 4)


def test_motion_modules_mix_frames_of_a_sample_only():
    params = tiny_params(motion=True)
    model = ld.UNet3DConditionModel(ld.TINY, motion_module=TemporalMix)
    sample, t, context = tiny_inputs(frames=FRAMES)
    out = apply(model, params, sample, t, context)
    changed = sample.copy()
    changed[1, 2] += 1.0  # the last frame of the second sample
    out2 = apply(model, params, changed, t, context)
    np.testing.assert_array_equal(np.asarray(out2[0]), np.asarray(out[0]))
    assert np.abs(np.asarray(out2[1, 0] - out[1, 0])).max() > 1e-3  # its other frames moved


def reference_run(bank=None, mask=None, frames=None, record=False):
    params = tiny_params()
    sample, t, context = tiny_inputs(seed=1, frames=frames)
    cls = ld.UNet2DConditionModel if frames is None else ld.UNet3DConditionModel
    model = cls(ld.TINY, return_bank=record)
    return apply(model, params, sample, t, context, bank, mask)


def recorded_bank():
    """The tiny ReferenceNet (no conv_out) on clean latents at t=0."""
    config = dataclasses.replace(ld.TINY, conv_out=False)
    heads = ("conv_out", "conv_norm_out")
    params = {"params": {k: v for k, v in tiny_params()["params"].items() if k not in heads}}
    sample, _, context = tiny_inputs(seed=2)
    model = ld.UNet2DConditionModel(config, return_bank=True)
    _, bank = apply(model, params, sample, np.zeros(B, np.float32), context)
    return bank


def test_reference_net_records_every_block_in_order():
    bank = recorded_bank()
    assert list(bank) == ld.block_names(ld.TINY)
    assert ld.block_names(ld.SD15)[0] == "down_blocks.0.attentions.0.transformer_blocks.0"
    assert len(ld.block_names(ld.SD15)) == 16
    assert bank["mid_block.attentions.0.transformer_blocks.0"].shape == (B, 8 * 8, 64)


def test_reference_attention_reads_the_bank_and_switches_off_per_sample():
    bank = recorded_bank()
    plain = np.asarray(reference_run())
    read = np.asarray(reference_run(bank))
    assert np.abs(read - plain).max() > 1e-2
    off = np.asarray(reference_run(bank, np.array([False, False])))
    np.testing.assert_allclose(off, plain, atol=1e-5)
    mixed = np.asarray(reference_run(bank, np.array([False, True])))
    np.testing.assert_allclose(mixed[0], plain[0], atol=1e-5)
    np.testing.assert_allclose(mixed[1], read[1], atol=1e-5)


def test_reference_bank_is_repeated_over_frames():
    bank = recorded_bank()
    video = np.asarray(reference_run(bank, frames=FRAMES))
    per_frame = {k: np.repeat(v, FRAMES, axis=0) for k, v in bank.items()}
    given = np.asarray(reference_run(per_frame, frames=FRAMES))
    np.testing.assert_allclose(given, video, atol=1e-6)
    sample, t, context = tiny_inputs(seed=1, frames=FRAMES)
    single = apply(ld.UNet2DConditionModel(ld.TINY), tiny_params(), sample[:, 1], t, context, bank)
    np.testing.assert_allclose(video[:, 1], single, atol=1e-5)


def test_mid_and_up_only_leave_the_down_blocks_untouched():
    bank = recorded_bank()
    _, plain = reference_run(record=True)
    _, midup = reference_run(ld.select_bank(bank, "midup"), record=True)
    _, full = reference_run(ld.select_bank(bank, "all"), record=True)
    down = "down_blocks.0.attentions.0.transformer_blocks.0"
    mid = "mid_block.attentions.0.transformer_blocks.0"
    up = "up_blocks.1.attentions.1.transformer_blocks.0"
    for name in (down, mid):  # computed before any mid / up block reads the bank
        np.testing.assert_array_equal(np.asarray(midup[name]), np.asarray(plain[name]))
    assert np.abs(np.asarray(midup[up] - plain[up])).max() > 1e-3
    assert np.abs(np.asarray(full[mid] - plain[mid])).max() > 1e-3  # down block 0 read it
    with pytest.raises(ValueError, match="reference blocks"):
        ld.select_bank(bank, "down")


def test_megactor_reference_net_ends_at_the_last_norm1():
    config = dataclasses.replace(ld.TINY, conv_out=False, cut_at_last_norm1=True)
    model = ld.UNet2DConditionModel(config, return_bank=True)
    sample, t, context = tiny_inputs()
    shapes = shapes_of(model, jnp.asarray(sample), jnp.asarray(context))
    flat = traverse_util.flatten_dict(nn.unbox(shapes)["params"])
    last = ("up_blocks_1", "attentions_1")
    kept = sorted("/".join(k[2:]) for k in flat if k[:2] == last)
    assert kept == [
        "norm/bias",
        "norm/scale",
        "proj_in/bias",
        "proj_in/kernel",
        "transformer_blocks_0/norm1/bias",
        "transformer_blocks_0/norm1/scale",
    ]
    out, bank = apply(model, random_params(shapes), sample, t, context)
    assert out is None and list(bank) == ld.block_names(ld.TINY)
    full_bank = recorded_bank()  # same widths, other weights: only the shapes must agree
    assert {k: v.shape for k, v in bank.items()} == {k: v.shape for k, v in full_bank.items()}


def count_primitive(jaxpr, name):
    """Equations of primitive `name` in `jaxpr` and every jaxpr nested in it."""
    found = 0
    for eqn in jaxpr.eqns:
        found += eqn.primitive.name == name
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    found += count_primitive(inner, name)
    return found


def test_remat_gives_the_same_output_and_gradients():
    # One level (down, mid and up blocks, each with a transformer): the backward pass is
    # compiled twice, so the smallest UNet that has every kind of block.
    micro = dataclasses.replace(ld.TINY, block_out_channels=(32,), cross_attention=(True,))
    sample, t, context = (a[:, :8, :8] if a.ndim == 4 else a for a in tiny_inputs())
    shapes = shapes_of(ld.UNet2DConditionModel(micro), jnp.asarray(sample), jnp.asarray(context))
    params = random_params(shapes)
    results = []
    for remat in (False, True):
        model = ld.UNet2DConditionModel(dataclasses.replace(micro, remat=remat))

        def loss(p, model=model):
            return jnp.mean(model.apply(p, sample, t, context) ** 2)

        grad_fn = jitted(jax.value_and_grad(loss), ("grad", remat))
        results.append(grad_fn(params))
        # one rematerialised region per resnet (5) and spatial transformer (4)
        assert count_primitive(jax.make_jaxpr(loss)(params).jaxpr, "remat2") == 9 * remat
    (v0, g0), (v1, g1) = results
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(g0), jax.tree_util.tree_leaves(g1)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_fsdp_rules_shard_every_large_kernel_and_blocks_are_constrained():
    """Full size through eval_shape: on 8 devices (fsdp) every kernel with a dimension >=
    320 is sharded, motion-module slots included; the tiny inflated UNet traced under the
    rules carries sharding constraints at its block boundaries."""
    from configs.common import LOGICAL_AXIS_RULES
    from jaxtalk.train import sharding

    mesh = sharding.make_mesh({"data": 1, "fsdp": 8, "tensor": 1})
    model = ld.UNet3DConditionModel(ld.SD15, motion_module=TemporalMix, motion_mid=True)
    boxed = shapes_of(model, jnp.zeros((1, 2, 64, 64, 4)), FULL[1])["params"]
    specs = sharding.shardings_for(boxed, mesh, LOGICAL_AXIS_RULES)
    flat = traverse_util.flatten_dict(nn.unbox(boxed))
    flat_specs = traverse_util.flatten_dict(specs)
    large = [k for k, v in flat.items() if v.ndim >= 2 and max(v.shape) >= 320]
    assert len(large) > 300
    unsharded = [k for k in large if all(a is None for a in flat_specs[k].spec)]
    assert not unsharded, unsharded[:5]
    tiny = ld.UNet3DConditionModel(ld.TINY, motion_module=TemporalMix)
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    args = jax.device_put((tiny_params(motion=True), *tiny_inputs(frames=FRAMES)), replicated)
    with sharding.activation_context(mesh, LOGICAL_AXIS_RULES):
        lowered = jax.jit(tiny.apply).lower(*args)
    assert lowered.as_text().count("sharding_constraint") > 10


def test_additions_after_conv_in_and_each_down_block():
    """AniPortrait's PoseGuider features: one per scale, added after conv_in and after each
    down block, per frame (B, F, h, w, c) or per sample (B, h, w, c)."""
    params = tiny_params()
    sample, t, context = tiny_inputs(frames=FRAMES)
    model = ld.UNet3DConditionModel(ld.TINY)
    plain = np.asarray(apply(model, params, sample, t, context))
    scales = [(SIDE, 32), (SIDE // 2, 32), (SIDE // 2, 64)]
    zeros = [np.zeros((B, FRAMES, s, s, c), np.float32) for s, c in scales]
    np.testing.assert_array_equal(
        np.asarray(apply(model, params, sample, t, context, None, None, zeros)), plain
    )
    rng = np.random.default_rng(5)
    pose = [z + rng.standard_normal(z.shape).astype(np.float32) for z in zeros]
    moved = np.asarray(apply(model, params, sample, t, context, None, None, pose))
    assert np.abs(moved - plain).max() > 1e-2
    per_sample = [p[:, 0] for p in pose]
    repeated = [np.repeat(p[:, :1], FRAMES, axis=1) for p in pose]
    np.testing.assert_allclose(
        apply(model, params, sample, t, context, None, None, per_sample),
        apply(model, params, sample, t, context, None, None, repeated),
        atol=1e-6,
    )
