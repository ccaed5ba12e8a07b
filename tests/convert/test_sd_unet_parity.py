"""Parity with diffusers' UNet2DConditionModel on a tiny config with random weights (every
tensor perturbed, so a wrong mapping cannot hide behind a zero), through the converter:
float64 to 1e-9 (max abs), float32 relative L2 below 1e-5. And reference attention as
AniPortrait and MegActor run it, written against diffusers' own blocks: the ReferenceNet
stores norm1 per transformer block, the denoising UNet's attn1 attends to
concat([norm1, bank]) in the chosen blocks, and the unconditional half attends to itself.

diffusers computes the sinusoidal timestep features in float32 even in a float64 model;
the float64 comparison gives both sides float64 features (its float32 sin/cos differ from
XLA's by an ulp, which is not what this checks), the float32 one runs diffusers as is.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import sd_unet
from jaxtalk.models.latent_diffusion import unet as ld

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

B, SIDE, TOKENS = 2, 16, 5
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def tiny_torch_unet(seed):
    torch.manual_seed(seed)
    config = sd_unet.config_to_diffusers(ld.TINY)
    config.pop("_class_name")
    model = diffusers.UNet2DConditionModel(**config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def float64_time_features(model):
    def forward(t):
        half = model.time_proj.num_channels // 2
        freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float64) / half)
        angles = t.double()[:, None] * freqs[None]
        return torch.cat([torch.cos(angles), torch.sin(angles)], -1)

    model.time_proj.forward = forward


def inputs(seed):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((B, SIDE, SIDE, 4)),
        np.array([10.0, 981.0]),
        rng.standard_normal((B, TOKENS, 32)),
    )


def run_torch(model, x, t, context, dtype):
    as_t = lambda a: torch.from_numpy(np.asarray(a)).to(dtype)  # noqa: E731
    with torch.no_grad():
        out = model(as_t(x.transpose(0, 3, 1, 2)), as_t(t), as_t(context)).sample
    return out.numpy().transpose(0, 2, 3, 1)


def run_jax(config, state, x, t, context, dtype, bank=None, mask=None, return_bank=False):
    params = sd_unet.params_from_state_dict(state, config, dtype=np.dtype(dtype))
    model = ld.UNet2DConditionModel(config, return_bank=return_bank, dtype=dtype, param_dtype=dtype)
    args = [np.asarray(a, dtype) for a in (x, t, context)]
    fn = jax.jit(model.apply, compiler_options=FAST_COMPILE)
    return fn({"params": params}, *args, bank, mask)


def state_of(model):
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_unet_matches_diffusers():
    model = tiny_torch_unet(0).double()
    x, t, context = inputs(0)
    with jax.enable_x64(True):
        float64_time_features(model)
        want = run_torch(model, x, t, context, torch.float64)
        got = np.asarray(run_jax(ld.TINY, state_of(model), x, t, context, jnp.float64))
        # A size the resamplers do not halve evenly: the upsamplers take the skips' size.
        odd = x[:, :15, :13]
        want_odd = run_torch(model, odd, t, context, torch.float64)
        got_odd = np.asarray(run_jax(ld.TINY, state_of(model), odd, t, context, jnp.float64))
    err64 = max(np.abs(got - want).max(), np.abs(got_odd - want_odd).max())
    model = tiny_torch_unet(0)  # float32, diffusers' own timestep features
    want32 = run_torch(model, x, t, context, torch.float32)
    got32 = np.asarray(run_jax(ld.TINY, state_of(model), x, t, context, jnp.float32))
    rel32 = np.linalg.norm(got32 - want32) / np.linalg.norm(want32)
    print(f"\nSD UNet tiny vs diffusers: float64 max abs {err64:.2e}, float32 rel L2 {rel32:.2e}")
    assert err64 < 1e-9 and rel32 < 1e-5


def release_reference_attention(model, mode, store, blocks="all", uncond=None):
    """The releases' reference-attention forward on diffusers' BasicTransformerBlocks
    (mutual_self_attention.py's hacked forward, 2-D: one frame, bank of the same batch)."""
    for name, block in model.named_modules():
        if not isinstance(block, diffusers.models.attention.BasicTransformerBlock):
            continue
        if blocks == "midup" and name.startswith("down_blocks."):
            continue

        def forward(hidden, *args, encoder_hidden_states=None, block=block, name=name, **kw):
            normed = block.norm1(hidden)
            if mode == "write":
                store[name] = normed.clone()
                out = block.attn1(normed) + hidden
            else:
                keys = torch.cat([normed, store[name]], dim=1)
                out = block.attn1(normed, encoder_hidden_states=keys) + hidden
                if uncond is not None:
                    out[uncond] = block.attn1(normed[uncond]) + hidden[uncond]
            out = block.attn2(block.norm2(out), encoder_hidden_states=encoder_hidden_states) + out
            return block.ff(block.norm3(out)) + out

        block.forward = forward


@pytest.mark.parametrize("blocks", ["all", "midup"])
def test_reference_attention_matches_the_releases(blocks):
    reference, denoiser = tiny_torch_unet(1).double(), tiny_torch_unet(2).double()
    ref_x, _, ref_context = inputs(1)
    x, t, context = inputs(2)
    uncond = torch.tensor([True, False])  # CFG: the first half is unconditional
    with jax.enable_x64(True):
        for m in (reference, denoiser):
            float64_time_features(m)
        store = {}
        release_reference_attention(reference, "write", store)
        run_torch(reference, ref_x, np.zeros(B), ref_context, torch.float64)
        release_reference_attention(denoiser, "read", store, blocks, uncond)
        want = run_torch(denoiser, x, t, context, torch.float64)
        ref_config = dataclasses.replace(ld.TINY, conv_out=False)
        heads = ("conv_norm_out.", "conv_out.")
        ref_state = {k: v for k, v in state_of(reference).items() if not k.startswith(heads)}
        _, bank = run_jax(
            ref_config, ref_state, ref_x, np.zeros(B), ref_context, jnp.float64, return_bank=True
        )
        assert sorted(bank) == sorted(store)
        bank = ld.select_bank(bank, blocks)
        mask = ~uncond.numpy()
        got = np.asarray(
            run_jax(ld.TINY, state_of(denoiser), x, t, context, jnp.float64, bank, mask)
        )
        plain = np.asarray(run_jax(ld.TINY, state_of(denoiser), x, t, context, jnp.float64))
    err = np.abs(got - want).max()
    print(f"\nreference attention ({blocks}) vs the releases' formula: float64 max abs {err:.2e}")
    assert err < 1e-9
    assert np.abs(got[1] - plain[1]).max() > 1e-3  # the conditional half read the bank
