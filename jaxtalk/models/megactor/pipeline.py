"""MegActor's networks as one pipeline: what training and animation share.

    pipe = MegActorPipeline.from_config(config.model)     # a run's `model` config
    variables = pipe.init(rng, reference, reference_background, driving)
    video = pipe.sample(variables, reference, reference_background, mask, driving, rng, ddim,
                        4.5, windows)

`denoiser.MegActor` holds the three trained networks (UNet3D with motion modules,
DrivenEncoder, ReferenceNet); around it: the frozen VAE (`latent="vae"`) and CLIP image
tower (`context="clip"`: all 257 projected tokens of the background-only reference).

`variables`: "megactor" ({"unet", "driven_encoder", "reference_net"} params), plus "vae" and
"image_encoder" params when the pipeline has them. Images are in [-1, 1]; masks in {0, 1}
(1 = background).

The `tiny` configs diffuse pixels (`latent="pixels"`): MegActor's UNet takes 4 latent
channels, so the RGB frame gets a fourth, all-zero channel (dropped on decoding), and the
DrivenEncoder must keep the resolution (one width: no downsampling).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxtalk.diffusion.context import ContextWindows
from jaxtalk.diffusion.samplers import DDIMConfig, sample_video
from jaxtalk.models.latent_diffusion import clip_vision, frames, vae
from jaxtalk.models.latent_diffusion.unet import UNetConfig
from jaxtalk.models.megactor import denoiser as den
from jaxtalk.models.megactor.driven_encoder import DrivenEncoderConfig
from jaxtalk.models.pixels import to_01

LATENTS = ("pixels", "vae")
CONTEXTS = ("clip", "zeros")


def resize_mask(mask, size: tuple[int, int]):
    """(B, H, W, 1) masks -> (B, h, w, 1), nearest (the release's F.interpolate default)."""
    n, h, w = mask.shape[:3]
    rows = (jnp.arange(size[0]) * h) // size[0]
    cols = (jnp.arange(size[1]) * w) // size[1]
    return jnp.asarray(mask, jnp.float32)[:, rows][:, :, cols]


def megactor_config(model) -> den.MegActorConfig:
    """A MegActorConfig from a run's `model.megactor` config dict."""
    m = model.to_dict() if hasattr(model, "to_dict") else dict(model)
    return den.MegActorConfig(
        unet=frames.config_record(UNetConfig, m["unet"]),
        reference=frames.config_record(UNetConfig, m["reference"]),
        driven=frames.config_record(DrivenEncoderConfig, m["driven"]),
        **{k: v for k, v in m.items() if k not in ("unet", "reference", "driven")},
    )


class MegActorPipeline:
    """The networks and the functions over them (pure: variables in, arrays out)."""

    def __init__(
        self,
        config: den.MegActorConfig,
        *,
        latent: str = "vae",
        context: str = "clip",
        vae_config: vae.VAEConfig = vae.SD_VAE,
        clip_config: clip_vision.CLIPVisionConfig | None = None,
        dtype: Any = jnp.float32,
    ):
        self.config = config
        self.latent = frames.check_choice("latent", latent, LATENTS)
        frames.check_choice("context", context, CONTEXTS)
        self.model = den.MegActor(config, dtype=dtype)
        self.vae = vae.AutoencoderKL(vae_config) if latent == "vae" else None
        if self.vae is not None and self.vae.config.latent_channels != den.LATENT_CHANNELS:
            raise ValueError(f"MegActor diffuses {den.LATENT_CHANNELS}-channel latents")
        self.image_encoder = None
        if context == "clip":
            self.image_encoder = clip_vision.CLIPVisionModelWithProjection(
                clip_config or clip_vision.CLIPVisionConfig()
            )

    @classmethod
    def from_config(cls, model, dtype: Any = jnp.float32) -> "MegActorPipeline":
        """From a run's `model` config (configs/megactor.py) or its dict."""
        m = model.to_dict() if hasattr(model, "to_dict") else dict(model)
        return cls(
            megactor_config(m["megactor"]),
            latent=m["latent"],
            context=m["context"],
            vae_config=frames.config_record(vae.VAEConfig, m.get("vae") or {}),
            clip_config=frames.config_record(
                clip_vision.CLIPVisionConfig, m.get("image_encoder") or {}
            ),
            dtype=dtype,
        )

    @property
    def downsampling(self) -> int:
        return 1 if self.vae is None else vae.downsampling_factor(self.vae.config)

    def latent_shape(self, image_shape) -> tuple[int, ...]:
        """(B, F, h, w, 4) of what is diffused for images (B, F, H, W, 3)."""
        b, f, h, w = image_shape[:4]
        d = self.downsampling
        return (b, f, h // d, w // d, den.LATENT_CHANNELS)

    # ------------------------------------------------------------------ init
    def init(self, rng, reference, reference_background, driving) -> dict:
        """Fresh variables for a reference (B, H, W, 3), its background-only copy and the
        driving frames (B, F, H, W, 3)."""
        r_net, r_frozen = jax.random.split(rng)
        out = frames.init_frozen(self.vae, self.image_encoder, reference, r_frozen)
        n = reference.shape[0]
        cond = self.conditions(out, reference, reference_background, None, None)
        latents = jnp.zeros(self.latent_shape(driving.shape), jnp.float32)
        t = jnp.zeros((n,), jnp.int32)
        args = self._args(cond, driving)
        out["megactor"] = self.model.init(r_net, latents, t, **args)["params"]
        return out

    # ------------------------------------------------------------------ the networks
    def encode(self, variables, images, rng):
        """Frames (B, F, H, W, 3) -> what is diffused: VAE latents x 0.18215 (a posterior
        sample given `rng`, else the mean), or the pixels with a zero fourth channel."""
        if self.vae is None:
            return jnp.concatenate([images, jnp.zeros_like(images[..., :1])], axis=-1)
        return frames.vae_encode(self.vae, variables["vae"], images, rng)

    def decode(self, variables, latents):
        if self.vae is None:
            return latents[..., :3]
        return frames.vae_decode(self.vae, variables["vae"], latents)

    def context(self, variables, reference_background):
        """Cross-attention context: CLIP's 257 projected tokens of the background-only
        reference (B, 257, D); zeros (B, 1, D) without an image encoder."""
        n = reference_background.shape[0]
        if self.image_encoder is None:
            return jnp.zeros((n, 1, self.config.unet.cross_attention_dim), jnp.float32)
        pixels = frames.clip_pixels(self.image_encoder, to_01(reference_background))
        out = self.image_encoder.apply({"params": variables["image_encoder"]}, pixels)
        return out.token_embeds.astype(jnp.float32)

    def conditions(self, variables, reference, reference_background, mask, rng):
        """What every denoising call shares, from the reference (B, H, W, 3) in [-1, 1], its
        background-only copy and background mask (B, H, W, 1) (None: all background):
        context, reference latents (posterior mean, the ReferenceNet's input), concat latents
        (a posterior sample given `rng`, as the release's "origin"), the latent-sized mask and
        the DrivenEncoder's reference image in [0, 1] at its side."""
        n, h, w = reference.shape[:3]
        d = self.downsampling
        if mask is None:
            mask = jnp.ones((n, h, w, 1), jnp.float32)
        side = self.config.driven.reference_side
        ref01 = to_01(reference)
        if ref01.shape[1:3] != (side, side):
            ref01 = jax.image.resize(ref01, (n, side, side, 3), "bilinear")
        mean = self.encode(variables, reference[:, None], None)[:, 0]
        concat = mean if rng is None else self.encode(variables, reference[:, None], rng)[:, 0]
        return {
            "context": self.context(variables, reference_background),
            "reference_latents": mean,
            "concat_latents": concat,
            "background_mask": resize_mask(mask, (h // d, w // d)),
            "reference_image": ref01,
        }

    def _args(self, cond, driving, reference_mask=None):
        return dict(
            context=cond["context"],
            driving=to_01(driving),
            reference_image=cond["reference_image"],
            reference_latents=cond["reference_latents"],
            concat_latents=cond["concat_latents"],
            background_mask=cond["background_mask"],
            reference_mask=reference_mask,
        )

    def denoise(self, variables, x_t, t, cond, driving, reference_mask=None):
        """The predicted noise (float32): the ReferenceNet at `t` (as the release runs it at
        every step), then the UNet on the driving frames (B, F, H, W, 3) in [-1, 1]."""
        args = self._args(cond, driving, reference_mask)
        out = self.model.apply({"params": variables["megactor"]}, x_t, t, **args)
        return out.astype(jnp.float32)

    # ------------------------------------------------------------------ sampling
    def sample(
        self,
        variables,
        reference,
        reference_background,
        mask,
        driving,
        rng,
        ddim: DDIMConfig,
        guidance_scale: float,
        windows: ContextWindows | None = None,
    ):
        """Frames (B, F, H, W, 3) in [0, 1] animating the reference with the driving frames
        (B, F, H, W, 3) in [-1, 1] (grey, as trained): DDIM with classifier-free guidance
        whose unconditional half is the same inputs with reference attention off (the
        release's pipeline: same CLIP tokens, same concat latents), over context `windows`
        when the video is longer than one."""
        n = reference.shape[0]
        r_noise, r_concat = jax.random.split(rng)
        cond = self.conditions(variables, reference, reference_background, mask, r_concat)
        cond["on"] = jnp.ones((n,), bool)
        cond["driving"] = driving

        def denoise_fn(x, t, c, frames):
            window = jnp.take(c["driving"], frames, axis=1)
            return self.denoise(variables, x, t, c, window, c["on"])

        def make_uncond(c):
            return {**c, "on": jnp.zeros_like(c["on"])}

        shape = self.latent_shape(driving.shape)
        use_windows = windows is not None and shape[1] > windows.size
        x = sample_video(
            denoise_fn,
            jax.random.normal(r_noise, shape, jnp.float32),
            ddim,
            cond=cond,
            make_uncond=make_uncond,
            guidance_scale=guidance_scale,
            context=windows if use_windows else None,
        )
        return to_01(self.decode(variables, x))
