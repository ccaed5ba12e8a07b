"""A reference-conditional toy for the latent video diffusion family: does it learn?

No VAE and no CLIP: the "latents" are synthetic 4-channel images. A reference latent holds
a small square of a random 4-d colour at a random place on a noisy background; the target
latent is a centred disc of that same colour. Only the reference says which colour, so a
model that reads it through reference attention can denoise far better than one that does
not. The model is AniPortrait's pair at toy widths: a ReferenceNet (a 2-D UNet without
conv_out, run at timestep 0 on the clean reference) records its transformer blocks' norm1
features, and the denoising UNet appends them to its self-attention keys and values.

Training is the AniPortrait recipe from jaxtalk/diffusion/recipes.py (v-prediction, zero
terminal SNR, Min-SNR 5, offset noise 0.05, 10% condition dropout: reference attention off
and a zero context for that example). The cross-attention context is always zero here
(AniPortrait's is the reference's CLIP embedding; the toy has no image encoder), so the
reference reaches the denoiser through the bank only.

Evaluation compares the model with its reference on and off (the unconditional baseline
is the same network with reference attention switched off, which the 10% dropout trains):
the held-out Min-SNR-weighted loss at the same timesteps and noise, and the error against
the true target of a short DDIM sample with the reference (`cond`), with the recipe's
classifier-free guidance (`guided`) and without the reference (`uncond`). On this toy the
release's guidance 3.5 over-saturates (the samples' spread grows far past the targets':
zero-SNR v-prediction without guidance rescaling), so `cond` is the learning figure and
`guided` is reported beside it. The sampler uses the recipe's DDIM settings (trailing
spacing, v, zero SNR, cfg 3.5) over the betas the model was trained on (`diffusion.sample_train_betas`; the release
samples over linear betas instead, which a toy trained for minutes does not survive).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.diffusion import objectives, recipes
from jaxtalk.diffusion.samplers import sample_video
from jaxtalk.models.latent_diffusion.unet import TINY, UNet2DConditionModel, UNetConfig
from jaxtalk.train.data import iterate, local_batches
from jaxtalk.train.task import LossOutput, Task


class _ReferenceToySource:
    """Deterministic examples by index: reference (S, S, C) and target (S, S, C) float32."""

    def __init__(self, size: int, resolution: int, channels: int, first_seed: int, **shape):
        self._size, self._res, self._channels, self._seed = size, resolution, channels, first_seed
        self._square, self._radius, self._clutter = (
            shape["square"],
            shape["radius"],
            shape["clutter"],
        )
        yy, xx = np.mgrid[:resolution, :resolution].astype(np.float32)
        centre = (resolution - 1) / 2
        self._disc = ((yy - centre) ** 2 + (xx - centre) ** 2 <= self._radius**2)[..., None]

    def __len__(self):
        return self._size

    def __getitem__(self, index: int):
        rng = np.random.default_rng(self._seed + index)
        colour = rng.uniform(-1.0, 1.0, self._channels).astype(np.float32)
        reference = self._clutter * rng.standard_normal((self._res, self._res, self._channels))
        y, x = rng.integers(0, self._res - self._square + 1, 2)
        reference[y : y + self._square, x : x + self._square] = colour
        target = np.where(self._disc, colour, 0.0)
        return {"reference": reference.astype(np.float32), "target": target.astype(np.float32)}


class LatentDiffusionToy(Task):
    EVAL_MODES = ()  # no talking-face evaluation protocol

    def __init__(self, config):
        self.config = config
        t = config.toy
        dtype = jnp.dtype(config.dtype)
        unet = dataclasses.replace(
            TINY,
            block_out_channels=tuple(t.widths),
            cross_attention=tuple(t.cross_attention),
            attention_heads=t.heads,
            cross_attention_dim=t.context_dim,
            norm_num_groups=t.groups,
            in_channels=t.channels,
            out_channels=t.channels,
        )
        self.unet_config: UNetConfig = unet
        self.reference_net = UNet2DConditionModel(
            dataclasses.replace(unet, conv_out=False), return_bank=True, dtype=dtype
        )
        self.denoiser = UNet2DConditionModel(unet, dtype=dtype)
        self.recipe, self.sample_config = recipes.of_run(config.diffusion)
        self.schedule = self.recipe.train.process.schedule()

    # ------------------------------------------------------------------ model

    def _context(self, batch_size: int):
        return jnp.zeros((batch_size, 1, self.unet_config.cross_attention_dim), jnp.float32)

    def init(self, rng, batch):
        r1, r2 = jax.random.split(rng)
        ref = batch["reference"]
        t = jnp.zeros((ref.shape[0],), jnp.int32)
        ctx = self._context(ref.shape[0])
        ref_vars = self.reference_net.init(r1, ref, t, ctx)
        _, bank = self.reference_net.apply(ref_vars, ref, t, ctx)
        den_vars = self.denoiser.init(r2, ref, t, ctx, bank, jnp.ones((ref.shape[0],), bool))
        return {"model": {"reference": ref_vars["params"], "denoiser": den_vars["params"]}}, {}

    def bank(self, params, reference):
        """The ReferenceNet's norm1 features of the clean reference (timestep 0, as the
        release runs it)."""
        n = reference.shape[0]
        _, bank = self.reference_net.apply(
            {"params": params["model"]["reference"]},
            reference,
            jnp.zeros((n,), jnp.int32),
            self._context(n),
        )
        return bank

    def denoise(self, params, x_t, t, bank, reference_on):
        """The denoiser's output (float32); `reference_on` (B,) bool switches the bank off per
        example (and the context is zero either way)."""
        out = self.denoiser.apply(
            {"params": params["model"]["denoiser"]},
            x_t,
            t,
            self._context(x_t.shape[0]),
            bank,
            reference_on,
        )
        return out.astype(jnp.float32)

    def _loss(self, params, batch, rng, reference_on):
        bank = self.bank(params, batch["reference"])
        objective = self.recipe.train
        loss, aux = objectives.latent_diffusion_loss(
            objective,
            self.schedule,
            lambda x_t, t: self.denoise(params, x_t, t, bank, reference_on),
            batch["target"],
            rng,
        )
        return loss, aux

    def _train_loss(self, params, model_state, batch, rng):
        drop_rng, rng = jax.random.split(rng)
        n = batch["target"].shape[0]
        keep = jax.random.uniform(drop_rng, (n,)) >= self.recipe.train.uncond_ratio
        loss, aux = self._loss(params, batch, rng, keep)
        rms = jnp.sqrt(jnp.mean(jnp.square(aux["model_output"])))
        return LossOutput(jnp.mean(loss), {"weighted_mse": jnp.mean(loss), "output_rms": rms})

    def losses(self):
        return [("model", self._train_loss)]

    # ------------------------------------------------------------------ evaluation

    def sample(self, params, reference, rng, guidance_scale: float, reference_on: bool):
        """A DDIM sample (B, S, S, C) of the target: guided by the reference (`reference_on`,
        with guidance when the scale is above 1) or from the unconditional model alone."""
        n = reference.shape[0]
        bank = self.bank(params, reference)
        cond = {"bank": bank, "on": jnp.full((n,), reference_on)}

        def denoise_fn(x, t, c, frames):
            out = self.denoise(params, x[:, 0], t, c["bank"], c["on"])
            return out[:, None]

        def make_uncond(c):
            return {"bank": c["bank"], "on": jnp.zeros_like(c["on"])}

        x_T = jax.random.normal(rng, (n, 1) + reference.shape[1:], jnp.float32)
        x = sample_video(
            denoise_fn,
            x_T,
            self.sample_config,
            cond=cond,
            make_uncond=make_uncond,
            guidance_scale=guidance_scale,
        )
        return x[:, 0]

    def eval_step(self, params, model_state, batch, rng):
        loss_rng, sample_rng = jax.random.split(rng)
        n = batch["target"].shape[0]
        on, off = jnp.ones((n,), bool), jnp.zeros((n,), bool)
        cond_loss, _ = self._loss(params, batch, loss_rng, on)
        uncond_loss, _ = self._loss(params, batch, loss_rng, off)  # same t and noise
        ref, target = batch["reference"], batch["target"]
        samples = {
            "cond": self.sample(params, ref, sample_rng, 1.0, True),
            "guided": self.sample(params, ref, sample_rng, self.recipe.guidance_scale, True),
            "uncond": self.sample(params, ref, sample_rng, 1.0, False),
        }
        return {
            "loss_cond": jnp.mean(cond_loss),
            "loss_uncond": jnp.mean(uncond_loss),
            **{f"sample_mse_{k}": jnp.mean(jnp.square(x - target)) for k, x in samples.items()},
        }

    def samples(self, params, model_state, batch, rng):
        # Per example, first three channels: reference | target | guided | unconditional.
        ref, target = batch["reference"][:4], batch["target"][:4]
        guided = self.sample(params, ref, rng, self.recipe.guidance_scale, True)
        alone = self.sample(params, ref, rng, 1.0, False)
        row = jnp.concatenate([ref, target, guided, alone], axis=2)[..., :3]
        return {"reference_target_guided_uncond": jnp.clip(0.5 + 0.5 * row, 0.0, 1.0)}

    # ------------------------------------------------------------------ data

    def data(self, split, *, global_batch_size, seed, process_index, process_count):
        t = self.config.toy
        train = split == "train"
        source = _ReferenceToySource(
            t.train_examples if train else t.eval_examples,
            t.resolution,
            t.channels,
            first_seed=0 if train else 10**9,
            square=t.square,
            radius=t.radius,
            clutter=t.clutter,
        )
        ds = local_batches(
            source,
            train=train,
            seed=seed,
            global_batch_size=global_batch_size,
            process_index=process_index,
            process_count=process_count,
        )
        return iterate(ds)


def build(config):
    return LatentDiffusionToy(config)
