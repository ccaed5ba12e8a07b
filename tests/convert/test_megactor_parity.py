"""Parity with MegActor's released modules (megvii-research/megactor v1), run under torch only
when MEGACTOR_CODE points at a checkout: its DrivenEncoder (`ConvInputLayer` with the FiLM
branch), and its training forward (pipeline.train): the appearance encoder run at the same
timestep writes the mid- and up-block banks, the UNet3D (13-channel conv_in: noisy latents,
reference latents, background mask, DrivenEncoder features; v3 motion modules) reads them,
CLIP-token context for both; with classifier-free guidance the unconditional half ignores
the bank. Tiny widths (4 levels, as the appearance encoder's hard-coded cut needs), random
weights (every tensor perturbed, the zero-initialised FiLM and motion-module outputs too),
mapped through jaxtalk/convert/megactor.py from the release's own state_dicts, whose key
order export must reproduce. float64 max abs <= 1e-9, float32 <= 1e-4.

Shims, in this test only, for diffusers 0.42: the release imports `diffusers.models.
unet_2d_blocks` / `unet_2d_condition` (now under `diffusers.models.unets`), its reference
hooks read `use_ada_layer_norm(_zero)` (gone from diffusers' BasicTransformerBlock) and
import a `torch_dfs` helper from a module that needs removed pipelines (a stand-in that
walks the module tree in the same pre-order). The release casts the bank to float16 in
`update` (its default dtype; its runs are float16 throughout): the test passes the compared
dtype. diffusers computes timestep features in float32 and the release's position tables
are float32 buffers: in float64 both sides get float64 ones (as test_sd_unet_parity and the
motion-module test do).
"""

import dataclasses
import math
import os
import sys
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import megactor
from jaxtalk.convert.mapping import to_params
from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.latent_diffusion.motion_module import position_table
from jaxtalk.models.megactor import MegActor, MegActorConfig
from jaxtalk.models.megactor import driven_encoder as de

CODE = os.environ.get("MEGACTOR_CODE")
pytestmark = pytest.mark.skipif(
    not CODE, reason="MEGACTOR_CODE (a megvii-research/megactor v1 checkout) not set"
)
torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
pytest.importorskip("einops")

B, F, SIDE = 2, 3, 8  # latents 8x8: driving frames 64x64; the FiLM reference is 512x512
WIDTHS, GROUPS, HEADS, CROSS, TOKENS = (32, 32, 64, 64), 8, 2, 32, 5
FAST = {"xla_backend_optimization_level": 0}
MOTION = dict(
    num_attention_heads=8,
    num_transformer_block=1,
    attention_block_types=["Temporal_Self", "Temporal_Self"],
    temporal_position_encoding=True,
    temporal_position_encoding_max_len=32,
    temporal_attention_dim_div=1,
)


@pytest.fixture(scope="module")
def release():
    """The release's modules, importable under diffusers 0.42 (see the module docstring)."""
    from diffusers.models.unets import unet_2d_blocks, unet_2d_condition

    patched = {
        "diffusers.models.unet_2d_blocks": unet_2d_blocks,
        "diffusers.models.unet_2d_condition": unet_2d_condition,
    }
    stand_in = types.ModuleType("stable_diffusion_controlnet_reference")
    stand_in.torch_dfs = lambda m: [m] + [x for c in m.children() for x in stand_in.torch_dfs(c)]
    patched["animate.unet_magic_noiseAttenST_Ada.stable_diffusion_controlnet_reference"] = stand_in
    saved = {k: sys.modules.get(k) for k in patched}
    sys.modules.update(patched)
    sys.path.insert(0, CODE)
    try:
        from animate.unet_magic_noiseAttenST_Ada import (
            appearance_encoder,
            mutual_self_attention,
            unet_controlnet,
        )

        yield types.SimpleNamespace(
            UNet3D=unet_controlnet.UNet3DConditionModel,
            DrivenEncoder=unet_controlnet.ConvInputLayer,
            AppearanceEncoder=appearance_encoder.AppearanceEncoderModel,
            Control=mutual_self_attention.ReferenceAttentionControl,
        )
    finally:
        sys.path.remove(CODE)
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def perturbed(module, seed):
    """`module` in eval mode with every tensor moved by noise, N(0, 0.5 / sqrt(fan_in)) for
    weights and N(0, 0.1) for vectors: zero-initialised layers leave zero, and the 16-conv
    FiLM pyramid keeps its scale (hf_parity's flat 0.1 would blow it up to 1e6)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            std = 0.5 / math.sqrt(p[0].numel()) if p.ndim >= 2 else 0.1
            p.add_(std * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module.eval()


def float64_tables(model):
    """diffusers' float32 timestep features and the float32 position buffers, in float64."""
    for m in model.modules():
        if type(m).__name__ == "Timesteps":

            def forward(t, m=m):
                half = m.num_channels // 2
                freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
                angles = t.double()[:, None] * freqs[None]
                return torch.cat([torch.cos(angles), torch.sin(angles)], -1)

            m.forward = forward
        if type(m).__name__ == "PositionalEncoding":
            m.pe = torch.from_numpy(position_table(m.pe.shape[1], m.pe.shape[2])[None])


def build(release, precision):
    dtype = getattr(torch, precision)
    torch.manual_seed(0)
    unet = release.UNet3D(
        in_channels=13,
        block_out_channels=WIDTHS,
        norm_num_groups=GROUPS,
        cross_attention_dim=CROSS,
        attention_head_dim=HEADS,
        use_motion_module=True,
        motion_module_resolutions=(1, 2, 4, 8),
        motion_module_mid_block=False,
        motion_module_type="Vanilla",
        motion_module_kwargs=dict(MOTION),
        unet_use_cross_frame_attention=False,
        unet_use_temporal_attention=False,
        use_refer_ada=True,
    )
    encoder = release.AppearanceEncoder(
        block_out_channels=WIDTHS,
        norm_num_groups=GROUPS,
        cross_attention_dim=CROSS,
        attention_head_dim=HEADS,
    )
    unet, encoder = perturbed(unet.to(dtype), 1), perturbed(encoder.to(dtype), 2)
    for m in encoder.modules():  # the release's hooks read these (diffusers 0.24-0.27 fields)
        if isinstance(m, diffusers.models.attention.BasicTransformerBlock):
            m.use_ada_layer_norm = m.use_ada_layer_norm_zero = False
    if precision == "float64":
        float64_tables(unet)
        float64_tables(encoder)
    return unet, encoder


def inputs(seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        latents=rng.standard_normal((B, F, SIDE, SIDE, 4)),
        t=np.array([37.0, 912.0]),
        context=rng.standard_normal((B, TOKENS, CROSS)),
        driving=rng.uniform(size=(B, F, 8 * SIDE, 8 * SIDE, 3)),
        reference_image=rng.uniform(size=(B, 512, 512, 3)),
        reference_latents=rng.standard_normal((B, SIDE, SIDE, 4)),
        concat_latents=rng.standard_normal((B, SIDE, SIDE, 4)),
        background_mask=(rng.uniform(size=(B, SIDE, SIDE, 1)) > 0.5).astype(np.float64),
    )


def as_torch(x, dtype, layout=None):
    x = np.asarray(x)
    if layout is not None:
        x = x.transpose(layout)
    return torch.from_numpy(np.ascontiguousarray(x)).to(dtype)


def run_release(release, unet, encoder, x, precision, cfg_guidance):
    """pipeline.train's forward; with guidance the first sample is the unconditional one
    (the release's uc_mask: the first batch * frames rows)."""
    dtype = getattr(torch, precision)
    control = dict(do_classifier_free_guidance=cfg_guidance, fusion_blocks="midup")
    control.update(batch_size=B // 2 if cfg_guidance else B, clip_length=F)
    writer = release.Control(encoder, mode="write", **control)
    reader = release.Control(unet, mode="read", **control)
    t = as_torch(x["t"], dtype)
    context = as_torch(x["context"], dtype)
    with torch.no_grad():
        encoder(
            as_torch(x["reference_latents"], dtype, (0, 3, 1, 2)), t, context, return_dict=False
        )
        reader.update(writer, dtype=dtype)
        concat = np.concatenate([x["concat_latents"], x["background_mask"]], -1)
        concat = np.repeat(concat[:, None], F, axis=1)
        sample = np.concatenate([x["latents"], concat], -1)
        out = unet(
            as_torch(sample, dtype, (0, 4, 1, 2, 3)),
            t,
            encoder_hidden_states=context,
            pose_guide_conditions=as_torch(x["driving"], dtype, (0, 4, 1, 2, 3)),
            ref_img_conditions=as_torch(x["reference_image"], dtype, (0, 3, 1, 2)),
        ).sample
    reader.clear()
    writer.clear()
    return out.numpy().transpose(0, 2, 3, 4, 1)


def release_state(unet, encoder) -> dict:
    """The file's state_dict as train.py saves it (DeepSpeed's `module.` prefix)."""
    state = {f"module.unet.{k}": v for k, v in unet.state_dict().items()}
    state.update({f"module.appearance_encoder.{k}": v for k, v in encoder.state_dict().items()})
    return {k: v.detach().numpy().copy() for k, v in state.items()}


def jaxtalk_config() -> MegActorConfig:
    unet = ld.UNetConfig(
        in_channels=13,
        block_out_channels=WIDTHS,
        attention_heads=HEADS,
        cross_attention_dim=CROSS,
        norm_num_groups=GROUPS,
        video_norm=True,
    )
    reference = dataclasses.replace(
        unet, in_channels=4, conv_out=False, cut_at_last_norm1=True, video_norm=False
    )
    return MegActorConfig(unet=unet, reference=reference, driven=de.RELEASE)


def import_release_state(state, precision):
    variables, _ = megactor.import_state_dict(
        state, "release", np.dtype(precision), attention_heads=HEADS, norm_num_groups=GROUPS
    )
    assert megactor.config_of(variables["model_config"]) == jaxtalk_config()
    return variables["params"]


def run_jaxtalk(params, x, precision, reference_mask=None):
    dtype = getattr(jnp, precision)
    model = MegActor(jaxtalk_config(), dtype=dtype, param_dtype=dtype)
    names = [
        "latents", "t", "context", "driving", "reference_image",
        "reference_latents", "concat_latents", "background_mask",
    ]  # fmt: skip
    args = [jnp.asarray(x[n], dtype) for n in names]
    fn = jax.jit(model.apply, compiler_options=FAST)
    return np.asarray(fn({"params": params}, *args, reference_mask))


def errors(got, want):
    return float(np.abs(got - want).max()), float(np.abs(want).max())


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_driven_encoder_matches_the_release(release, precision):
    dtype = getattr(torch, precision)
    torch.manual_seed(0)
    ref = perturbed(release.DrivenEncoder(use_refer_ada=True).to(dtype), 3)
    x = inputs(1)
    with torch.no_grad():
        run = lambda image: (
            ref(  # noqa: E731
                as_torch(x["driving"], dtype, (0, 4, 1, 2, 3)), as_torch(image, dtype, (0, 3, 1, 2))
            )
            .numpy()
            .transpose(0, 2, 3, 4, 1)
        )
        want, other = run(x["reference_image"]), run(x["reference_image"][::-1])
    prefix = "unet.condition_input_layer."
    state = {prefix + k: v.detach().numpy() for k, v in ref.state_dict().items()}
    rules = megactor.driven_encoder_rules(de.RELEASE)
    assert list(state) == [r.torch_key for r in rules]
    jdtype = getattr(jnp, precision)
    with jax.enable_x64(precision == "float64"):
        model = de.DrivenEncoder(de.RELEASE, dtype=jdtype, param_dtype=jdtype)
        shapes = jax.eval_shape(
            model.init, jax.random.PRNGKey(0), x["driving"], x["reference_image"]
        )
        shapes = {"params": {"driven_encoder": nn.unbox(shapes)["params"]}}
        params = to_params(state, rules, shapes, dtype=np.dtype(precision))
        params = params["params"]["driven_encoder"]
        got = np.asarray(
            jax.jit(model.apply, compiler_options=FAST)(
                {"params": params},
                jnp.asarray(x["driving"], jdtype),
                jnp.asarray(x["reference_image"], jdtype),
            )
        )
    err, scale = errors(got, want)
    film = float(np.abs(other - want).max())
    print(
        f"\nDrivenEncoder vs the release, {precision}: max abs {err:.2e} (output {scale:.2f}, FiLM moves it {film:.2e})"
    )
    assert film > 1e-3  # the reference branch matters, so its mapping is checked
    assert err <= (1e-9 if precision == "float64" else 1e-4)


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("guidance", [False, True])
def test_denoiser_matches_the_release(release, precision, guidance):
    unet, encoder = build(release, precision)
    state = release_state(unet, encoder)
    # the converter's key order is the release's state_dict order (export writes it)
    assert list(state) == ["module." + k for k in megactor.release_keys(jaxtalk_config())]
    x = inputs(0)
    want = run_release(release, unet, encoder, x, precision, guidance)
    with jax.enable_x64(precision == "float64"):
        params = import_release_state(state, precision)
        mask = np.array([False, True]) if guidance else None
        got = run_jaxtalk(params, x, precision, mask)
        no_reference = run_jaxtalk(params, x, precision, np.array([False, False]))
    err, scale = errors(got, want)
    bank = float(np.abs(got[1] - no_reference[1]).max())
    print(
        f"\nMegActor denoiser vs the release ({'CFG' if guidance else 'no CFG'}), {precision}: "
        f"max abs {err:.2e} (output {scale:.2f}; the reference bank moves it {bank:.2e})"
    )
    assert bank > 1e-3
    assert err <= (1e-9 if precision == "float64" else 1e-4)
