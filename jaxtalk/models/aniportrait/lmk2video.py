"""AniPortrait's Lmk2Video networks as one pipeline: what training and animation share.

    pipe = Lmk2Video.from_config(config.model, motion=True)     # a run's `model` config
    variables = pipe.init(rng, reference, reference_drawing, drawings)
    video = pipe.sample(variables, reference, reference_drawing, drawings, rng, ddim, 3.5)

A ReferenceNet (SD UNet without conv_out) run at timestep 0 on the clean reference latents
records every transformer block's norm1 features (the bank); the denoising UNet, inflated
over frames, appends them to its self-attention keys and values; the PoseGuider turns the
face-mesh drawings into features added after conv_in and after each down block; the CLIP
image embedding of the reference is the cross-attention context; AnimateDiff v2 motion
modules (with a mid-block one) make it a video model.

`variables` is a dict of the networks' variables: "reference", "denoiser" (the UNet without
motion modules) and "pose_guider" ({"params", "batch_stats"}), "motion" (the motion modules'
params, nested as in the UNet3D: AnimateDiff's file layout) when the pipeline has them,
"vae" and "image_encoder" (params) when `latent="vae"` / `context="clip"`. Images and
drawings are in the models' range [-1, 1]; the PoseGuider sees the drawings in `pose_range`
("01": [0, 1], as the release trains; "-11": [-1, 1], as its pipeline samples).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxtalk.diffusion.context import ContextWindows
from jaxtalk.diffusion.samplers import DDIMConfig, sample_video
from jaxtalk.models.aniportrait.pose_guider import PoseGuider, PoseGuiderConfig
from jaxtalk.models.latent_diffusion import clip_vision, frames, vae
from jaxtalk.models.latent_diffusion.motion_module import MotionModule
from jaxtalk.models.latent_diffusion.unet import (
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetConfig,
)
from jaxtalk.models.pixels import to_01

MOTION_KEY = "motion_modules_"
# What is diffused: pixels, 2x2 pixel patches as 12-channel vectors (an exact, invertible
# "autoencoder": the tiny recipe's UNet then starts at 16x16 for 32x32 frames, where its
# reference attention works), or SD VAE latents.
LATENTS = ("pixels", "patches", "vae")
PATCH = 2
CONTEXTS = ("clip", "zeros")
POSE_RANGES = ("01", "-11")


def split_motion(tree: dict) -> tuple[dict, dict]:
    """A UNet3D params tree -> (the UNet's own params, the motion modules' params), both
    nested as in the UNet3D (what AnimateDiff's motion_module file holds)."""
    flat = traverse_util.flatten_dict(tree)
    motion = {k: v for k, v in flat.items() if any(p.startswith(MOTION_KEY) for p in k)}
    rest = {k: v for k, v in flat.items() if k not in motion}
    return traverse_util.unflatten_dict(rest), traverse_util.unflatten_dict(motion)


def join_motion(unet: dict, motion: dict) -> dict:
    """Inverse of `split_motion`."""
    flat = traverse_util.flatten_dict(unet)
    flat.update(traverse_util.flatten_dict(motion))
    return traverse_util.unflatten_dict(flat)


class Lmk2Video:
    """The networks and the functions over them (pure: variables in, arrays out)."""

    def __init__(
        self,
        unet: UNetConfig,
        pose_guider: PoseGuiderConfig,
        *,
        motion_module: dict | None = None,  # MotionModule settings; None: no motion modules
        latent: str = "vae",
        context: str = "clip",
        pose_range: str = "01",
        vae_config: vae.VAEConfig = vae.SD_VAE,
        clip_config: clip_vision.CLIPVisionConfig | None = None,
        dtype: Any = jnp.float32,
    ):
        kw = dict(dtype=dtype)
        self.unet_config = unet
        self.latent = frames.check_choice("latent", latent, LATENTS)
        self.pose_range = frames.check_choice("pose_range", pose_range, POSE_RANGES)
        frames.check_choice("context", context, CONTEXTS)
        self.patch = PATCH if latent == "patches" else 1  # pixels per side of a diffused one
        if latent != "vae":
            want = 3 * self.patch**2
            if (unet.in_channels, unet.out_channels) != (want, want):
                raise ValueError(
                    f"model.latent={latent!r} diffuses {want} channels, but the UNet's "
                    f"in/out channels are {unet.in_channels}/{unet.out_channels}"
                )
        self.reference_net = UNet2DConditionModel(
            dataclasses.replace(unet, conv_out=False), return_bank=True, **kw
        )
        self.denoiser_2d = UNet3DConditionModel(unet, **kw)
        self.denoiser = self.denoiser_2d
        self.has_motion = motion_module is not None
        if self.has_motion:
            factory = functools.partial(MotionModule, **motion_module)
            self.denoiser = UNet3DConditionModel(unet, motion_module=factory, motion_mid=True, **kw)
        self.pose_guider = PoseGuider(pose_guider, **kw)
        self.vae = vae.AutoencoderKL(vae_config) if latent == "vae" else None
        self.image_encoder = None
        if context == "clip":
            self.image_encoder = clip_vision.CLIPVisionModelWithProjection(
                clip_config or clip_vision.CLIPVisionConfig()
            )

    @classmethod
    def from_config(cls, model, motion: bool, dtype: Any = jnp.float32) -> "Lmk2Video":
        """From a run's `model` config (configs/aniportrait.py) or its dict."""
        m = model.to_dict() if hasattr(model, "to_dict") else dict(model)
        return cls(
            frames.config_record(UNetConfig, m["unet"]),
            frames.config_record(PoseGuiderConfig, m["pose_guider"]),
            motion_module=dict(m.get("motion_module") or {}) if motion else None,
            latent=m["latent"],
            context=m["context"],
            pose_range=m["pose_range"],
            vae_config=frames.config_record(vae.VAEConfig, m.get("vae") or {}),
            clip_config=frames.config_record(
                clip_vision.CLIPVisionConfig, m.get("image_encoder") or {}
            ),
            dtype=dtype,
        )

    # ------------------------------------------------------------------ init
    def init(self, rng, reference, reference_drawing, drawings) -> dict:
        """Fresh variables for a reference (B, H, W, 3) and drawings (B, F, H, W, 3)."""
        r_ref, r_den, r_pose, r_frozen = jax.random.split(rng, 4)
        out = frames.init_frozen(self.vae, self.image_encoder, reference, r_frozen)
        n = reference.shape[0]
        ref = self.encode(out, reference[:, None], None)[:, 0]
        t = jnp.zeros((n,), jnp.int32)
        ctx = jnp.zeros((n, 1, self.unet_config.cross_attention_dim), jnp.float32)
        out["reference"] = self.reference_net.init(r_ref, ref, t, ctx)
        _, bank = self.reference_net.apply(out["reference"], ref, t, ctx)
        out["pose_guider"] = self.pose_guider.init(r_pose, drawings, reference_drawing)
        additions, _ = self.pose_features(out, drawings, reference_drawing)
        latents = jnp.zeros(self.latent_shape(drawings.shape), jnp.float32)
        on = jnp.ones((n,), bool)
        den = self.denoiser.init(r_den, latents, t, ctx, bank, on, additions)["params"]
        unet, motion = split_motion(den)
        out["denoiser"] = {"params": unet}
        if self.has_motion:
            out["motion"] = motion
        return out

    def latent_shape(self, image_shape) -> tuple[int, ...]:
        """(B, F, h, w, C) of what is diffused for images (B, F, H, W, 3)."""
        b, f, h, w = image_shape[:4]
        if self.vae is None:
            d = self.patch
            return (b, f, h // d, w // d, self.unet_config.in_channels)
        d = vae.downsampling_factor(self.vae.config)
        return (b, f, h // d, w // d, self.vae.config.latent_channels)

    # ------------------------------------------------------------------ the networks
    def encode(self, variables, images, rng):
        """Frames (B, F, H, W, 3) -> what is diffused: the pixels themselves, or VAE latents
        times 0.18215 (a posterior sample given `rng`, as the release trains; else the mean),
        or 2x2 patches."""
        if self.latent == "patches":
            return frames.patchify(images, PATCH)
        if self.vae is None:
            return images
        return frames.vae_encode(self.vae, variables["vae"], images, rng)

    def decode(self, variables, latents):
        if self.latent == "patches":
            return frames.unpatchify(latents, PATCH)
        if self.vae is None:
            return latents
        return frames.vae_decode(self.vae, variables["vae"], latents)

    def context(self, variables, reference, keep):
        """Cross-attention context (B, 1, D): the reference's CLIP image embedding, or that of
        an all-zero image where `keep` is False (training's unconditional examples); zeros
        without an image encoder."""
        n = reference.shape[0]
        if self.image_encoder is None:
            return jnp.zeros((n, 1, self.unet_config.cross_attention_dim), jnp.float32)
        pixels = frames.clip_pixels(self.image_encoder, to_01(reference))
        pixels = jnp.where(keep[:, None, None, None], pixels, 0.0)
        out = self.image_encoder.apply({"params": variables["image_encoder"]}, pixels)
        return out.image_embeds[:, None, :].astype(jnp.float32)

    def bank(self, variables, reference_latents, context):
        """The ReferenceNet's norm1 features of the clean reference (timestep 0)."""
        n = reference_latents.shape[0]
        _, bank = self.reference_net.apply(
            variables["reference"], reference_latents, jnp.zeros((n,), jnp.int32), context
        )
        return bank

    def pose_features(self, variables, drawings, reference_drawing, train=False):
        """PoseGuider features of drawings (B, F, H, W, 3) -> list of (B, F, h, w, c), and the
        updated batch statistics when `train` (None otherwise)."""
        if self.pose_range == "01":
            drawings, reference_drawing = to_01(drawings), to_01(reference_drawing)
        v = variables["pose_guider"]
        if not train:
            return self.pose_guider.apply(v, drawings, reference_drawing, train=False), None
        feats, new = self.pose_guider.apply(
            v, drawings, reference_drawing, train=True, mutable=["batch_stats"]
        )
        return feats, new["batch_stats"]

    def denoise(self, variables, x_t, t, context, bank, reference_on, additions, motion=True):
        """The denoiser's output (float32); `motion=False` runs it without motion modules
        (the stage-1 model)."""
        den = variables["denoiser"]["params"]
        if self.has_motion and motion:
            v, net = {"params": join_motion(den, variables["motion"])}, self.denoiser
        else:
            v, net = {"params": den}, self.denoiser_2d
        out = net.apply(v, x_t, t, context, bank, reference_on, additions)
        return out.astype(jnp.float32)

    # ------------------------------------------------------------------ sampling
    def window_pose_features(self, variables, drawings, reference_drawing, batch_stats=False):
        """PoseGuider features of one window of drawings (B, K, H, W, 3), uint8 pixels or
        [-1, 1] floats. `batch_stats`: normalise with the window's own statistics, as the
        release's pipeline runs its never-.eval()'d BatchNorms (the updates are dropped)."""
        drawings = _model_range(drawings)
        reference_drawing = _model_range(reference_drawing)
        return self.pose_features(variables, drawings, reference_drawing, train=batch_stats)[0]

    def sample_latents(
        self,
        variables,
        reference,
        reference_drawing,
        drawings,
        rng,
        ddim: DDIMConfig,
        guidance_scale: float,
        windows: ContextWindows | None = None,
        motion: bool = True,
        pose_batch_stats: bool = False,
    ):
        """What is diffused (B, F, h, w, C) for a reference (B, H, W, 3) and the drawings of
        the frames to make (B, F, H, W, 3; uint8 pixels or [-1, 1]): DDIM with classifier-free
        guidance (the unconditional half: zero image embedding, reference attention off, the
        same pose features, as the release's pipeline) over context `windows` when the video
        is longer than one. The PoseGuider runs inside each window's denoiser call, so only
        the drawings and the latents span the whole video: memory is flat in its length."""
        n = reference.shape[0]
        on = jnp.ones((n,), bool)
        ref = self.encode(variables, reference[:, None], None)[:, 0]
        context = self.context(variables, reference, on)
        cond = {"context": context, "bank": self.bank(variables, ref, context), "on": on}

        def denoise_fn(x, t, c, frames):
            window = jnp.take(drawings, frames, axis=1)
            adds = self.window_pose_features(variables, window, reference_drawing, pose_batch_stats)
            copies = x.shape[0] // n  # 2 under guidance: [uncond, cond] share the features
            adds = [jnp.concatenate([a] * copies, axis=0) for a in adds]
            return self.denoise(
                variables, x, t, c["context"], c["bank"], c["on"], adds, motion=motion
            )

        def make_uncond(c):
            return {**c, "context": jnp.zeros_like(c["context"]), "on": jnp.zeros_like(c["on"])}

        shape = self.latent_shape(drawings.shape)
        use_windows = windows is not None and shape[1] > windows.size
        return sample_video(
            denoise_fn,
            jax.random.normal(rng, shape, jnp.float32),
            ddim,
            cond=cond,
            make_uncond=make_uncond,
            guidance_scale=guidance_scale,
            context=windows if use_windows else None,
        )

    def sample(self, variables, reference, reference_drawing, drawings, rng, *args, **kw):
        """Frames (B, F, H, W, 3) in [0, 1]: `sample_latents` (same arguments) decoded."""
        x = self.sample_latents(variables, reference, reference_drawing, drawings, rng, *args, **kw)
        return to_01(self.decode(variables, x))


def _model_range(images):
    """uint8 pixels -> [-1, 1] float32; floats pass as they are."""
    if images.dtype == jnp.uint8:
        return images.astype(jnp.float32) / 127.5 - 1.0
    return images
