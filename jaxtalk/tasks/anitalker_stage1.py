"""AniTalker stage 1: the identity-decoupled motion encoder and warping renderer.

Three trained groups, updated in this order within each step:
- `generator` = {`model`: AniTalkerMotion, `aam`: the AAM-Softmax identity head}:
  L = w_l1 |recon - driving| + w_perceptual VGG19 pyramid + w_adv softplus(-D(recon))
      + w_mi CLUB(identity; motion) + w_ml AAM-Softmax(identity latents, identity labels).
  Its reconstructions and latents go to the next two losses (without gradient).
- `discriminator`: StyleGAN2 D, non-saturating loss on driving frames vs reconstructions.
- `club`: the CLUB estimator q(motion | identity), fitted by maximum likelihood.
A fourth group, `vgg`, holds ImageNet VGG19 weights for the perceptual loss and has no
optimizer (frozen); it exists only when the perceptual weight is non-zero.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections

from jaxtalk import fs
from jaxtalk.evaluate import image_metrics
from jaxtalk.losses import adversarial
from jaxtalk.losses.metric_learning import AAMSoftmax
from jaxtalk.losses.mutual_information import CLUB
from jaxtalk.losses.perceptual import VGG19PerceptualLoss
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.lia.discriminator import Discriminator
from jaxtalk.train.task import LossOutput, Task


def _unit(x):
    """L2-normalised rows."""
    x = x.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)


def _to_01(x):
    """[-1, 1] images -> [0, 1]."""
    return jnp.clip((x.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)


def flow_to_rgb(flow):
    """(B,H,W,2) displacement in [-1,1] grid units -> (B,H,W,3) colours in [0,1]."""
    mag = jnp.clip(jnp.linalg.norm(flow, axis=-1, keepdims=True) * 4.0, 0.0, 1.0)
    angle = jnp.arctan2(flow[..., 1:2], flow[..., 0:1])
    rgb = 0.5 + 0.5 * jnp.concatenate(
        [jnp.cos(angle), jnp.cos(angle - 2.094), jnp.cos(angle + 2.094)], -1
    )
    return 1.0 - mag * (1.0 - rgb)  # white = still, saturated colour = large motion


def motion_units_alive(model_params, h):
    """Fraction of the motion MLP's (identity_excluded_net) hidden ReLUs that fire for at
    least one image of the batch. Adam can switch them all off early in training (measured
    on the tiny recipe: all dead by step 50 without the metric-learning term); the motion
    code is then constant and the renderer can only blur the source."""
    fc_in = model_params["enc"]["net_decouping"]["identity_excluded_net"]["fc_in"]
    pre = jnp.dot(h.astype(jnp.float32), fc_in["kernel"]) + fc_in["bias"]
    return jnp.mean(jnp.any(pre > 0, axis=0).astype(jnp.float32))


def num_identities(data_config) -> int:
    """Identity classes of the data (summed, offset per dataset, over a mixture)."""
    from data_pipelines import mixture

    return max(mixture.num_identities(data_config), 1)


class AniTalkerStage1Task(Task):
    # uint8 frames from the loader (the fast path) -> float32 in [-1, 1], on device.
    PIXEL_KEYS = ("source", "driving", "negatives")

    def __init__(self, config):
        self.config = config
        m, loss = config.model, config.loss
        dtype = jnp.dtype(config.dtype)
        self.generator = AniTalkerMotion(
            size=m.size,
            style_dim=m.style_dim,
            motion_dim=m.motion_dim,
            width=m.width,
            dtype=dtype,
            flow_init_scale=m.flow_init_scale,
            hal_deepest_logit=m.hal_deepest_logit,
        )
        self.discriminator = Discriminator(
            size=m.size, width=m.disc_width, stddev_group=m.stddev_group, dtype=dtype
        )
        self.club = CLUB(y_dim=m.style_dim, hidden=m.style_dim)
        self.aam = AAMSoftmax(
            num_classes=num_identities(config.data),
            margin=loss.aam_margin,
            scale=loss.aam_scale,
        )
        self.perceptual = VGG19PerceptualLoss(dtype=dtype) if loss.perceptual else None

    # ------------------------------------------------------------------ params
    def init(self, rng, batch):
        batch = self.preprocess(batch)
        r_gen, r_d, r_club, r_aam = jax.random.split(rng, 4)
        src, drv = batch["source"], batch["driving"]
        gen = self.generator.init(r_gen, src, drv)["params"]
        latent = jnp.zeros((src.shape[0], self.config.model.style_dim))
        params = {
            "generator": {
                "model": gen,
                "aam": self.aam.init(r_aam, latent, batch["identity"])["params"],
            },
            "discriminator": self.discriminator.init(r_d, drv)["params"],
            "club": self.club.init(r_club, latent)["params"],
        }
        if self.perceptual is not None:
            params["vgg"] = self._vgg19_params()
        return params, {}

    def _vgg19_params(self):
        from jaxtalk.convert import weights

        path = self.config.loss.vgg19_weights or str(weights.weights_path("vgg19"))
        if not fs.exists(path):
            raise ValueError(
                f"the perceptual loss needs ImageNet VGG19 weights at {path}: run `jaxtalk import "
                "--release=vgg19 --checkpoint=vgg19-dcbb9e9d.pth` (torchvision's file), or set "
                "--config.loss.perceptual=0"
            )
        return weights.load(path)["params"]

    def pretrained(self):
        """Released (or earlier) weights to start from: {group: {subtree: params}}."""
        path = self.config.init_from
        if not path:
            return {}
        from jaxtalk.convert import weights

        return {"generator": {"model": weights.load(path)["params"]}}

    # ------------------------------------------------------------------ losses
    def losses(self):
        # A zero-weighted adversarial or MI term needs no discriminator or estimator update.
        out = [("generator", self._generator_loss)]
        if self.config.loss.adversarial:
            out.append(("discriminator", self._discriminator_loss))
        if self.config.loss.mutual_information:
            out.append(("club", self._club_loss))
        return out

    def _encode_identity(self, params, images):
        return self.generator.apply(
            {"params": params["generator"]["model"]}, images, method=AniTalkerMotion.encode
        )["id_emb"]

    def _generator_loss(self, params, model_state, batch, rng):
        batch, w = self.preprocess(batch), self.config.loss
        out = self.generator.apply(
            {"params": params["generator"]["model"]}, batch["source"], batch["driving"]
        )
        recon, target = out["image"], batch["driving"]
        l1 = jnp.mean(jnp.abs(recon.astype(jnp.float32) - target))
        total, metrics = w.l1 * l1, {"l1": l1}
        metrics["motion_units_alive"] = jax.lax.stop_gradient(
            motion_units_alive(params["generator"]["model"], out["driving"]["h"])
        )
        if self.perceptual is not None:
            perc = self.perceptual.apply({"params": {"vgg": params["vgg"]}}, recon, target)
            total, metrics["perceptual"] = total + w.perceptual * perc, perc
        if w.adversarial:
            fake_logits = self.discriminator.apply({"params": params["discriminator"]}, recon)
            adv = adversarial.g_nonsaturating_loss(fake_logits)
            total, metrics["adversarial"] = total + w.adversarial * adv, adv
        identity = jnp.concatenate([out["source"]["id_emb"], out["driving"]["id_emb"]])
        motion = jnp.concatenate([out["source"]["idrm_emb"], out["driving"]["idrm_emb"]])
        labels = jnp.concatenate([batch["identity"], batch["identity"]])
        if w.metric_learning:
            if "negatives" in batch and batch["negatives"].shape[1]:
                negatives = batch["negatives"][:, 0]
                identity_ml = jnp.concatenate([identity, self._encode_identity(params, negatives)])
                labels = jnp.concatenate([labels, batch["negative_identity"][:, 0]])
            else:
                identity_ml = identity
            ml, acc = self.aam.apply({"params": params["generator"]["aam"]}, identity_ml, labels)
            total, metrics["metric_learning"], metrics["identity_acc"] = (
                total + w.metric_learning * ml,
                ml,
                acc,
            )
        if w.mutual_information:
            # On unit-norm latents: the bound is scale-free, so the generator cannot lower
            # it by inflating the latents instead of decorrelating them.
            mi = self.club.apply(
                {"params": params["club"]},
                _unit(identity),
                _unit(motion),
                method=CLUB.mi_upper_bound,
            )
            total, metrics["mutual_information"] = total + w.mutual_information * mi, mi
        return LossOutput(
            total,
            metrics,
            outputs={
                "fake": recon,
                "identity_latent": _unit(identity),
                "motion_latent": _unit(motion),
            },
        )

    def _discriminator_loss(self, params, model_state, batch, rng):
        d = lambda x: self.discriminator.apply({"params": params["discriminator"]}, x)  # noqa: E731
        real, fake = d(self.preprocess(batch)["driving"]), d(batch["fake"])
        loss = adversarial.d_nonsaturating_loss(real, fake)
        return LossOutput(loss, {"real_score": jnp.mean(real), "fake_score": jnp.mean(fake)})

    def _club_loss(self, params, model_state, batch, rng):
        loss = self.club.apply(
            {"params": params["club"]},
            batch["identity_latent"],
            batch["motion_latent"],
            method=CLUB.learning_loss,
        )
        return LossOutput(loss)

    # ------------------------------------------------------------------ evaluation
    def reenact(self, params, batch):
        """Self-reenactment: the driving frame's motion rendered on the source frame."""
        batch = self.preprocess(batch)
        return self.generator.apply(
            {"params": params["generator"]["model"]}, batch["source"], batch["driving"]
        )

    EVAL_MODES = ("self", "cross")

    def eval_outputs(self, params, model_state, batch, rng, mode="self"):
        """Images for the paper's metrics. self: the driving frame's motion on a source
        frame of the same clip (target = the driving frame). cross: the driving motion on a
        face of another identity (no target; CSIM against that face, as the paper; AED /
        APD against the driving frame in both)."""
        batch = self.preprocess(batch)
        model = {"params": params["generator"]["model"]}
        if mode == "self":
            out = self.generator.apply(model, batch["source"], batch["driving"])
            driving = _to_01(batch["driving"])
            return {
                "prediction": _to_01(out["image"]),
                "target": driving,
                "driving": driving,
                "source": _to_01(batch["source"]),
            }
        if mode == "cross":
            other = batch["negatives"][:, 0]
            src = self.generator.apply(model, other, method=AniTalkerMotion.encode)
            drv = self.generator.apply(model, batch["driving"], method=AniTalkerMotion.encode)
            out = self.generator.apply(
                model, src["h"], src["feats"], drv["alpha"], method=AniTalkerMotion.render
            )
            return {
                "prediction": _to_01(out["image"]),
                "source": _to_01(other),
                "driving": _to_01(batch["driving"]),
            }
        raise ValueError(f"unknown eval mode {mode!r}: {self.EVAL_MODES}")

    def eval_step(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        model, n = {"params": params["generator"]["model"]}, batch["source"].shape[0]
        both = self.generator.apply(
            model,
            jnp.concatenate([batch["source"], batch["driving"]]),
            method=AniTalkerMotion.encode,
        )
        src = jax.tree_util.tree_map(lambda a: a[:n], both)

        def render(alpha):
            return _to_01(
                self.generator.apply(
                    model, src["h"], src["feats"], alpha, method=AniTalkerMotion.render
                )["image"]
            )

        # Two controls: copying the source, and this model rendering the source with its
        # own motion (what the renderer gains without reading the driving frame).
        pred, own = render(both["alpha"][n:]), render(src["alpha"])
        target, source = _to_01(batch["driving"]), _to_01(batch["source"])
        im, mean = image_metrics, functools.partial(image_metrics.reenactment_mean, batch=batch)
        return {
            "psnr": mean(im.psnr(pred, target)),
            "psnr_own_motion": mean(im.psnr(own, target)),
            "ssim": mean(im.ssim(pred, target)),
            "l1": mean(im.l1(pred, target)),
            "psnr_copy_source": mean(im.psnr(source, target)),
            "ssim_copy_source": mean(im.ssim(source, target)),
        }

    def samples(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        out = self.reenact(params, batch)
        mask = jnp.repeat(out["mask"].astype(jnp.float32), 3, axis=-1)
        row = [
            _to_01(batch["source"]),
            _to_01(batch["driving"]),
            _to_01(out["image"]),
            flow_to_rgb(out["flow"].astype(jnp.float32)),
            mask,
        ]
        # One image per example: source | driving | reconstruction | flow | mask.
        return {"reenactment": jnp.concatenate(row, axis=2)}

    # ------------------------------------------------------------------ data
    def data(self, split, *, global_batch_size, seed, process_index, process_count):
        from data_pipelines.loaders import make_loader

        data_config = self.config.data
        if split != "train" and not data_config.num_negatives:
            # Cross-reenactment evaluation renders on a face of another identity: one per
            # example, whether or not the recipe trains with negatives.
            data_config = ml_collections.ConfigDict(data_config.to_dict())
            data_config.num_negatives = 1
        loader = make_loader(
            data_config,
            split=split,
            global_batch_size=global_batch_size,
            seed=seed,
            process_index=process_index,
            process_count=process_count,
            shuffle=split == "train",
        )
        return iter(loader)


def build(config):
    return AniTalkerStage1Task(config)
