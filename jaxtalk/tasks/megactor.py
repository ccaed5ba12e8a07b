"""MegActor's training (the release's train.py with train_stage{1,2}.yaml), in two stages.

The networks (jaxtalk/models/megactor/pipeline.py): the DrivenEncoder turns the grey driving
frames into 4 of the UNet's 13 input channels, beside the noisy latents, the reference's
latents and its background mask; the ReferenceNet runs on the clean reference latents at
the same timestep and its mid / up norm1 features join the UNet's self-attention; CLIP's 257
projected tokens of the background-only reference are the cross-attention context.

Stage 1 (`config.stage = "stage1"`): one trained group `model` = the MegActor params {unet
(motion modules included, as the release's "unet" trainable name matches them),
driven_encoder, reference_net}. Stage 2 (`"stage2"`): the stage-1 networks without the motion
modules are the frozen group `base` (from `config.base.workdir`, a stage-1 run, or
`config.base.weights`, `jaxtalk import --release=megactor`); only `motion` trains.

The frozen VAE and CLIP image tower come from `config.vae_weights` /
`config.image_encoder_weights` (`jaxtalk import --release=sd_vae` / `--release=clip_vision`);
the `tiny` variants have neither (pixel space, zero context).

Training follows the release: epsilon prediction over scaled-linear betas rescaled to zero
terminal SNR, offset noise 0.1, plain MSE, no condition dropout.

Evaluation: `eval_step` samples held-out clips from their reference and their own driving
frames (PSNR against the frames and against copying the reference) and with the driving
frames of another example (`cross`). `eval_outputs` mode "self" gives prediction / target /
source / driving; mode "cross" drives each source with the next example's driving frames
(no target): the sweep's CSIM to the source, AED / APD to the driver and FID.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtalk.diffusion import objectives, recipes
from jaxtalk.models.aniportrait.lmk2video import join_motion, split_motion
from jaxtalk.models.latent_diffusion.frames import FROZEN_NETWORKS
from jaxtalk.models.megactor.pipeline import MegActorPipeline
from jaxtalk.models.pixels import to_01
from jaxtalk.tasks.aniportrait import psnr
from jaxtalk.tasks.frozen_sd import FrozenSDParts
from jaxtalk.train.task import LossOutput, Task

STAGES = ("stage1", "stage2")


def _frames(x):
    return x.reshape((-1,) + x.shape[2:])


class MegActorTask(FrozenSDParts, Task):
    FAMILY = "megactor"
    IMAGE_ENCODER_RELEASE = "clip_vision"
    PIXEL_KEYS = ("reference", "reference_background", "frames", "driving")
    EVAL_MODES = ("self", "cross")

    def __init__(self, config):
        self.config = config
        self.stage = config.stage
        if self.stage not in STAGES:
            raise ValueError(f"config.stage must be one of {STAGES}, got {self.stage!r}")
        self.pipe = MegActorPipeline.from_config(config.model, dtype=jnp.dtype(config.dtype))
        self.recipe, self.sample_config = recipes.of_run(config.diffusion)
        self.schedule = self.recipe.train.process.schedule()

    # ------------------------------------------------------------------ frozen weights
    def base_group(self, variables):
        params = variables["params"]
        unet, _ = split_motion(params["unet"])  # stage 2 trains its own motion modules
        return {**params, "unet": unet}

    # ------------------------------------------------------------------ init
    def init(self, rng, batch):
        batch = self.preprocess(batch)
        v = self.pipe.init(rng, batch["reference"], batch["reference_background"], batch["driving"])
        frozen = {k: v[k] for k in FROZEN_NETWORKS if k in v}
        if self.stage == "stage1":
            return {"model": v["megactor"], **frozen}, {}
        unet, motion = split_motion(v["megactor"]["unet"])
        return {"base": {**v["megactor"], "unet": unet}, "motion": motion, **frozen}, {}

    def variables(self, params):
        """The pipeline's variables from the groups."""
        out = {k: params[k] for k in FROZEN_NETWORKS if k in params}
        if self.stage == "stage1":
            return {**out, "megactor": params["model"]}
        base = params["base"]
        return {**out, "megactor": {**base, "unet": join_motion(base["unet"], params["motion"])}}

    # ------------------------------------------------------------------ training
    def _train_loss(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        pipe, v = self.pipe, self.variables(params)
        r_enc, r_concat, r_loss = jax.random.split(rng, 3)
        latents = pipe.encode(v, batch["frames"], r_enc)
        cond = pipe.conditions(
            v,
            batch["reference"],
            batch["reference_background"],
            batch["reference_background_mask"],
            r_concat,
        )
        loss, aux = objectives.latent_diffusion_loss(
            self.recipe.train,
            self.schedule,
            lambda x_t, t: pipe.denoise(v, x_t, t, cond, batch["driving"]),
            latents,
            r_loss,
        )
        rms = jnp.sqrt(jnp.mean(jnp.square(aux["model_output"])))
        return LossOutput(jnp.mean(loss), {"mse": jnp.mean(loss), "output_rms": rms})

    def losses(self):
        return [("model" if self.stage == "stage1" else "motion", self._train_loss)]

    # ------------------------------------------------------------------ sampling
    def sample(self, params, batch, rng, driving=None):
        """Frames (B, F, H, W, 3) in [0, 1] for the batch's reference driven by its driving
        frames (`driving` replaces them), DDIM + classifier-free guidance as configured."""
        batch = self.preprocess(batch)
        return self.pipe.sample(
            self.variables(params),
            batch["reference"],
            batch["reference_background"],
            batch["reference_background_mask"],
            batch["driving"] if driving is None else driving,
            rng,
            self.sample_config,
            self.recipe.guidance_scale,
            self.recipe.context,
        )

    def cross_driving(self, batch):
        """Each example's driver in cross-reenactment: the next example's driving frames."""
        return jnp.roll(self.preprocess(batch)["driving"], 1, axis=0)

    def eval_step(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        target = to_01(batch["frames"])
        video = self.sample(params, batch, rng)
        cross = self.sample(params, batch, rng, driving=self.cross_driving(batch))
        copy = jnp.broadcast_to(to_01(batch["reference"])[:, None], target.shape)
        return {
            "psnr": jnp.mean(psnr(video, target)),
            "psnr_copy": jnp.mean(psnr(copy, target)),
            "psnr_cross": jnp.mean(psnr(cross, target)),
        }

    def eval_outputs(self, params, model_state, batch, rng, mode="self"):
        if mode not in self.EVAL_MODES:
            raise ValueError(f"unknown eval mode {mode!r}: {self.EVAL_MODES}")
        batch = self.preprocess(batch)
        f = batch["frames"].shape[1]
        source = jnp.repeat(to_01(batch["reference"]), f, axis=0)
        if mode == "cross":
            driving = self.cross_driving(batch)
            video = self.sample(params, batch, rng, driving=driving)
            return {
                "prediction": _frames(video),
                "source": source,
                "driving": _frames(to_01(driving)),
            }
        video = self.sample(params, batch, rng)
        return {
            "prediction": _frames(video),
            "target": _frames(to_01(batch["frames"])),
            "source": source,
            "driving": _frames(to_01(batch["driving"])),
        }

    def samples(self, params, model_state, batch, rng):
        # Per example, first frame: reference | driving | target | sample
        batch = self.preprocess(batch)
        k = min(4, batch["frames"].shape[0])
        small = {key: v[:k] for key, v in batch.items()}
        video = self.sample(params, small, rng)
        row = [
            to_01(small["reference"]),
            to_01(small["driving"][:, 0]),
            to_01(small["frames"][:, 0]),
            video[:, 0],
        ]
        return {"reference_driving_target_sample": jnp.concatenate(row, axis=2)}

    # ------------------------------------------------------------------ data
    def data(self, split, **share):
        """Driving-video clips from `data_pipelines.loaders` (share: global_batch_size,
        seed, process_*)."""
        from data_pipelines.loaders import make_loader

        return iter(make_loader(self.config.data, split=split, shuffle=split == "train", **share))


def build(config):
    return MegActorTask(config)
