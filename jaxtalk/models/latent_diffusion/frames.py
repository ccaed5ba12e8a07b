"""The frozen SD parts over video batches, shared by the latent video diffusion pipelines
(AniPortrait's Lmk2Video, MegActor): frames (B, F, ...) through the per-image VAE, reference
images into the CLIP image tower's input, and the config helpers their constructors use."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtalk.models.latent_diffusion import clip_vision

FROZEN_NETWORKS = ("vae", "image_encoder")  # the frozen parts a pipeline may hold


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` when it is one of `allowed`, else an error naming the `model.<name>` option."""
    if value not in allowed:
        raise ValueError(f"model.{name} must be one of {allowed}, got {value!r}")
    return value


def config_record(cls, values):
    """A frozen config dataclass from a config dict (lists, e.g. from the command line or a
    JSON file, as tuples, which Flax module attributes need)."""
    values = values.to_dict() if hasattr(values, "to_dict") else dict(values)
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _per_frame(fn, x):
    """fn over (B*F, ...) for x (B, F, ...), the result back as (B, F, ...)."""
    n, f = x.shape[:2]
    y = fn(x.reshape((-1,) + x.shape[2:]))
    return y.reshape((n, f) + y.shape[1:])


def vae_encode(vae_module, params, images, rng):
    """Frames (B, F, H, W, 3) in [-1, 1] -> latents x 0.18215 (B, F, h, w, 4): a posterior
    sample given `rng`, else the mean."""
    return _per_frame(
        lambda x: vae_module.apply({"params": params}, x, rng, method=vae_module.encode_latents),
        images,
    )


def vae_decode(vae_module, params, latents):
    """Latents (B, F, h, w, 4) -> frames (B, F, H, W, 3) in [-1, 1]."""
    return _per_frame(
        lambda z: vae_module.apply({"params": params}, z, method=vae_module.decode_latents),
        latents,
    )


def patchify(images, patch: int):
    """(..., H, W, C) -> (..., H/patch, W/patch, patch*patch*C): each patch x patch block of
    pixels as one vector (space to depth; `unpatchify` is its exact inverse)."""
    *lead, h, w, c = images.shape
    if h % patch or w % patch:
        raise ValueError(f"images of {h}x{w} do not split into {patch}x{patch} patches")
    x = images.reshape(*lead, h // patch, patch, w // patch, patch, c)
    x = jnp.moveaxis(x, -4, -3)  # (..., h, w, patch_y, patch_x, C)
    return x.reshape(*lead, h // patch, w // patch, patch * patch * c)


def unpatchify(latents, patch: int):
    """Inverse of `patchify`."""
    *lead, h, w, d = latents.shape
    c = d // (patch * patch)
    x = latents.reshape(*lead, h, w, patch, patch, c)
    x = jnp.moveaxis(x, -3, -4)  # (..., h, patch_y, w, patch_x, C)
    return x.reshape(*lead, h * patch, w * patch, c)


def clip_pixels(image_encoder, images01):
    """Images (B, H, W, 3) in [0, 1] -> the CLIP image tower's input: bicubic to its side,
    normalised by CLIP's mean and std (as the releases' CLIPImageProcessor)."""
    n = images01.shape[0]
    size = image_encoder.config.image_size
    pixels = jax.image.resize(images01, (n, size, size, 3), "bicubic")
    mean = jnp.asarray(clip_vision.CLIP_MEAN, pixels.dtype)
    std = jnp.asarray(clip_vision.CLIP_STD, pixels.dtype)
    return (pixels - mean) / std


def init_frozen(vae_module, image_encoder, reference, rng) -> dict:
    """Fresh {"vae", "image_encoder"} params for the parts a pipeline has (None: none)."""
    r_vae, r_clip = jax.random.split(rng)
    out = {}
    if vae_module is not None:
        out["vae"] = vae_module.init(r_vae, reference[:1], r_vae)["params"]
    if image_encoder is not None:
        size = image_encoder.config.image_size
        pixels = jnp.zeros((1, size, size, 3), jnp.float32)
        out["image_encoder"] = image_encoder.init(r_clip, pixels)["params"]
    return out
