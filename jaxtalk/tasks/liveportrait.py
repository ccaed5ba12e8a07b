"""LivePortrait training: stage 1 (the base model) and stage 2 (stitching and retargeting).

The authors released inference only; this follows the paper and, where it gives no detail,
the face-vid2vid recipe it builds on (configs/liveportrait.py marks every such choice).

Stage 1 (`config.stage = "base"`), self-reenactment pairs of one clip (an image is a
one-frame clip: source = driving). Groups, updated in this order each step:
- `generator` = {appearance F, motion M, warping W, spade G}, trained together:
  L = perceptual (VGG19 pyramid) + hinge GAN + feature matching, each on the whole image and
      on the face and lip regions cut by the driving frame's landmarks (the cascade)
    + equivariance (M on a randomly warped driving frame) + keypoint prior (canonical
      keypoints) + head pose (L1 in degrees vs the data's pose) + deformation prior (L1 of
      the expression deltas) + landmark-guided Wing loss (the first N implicit keypoints'
      x, y vs N of the frame's landmarks: `loss.landmark_points` of its
      `loss.landmark_attribute`, lip and eyelid points of the face mesh) + ArcFace
      identity (1 - cos, face crops) + L1 (on the whole image and each region, as the
      perceptual loss).
- `discriminator` = {region: MultiScaleDiscriminator} for the regions with a GAN weight.
- frozen `vgg` (perceptual weight > 0) and `arcface` (identity weight > 0).
BatchNorm statistics (F, W) and spectral-norm vectors (G, the discriminators) are
model_state {"batch_stats": {"generator": ..., "discriminator": ...}}.

Stage 2 (`config.stage = "stitching"`): the base is the frozen group `base` (variables of
F, M, W, G) from a stage-1 run (`config.base.workdir`) or an imported weights file
(`config.base.weights`). Trained:
- `stitching`: x_d' = stitch(x_s, x_d) with the driving motion of another identity (the
  batch rolled by one), L = |(1 - M_face) (I(x_d') - I_s)| + w_delta |x_d' - x_d|: the
  animated face must leave the source's shoulders and background where they were.
- `lip` / `eye`: x' = x_s + retarget(x_s, [source ratio(s), target ratio]) with the target
  ratio sampled uniformly; L = |ratio_net(I(x')) - target| + |(1 - M_region)(I(x') - I_s)|
  + w_delta |delta|. The release measures ratios with a 203-point landmark model; training
  needs a differentiable measure, so
- `ratio`: a small CNN regressing (mouth opening, eye openness) from an image, fitted on
  the real frames to the data's `mouth` and 1 - `blink` attributes, is that measure (its
  own loss; the retargeting losses use it without changing it).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk import fs
from jaxtalk.evaluate import image_metrics
from jaxtalk.losses import adversarial
from jaxtalk.losses import keypoints as kp_losses
from jaxtalk.losses.perceptual import MIN_SIZE as PERCEPTUAL_MIN_SIZE
from jaxtalk.losses.perceptual import VGG19PerceptualLoss
from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.sharding import join_batches, split_batches
from jaxtalk.models.liveportrait import keypoints as kp_lib
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.discriminator import MultiScaleDiscriminator
from jaxtalk.models.liveportrait.generator import SPADEDecoder
from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
from jaxtalk.models.liveportrait.retargeting import RELEASED, RetargetingMLP
from jaxtalk.models.liveportrait.warping import WarpingNetwork
from jaxtalk.models.metric_nets import iresnet
from jaxtalk.models.pixels import to_01
from jaxtalk.train.task import LossOutput, Task

BASE = ("appearance", "motion", "warping", "spade")
# Boxes used where a frame has no landmarks: the middle of the crop, and its lower middle.
DEFAULT_BOXES = {"full": (0.0, 0.0, 1.0), "face": (0.0, 0.0, 0.75), "lip": (0.0, 0.45, 0.25)}


def resize(images, size: int):
    """NHWC images to size x size (antialiased when shrinking); unchanged at that size."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    shape = (images.shape[0], size, size, images.shape[3])
    return jax.image.resize(images.astype(jnp.float32), shape, "linear", antialias=True)


def region_boxes(batch, frame: int, regions, scales) -> dict:
    """{region: (B, 3) boxes} from frame `frame` (0 source, 1 driving) of the batch's
    5-point landmarks, or DEFAULT_BOXES where a clip has none."""
    b = batch["source"].shape[0]
    out = {}
    have = "landmarks_xy" in batch
    if have:
        points = kp_losses.landmarks_to_grid(batch["landmarks_xy"][:, frame])
        valid = batch["landmarks_xy_valid"].reshape(b, 1)
    for region in regions:
        default = jnp.broadcast_to(jnp.asarray(DEFAULT_BOXES[region], jnp.float32), (b, 3))
        if region == "full" or not have:
            out[region] = default
            continue
        boxes = kp_losses.landmark_boxes(
            points, kp_losses.FIVE_POINT_REGIONS[region], scales[region]
        )
        out[region] = jnp.where(valid, boxes, default)
    return out


def box_mask(boxes, size: int):
    """(B, 3) boxes -> (B, size, size, 1) float masks, 1 inside the square."""
    grid = kp_losses.coordinate_grid(size, size)[None]
    inside = jnp.all(jnp.abs(grid - boxes[:, None, None, :2]) <= boxes[:, None, None, 2:3], -1)
    return inside[..., None].astype(jnp.float32)


def check_perceptual_size(key: str, size: int) -> None:
    """An image the perceptual loss sees must have at least `PERCEPTUAL_MIN_SIZE` (128) px:
    its VGG pyramid's 1/8 scale of a smaller one is empty and the loss NaN."""
    if size < PERCEPTUAL_MIN_SIZE:
        raise ValueError(
            f"{key} is {size}: the perceptual loss needs at least {PERCEPTUAL_MIN_SIZE} px "
            "(smaller images give NaN); raise it or set loss.perceptual=0"
        )


class RatioNet(nn.Module):
    """image (B, H, W, 3) in [0, 1] -> (B, 2) (mouth opening, eye openness), regressed to
    targets in [0, 1]. The head is linear: behind a sigmoid, the L1 fit to mostly closed
    mouths and open eyes drove the logits to saturation within 50 steps, where the gradient
    is zero and the net stopped learning for good (measured on the tiny stage 2)."""

    width: int = 32
    depth: int = 4

    @nn.compact
    def __call__(self, x):
        for i in range(self.depth):
            x = torch_nn.conv(
                self.width * 2 ** min(i, 2), 3, stride=2, padding=1, name=f"conv_{i}"
            )(x)
            x = nn.leaky_relu(x, 0.2)
        x = x.mean((1, 2))
        return torch_nn.dense(2, name="head")(x)


class LivePortraitTask(Task):
    PIXEL_KEYS = ("source", "driving")
    EVAL_MODES = ("self", "cross")

    def __init__(self, config):
        self.config = config
        m = config.model
        dtype = jnp.dtype(config.dtype)
        self.stage = config.stage
        if self.stage not in ("base", "stitching"):
            raise ValueError(f"config.stage must be 'base' or 'stitching', got {self.stage!r}")
        self.input_size = int(m.input_size)
        self.nets = {
            "appearance": AppearanceFeatureExtractor(**m.appearance.to_dict(), dtype=dtype),
            "motion": MotionExtractor(**m.motion.to_dict(), dtype=dtype),
            "warping": WarpingNetwork(**m.warping.to_dict(), dtype=dtype),
            "spade": SPADEDecoder(**m.spade.to_dict(), dtype=dtype),
        }
        loss = config.loss
        self.gan_regions = tuple(
            r for r in loss.regions if loss.adversarial or loss.feature_matching
        )
        # (runs saved before the mesh guidance have neither key: they guided with 5 points)
        self.guide_attribute = loss.get("landmark_attribute", "landmarks_xy")
        self.guide_points = tuple(loss.get("landmark_points", ()))
        guided, num_kp = len(self.guide_points), self.nets["motion"].num_kp
        if guided > num_kp:
            raise ValueError(
                f"loss.landmark_points has {guided} points for {num_kp} keypoints: the Wing "
                "loss guides the first len(points) keypoints"
            )
        self.discriminator = MultiScaleDiscriminator(**m.discriminator.to_dict(), dtype=dtype)
        self.perceptual = VGG19PerceptualLoss(dtype=dtype) if loss.perceptual else None
        # Stage 1's crops and frames (data.image_size 0, the records' size: in the loss).
        if self.perceptual is not None and self.stage == "base":
            for r in loss.regions:
                if r != "full":
                    check_perceptual_size(f"loss.region_sizes.{r}", loss.region_sizes[r])
            if "full" in loss.regions and config.data.get("image_size", 0):
                check_perceptual_size("data.image_size", config.data.image_size)
        # The released hidden sizes; outputs follow the keypoint count (3K + 2, 3K, 3K).
        k3 = 3 * self.nets["motion"].num_kp
        outputs = {"stitching": k3 + 2, "lip": k3, "eye": k3}
        self.retarget = {
            name: RetargetingMLP(RELEASED[name]["hidden_sizes"], outputs[name]) for name in outputs
        }
        self.ratio_net = RatioNet()

    # ------------------------------------------------------------------ params
    def _base_init(self, rng, image):
        rngs = dict(zip(BASE, jax.random.split(rng, 4)))
        img = self._input(image)
        out = {}
        out["appearance"] = self.nets["appearance"].init(rngs["appearance"], img)
        out["motion"] = self.nets["motion"].init(rngs["motion"], img)
        feat = self.nets["appearance"].apply(out["appearance"], img)
        x = kp_lib.transform_keypoints(self.nets["motion"].apply(out["motion"], img))
        out["warping"] = self.nets["warping"].init(rngs["warping"], feat, x, x)
        warped = self.nets["warping"].apply(out["warping"], feat, x, x)["out"]
        out["spade"] = self.nets["spade"].init(rngs["spade"], warped)
        return out

    def init(self, rng, batch):
        batch = self.preprocess(batch)
        r_base, r_disc, r_mlp = jax.random.split(rng, 3)
        src = batch["source"]
        base = self._base_init(r_base, src)
        params = {}
        stats = {"generator": {k: v["batch_stats"] for k, v in base.items() if "batch_stats" in v}}
        if self.stage == "base":
            params["generator"] = {k: v["params"] for k, v in base.items()}
            if self.gan_regions:
                disc = {
                    r: self.discriminator.init(k, to_01(src))
                    for r, k in zip(
                        self.gan_regions, jax.random.split(r_disc, len(self.gan_regions))
                    )
                }
                params["discriminator"] = {r: v["params"] for r, v in disc.items()}
                stats["discriminator"] = {r: v["batch_stats"] for r, v in disc.items()}
            params.update(self.loss_networks())
            return params, {"batch_stats": stats}
        params["base"] = base
        keys = jax.random.split(r_mlp, 4)
        b = src.shape[0]
        k3 = self.nets["motion"].num_kp * 3
        sizes = {"stitching": 2 * k3, "lip": k3 + 2, "eye": k3 + 3}
        for key, name in zip(keys, ("stitching", "lip", "eye")):
            params[name] = self.retarget[name].init(key, jnp.zeros((b, sizes[name])))["params"]
        params["ratio"] = self.ratio_net.init(keys[3], to_01(src))["params"]
        return params, {}

    def loss_networks(self) -> dict:
        """The frozen groups the stage-1 loss terms use: `vgg` (perceptual weight > 0) and
        `arcface` (identity weight > 0), read from their imported weights files."""
        out = {}
        if self.perceptual is not None:
            out["vgg"] = self._weights("vgg19", self.config.loss.vgg19_weights)["params"]
        if self.config.loss.identity:
            arc = self._weights("arcface_r100", self.config.loss.arcface_weights)
            out["arcface"] = {k: arc[k] for k in ("params", "batch_stats")}
        return out

    def _weights(self, release, path):
        from jaxtalk.convert import weights

        path = path or str(weights.weights_path(release))
        if not fs.exists(path):
            raise ValueError(
                f"the {release} loss term needs weights at {path}: run `jaxtalk import "
                f"--release={release} ...` or set its loss weight to 0"
            )
        return weights.load(path)

    def frozen_sources(self):
        if self.stage != "stitching":
            return {}
        base = self.config.base
        if base.workdir:
            from jaxtalk.train import checkpoints

            workdir = fs.absolute(base.workdir)
            step = base.step if base.step >= 0 else checkpoints.resolve_step(workdir)
            return {"base": {"workdir": workdir, "step": int(step)}}
        if base.weights:
            return {"base": {"weights": fs.absolute(base.weights)}}
        raise ValueError(
            "the stitching stage needs a base model: set --config.base.workdir=RUN (a "
            "liveportrait stage-1 run) or --config.base.weights=FILE"
        )

    def load_frozen(self, group, source):
        if group != "base":
            return super().load_frozen(group, source)
        if "workdir" in source:
            from jaxtalk.train import checkpoints

            v = checkpoints.group_variables(source["workdir"], "generator", source["step"])
        else:
            from jaxtalk.convert import weights

            v = weights.load(source["weights"])
        stats = v.get("batch_stats", {})
        out = {}
        for name in BASE:
            out[name] = {"params": v["params"][name]}
            if name in stats:
                out[name]["batch_stats"] = stats[name]
        return out

    # ------------------------------------------------------------------ the base model
    def _input(self, images):
        """Model-range images -> the networks' input: [0, 1] at input_size."""
        return resize(to_01(images), self.input_size)

    def _variables(self, params, model_state, name):
        """F/M/W/G variables: the generator group's (stage 1) or the frozen base's."""
        if self.stage == "stitching":
            return params["base"][name]
        v = {"params": params["generator"][name]}
        stats = model_state.get("batch_stats", {}).get("generator", {})
        if name in stats:
            v["batch_stats"] = stats[name]
        return v

    def _apply(self, params, model_state, name, *args, train=False, updates=None):
        v = self._variables(params, model_state, name)
        if train and "batch_stats" in v:
            out, new = self.nets[name].apply(v, *args, train=True, mutable=["batch_stats"])
            updates[name] = new["batch_stats"]
            return out
        return self.nets[name].apply(v, *args, train=False)

    def motion(self, params, model_state, images):
        """M on [0, 1] input images -> (motion dict, implicit keypoints (B, K, 3))."""
        info = self._apply(params, model_state, "motion", images)
        return info, kp_lib.transform_keypoints(info)

    def render(
        self, params, model_state, feature, kp_driving, kp_source, train=False, updates=None
    ):
        """W then G -> image in [0, 1] at the data's size."""
        warped = self._apply(
            params,
            model_state,
            "warping",
            feature,
            kp_driving,
            kp_source,
            train=train,
            updates=updates,
        )
        return self._apply(
            params, model_state, "spade", warped["out"], train=train, updates=updates
        )

    # ------------------------------------------------------------------ stage-1 losses
    def losses(self):
        if self.stage == "stitching":
            return [
                ("ratio", self._ratio_loss),
                ("stitching", self._stitching_loss),
                ("lip", self._retarget_loss("lip")),
                ("eye", self._retarget_loss("eye")),
            ]
        out = [("generator", self._generator_loss)]
        if self.gan_regions:
            out.append(("discriminator", self._discriminator_loss))
        return out

    def _regions(self, batch, images, boxes):
        """{region: crop} of [0, 1] images at each region's loss size."""
        sizes = self.config.loss.region_sizes
        return {
            r: images if r == "full" else kp_losses.crop_regions(images, boxes[r], sizes[r])
            for r in boxes
        }

    def _disc(self, params, model_state, region, images, train=False):
        v = {
            "params": params["discriminator"][region],
            "batch_stats": model_state["batch_stats"]["discriminator"][region],
        }
        if train:
            out, new = self.discriminator.apply(v, images, train=True, mutable=["batch_stats"])
            return out, new["batch_stats"]
        return self.discriminator.apply(v, images), None

    def _generator_loss(self, params, model_state, batch, rng):
        batch, w = self.preprocess(batch), self.config.loss
        src, drv = self._input(batch["source"]), self._input(batch["driving"])
        target = to_01(batch["driving"])
        if self.perceptual is not None and "full" in w.regions:
            # data.image_size 0 (the records' size) is known only here, at trace time
            check_perceptual_size("data.image_size (the frames')", target.shape[1])
        b = src.shape[0]
        updates = {}
        feature = self._apply(params, model_state, "appearance", src, train=True, updates=updates)
        transform = kp_losses.RandomTransform.sample(rng, b, w.sigma_affine, w.sigma_tps)
        warped_drv = transform.transform_image(drv)
        info, x = self.motion(params, model_state, join_batches(src, drv, warped_drv))
        (info_s, info_d, _), (x_s, x_d, x_t) = split_batches(info, 3), split_batches(x, 3)
        # sources then driving frames, as guide_landmarks and the pose targets are ordered
        info = jax.tree.map(lambda a, c: jnp.concatenate([a, c]), info_s, info_d)
        pred = self.render(params, model_state, feature, x_d, x_s, train=True, updates=updates)
        pred = resize(pred, target.shape[1])

        metrics = {}
        total = jnp.zeros((), jnp.float32)

        def add(name, weight, value):
            nonlocal total
            metrics[name] = value
            total = total + weight * value

        boxes = region_boxes(batch, 1, w.regions, w.region_scales)
        fake, real = self._regions(batch, pred, boxes), self._regions(batch, target, boxes)
        for r in w.regions:
            if w.l1:  # the cascade's regions weigh the mouth, a few pixels of the frame
                add(f"l1_{r}", w.l1, jnp.mean(jnp.abs(fake[r] - real[r])))
            if self.perceptual is not None:
                p = self.perceptual.apply(
                    {"params": {"vgg": params["vgg"]}}, fake[r] * 2 - 1, real[r] * 2 - 1
                )
                add(f"perceptual_{r}", w.perceptual, p)
            if r in self.gan_regions:
                fake_out, _ = self._disc(params, model_state, r, fake[r])
                real_out, _ = self._disc(params, model_state, r, real[r])
                gan = sum(adversarial.g_hinge_loss(fake_out[s][1]) for s in fake_out)
                fm = sum(
                    adversarial.feature_matching_loss(real_out[s][0], fake_out[s][0])
                    for s in fake_out
                )
                add(f"adversarial_{r}", w.adversarial, gan)
                add(f"feature_matching_{r}", w.feature_matching, fm)
        if w.equivariance:
            add("equivariance", w.equivariance, kp_losses.equivariance_loss(x_d, x_t, transform))
        canonical = info["kp"].reshape(2 * b, -1, 3)
        if w.keypoint_prior:
            prior = kp_losses.keypoint_prior_loss(canonical, w.prior_dt, w.prior_zt)
            add("keypoint_prior", w.keypoint_prior, prior)
        if w.head_pose and "pose" in batch:
            # the data's pose is (yaw, pitch, roll) in degrees, for (source, driving)
            pose = jnp.stack([kp_lib.degrees(info[a]) for a in ("yaw", "pitch", "roll")], -1)
            want = jnp.concatenate([batch["pose"][:, 0], batch["pose"][:, 1]])
            valid = jnp.concatenate([batch["pose_valid"], batch["pose_valid"]])
            add("head_pose", w.head_pose, kp_losses.head_pose_loss(pose, want, valid))
        if w.deformation_prior:
            add("deformation_prior", w.deformation_prior,
                kp_losses.deformation_prior_loss(info["exp"]))  # fmt: skip
        if w.landmark and self.guide_attribute in batch:
            lm, valid = self.guide_landmarks(batch)
            guided = kp_losses.landmark_guided_loss(
                jnp.concatenate([x_s, x_d]), lm, valid, w.wing_width, w.wing_curvature
            )
            add("landmark", w.landmark, guided)
        if w.identity:
            from jaxtalk.evaluate.csim import embed

            faces = join_batches(fake["face"], real["face"])
            arch = iresnet.depths_of(params["arcface"]["params"])
            e_fake, e_real = split_batches(embed(params["arcface"], faces, arch), 2)
            add(
                "identity",
                w.identity,
                1.0 - jnp.mean(jnp.sum(e_fake * jax.lax.stop_gradient(e_real), -1)),
            )
        state = dict(model_state.get("batch_stats", {}))
        state["generator"] = {**state.get("generator", {}), **updates}
        return LossOutput(
            total, metrics, model_state={**model_state, "batch_stats": state},
            outputs={"fake": pred},
        )  # fmt: skip

    def guide_landmarks(self, batch):
        """The Wing loss's targets: (2B, N, 2) landmarks in the keypoints' frame, sources
        then driving frames, and (2B,) validity."""
        points = batch[self.guide_attribute]
        lm = jnp.concatenate([kp_losses.landmarks_to_grid(points[:, i]) for i in (0, 1)])
        if self.guide_points:
            lm = lm[:, jnp.asarray(self.guide_points)]
        return lm, jnp.concatenate([batch[self.guide_attribute + "_valid"]] * 2)

    def _discriminator_loss(self, params, model_state, batch, rng):
        batch, w = self.preprocess(batch), self.config.loss
        target = to_01(batch["driving"])
        boxes = region_boxes(batch, 1, self.gan_regions, w.region_scales)
        fake = self._regions(batch, batch["fake"].astype(jnp.float32), boxes)
        real = self._regions(batch, target, boxes)
        total, metrics = jnp.zeros((), jnp.float32), {}
        new = dict(model_state["batch_stats"]["discriminator"])
        state = model_state
        for r in self.gan_regions:
            both, new[r] = self._disc(params, state, r, join_batches(real[r], fake[r]), train=True)
            loss = sum(adversarial.d_hinge_loss(*split_batches(o[1], 2)) for o in both.values())
            metrics[f"hinge_{r}"] = loss
            total = total + w.adversarial * loss
        stats = {**model_state["batch_stats"], "discriminator": new}
        return LossOutput(total, metrics, model_state={**model_state, "batch_stats": stats})

    # ------------------------------------------------------------------ stage-2 losses
    def _frozen_base(self, params, model_state, batch):
        """Source features and keypoints, driving keypoints, all without gradient."""
        batch = self.preprocess(batch)
        src, drv = self._input(batch["source"]), self._input(batch["driving"])
        feature = self._apply(params, model_state, "appearance", src)
        _, x = self.motion(params, model_state, join_batches(src, drv))
        x_s, x_d = split_batches(x, 2)
        return batch, jax.lax.stop_gradient(feature), jax.lax.stop_gradient(x_s), x_d

    def _ratios(self, params, images):
        return self.ratio_net.apply({"params": params["ratio"]}, images)

    def _ratio_loss(self, params, model_state, batch, rng):
        batch = self.preprocess(batch)
        images = to_01(jnp.concatenate([batch["source"], batch["driving"]]))
        pred = self._ratios(params, images)
        total, metrics = jnp.zeros((), jnp.float32), {}
        for i, (name, to_target) in enumerate((("mouth", lambda v: v), ("blink", lambda v: 1 - v))):
            if name not in batch:
                continue
            want = to_target(jnp.concatenate([batch[name][:, 0, 0], batch[name][:, 1, 0]]))
            valid = jnp.concatenate([batch[f"{name}_valid"]] * 2).astype(jnp.float32)
            err = jnp.sum(jnp.abs(pred[:, i] - want) * valid) / jnp.maximum(valid.sum(), 1.0)
            metrics[f"{name}_error"] = err
            total = total + err
        return LossOutput(total, metrics)

    def _outside_l1(self, image, source, boxes):
        keep = 1.0 - box_mask(boxes, image.shape[1])
        return jnp.mean(jnp.abs(image - source) * keep)

    def _stitching_loss(self, params, model_state, batch, rng):
        w = self.config.loss
        batch, feature, x_s, x_d = self._frozen_base(params, model_state, batch)
        x_other = jnp.roll(x_d, 1, axis=0)  # another clip's motion: the cross-identity case
        net = lambda v: self.retarget["stitching"].apply({"params": params["stitching"]}, v)  # noqa: E731
        x_st = kp_lib.stitch(net, x_s, x_other)
        image = resize(
            self.render(params, model_state, feature, x_st, x_s), batch["source"].shape[1]
        )
        source = to_01(batch["source"])
        boxes = region_boxes(batch, 0, ("face",), w.region_scales)["face"]
        outside = self._outside_l1(image, source, boxes)
        delta = jnp.mean(jnp.abs(x_st - x_other))
        return LossOutput(
            outside + w.stitching_delta * delta, {"outside_l1": outside, "delta": delta}
        )

    RATIO_INDEX = {"lip": 0, "eye": 1}  # RatioNet's outputs
    RETARGET_REGION = {"lip": "lip", "eye": "face"}  # what a retargeting may change

    def _retargeted(self, params, model_state, name, feature, x_s, source, want):
        """The source re-rendered with its `name` ratio commanded to `want` (B, 1) ->
        (image [0, 1] at the data's size, the keypoint offset, the ratio read back)."""
        index = self.RATIO_INDEX[name]
        own = jax.lax.stop_gradient(self._ratios(params, source))[:, index : index + 1]
        net = lambda v: self.retarget[name].apply({"params": params[name]}, v)  # noqa: E731
        if name == "lip":
            delta = kp_lib.retarget_lip(net, x_s, jnp.concatenate([own, want], 1))
        else:
            delta = kp_lib.retarget_eye(net, x_s, jnp.concatenate([own, own, want], 1))
        image = resize(self.render(params, model_state, feature, x_s + delta, x_s), source.shape[1])
        ratio = {"params": jax.lax.stop_gradient(params["ratio"])}
        return image, delta, self.ratio_net.apply(ratio, image)[:, index : index + 1]

    def _retarget_loss(self, name):
        def loss(params, model_state, batch, rng):
            w = self.config.loss
            batch, feature, x_s, _ = self._frozen_base(params, model_state, batch)
            source = to_01(batch["source"])
            want = jax.random.uniform(rng, (x_s.shape[0], 1))
            image, delta, got = self._retargeted(
                params, model_state, name, feature, x_s, source, want
            )
            ratio_err = jnp.mean(jnp.abs(got - want))
            region = self.RETARGET_REGION[name]
            boxes = region_boxes(batch, 0, (region,), w.region_scales)[region]
            outside = self._outside_l1(image, source, boxes)
            reg = jnp.mean(jnp.abs(delta))
            total = ratio_err + outside + w.retarget_delta * reg
            return LossOutput(
                total, {"ratio_error": ratio_err, "outside_l1": outside, "delta": reg}
            )

        return loss

    # ------------------------------------------------------------------ evaluation
    def reenact(self, params, model_state, batch):
        """(prediction, the source rendered with its own keypoints), [0, 1], data size."""
        batch = self.preprocess(batch)
        src, drv = self._input(batch["source"]), self._input(batch["driving"])
        b = src.shape[0]
        feature = self._apply(params, model_state, "appearance", src)
        _, x = self.motion(params, model_state, jnp.concatenate([src, drv]))
        size = batch["source"].shape[1]
        both = self.render(
            params, model_state, jnp.concatenate([feature, feature]),
            jnp.concatenate([x[b:], x[:b]]), jnp.concatenate([x[:b], x[:b]]),
        )  # fmt: skip
        both = resize(both, size)
        return both[:b], both[b:]

    def cross_reenact(self, params, model_state, batch):
        """(prediction, its driving frame), [0, 1]: each source driven by the next example's
        clip (another identity in a shuffled batch) with relative motion as the release
        animates, that clip's source frame standing for its first driving frame; stitched
        in the stitching stage."""
        batch = self.preprocess(batch)
        src, drv = self._input(batch["source"]), self._input(batch["driving"])
        b = src.shape[0]
        feature = self._apply(params, model_state, "appearance", src)
        info, x = self.motion(params, model_state, jnp.concatenate([src, drv]))
        source = jax.tree.map(lambda a: a[:b], info)
        first = jax.tree.map(lambda a: jnp.roll(a[:b], 1, axis=0), info)
        driving = jax.tree.map(lambda a: jnp.roll(a[b:], 1, axis=0), info)
        x_d = kp_lib.relative_motion(source, driving, first)
        if self.stage == "stitching":
            x_d = kp_lib.stitch({"params": params["stitching"]}, x[:b], x_d)
        pred = self.render(params, model_state, feature, x_d, x[:b])
        return resize(pred, batch["source"].shape[1]), jnp.roll(to_01(batch["driving"]), 1, 0)

    def eval_outputs(self, params, model_state, batch, rng, mode="self"):
        """self: the source frame driven by a frame of its own clip (target = that frame).
        cross: driven by another clip (`cross_reenact`): no target; CSIM against the
        source, AED / APD against the driving frame, as the paper's cross-reenactment."""
        if mode not in self.EVAL_MODES:
            raise ValueError(f"unknown eval mode {mode!r}: {self.EVAL_MODES}")
        source = to_01(self.preprocess(batch)["source"])
        if mode == "cross":
            pred, driving = self.cross_reenact(params, model_state, batch)
            return {"prediction": pred, "driving": driving, "source": source}
        pred, _ = self.reenact(params, model_state, batch)
        driving = to_01(self.preprocess(batch)["driving"])
        return {"prediction": pred, "target": driving, "driving": driving, "source": source}

    def eval_step(self, params, model_state, batch, rng):
        pred, own = self.reenact(params, model_state, batch)
        batch = self.preprocess(batch)
        target, source = to_01(batch["driving"]), to_01(batch["source"])
        im, mean = image_metrics, functools.partial(image_metrics.reenactment_mean, batch=batch)
        out = {
            "psnr": mean(im.psnr(pred, target)),
            "psnr_own_keypoints": mean(im.psnr(own, target)),
            "psnr_copy_source": mean(im.psnr(source, target)),
            "ssim": mean(im.ssim(pred, target)),
            "l1": mean(im.l1(pred, target)),
        }
        if self.stage == "stitching":
            out.update(self._stitching_eval(params, model_state, batch, rng))
        return out

    def _stitching_eval(self, params, model_state, batch, rng):
        """L1 outside the source's face, with the other clip's motion, without and with
        stitching (what stage 2 should lower); the lip and eye ratios read back from frames
        retargeted to commands spread over [0, 1], against the same readings paired with
        the commands shuffled (lower only if the rendering follows the command)."""
        _, feature, x_s, x_d = self._frozen_base(params, model_state, batch)
        x_other = jnp.roll(x_d, 1, axis=0)
        x_st = kp_lib.stitch({"params": params["stitching"]}, x_s, x_other)
        size, source = batch["source"].shape[1], to_01(batch["source"])
        boxes = region_boxes(batch, 0, ("face",), self.config.loss.region_scales)["face"]
        plain = resize(self.render(params, model_state, feature, x_other, x_s), size)
        stitched = resize(self.render(params, model_state, feature, x_st, x_s), size)
        out = {
            "outside_l1_unstitched": self._outside_l1(plain, source, boxes),
            "outside_l1_stitched": self._outside_l1(stitched, source, boxes),
        }
        # The measuring instrument itself: the ratio regressor on the held-out real frames.
        ratio = self._ratio_loss(params, model_state, batch, rng).metrics
        out.update({f"ratio_{key}": value for key, value in ratio.items()})
        b = x_s.shape[0]
        want = ((jnp.arange(b, dtype=jnp.float32) + 0.5) / b)[:, None]
        shuffled = jax.random.permutation(rng, want)
        for name in ("lip", "eye"):
            _, _, got = self._retargeted(params, model_state, name, feature, x_s, source, want)
            out[f"{name}_ratio_error"] = jnp.mean(jnp.abs(got - want))
            out[f"{name}_ratio_error_shuffled"] = jnp.mean(jnp.abs(got - shuffled))
        return out

    def samples(self, params, model_state, batch, rng):
        pred, own = self.reenact(params, model_state, batch)
        batch = self.preprocess(batch)
        row = [to_01(batch["source"]), to_01(batch["driving"]), pred, own]
        # One image per example: source | driving | reenactment | source with its own keypoints.
        return {"reenactment": jnp.concatenate(row, axis=2)}

    # ------------------------------------------------------------------ data
    def data(self, split, **share):
        """Pairs from `data_pipelines.loaders` (share: global_batch_size, seed, process_*)."""
        from data_pipelines.loaders import make_loader

        return iter(make_loader(self.config.data, split=split, shuffle=split == "train", **share))


def build(config):
    return LivePortraitTask(config)
