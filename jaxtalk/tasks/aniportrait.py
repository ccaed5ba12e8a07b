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

import dataclasses
import functools

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxtalk import fs
from jaxtalk.diffusion import objectives, recipes
from jaxtalk.diffusion.samplers import sample_video
from jaxtalk.models.aniportrait.pose_guider import PoseGuider, PoseGuiderConfig
from jaxtalk.models.latent_diffusion import clip_vision, vae
from jaxtalk.models.latent_diffusion.motion_module import MotionModule
from jaxtalk.models.latent_diffusion.unet import (
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetConfig,
)
from jaxtalk.models.pixels import to_01
from jaxtalk.train.task import LossOutput, Task

STAGES = ("stage1", "stage2")
NETWORKS = ("reference", "denoiser", "pose_guider")
MOTION_KEY = "motion_modules_"


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


def config_record(cls, values):
    """A frozen config dataclass from a config dict (lists from the command line as tuples,
    which Flax module attributes need)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.to_dict().items()})


def psnr(a, b):
    """Per-example PSNR (dB) of images in [0, 1] (any leading axes after the batch)."""
    mse = jnp.mean(jnp.square(a - b), axis=tuple(range(1, a.ndim)))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def flicker(video, target):
    """Mean absolute error of frame-to-frame differences (B, F, H, W, C) in [0, 1]."""
    return jnp.mean(jnp.abs(jnp.diff(video, axis=1) - jnp.diff(target, axis=1)))


class AniPortraitTask(Task):
    PIXEL_KEYS = ("reference", "reference_pose", "frames", "poses")

    def __init__(self, config):
        self.config = config
        self.stage = config.stage
        if self.stage not in STAGES:
            raise ValueError(f"config.stage must be one of {STAGES}, got {self.stage!r}")
        m = config.model
        dtype = jnp.dtype(config.dtype)
        kw = dict(dtype=dtype)
        self.latent = m.latent
        if self.latent not in ("pixels", "vae"):
            raise ValueError(f"config.model.latent must be 'pixels' or 'vae', got {self.latent!r}")
        self.unet_config = config_record(UNetConfig, m.unet)
        self.reference_net = UNet2DConditionModel(
            dataclasses.replace(self.unet_config, conv_out=False), return_bank=True, **kw
        )
        motion = functools.partial(MotionModule, **m.motion_module.to_dict())
        self.denoiser_2d = UNet3DConditionModel(self.unet_config, **kw)
        self.denoiser = (
            UNet3DConditionModel(self.unet_config, motion_module=motion, motion_mid=True, **kw)
            if self.stage == "stage2"
            else self.denoiser_2d
        )
        self.pose_guider = PoseGuider(config_record(PoseGuiderConfig, m.pose_guider), **kw)
        self.vae = None
        if self.latent == "vae":
            self.vae_config = config_record(vae.VAEConfig, m.vae)
            self.vae = vae.AutoencoderKL(self.vae_config)
        if m.context not in ("clip", "zeros"):
            raise ValueError(f"config.model.context must be 'clip' or 'zeros', got {m.context!r}")
        self.image_encoder = None
        if m.context == "clip":
            self.image_encoder = clip_vision.CLIPVisionModelWithProjection(
                config_record(clip_vision.CLIPVisionConfig, m.image_encoder)
            )
        self.recipe = recipes.from_dict(config.diffusion.recipe.to_dict())
        self.schedule = self.recipe.train.process.schedule()
        sample = self.recipe.sample
        if config.diffusion.sample_train_betas:
            sample = dataclasses.replace(sample, process=self.recipe.train.process)
        self.sample_config = dataclasses.replace(sample, num_steps=config.diffusion.sample_steps)

    # ------------------------------------------------------------------ frozen weights
    def _weights_file(self, key: str, release: str) -> str:
        from jaxtalk.convert import weights

        path = self.config.get(key) or str(weights.weights_path(release))
        if not fs.exists(path):
            raise ValueError(
                f"{key}: no weights at {path}: run `jaxtalk import --release={release} ...` "
                f"or set --config.{key}"
            )
        return fs.absolute(path)

    def frozen_sources(self):
        out = {}
        if self.vae is not None:
            out["vae"] = {"weights": self._weights_file("vae_weights", "sd_vae")}
        if self.image_encoder is not None:
            release = "sd_image_variations_image_encoder"
            out["image_encoder"] = {"weights": self._weights_file("image_encoder_weights", release)}
        if self.stage == "stage2":
            base = self.config.base
            if base.workdir:
                from jaxtalk.train import checkpoints

                workdir = fs.absolute(base.workdir)
                step = base.step if base.step >= 0 else checkpoints.resolve_step(workdir)
                out["base"] = {"workdir": workdir, "step": int(step)}
            elif base.weights:
                out["base"] = {"weights": fs.absolute(base.weights)}
            else:
                raise ValueError(
                    "stage 2 needs the stage-1 networks: set --config.base.workdir=RUN (an "
                    "aniportrait stage-1 run) or --config.base.weights=FILE (`jaxtalk import "
                    "--release=aniportrait`)"
                )
        return out

    def load_frozen(self, group, source):
        from jaxtalk.convert import weights

        if group in ("vae", "image_encoder"):
            return {"params": weights.load(source["weights"])["params"]}
        if group != "base":
            return super().load_frozen(group, source)
        if "workdir" in source:
            from jaxtalk.train import checkpoints

            v = checkpoints.group_variables(source["workdir"], "model", source["step"])
        else:
            v = weights.load(source["weights"])
        params, stats = v["params"], v.get("batch_stats", {})
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
    def _context_dim(self):
        return self.unet_config.cross_attention_dim

    def _frozen_init(self, rng, images):
        """Fresh variables of the frozen VAE / image encoder (replaced by their weights
        files, `frozen_sources`: only their structure matters here)."""
        out = {}
        r_vae, r_clip = jax.random.split(rng)
        if self.vae is not None:
            out["vae"] = self.vae.init(r_vae, images[:1], r_vae)["params"]
        if self.image_encoder is not None:
            size = self.image_encoder.config.image_size
            out["image_encoder"] = self.image_encoder.init(
                r_clip, jnp.zeros((1, size, size, 3), jnp.float32)
            )["params"]
        return out

    def init(self, rng, batch):
        batch = self.preprocess(batch)
        r_ref, r_den, r_pose, r_frozen = jax.random.split(rng, 4)
        frozen = self._frozen_init(r_frozen, batch["reference"])
        ref = self.encode(frozen, batch["reference"][:, None], r_frozen)[:, 0]
        frames = self.encode(frozen, batch["frames"], r_frozen)
        n, f = frames.shape[:2]
        t = jnp.zeros((n,), jnp.int32)
        ctx = jnp.zeros((n, 1, self._context_dim()), jnp.float32)
        ref_vars = self.reference_net.init(r_ref, ref, t, ctx)
        _, bank = self.reference_net.apply(ref_vars, ref, t, ctx)
        pose_vars = self.pose_guider.init(
            r_pose, batch["poses"], batch["reference_pose"], train=False
        )
        additions, _ = self.pose_features(pose_vars, batch["poses"], batch["reference_pose"])
        den = self.denoiser.init(r_den, frames, t, ctx, bank, jnp.ones((n,), bool), additions)
        den_params, motion = split_motion(den["params"])
        nets = {
            "reference": ref_vars["params"],
            "denoiser": den_params,
            "pose_guider": pose_vars["params"],
        }
        if self.stage == "stage1":
            stats = {"model": {"pose_guider": pose_vars["batch_stats"]}}
            return {"model": nets, **frozen}, {"batch_stats": stats}
        base = {k: {"params": v} for k, v in nets.items()}
        base["pose_guider"]["batch_stats"] = pose_vars["batch_stats"]
        return {"base": base, "motion": motion, **frozen}, {}

    # ------------------------------------------------------------------ the networks
    @staticmethod
    def _fold(x):
        return x.reshape((-1,) + x.shape[2:])

    def _nets(self, params, model_state):
        """{network: variables} of the stage-1 networks, wherever the stage keeps them."""
        if self.stage == "stage2":
            return params["base"]
        out = {k: {"params": params["model"][k]} for k in NETWORKS}
        stats = model_state.get("batch_stats", {}).get("model", {})
        if "pose_guider" in stats:
            out["pose_guider"]["batch_stats"] = stats["pose_guider"]
        return out

    def encode(self, params, images, rng):
        """Model-range frames (B, F, H, W, 3) -> what is diffused: the pixels themselves, or
        VAE latents times 0.18215 (a posterior sample, as the release encodes)."""
        if self.vae is None:
            return images
        n, f = images.shape[:2]
        z = self.vae.apply(
            {"params": params["vae"]}, self._fold(images), rng, method=self.vae.encode_latents
        )
        return z.reshape((n, f) + z.shape[1:])

    def decode(self, params, latents):
        if self.vae is None:
            return latents
        n, f = latents.shape[:2]
        x = self.vae.apply(
            {"params": params["vae"]}, self._fold(latents), method=self.vae.decode_latents
        )
        return x.reshape((n, f) + x.shape[1:])

    def context(self, params, reference, keep):
        """Cross-attention context (B, 1, D): the reference's CLIP image embedding, or that of
        an all-zero image where `keep` is False (training's unconditional examples); zeros
        without an image encoder."""
        n = reference.shape[0]
        if self.image_encoder is None:
            return jnp.zeros((n, 1, self._context_dim()), jnp.float32)
        size = self.image_encoder.config.image_size
        pixels = jax.image.resize(to_01(reference), (n, size, size, 3), "bicubic")
        mean = jnp.asarray(clip_vision.CLIP_MEAN, pixels.dtype)
        std = jnp.asarray(clip_vision.CLIP_STD, pixels.dtype)
        pixels = jnp.where(keep[:, None, None, None], (pixels - mean) / std, 0.0)
        out = self.image_encoder.apply({"params": params["image_encoder"]}, pixels)
        return out.image_embeds[:, None, :].astype(jnp.float32)

    def bank(self, nets, reference_latents, context):
        n = reference_latents.shape[0]
        _, bank = self.reference_net.apply(
            nets["reference"], reference_latents, jnp.zeros((n,), jnp.int32), context
        )
        return bank

    def pose_features(self, variables, poses, reference_pose, train=False):
        """PoseGuider features of the drawings (B, F, H, W, 3) -> list of (B, F, h, w, c), and
        the updated batch statistics when `train` (None otherwise)."""
        if not train:
            return self.pose_guider.apply(variables, poses, reference_pose, train=False), None
        feats, new = self.pose_guider.apply(
            variables, poses, reference_pose, train=True, mutable=["batch_stats"]
        )
        return feats, new["batch_stats"]

    def denoise(self, params, nets, x_t, t, context, bank, reference_on, additions, motion=True):
        """The denoiser's output (float32); `motion=False` runs the stage-1 UNet alone."""
        den = nets["denoiser"]["params"]
        if self.stage == "stage2" and motion:
            v, net = {"params": join_motion(den, params["motion"])}, self.denoiser
        else:
            v, net = {"params": den}, self.denoiser_2d
        out = net.apply(v, x_t, t, context, bank, reference_on, additions)
        return out.astype(jnp.float32)

    # ------------------------------------------------------------------ training
    def _train_loss(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        nets = self._nets(params, model_state)
        r_drop, r_enc, r_loss = jax.random.split(rng, 3)
        n = batch["frames"].shape[0]
        keep = jax.random.uniform(r_drop, (n,)) >= self.recipe.train.uncond_ratio
        latents = self.encode(params, batch["frames"], r_enc)
        ref = self.encode(params, batch["reference"][:, None], r_enc)[:, 0]
        context = self.context(params, batch["reference"], keep)
        bank = self.bank(nets, ref, context)
        additions, stats = self.pose_features(
            nets["pose_guider"], batch["poses"], batch["reference_pose"], train=True
        )
        loss, aux = objectives.latent_diffusion_loss(
            self.recipe.train,
            self.schedule,
            lambda x_t, t: self.denoise(params, nets, x_t, t, context, bank, keep, additions),
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
    def sample(self, params, model_state, batch, rng, poses=None, motion=True):
        """Frames (B, F, H, W, 3) in [0, 1] sampled for the batch's reference and drawings
        (`poses` replaces the drawings), DDIM + classifier-free guidance as configured."""
        batch = self.preprocess(batch)
        nets = self._nets(params, model_state)
        poses = batch["poses"] if poses is None else poses
        n = batch["frames"].shape[0]
        on = jnp.ones((n,), bool)
        ref = self.encode(params, batch["reference"][:, None], None)[:, 0]
        context = self.context(params, batch["reference"], on)
        cond = {
            "context": context,
            "bank": self.bank(nets, ref, context),
            "on": on,
            "additions": self.pose_features(nets["pose_guider"], poses, batch["reference_pose"])[0],
        }

        def denoise_fn(x, t, c, frames):
            adds = [jnp.take(a, frames, axis=1) for a in c["additions"]]
            return self.denoise(params, nets, x, t, c["context"], c["bank"], c["on"], adds, motion)

        def make_uncond(c):
            # the release's pipeline: zero image embedding, reference attention off
            return {**c, "context": jnp.zeros_like(c["context"]), "on": jnp.zeros_like(c["on"])}

        shape = self.encode(params, batch["frames"], None).shape
        x = sample_video(
            denoise_fn,
            jax.random.normal(rng, shape, jnp.float32),
            self.sample_config,
            cond=cond,
            make_uncond=make_uncond,
            guidance_scale=self.recipe.guidance_scale,
            context=self.recipe.context if shape[1] > self.recipe.context.size else None,
        )
        return jnp.clip(to_01(self.decode(params, x)), 0.0, 1.0)

    def eval_step(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        target = to_01(batch["frames"])
        video = self.sample(params, model_state, batch, rng)
        shuffled = self.sample(
            params, model_state, batch, rng, poses=jnp.roll(batch["poses"], 1, axis=0)
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
            "prediction": self._fold(video),
            "target": self._fold(to_01(batch["frames"])),
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
            to_01(small["poses"][:, 0]),
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
