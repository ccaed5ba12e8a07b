"""LivePortrait animation: a source portrait moved by a driving video's implicit keypoints.

Works with weights from `jaxtalk import --release=liveportrait` (or liveportrait_animals,
the same networks) and tiny files that carry their module options in model_config (one
dict per network group: {"input_size", "appearance", "motion", "warping", "spade"}, as the
training config names them; absent = the release's sizes).

The release's inference (its live_portrait_pipeline.py, Algorithm 1 of the paper) in the
animator's hooks:
- `prepare`: F's feature volume, M's motion of the source and its keypoints x_s, once;
- `start`: M on every driving frame (batched, `chunk` frames per call), then per frame the
  driven keypoints: relative motion (default: R_d R_d0^T R_s, exp_s + exp_d - exp_d0,
  s_s * s_d / s_d0, t_s + t_d - t_d0, t_z = 0) or absolute motion (R_d, the released
  subset of exp_d's entries over exp_s, s_s, t_d), restricted to an animation region as
  released; then stitching (on by default when the file has S) or eye / lip retargeting
  by open ratios (then, as released, the relative keypoints are x_s plus the retargeting
  offsets: the ratios drive the eyes and lips instead of the driving motion); then the
  driving multiplier, x_s + (x_d - x_s) * m. `steps` are those keypoints, (T, K, 3).
- `drive`: W and G on a chunk of keypoints: frames in [-1, 1] at G's size (512 released);
  with `paste_back` the frame is put back into the uncropped source image through the
  crop's inverse transform and a feathered mask (jaxtalk.media.portrait_crop), on device.

Not here: a source *video* (per-frame source motion and its smoothing), the release's
'expression-friendly' rescaling (for a source image it multiplies the relative motion by
sqrt(hull(x_s)) / sqrt(hull(x_d0)), and x_d0 = x_s under relative motion, so it is 1) and
the lip normalisation before animation (off in the release's command-line defaults).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk import fs
from jaxtalk.inference.animator import AnimationError, Animator, Driver, ExportedFunction
from jaxtalk.models.liveportrait import keypoints as kp_lib
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.generator import SPADEDecoder
from jaxtalk.models.liveportrait.keypoints import REGIONS
from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
from jaxtalk.models.liveportrait.warping import WarpingNetwork

NETWORKS = {
    "appearance": AppearanceFeatureExtractor,
    "motion": MotionExtractor,
    "warping": WarpingNetwork,
    "spade": SPADEDecoder,
}
RETARGETING = ("stitching", "lip", "eye")
MODES = ("relative", "absolute")


def _ratios(value, frames: int, width: int, what: str) -> np.ndarray:
    """A ratio option (a number, or one per frame) -> (frames, width) float32."""
    try:
        a = np.asarray(value, np.float32)
    except (TypeError, ValueError):
        raise AnimationError(f"{what} must be numbers, not {type(value).__name__}") from None
    if a.ndim == 0 or a.shape == (width,):
        a = np.broadcast_to(a.reshape(1, -1), (frames, width))
    elif a.ndim == 1 and width == 1 and len(a) == frames:
        a = a[:, None]
    if a.shape != (frames, width) or not np.all(np.isfinite(a)):
        raise AnimationError(
            f"{what}: expected a number or {frames} finite values (one per driving frame), "
            f"got shape {np.shape(value)}"
        )
    return np.ascontiguousarray(a)


def _source_ratio(value, width: int, what: str, needs: str) -> np.ndarray:
    if value is None:
        raise AnimationError(f"{needs} needs the source's {what} (from its landmarks)")
    return _ratios(value, 1, width, f"the source's {what}")


def _matrix(c2o) -> np.ndarray:
    """paste_back's crop-to-image map as a checked 3x3 float64 matrix."""
    try:
        c2o = np.asarray(c2o, np.float64)
    except (TypeError, ValueError):
        c2o = np.zeros(0)
    if c2o.shape == (2, 3):
        c2o = np.concatenate([c2o, [[0.0, 0.0, 1.0]]])
    if c2o.shape != (3, 3) or not np.all(np.isfinite(c2o)):
        raise AnimationError(f"paste_back: crop_to_image must be a 2x3 or 3x3 map, not {c2o.shape}")
    return c2o


def resize_map(crop_size: int, out_size: int) -> np.ndarray:
    """3x3 map from the pixels of a frame rendered at `out_size` to those of the
    `crop_size` crop it stands for (pixel centres aligned, as an image resize)."""
    s = crop_size / out_size
    return np.array([[s, 0, (s - 1) / 2], [0, s, (s - 1) / 2], [0, 0, 1]])


def network_options(model_config: Mapping[str, Any], source: str) -> dict[str, dict]:
    """Each network's constructor options from a weights file's model_config (one dict per
    group; absent = the release's), type-checked, keypoint counts consistent."""
    from jaxtalk.convert import weights

    out = {}
    for group, cls in NETWORKS.items():
        given = model_config.get(group) or {}
        if not isinstance(given, Mapping):
            raise AnimationError(f"{source}: model_config {group!r} must be a dict of options")
        out[group] = weights.module_options(cls, dict(given), f"{source} ({group})")
    counts = {out[g].get("num_kp", 21) for g in ("motion", "warping")}
    if len(counts) > 1:
        raise AnimationError(f"{source}: motion and warping disagree on num_kp ({counts})")
    return out


class LivePortraitAnimator(Animator):
    """F, M once on the source; M, the keypoint algebra, S and the retargeting MLPs over the
    driving video in `start`; W + G chunk by chunk in `drive`."""

    driver = Driver.VIDEO
    exports = True

    def __init__(
        self,
        variables: Mapping,
        model_config: Mapping[str, Any] | None = None,
        chunk: int = 8,
        source: str = "model_config",
        dtype: Any = jnp.float32,
    ):
        """`dtype`: the networks' compute dtype (float32 as released; bfloat16 on an
        accelerator; float64 for parity checks); keypoints stay in >= float32."""
        model_config = dict(model_config or {})
        params = variables["params"]
        missing = [g for g in NETWORKS if g not in params]
        if missing:
            raise AnimationError(f"{source}: no {', '.join(missing)} parameters")
        stats = variables.get("batch_stats") or {}
        options = network_options(model_config, source)
        self.source_name, self.chunk = source, chunk
        self.size = model_config.get("input_size", 256)
        if type(self.size) is not int or self.size < 32 or self.size % 32:
            raise AnimationError(f"{source}: model_config input_size must be a multiple of 32")
        self.model_config = model_config
        self.nets = {g: cls(**options[g], dtype=dtype) for g, cls in NETWORKS.items()}
        self.pixel_dtype = jnp.promote_types(dtype, jnp.float32)
        self.variables = {
            g: {"params": params[g], **({"batch_stats": stats[g]} if g in stats else {})}
            for g in NETWORKS
        }
        self.mlps = {name: params[name] for name in RETARGETING if name in params}
        self._prepare = jax.jit(self._encode_source)
        self._motion = jax.jit(self._motion_info)
        self._keypoints = jax.jit(
            self._driven, static_argnames=("relative", "region", "stitching", "eye", "lip")
        )
        self._render = jax.jit(self.render)
        self._paste = jax.jit(_paste_frames)

    @classmethod
    def from_stored(cls, stored: dict, path: str, **kw) -> "LivePortraitAnimator":
        """`weights.load`'s dict of a file from `jaxtalk import --release=liveportrait`."""
        return cls(stored, stored.get("model_config") or {}, source=path, **kw)

    @classmethod
    def from_weights(cls, path: str, **kw) -> "LivePortraitAnimator":
        from jaxtalk.convert import weights

        if not fs.exists(path):
            raise AnimationError(f"{path}: no such weights file")
        return cls.from_stored(weights.load(path), path, **kw)

    @classmethod
    def from_run(cls, workdir: str, step: int | None = None, **kw) -> "LivePortraitAnimator":
        """A `liveportrait` training run: stage 1's F, M, W, G (no stitching or retargeting),
        or a stitching run's frozen base with its trained stitching, lip and eye MLPs."""
        from jaxtalk.train import checkpoints

        step = checkpoints.resolve_step(workdir, step)
        config = checkpoints.run_config(workdir, step)
        if config.get("task") != "liveportrait":
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not liveportrait")
        if config.get("stage", "base") == "base":
            variables = checkpoints.group_variables(workdir, "generator", step)
            variables.pop("online", None)
        else:  # the frozen base group holds {network: {params, batch_stats}}
            base = checkpoints.group_variables(workdir, "base", step)["params"]
            variables = {
                "params": {g: base[g]["params"] for g in NETWORKS},
                "batch_stats": {
                    g: base[g]["batch_stats"] for g in NETWORKS if "batch_stats" in base[g]
                },
            }
            for name in RETARGETING:
                variables["params"][name] = checkpoints.group_variables(workdir, name, step)[
                    "params"
                ]
        return cls(variables, config.get("model") or {}, source=workdir, **kw)

    # ------------------------------------------------------------------ networks
    # Variables are arguments of the jitted functions, never constants folded into them.
    def _motion_info(self, variables, images):
        """uint8 (B, S, S, 3) -> M's raw heads (the release feeds [0, 1] pixels)."""
        x = jnp.asarray(images, self.pixel_dtype) / 255.0
        return self.nets["motion"].apply(variables["motion"], x)

    def _encode_source(self, variables, image):
        """F's volume, M's heads and the keypoints x_s of a uint8 (1, S, S, 3) source."""
        x = jnp.asarray(image, self.pixel_dtype) / 255.0
        info = self.nets["motion"].apply(variables["motion"], x)
        feature = self.nets["appearance"].apply(variables["appearance"], x)
        return dict(feature=feature, info=info, kp=kp_lib.transform_keypoints(info))

    def render(self, variables, feature, kp_source, kp_driving):
        """W + G: feature (1, D, h, w, C), kp_source (1, K, 3), kp_driving (B, K, 3) ->
        (B, H, W, 3) in [-1, 1]. `variables`: {"warping": ..., "spade": ...}."""
        n = kp_driving.shape[0]
        tile = lambda x: jnp.broadcast_to(x, (n,) + x.shape[1:])  # noqa: E731
        warped = self.nets["warping"].apply(
            variables["warping"], tile(feature), kp_driving, tile(kp_source)
        )["out"]
        return self.nets["spade"].apply(variables["spade"], warped) * 2.0 - 1.0

    def _driven(
        self, mlps, state, infos, first, eye_ratio, lip_ratio, multiplier,
        *, relative: bool, region: str, stitching: bool, eye: bool, lip: bool,
    ):  # fmt: skip
        """The keypoints of Algorithm 1 for every driving frame (see the module docstring)."""
        x_s = state["kp"]
        x_d = kp_lib.motion_keypoints(state["info"], infos, first, relative, region)
        n = x_d.shape[0]
        tile = jnp.broadcast_to(x_s, x_d.shape)
        if eye or lip:
            x_d = tile if relative else x_d
            if eye:
                x_d = x_d + kp_lib.retarget_eye(mlps["eye"], tile, eye_ratio[:n])
            if lip:
                x_d = x_d + kp_lib.retarget_lip(mlps["lip"], tile, lip_ratio[:n])
        if stitching:
            x_d = kp_lib.stitch(mlps["stitching"], tile, x_d)
        return x_s + (x_d - x_s) * multiplier

    def _needs(self, name: str, option: str):
        if name not in self.mlps:
            raise AnimationError(f"{self.source_name}: has no {name} module, needed for {option}")

    # ------------------------------------------------------------------ the contract
    def prepare(self, source: np.ndarray):
        return self._prepare(self.variables, np.asarray(source)[None])

    def driving_motion(self, driving: np.ndarray) -> dict:
        """M's heads for every driving frame, `chunk` frames per call (one compilation)."""
        out = []
        for begin in range(0, len(driving), self.chunk):
            part = driving[begin : begin + self.chunk]
            pad = np.repeat(part[-1:], self.chunk - len(part), 0)
            info = self._motion(self.variables, np.concatenate([part, pad]))
            out.append(jax.tree.map(lambda a, k=len(part): np.asarray(a[:k]), info))
        return jax.tree.map(lambda *a: np.concatenate(a), *out)

    def start(
        self,
        state,
        driving: np.ndarray,
        mode: str = "relative",
        stitching: bool | None = None,
        eye_ratio=None,
        lip_ratio=None,
        source_eye_ratio=None,
        source_lip_ratio=None,
        driving_multiplier: float = 1.0,
        animation_region: str = "all",
        paste_back: Mapping | None = None,
    ):
        """driving (T, S, S, 3) uint8 crops. Options as released: mode relative / absolute;
        stitching (default: on when the file has S); eye_ratio / lip_ratio: the target open
        ratios, one number or one per frame (the release takes the driving frame's left-eye
        ratio and its lip ratio), with source_eye_ratio (left, right) / source_lip_ratio
        from the source's landmarks; driving_multiplier; animation_region (all, exp, pose,
        lip, eyes); paste_back: {"image": the uncropped source (H, W, 3) uint8,
        "crop_to_image": the 3x3 map from crop to image pixels, "crop_size": the crop's
        side (512)}."""
        driving = np.asarray(driving)
        if driving.ndim != 4 or driving.shape[1:] != (self.size, self.size, 3):
            raise AnimationError(
                f"driving frames must be (T, {self.size}, {self.size}, 3), got {driving.shape}"
            )
        if mode not in MODES:
            raise AnimationError(f"unknown motion mode {mode!r}: {', '.join(MODES)}")
        if animation_region not in REGIONS:
            raise AnimationError(
                f"unknown animation region {animation_region!r}: {', '.join(REGIONS)}"
            )
        if stitching is None:
            stitching = "stitching" in self.mlps
        elif stitching:
            self._needs("stitching", "stitching")
        try:
            multiplier = float(driving_multiplier)
        except (TypeError, ValueError):
            multiplier = float("nan")
        if not np.isfinite(multiplier):
            raise AnimationError(f"driving_multiplier must be a number, not {driving_multiplier!r}")
        n = len(driving)
        eye = lip = np.zeros((n, 1), np.float32)
        if eye_ratio is not None:
            self._needs("eye", "eye retargeting")
            source_eye = _source_ratio(source_eye_ratio, 2, "eye ratios", "eye retargeting")
            target = _ratios(eye_ratio, n, 1, "eye_ratio")
            eye = np.concatenate([np.repeat(source_eye, n, 0), target], 1)
        if lip_ratio is not None:
            self._needs("lip", "lip retargeting")
            source_lip = _source_ratio(source_lip_ratio, 1, "lip ratio", "lip retargeting")
            target = _ratios(lip_ratio, n, 1, "lip_ratio")
            lip = np.concatenate([np.repeat(source_lip, n, 0), target], 1)
        infos = self.driving_motion(driving)
        first = jax.tree.map(lambda a: a[:1], infos)
        steps = self._keypoints(
            self.mlps,
            state,
            infos,
            first,
            eye,
            lip,
            multiplier,
            relative=mode == "relative",
            region=animation_region,
            stitching=bool(stitching),
            eye=eye_ratio is not None,
            lip=lip_ratio is not None,
        )
        state = dict(state, paste=self._paste_state(paste_back))
        return state, np.asarray(steps)  # float32 (float64 under a float64 dtype)

    def _paste_state(self, paste_back: Mapping | None):
        """The full image, the output-to-image map and the feathered mask, once."""
        if paste_back is None:
            return None
        from jaxtalk.media import portrait_crop

        image = np.asarray(paste_back.get("image"))
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise AnimationError(f"paste_back: image must be (H, W, 3) uint8, got {image.shape}")
        out = self.output_size()
        crop_size = int(paste_back.get("crop_size", portrait_crop.SOURCE.dsize))
        c2o = _matrix(paste_back.get("crop_to_image"))
        # The release's mask is its crop's (a 512 template through M_c2o), whatever G's size.
        mask = portrait_crop.paste_mask(c2o, image.shape[:2], dsize=crop_size)
        o2i = c2o @ resize_map(crop_size, out)
        return dict(image=jnp.asarray(image), mask=mask, matrix=jnp.asarray(o2i, jnp.float32))

    def output_size(self) -> int:
        """The side of the frames G renders (512 released)."""
        feature, kp = self._source_shapes()
        return jax.eval_shape(self.render, self._render_variables(), feature, kp, kp).shape[1]

    def _render_variables(self):
        return {g: self.variables[g] for g in ("warping", "spade")}

    def _source_shapes(self):
        return jax.eval_shape(
            lambda v, x: tuple(self._encode_source(v, x)[k] for k in ("feature", "kp")),
            self.variables,
            jax.ShapeDtypeStruct((1, self.size, self.size, 3), jnp.uint8),
        )

    def drive(self, state, steps: np.ndarray):
        frames = self._render(
            self._render_variables(), state["feature"], state["kp"], jnp.asarray(steps)
        )
        if state.get("paste") is None:
            return frames
        return self._paste(frames, **state["paste"])

    def export_function(self) -> ExportedFunction:
        """`frames = f(feature (1, D, h, w, C), kp_source (1, K, 3), kp_driving (T, K, 3))`:
        W + G on driven keypoints (those `start` makes), frames in [-1, 1]."""
        feature, kp = self._source_shapes()
        (frames,) = jax.export.symbolic_shape("T")
        specs = [
            jax.ShapeDtypeStruct(feature.shape, jnp.float32),
            jax.ShapeDtypeStruct(kp.shape, jnp.float32),
            jax.ShapeDtypeStruct((frames,) + kp.shape[1:], jnp.float32),
        ]
        return ExportedFunction(
            self.render,
            self._render_variables(),
            specs,
            ["feature", "kp_source", "kp_driving"],
            ["frames"],
            {"model": "liveportrait", "input_size": self.size},
        )


def _paste_frames(frames, image, mask, matrix):
    """Frames in [-1, 1] put into `image` through `matrix` (output -> image pixels), blended
    by `mask`: (B, H, W, 3) in [-1, 1]."""
    from jaxtalk.media import portrait_crop

    placed = portrait_crop.warp_affine((frames + 1.0) * 127.5, matrix, image.shape[:2])
    out = mask * placed + (1 - mask) * image.astype(placed.dtype)
    return out / 127.5 - 1.0


# What this module drives (jaxtalk/discovery.py): the weights kinds / release names.
ANIMATORS = {"liveportrait": LivePortraitAnimator, "liveportrait_animals": LivePortraitAnimator}

__all__ = [
    "ANIMATORS",
    "LivePortraitAnimator",
    "MODES",
    "REGIONS",
    "network_options",
]
