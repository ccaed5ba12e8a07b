"""Stable Diffusion 1.5's UNet2DConditionModel in Flax (NHWC), the ReferenceNet variants,
and the UNet inflated over frames (AniPortrait's UNet3DConditionModel).

Layout (SD1.5, `UNetConfig()`): conv_in 4 -> 320; sinusoidal timestep features (320,
flip_sin_to_cos, shift 0) -> time_embedding (1280); down levels 320 / 640 / 1280 / 1280 with
2 layers each (cross-attention in the first three, stride-2 downsamplers in all but the
last); the mid block (resnet, transformer, resnet); up levels mirrored with 3 layers taking
the skips (cross-attention in the last three, nearest-x2 upsamplers in all but the last);
GroupNorm, SiLU, conv_out 320 -> 4. 8 heads everywhere (diffusers' `attention_head_dim: 8`
is the number of heads in SD1.5's config), cross-attention to 768-d context. 859,520,964
parameters, 686 state_dict tensors.

ReferenceNets (`return_bank=True`) also return the norm1 output of every transformer block
by name ("mid_block.attentions.0.transformer_blocks.0", ...; `block_names` lists them in
order); the denoising UNet reads such a bank (`bank=`, entries (B, L, C)), a subset of it
for MegActor (`select_bank(bank, "midup")`). `ANIPORTRAIT_REFERENCE` has no
conv_norm_out / conv_out; `MEGACTOR_REFERENCE` also ends at the last block's norm1
(857,066,560 parameters, 662 tensors).

The inflated UNet folds (B, F, H, W, C) to (B*F, H, W, C) for every 2-D layer (InflatedConv3d
and InflatedGroupNorm are 2-D layers per frame), repeats the time embedding, the context and
the reference bank over frames, and runs a motion module from the `motion_module` factory
after each resnet / attention pair of the down and up blocks (and of the mid block with
`motion_mid`): `down_blocks.{i}.motion_modules.{j}`, `up_blocks.{i}.motion_modules.{j}`,
`mid_block.motion_modules.0`. `video_norm` gives the resnets and conv_norm_out GroupNorm
statistics over all frames of a video (MegActor's UNet runs torch.nn.GroupNorm on 5-D
tensors) instead of per frame.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.latent_diffusion.embeddings import TimestepEmbedding, timestep_features
from jaxtalk.models.latent_diffusion.resnet import norm_over_frames
from jaxtalk.models.latent_diffusion.unet_blocks import DownBlock, MidBlock, MotionFactory, UpBlock
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.models.layers.torch_nn import conv, group_norm


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 4
    out_channels: int = 4
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: int = 2
    # Per down level: CrossAttnDownBlock2D (True) or DownBlock2D; the up levels mirror it.
    cross_attention: tuple[bool, ...] = (True, True, True, False)
    attention_heads: int = 8
    transformer_layers: int = 1
    cross_attention_dim: int = 768
    norm_num_groups: int = 32
    norm_eps: float = 1e-5  # resnets and conv_norm_out
    transformer_norm_eps: float = 1e-6  # the transformers' GroupNorm
    layer_norm_eps: float = 1e-5  # the transformer blocks' LayerNorms
    flip_sin_to_cos: bool = True
    freq_shift: float = 0.0
    conv_out: bool = True  # False: no conv_norm_out / conv_out (ReferenceNets)
    cut_at_last_norm1: bool = False  # MegActor's ReferenceNet ends at the last norm1
    # Inflated UNet: the resnets' and conv_norm_out's GroupNorm statistics over all frames of
    # a video (torch.nn.GroupNorm on (B, C, F, H, W): MegActor), not per frame (AniPortrait).
    video_norm: bool = False
    remat: bool = False  # rematerialise each resnet and spatial transformer
    attention: str = "auto"  # jaxtalk.models.layers.attention implementation

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]


SD15 = UNetConfig()
ANIPORTRAIT_REFERENCE = dataclasses.replace(SD15, conv_out=False)
MEGACTOR_REFERENCE = dataclasses.replace(SD15, conv_out=False, cut_at_last_norm1=True)
# Seconds on a CPU: two levels (cross-attention in the first, as SD's pattern), one layer.
TINY = UNetConfig(
    block_out_channels=(32, 64),
    layers_per_block=1,
    cross_attention=(True, False),
    attention_heads=2,
    cross_attention_dim=32,
    norm_num_groups=8,
)


def block_names(config: UNetConfig) -> list[str]:
    """The transformer blocks' names in the order they run (down, mid, up)."""

    def level(prefix, count):
        return [
            f"{prefix}.attentions.{j}.transformer_blocks.{i}"
            for j in range(count)
            for i in range(config.transformer_layers)
        ]

    names = []
    for i, cross in enumerate(config.cross_attention):
        names += level(f"down_blocks.{i}", config.layers_per_block) if cross else []
    names += level("mid_block", 1)
    for i, cross in enumerate(reversed(config.cross_attention)):
        names += level(f"up_blocks.{i}", config.layers_per_block + 1) if cross else []
    return names


REFERENCE_BLOCKS = ("all", "midup")


def select_bank(bank: Mapping[str, Any], blocks: str = "all") -> dict[str, Any]:
    """The entries of a recorded bank that the denoising UNet reads: "all" (AniPortrait) or
    "midup", the mid and up blocks only (MegActor)."""
    if blocks not in REFERENCE_BLOCKS:
        raise ValueError(f"reference blocks {blocks!r}; one of {REFERENCE_BLOCKS}")
    if blocks == "all":
        return dict(bank)
    return {k: v for k, v in bank.items() if not k.startswith("down_blocks.")}


def _per_frame(x, batch: int, frames: int):
    """An array given per sample (B, ...) repeated over frames to (B*F, ...); one given per
    frame (B*F, ...) as is."""
    if x is None or frames == 1 or x.shape[0] == batch * frames:
        return x
    if x.shape[0] != batch:
        raise ValueError(f"expected a batch of {batch} or {batch * frames}, got {x.shape}")
    return jnp.repeat(x, frames, axis=0)


class UNet2DConditionModel(nn.Module):
    """(N, H, W, in) latents, (N,) or scalar timesteps, (N, S, cross_dim) context ->
    (N, H, W, out); with `return_bank`, (output, bank). Optional inputs: `bank` (reference
    attention), `reference_mask` (N,) bool (False: that sample ignores the bank),
    `additions` (added after conv_in and after each down block: AniPortrait's pose
    features)."""

    config: UNetConfig = SD15
    motion_module: MotionFactory | None = None
    motion_mid: bool = False
    return_bank: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __call__(self, sample, timesteps, context, bank=None, reference_mask=None, additions=None):
        return self.folded(sample, timesteps, context, bank, reference_mask, additions, frames=1)

    @nn.compact
    def folded(
        self, sample, timesteps, context, bank=None, reference_mask=None, additions=None, frames=1
    ):
        """The network on frames folded into the batch: sample (B*F, H, W, C); timesteps,
        context, bank entries and reference_mask per sample (B) or per frame (B*F)."""
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n = sample.shape[0]
        batch = n // frames
        timesteps = jnp.asarray(timesteps)
        timesteps = jnp.broadcast_to(timesteps, (batch,)) if timesteps.ndim == 0 else timesteps
        temb = timestep_features(
            timesteps,
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
            dtype=self.dtype,
        )
        temb = TimestepEmbedding(cfg.time_embed_dim, **kw, name="time_embedding")(temb)
        temb = _per_frame(temb, batch, frames)
        context = _per_frame(jnp.asarray(context, self.dtype), batch, frames)
        reference_mask = _per_frame(reference_mask, batch, frames)
        bank = {k: _per_frame(v, batch, frames) for k, v in (bank or {}).items()}
        common = dict(
            heads=cfg.attention_heads,
            transformer_layers=cfg.transformer_layers,
            groups=cfg.norm_num_groups,
            resnet_eps=cfg.norm_eps,
            transformer_eps=cfg.transformer_norm_eps,
            layer_norm_eps=cfg.layer_norm_eps,
            remat=cfg.remat,
            attention=cfg.attention,
            video_norm=cfg.video_norm,
            **kw,
        )
        run = dict(bank=bank, reference_mask=reference_mask, frames=frames)
        additions = list(additions) if additions is not None else None

        def add(x, k):
            if additions is None:
                return x
            return x + _per_frame(jnp.asarray(additions[k], x.dtype), batch, frames)

        x = conv(cfg.block_out_channels[0], 3, padding=1, name="conv_in", **kw)(
            sample.astype(self.dtype)
        )
        x = constrain(add(x, 0))
        skips, recorded = [x], {}
        levels = len(cfg.block_out_channels)
        for i, width in enumerate(cfg.block_out_channels):
            x, outs, rec = DownBlock(
                width,
                cfg.layers_per_block,
                f"down_blocks.{i}",
                cross_attention=cfg.cross_attention[i],
                motion_module=self.motion_module,
                add_downsample=i < levels - 1,
                **common,
                name=f"down_blocks_{i}",
            )(x, temb, context, **run)
            x = add(x, i + 1)
            skips += outs
            recorded.update(rec)
        x, rec = MidBlock(
            cfg.block_out_channels[-1],
            1,
            "mid_block",
            motion_module=self.motion_module if self.motion_mid else None,
            **common,
            name="mid_block",
        )(x, temb, context, **run)
        recorded.update(rec)
        widths = list(reversed(cfg.block_out_channels))
        for i, width in enumerate(widths):
            count = cfg.layers_per_block + 1
            level_skips, skips = skips[-count:][::-1], skips[:-count]
            last = i == levels - 1
            x, rec = UpBlock(
                width,
                count,
                f"up_blocks.{i}",
                cross_attention=cfg.cross_attention[levels - 1 - i],
                motion_module=self.motion_module,
                add_upsample=not last,
                cut_last=cfg.cut_at_last_norm1 and last,
                **common,
                name=f"up_blocks_{i}",
            )(x, level_skips, temb, context, **run, size=None if last else skips[-1].shape[1:3])
            recorded.update(rec)
        if cfg.conv_out and x is not None:
            norm = group_norm("conv_norm_out", cfg.norm_num_groups, cfg.norm_eps, **kw)
            x = norm_over_frames(norm, x, frames if cfg.video_norm else 1)
            x = conv(cfg.out_channels, 3, padding=1, name="conv_out", **kw)(jax.nn.silu(x))
        return (x, recorded) if self.return_bank else x


class UNet3DConditionModel(UNet2DConditionModel):
    """The UNet inflated over frames: (B, F, H, W, C) latents, timesteps and context per
    sample (B) or per frame, bank entries per sample (repeated over frames as the releases
    do) or per frame, reference_mask (B,), additions (B, F, h, w, c) or per sample ->
    (B, F, H, W, out)."""

    def __call__(self, sample, timesteps, context, bank=None, reference_mask=None, additions=None):
        b, f = sample.shape[:2]
        folded = sample.reshape((b * f,) + sample.shape[2:])
        if additions is not None:
            additions = [
                a.reshape((b * f,) + a.shape[2:]) if a.ndim == sample.ndim else a for a in additions
            ]
        out = self.folded(folded, timesteps, context, bank, reference_mask, additions, frames=f)
        x, rec = out if self.return_bank else (out, None)
        if x is not None:
            x = x.reshape((b, f) + x.shape[1:])
        return (x, rec) if self.return_bank else x
