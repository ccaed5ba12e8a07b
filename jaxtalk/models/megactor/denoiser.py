"""MegActor's denoiser: the SD1.5 UNet inflated over frames with a 13-channel conv_in and
AnimateDiff v3 motion modules, the DrivenEncoder that turns the driving frames into 4 of
those channels, and the ReferenceNet whose mid- and up-block norm1 outputs the UNet's
self-attention also attends to.

    model = MegActor(MEGACTOR)
    eps = model.apply({"params": params}, latents, t, context, driving, reference_image,
                      reference_latents, concat_latents, background_mask, reference_mask)

- latents (B, F, h, w, 4): the noisy latents; t (B,) or a scalar: the timestep, which the
  ReferenceNet runs at too (recomputed at every step, as the release does);
- context (B, S, D): the cross-attention context of both UNets, CLIP image tokens of the
  background-only reference (all 257, projected to 768: clip_vision.py's token mode);
- driving (B, F, 8h, 8w, 3) in [0, 1]: the (grayscale, 3-channel) driving frames;
- reference_image (B, R, R, 3) in [0, 1]: the reference portrait for the DrivenEncoder's
  FiLM (R = 512 at the release's sizes, `driven.reference_side`);
- reference_latents (B, h, w, 4): the reference's VAE latents (posterior mean x 0.18215),
  the ReferenceNet's input;
- concat_latents (B, h, w, 4) and background_mask (B, h, w, 1): the latents of the image
  concatenated to every frame (the reference itself, "origin", a posterior sample x 0.18215)
  and its background mask resized (nearest) to the latent size; per frame (B, F, ...) too;
- reference_mask (B,) bool or None: False makes that sample ignore the reference (the
  unconditional half under classifier-free guidance);
-> the predicted noise (B, F, h, w, 4).

conv_in sees, in the release's order, [latents, concat_latents, background_mask,
DrivenEncoder(driving, reference_image)] (4 + 4 + 1 + 4 = 13): the release concatenates the
DrivenEncoder's output last, inside its UNet's forward. The 9 channels SD's conv_in lacks
start at zero there (`widen_conv_in`). `reference_bank` and `denoise` are the two halves,
for samplers that run several frame windows against one bank.

Params: {"unet", "driven_encoder", "reference_net"} (the release's `unet.*` without
`condition_input_layer.*`, `unet.condition_input_layer.*`, `appearance_encoder.*`). At the
release's sizes the UNet + DrivenEncoder hold 870,047,324 parameters in 740 tensors, the
motion modules 417,137,600 more, the ReferenceNet 857,066,560.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.latent_diffusion import unet as ld
from jaxtalk.models.latent_diffusion.motion_module import MotionModule
from jaxtalk.models.megactor import driven_encoder as de

LATENT_CHANNELS = 4
CONCAT_CHANNELS = LATENT_CHANNELS + 1  # reference latents + background mask


@dataclasses.dataclass(frozen=True)
class MegActorConfig:
    unet: ld.UNetConfig = dataclasses.replace(ld.SD15, in_channels=13, video_norm=True)
    reference: ld.UNetConfig = ld.MEGACTOR_REFERENCE
    driven: de.DrivenEncoderConfig = de.RELEASE
    motion_modules: bool = True  # AnimateDiff v3: after every down / up pair, none in mid
    motion_max_len: int = 32
    motion_heads: int = 8
    motion_remat: bool = False

    def __post_init__(self):
        want = LATENT_CHANNELS + CONCAT_CHANNELS + self.driven.out_channels
        if self.unet.in_channels != want:
            raise ValueError(
                f"MegActor's UNet takes {want} input channels, not {self.unet.in_channels}"
            )


MEGACTOR = MegActorConfig()
_TINY_UNET = dataclasses.replace(ld.TINY, block_out_channels=(32, 64), in_channels=13)
# Seconds on a CPU: the SD pattern at two levels (motion modules need multiples of 32).
TINY = MegActorConfig(
    unet=dataclasses.replace(_TINY_UNET, video_norm=True),
    reference=dataclasses.replace(
        _TINY_UNET, in_channels=4, conv_out=False, cut_at_last_norm1=True
    ),
    driven=de.TINY,
)


def widen_conv_in(kernel, in_channels: int = 13):
    """SD's conv_in kernel (3, 3, 4, C) widened to `in_channels` inputs, the new ones zero:
    how the release starts its 13-channel conv_in."""
    pad = in_channels - kernel.shape[2]
    return jnp.pad(kernel, ((0, 0), (0, 0), (0, pad), (0, 0)))


class MegActor(nn.Module):
    config: MegActorConfig = MEGACTOR
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        motion = None
        if cfg.motion_modules:
            motion = functools.partial(
                MotionModule,
                heads=cfg.motion_heads,
                max_len=cfg.motion_max_len,
                remat=cfg.motion_remat,
                **kw,
            )
        self.unet = ld.UNet3DConditionModel(cfg.unet, motion_module=motion, **kw)
        self.driven_encoder = de.DrivenEncoder(cfg.driven, **kw)
        self.reference_net = ld.UNet2DConditionModel(cfg.reference, return_bank=True, **kw)

    def reference_bank(self, reference_latents, timesteps, context) -> dict:
        """The ReferenceNet's mid- and up-block norm1 outputs, {name: (B, L, C)}."""
        _, bank = self.reference_net(reference_latents, timesteps, context)
        return ld.select_bank(bank, "midup")

    def denoise(
        self,
        latents,
        timesteps,
        context,
        driving,
        reference_image,
        concat_latents,
        background_mask,
        bank,
        reference_mask=None,
    ):
        """The UNet on [latents, concat_latents, background_mask, driving features]."""
        b, f = latents.shape[:2]

        def per_frame(x):
            x = jnp.asarray(x, self.dtype)
            return x if x.ndim == 5 else jnp.broadcast_to(x[:, None], (b, f) + x.shape[1:])

        features = self.driven_encoder(driving, reference_image)
        if features.shape[:4] != latents.shape[:4]:
            raise ValueError(
                f"driving frames {driving.shape} give features {features.shape}, latents are "
                f"{latents.shape}"
            )
        sample = jnp.concatenate(
            [
                jnp.asarray(latents, self.dtype),
                per_frame(concat_latents),
                per_frame(background_mask),
                features.astype(self.dtype),
            ],
            axis=-1,
        )
        return self.unet(sample, timesteps, context, bank, reference_mask)

    def __call__(
        self,
        latents,
        timesteps,
        context,
        driving,
        reference_image,
        reference_latents,
        concat_latents,
        background_mask,
        reference_mask=None,
    ):
        bank = self.reference_bank(reference_latents, timesteps, context)
        return self.denoise(
            latents,
            timesteps,
            context,
            driving,
            reference_image,
            concat_latents,
            background_mask,
            bank,
            reference_mask,
        )
