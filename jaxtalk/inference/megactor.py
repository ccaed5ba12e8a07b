"""MegActor animation: a source portrait driven by a raw video (megvii-research/megactor).

The driving frames are turned grey (the release's weights, three equal channels), as the
model was trained; the whole video is sampled at once in `start` (25 DDIM steps, guidance
4.5, 16-frame windows overlapping by 8, as released; the unconditional half runs without
reference attention) and `drive` hands the frames out chunk by chunk.

The UNet also sees the source's background mask (1 = background): `source_mask`, a PNG /
any image file whose non-zero pixels mark the background, aligned with the source as the
model sees it (so the command wants --nocrop_face with it), else the whole-frame fallback:
every pixel background, as the training data does for clips without masks (then the CLIP
context is the whole source too).

Weights: a file from `jaxtalk import --release=megactor` (the VAE from `--release=sd_vae`,
CLIP from `--release=clip_vision`, found in the weights folder or given as `vae=` /
`image_encoder=`) or a megactor training run (stage 1 or 2; the run's own frozen networks).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from jaxtalk import fs
from jaxtalk.diffusion import recipes
from jaxtalk.diffusion.samplers import DDIMConfig
from jaxtalk.inference.animator import AnimationError, Animator, Driver
from jaxtalk.models.aniportrait.lmk2video import join_motion
from jaxtalk.models.latent_diffusion.frames import FROZEN_NETWORKS
from jaxtalk.models.megactor.pipeline import MegActorPipeline
from jaxtalk.models.pixels import to_model_range

GREY = np.asarray([0.299, 0.587, 0.114], np.float32)  # the release's color_BW_weights
KIND = "megactor"


def grey(frames: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) uint8 -> the same frames grey in all three channels (uint8)."""
    g = np.clip(np.asarray(frames, np.float32) @ GREY, 0, 255).round().astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=-1)


def read_mask(path: str, size: int) -> np.ndarray:
    """A background mask image -> (size, size, 1) float32 in {0, 1}: centre-cropped and
    resized (nearest) like a --nocrop_face source; non-zero pixels are background."""
    from jaxtalk.inference.animator import centre_square

    if not fs.exists(path):
        raise AnimationError(f"{path}: no such mask file")
    try:
        with Image.open(path) as img:
            img = img.convert("L")
            x, y, side, _ = centre_square(*img.size)
            img = img.crop((x, y, x + side, y + side)).resize((size, size), Image.NEAREST)
            mask = np.asarray(img) > 0
    except OSError as e:
        raise AnimationError(f"{path}: not a readable mask image ({e})") from None
    return mask[..., None].astype(np.float32)


class MegActorAnimator(Animator):
    driver = Driver.VIDEO

    def __init__(
        self,
        pipe: MegActorPipeline,
        variables: dict,
        size: int,
        chunk: int = 8,
        recipe: recipes.ReleaseDiffusion | None = None,
        ddim: DDIMConfig | None = None,
    ):
        """`recipe` / `ddim`: how to sample (default: the release's; a run: its own)."""
        self.pipe, self.variables, self.size, self.chunk = pipe, variables, int(size), chunk
        recipe = recipe or recipes.megactor()
        self.ddim, self.guidance, self.windows = (
            ddim or recipe.sample,
            recipe.guidance_scale,
            recipe.context,
        )
        self._sample = jax.jit(self._sample_fn, static_argnames="ddim")

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_stored(cls, stored, path, vae=None, image_encoder=None, chunk=8, **options):
        """A file written by `jaxtalk import --release=megactor` (model_config: the
        MegActorConfig, plus "latent" / "context" / "size" for pixel-space models)."""
        from jaxtalk.convert import megactor as convert
        from jaxtalk.convert import weights

        if options:
            raise AnimationError(f"{path}: megactor takes no options {sorted(options)}")
        config = stored.get("model_config") or {}
        latent, context = config.get("latent", "vae"), config.get("context", "clip")
        try:
            pipe = MegActorPipeline(convert.config_of(config), latent=latent, context=context)
        except ValueError as e:
            raise AnimationError(f"{path}: {e}") from None
        variables = {"megactor": stored["params"]}
        for key, release, given in (
            ("vae", "sd_vae", vae),
            ("image_encoder", "clip_vision", image_encoder),
        ):
            if getattr(pipe, key) is None:
                continue
            file = given or str(weights.weights_path(release))
            if not fs.exists(file):
                raise AnimationError(
                    f"{path}: megactor needs {release} weights: `jaxtalk import "
                    f"--release={release}` (none at {file})"
                )
            variables[key] = weights.load(file)["params"]
        return cls(pipe, variables, config.get("size", 512), chunk)

    @classmethod
    def from_run(cls, workdir, step=None, chunk=8, **options):
        """A megactor training run (either stage; the run's own frozen networks)."""
        from jaxtalk.train import checkpoints

        config = checkpoints.run_config(workdir, step)
        if config.get("task") != KIND:
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not megactor")
        pipe = MegActorPipeline.from_config(config["model"])
        groups = ("model",) if config["stage"] == "stage1" else ("base", "motion")
        groups += tuple(g for g in FROZEN_NETWORKS if getattr(pipe, g) is not None)
        got = {g: checkpoints.group_variables(workdir, g, step)["params"] for g in groups}
        variables = {k: got[k] for k in FROZEN_NETWORKS if k in got}
        if "model" in got:
            variables["megactor"] = got["model"]
        else:
            base = got["base"]
            unet = join_motion(base["unet"], got["motion"])
            variables["megactor"] = {**base, "unet": unet}
        recipe, ddim = recipes.of_run(config["diffusion"])
        return cls(pipe, variables, config["data"]["image_size"], chunk, recipe, ddim)

    # ------------------------------------------------------------------ the contract
    def _sample_fn(self, variables, source, mask, driving, rng, ddim):
        background = jnp.where(mask > 0, source, -1.0)  # the person blacked out
        return self.pipe.sample(
            variables, source, background, mask, driving, rng, ddim, self.guidance, self.windows
        )

    def prepare(self, source: np.ndarray):
        return to_model_range(source[None])

    def start(
        self,
        state,
        driving: np.ndarray,
        source_mask: str | None = None,
        seed: int = 0,
        ddim_steps: int | None = None,
    ):
        """driving (T, S, S, 3) uint8 -> the sampled frames; `source_mask`: the source's
        background mask file (default: all background); `seed`: the sampler's noise;
        `ddim_steps`: the sampler's steps (default: the release's 25, or the run's)."""
        ddim = self.ddim
        if ddim_steps is not None:
            if int(ddim_steps) < 1:
                raise AnimationError(f"ddim_steps must be at least 1, got {ddim_steps}")
            ddim = dataclasses.replace(ddim, num_steps=int(ddim_steps))
        size = self.size
        mask = np.ones((size, size, 1), np.float32)
        if source_mask:
            mask = read_mask(source_mask, size)
        frames = to_model_range(grey(driving)[None])
        video = self._sample(
            self.variables, state, jnp.asarray(mask[None]), frames, jax.random.PRNGKey(seed), ddim
        )
        return None, np.asarray(video[0]) * 2.0 - 1.0

    def drive(self, state, steps: np.ndarray):
        return jnp.asarray(steps)


# What this module drives (jaxtalk/discovery.py): the release's weights kind and task name.
ANIMATORS = {KIND: MegActorAnimator}

__all__ = ["ANIMATORS", "MegActorAnimator", "grey", "read_mask"]
