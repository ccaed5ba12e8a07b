"""AniPortrait's Lmk2Video training (train_stage_1.py, train_stage_2.py), in two stages.

The networks: a ReferenceNet (SD UNet without conv_out) run at timestep 0 on the clean
reference latents records every transformer block's norm1 features; the denoising UNet
(inflated over frames) appends them to its self-attention keys and values; the PoseGuider
turns the target frames' face-mesh drawings into features added after conv_in and after
each down block; the CLIP image embedding of the reference is the cross-attention context.

Stage 1 (`config.stage = "stage1"`), single frames: one trained group `model` =
{reference, denoiser, pose_guider} (the release trains all three, except the ReferenceNet's
last up block: `config.frozen` says so), PoseGuider batch statistics in `model_state`.
Stage 2 (`"stage2"`), clips of `data.num_frames`: the stage-1 networks are the frozen group
`base` (from `config.base.workdir`, a stage-1 run, or `config.base.weights`, imported
release weights); only the motion modules (group `motion`, AnimateDiff v2 layout, started
from `config.motion_weights` when given) train.

The frozen VAE and CLIP image encoder come from imported weights files (`config.vae_weights`
/ `config.image_encoder_weights`; `jaxtalk import --release=sd_vae` /
`--release=sd_image_variations_image_encoder`). The `tiny` variants have neither: they
diffuse pixels directly (`latent = "pixels"`) with a zero context, so the reference reaches
the denoiser through reference attention only.

Training follows the release: v-prediction over scaled-linear betas rescaled to zero
terminal SNR, offset noise, Min-SNR weights, and 10% unconditional examples (no reference
attention; CLIP embedding of an all-zero image). The release draws that coin once per batch;
here once per example, the same rate at any batch size. Its BatchNorms run in train mode in
both stages (nothing calls .eval()), so here too; stage 2's statistic updates are dropped
with the frozen base, as the release saves only the motion modules.

Evaluation (self-reenactment on held-out clips): DDIM + classifier-free guidance samples of
the target frames from the reference and the target drawings; PSNR against the frames,
against copying the reference (`psnr_copy`) and with the drawings of another clip
(`psnr_shuffled`); stage 2 also samples with the motion modules off (the stage-1 model
alone) and reports both videos' `flicker`: the mean absolute error of their frame-to-frame
differences against the true ones.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtalk import fs
from jaxtalk.diffusion import objectives, recipes
from jaxtalk.models.aniportrait.lmk2video import Lmk2Video, split_motion
from jaxtalk.models.latent_diffusion.frames import FROZEN_NETWORKS
from jaxtalk.models.pixels import to_01
from jaxtalk.tasks.frozen_sd import FrozenSDParts
from jaxtalk.train.task import LossOutput, Task

STAGES = ("stage1", "stage2")
NETWORKS = ("reference", "denoiser", "pose_guider")


def psnr(a, b):
    """Per-example PSNR (dB) of images in [0, 1] (any leading axes after the batch)."""
    mse = jnp.mean(jnp.square(a - b), axis=tuple(range(1, a.ndim)))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def flicker(video, target):
    """Mean absolute error of frame-to-frame differences (B, F, H, W, C) in [0, 1]."""
    return jnp.mean(jnp.abs(jnp.diff(video, axis=1) - jnp.diff(target, axis=1)))


class AniPortraitTask(FrozenSDParts, Task):
    FAMILY = "aniportrait"
    IMAGE_ENCODER_RELEASE = "sd_image_variations_image_encoder"
    PIXEL_KEYS = ("reference", "reference_landmark_image", "frames", "landmark_images")

    def __init__(self, config):
        self.config = config
        self.stage = config.stage
        if self.stage not in STAGES:
            raise ValueError(f"config.stage must be one of {STAGES}, got {self.stage!r}")
        self.pipe = Lmk2Video.from_config(
            config.model, motion=self.stage == "stage2", dtype=jnp.dtype(config.dtype)
        )
        self.recipe, self.sample_config = recipes.of_run(config.diffusion)
        self.schedule = self.recipe.train.process.schedule()

    # ------------------------------------------------------------------ frozen weights
    def base_group(self, variables):
        params, stats = variables["params"], variables.get("batch_stats", {})
        denoiser, _ = split_motion(params["denoiser"])  # released files carry motion modules
        out = {
            "reference": {"params": params["reference"]},
            "denoiser": {"params": denoiser},
            "pose_guider": {"params": params["pose_guider"]},
        }
        if "pose_guider" in stats:
            out["pose_guider"]["batch_stats"] = stats["pose_guider"]
        return out

    def pretrained(self):
        path = self.config.motion_weights
        if self.stage != "stage2" or not path:
            return {}
        from jaxtalk.convert import weights

        return {"motion": weights.load(fs.absolute(path))["params"]}

    # ------------------------------------------------------------------ init
    def init(self, rng, batch):
        batch = self.preprocess(batch)
        v = self.pipe.init(
            rng, batch["reference"], batch["reference_landmark_image"], batch["landmark_images"]
        )
        frozen = {k: v[k] for k in FROZEN_NETWORKS if k in v}
        if self.stage == "stage1":
            nets = {k: v[k]["params"] for k in NETWORKS}
            stats = {"model": {"pose_guider": v["pose_guider"]["batch_stats"]}}
            return {"model": nets, **frozen}, {"batch_stats": stats}
        base = {k: v[k] for k in NETWORKS}
        return {"base": base, "motion": v["motion"], **frozen}, {}

    def variables(self, params, model_state):
        """The pipeline's variables (jaxtalk.models.aniportrait.lmk2video) from the groups."""
        out = {k: params[k] for k in FROZEN_NETWORKS if k in params}
        if self.stage == "stage2":
            return {**out, **params["base"], "motion": params["motion"]}
        out.update({k: {"params": params["model"][k]} for k in NETWORKS})
        stats = model_state.get("batch_stats", {}).get("model", {})
        if "pose_guider" in stats:
            out["pose_guider"] = {**out["pose_guider"], "batch_stats": stats["pose_guider"]}
        return out

    # ------------------------------------------------------------------ training
    def _train_loss(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        pipe, v = self.pipe, self.variables(params, model_state)
        r_drop, r_enc, r_loss = jax.random.split(rng, 3)
        n = batch["frames"].shape[0]
        keep = jax.random.uniform(r_drop, (n,)) >= self.recipe.train.uncond_ratio
        latents = pipe.encode(v, batch["frames"], r_enc)
        ref = pipe.encode(v, batch["reference"][:, None], r_enc)[:, 0]
        context = pipe.context(v, batch["reference"], keep)
        bank = pipe.bank(v, ref, context)
        additions, stats = pipe.pose_features(
            v, batch["landmark_images"], batch["reference_landmark_image"], train=True
        )
        loss, aux = objectives.latent_diffusion_loss(
            self.recipe.train,
            self.schedule,
            lambda x_t, t: pipe.denoise(v, x_t, t, context, bank, keep, additions),
            latents,
            r_loss,
        )
        new_state = None
        if self.stage == "stage1":
            new_state = {"batch_stats": {"model": {"pose_guider": stats}}}
        rms = jnp.sqrt(jnp.mean(jnp.square(aux["model_output"])))
        metrics = {"weighted_mse": jnp.mean(loss), "output_rms": rms}
        return LossOutput(jnp.mean(loss), metrics, model_state=new_state)

    def losses(self):
        return [("model" if self.stage == "stage1" else "motion", self._train_loss)]

    # ------------------------------------------------------------------ sampling
    def sample(self, params, model_state, batch, rng, drawings=None, motion=True):
        """Frames (B, F, H, W, 3) in [0, 1] sampled for the batch's reference and drawings
        (`drawings` replaces them), DDIM + classifier-free guidance as configured."""
        batch = self.preprocess(batch)
        return self.pipe.sample(
            self.variables(params, model_state),
            batch["reference"],
            batch["reference_landmark_image"],
            batch["landmark_images"] if drawings is None else drawings,
            rng,
            self.sample_config,
            self.recipe.guidance_scale,
            self.recipe.context,
            motion=motion,
        )

    def eval_step(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        target = to_01(batch["frames"])
        video = self.sample(params, model_state, batch, rng)
        shuffled = self.sample(
            params, model_state, batch, rng, drawings=jnp.roll(batch["landmark_images"], 1, axis=0)
        )
        copy = jnp.broadcast_to(to_01(batch["reference"])[:, None], target.shape)
        out = {
            "psnr": jnp.mean(psnr(video, target)),
            "psnr_copy": jnp.mean(psnr(copy, target)),
            "psnr_shuffled": jnp.mean(psnr(shuffled, target)),
        }
        if self.stage == "stage2":
            alone = self.sample(params, model_state, batch, rng, motion=False)
            out["psnr_stage1"] = jnp.mean(psnr(alone, target))
            out["flicker"] = flicker(video, target)
            out["flicker_stage1"] = flicker(alone, target)
        return out

    def eval_outputs(self, params, model_state, batch, rng, mode="self"):
        if mode != "self":
            raise ValueError(f"aniportrait evaluates self-reenactment only, not {mode!r}")
        batch = self.preprocess(batch)
        video = self.sample(params, model_state, batch, rng)
        return {
            "prediction": video.reshape((-1,) + video.shape[2:]),
            "target": to_01(batch["frames"]).reshape((-1,) + video.shape[2:]),
            "source": jnp.repeat(to_01(batch["reference"]), video.shape[1], axis=0),
        }

    def samples(self, params, model_state, batch, rng):
        # Per example, first frame: reference | drawing | target | sample
        batch = self.preprocess(batch)
        k = min(4, batch["frames"].shape[0])
        small = {key: v[:k] for key, v in batch.items()}
        video = self.sample(params, model_state, small, rng)
        row = [
            to_01(small["reference"]),
            to_01(small["landmark_images"][:, 0]),
            to_01(small["frames"][:, 0]),
            video[:, 0],
        ]
        return {"reference_drawing_target_sample": jnp.concatenate(row, axis=2)}

    # ------------------------------------------------------------------ data
    def data(self, split, **share):
        """Landmark-drawing clips from `data_pipelines.loaders` (share: global_batch_size,
        seed, process_*)."""
        from data_pipelines.loaders import make_loader

        return iter(make_loader(self.config.data, split=split, shuffle=split == "train", **share))


def build(config):
    return AniPortraitTask(config)
