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

A source *video* (`prepare` of (T, S, S, 3) frames; the release's flag_is_source_video):
source frame i is animated by driving frame i, min(T, driving frames) frames.
- `prepare` keeps the frames on the host; `start` runs M on them (batched like the driving
  frames), then per frame: relative motion R_d,i R_d0^T R_s,i and exp_s,i + exp_d,i -
  exp_d0, absolute R_d,i and exp_d,i, each smoothed over time by the release's Kalman
  smoother (`kalman_smooth`, observation variance `smooth_variance`, 3e-7 released); the
  frame's own scale and translation (absolute motion of all / pose: the driving frame's
  translation, as released); the animation region as for an image, but the expression
  entries are the absolute subset in both modes (the release writes that subset); then
  stitching, retargeting (with per-frame source ratios) and the multiplier, each against
  that frame's x_s,i. `steps` are the frame indices; the keypoints stay in the state.
- `drive`: F on the chunk's source frames (device memory does not grow with the video's
  length; the frames are on the host, as driving frames are), W + G against each frame's x_s,i, paste-back of each frame into its own
  uncropped source frame through its own crop map.
- `source_video_eye_retargeting` (the release's flag, off by default): every frame's eyes
  held at the first source frame's opening by the eye MLP, its offset added after
  stitching, from per-frame source eye ratios (tracked landmarks).
Left out for a source video: as for an image, the lip normalisation; and a still driving
image (which the release also pairs with a source video) is not a driver here.

Not here: the release's 'expression-friendly' rescaling (for a source image it multiplies
the relative motion by sqrt(hull(x_s)) / sqrt(hull(x_d0)), and x_d0 = x_s under relative
motion, so it is 1; the release skips it for a source video) and the lip normalisation
before animation (off in the release's command-line defaults).
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


def _source_ratio(value, width: int, what: str, needs: str, frames: int = 1) -> np.ndarray:
    """The source's ratios: one row, or one per frame of a source video."""
    if value is None:
        raise AnimationError(f"{needs} needs the source's {what} (from its landmarks)")
    return _ratios(value, frames, width, f"the source's {what}")


def _retarget_input(target, source, width: int, name: str, what: str, frames: tuple, n: int):
    """The retargeting MLP's ratio input (n, width + 1): the source's ratios and the target.
    `frames`: (source frames, driving frames), what each ratio option is given for."""
    source = _source_ratio(source, width, what, f"{name} retargeting", frames[0])[:n]
    target = _ratios(target, frames[1], 1, f"{name}_ratio")[:n]
    return np.concatenate([np.broadcast_to(source, (n, width)), target], 1)


# The release's source-video eye retargeting: a first frame whose eyes are more closed than
# this is held at the open value instead.
EYE_HOLD_THRESHOLD, EYE_HOLD_OPEN = 0.18, 0.39


def _eye_hold(source_eye_ratio, frames: int, n: int) -> np.ndarray:
    """The eye MLP's input (n, 3) holding every frame's eyes at the first frame's opening:
    [the frame's (left, right) ratios, the first frame's mean (or EYE_HOLD_OPEN)]."""
    need = "source_video_eye_retargeting"
    source = _source_ratio(source_eye_ratio, 2, "eye ratios", need, frames)[:n]
    target = float(source[0].mean())
    if target < EYE_HOLD_THRESHOLD:
        target = EYE_HOLD_OPEN
    return np.concatenate([source, np.full((n, 1), target, np.float32)], 1)


def kalman_smooth(
    x, observation_variance: float = 3e-7, process_variance: float = 1e-5
) -> np.ndarray:
    """The release's smoothing of a source video's motion (its utils/filter.py): pykalman's
    KalmanFilter with identity transition and observation matrices, covariances
    process_variance * I and observation_variance * I, the first observation as the
    initial state mean with pykalman's default initial covariance I, then the
    Rauch-Tung-Striebel smoother's means. (T, ...) -> (T, ...) float64.

    Every covariance is a multiple of I that does not depend on the data, so one scalar
    recursion gives the gains and the means of all dimensions follow at once."""
    x = np.asarray(x, np.float64)
    obs = x.reshape(len(x), -1)
    means, variances = np.empty_like(obs), np.empty(len(obs))
    mean, variance = obs[0], 1.0  # the prediction for t = 0: the initial state
    for t in range(len(obs)):
        if t:
            mean, variance = means[t - 1], variances[t - 1] + process_variance
        gain = variance / (variance + observation_variance)
        means[t] = mean + gain * (obs[t] - mean)
        variances[t] = (1 - gain) * variance
    smoothed = means.copy()
    for t in range(len(obs) - 2, -1, -1):  # the prediction of t + 1 from t is means[t]
        gain = variances[t] / (variances[t] + process_variance)
        smoothed[t] = means[t] + gain * (smoothed[t + 1] - means[t])
    return smoothed.reshape(x.shape)


def _number(value, name: str) -> float:
    """A finite float option, or an AnimationError naming it."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise AnimationError(f"{name} must be a number, not {value!r}")
    return number


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
    source_video = True

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
        self._features = jax.jit(self._appearance)
        options = ("relative", "region", "stitching", "eye", "lip")
        self._keypoints = jax.jit(self._driven, static_argnames=options)
        self._video_targets = jax.jit(kp_lib.source_video_targets, static_argnames="relative")
        self._video_keypoints = jax.jit(self._video_driven, static_argnames=options + ("hold",))
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
        from jaxtalk.convert import liveportrait as lp_convert
        from jaxtalk.train import checkpoints

        step = checkpoints.resolve_step(workdir, step)
        config = checkpoints.run_config(workdir, step)
        if config.get("task") != "liveportrait":
            raise AnimationError(f"{workdir}: a {config.get('task')!r} run, not liveportrait")
        variables = lp_convert.run_variables(
            config, lambda g: checkpoints.group_variables(workdir, g, step), source=workdir
        )
        return cls(variables, config.get("model") or {}, source=workdir, **kw)

    # ------------------------------------------------------------------ networks
    # Variables are arguments of the jitted functions, never constants folded into them.
    def _motion_info(self, variables, images):
        """uint8 (B, S, S, 3) -> M's raw heads (the release feeds [0, 1] pixels)."""
        x = jnp.asarray(images, self.pixel_dtype) / 255.0
        return self.nets["motion"].apply(variables["motion"], x)

    def _appearance(self, variables, images):
        """F's feature volumes of uint8 (B, S, S, 3) images."""
        x = jnp.asarray(images, self.pixel_dtype) / 255.0
        return self.nets["appearance"].apply(variables["appearance"], x)

    def _encode_source(self, variables, image):
        """F's volume, M's heads and the keypoints x_s of a uint8 (1, S, S, 3) source."""
        info = self._motion_info(variables, image)
        feature = self._appearance(variables, image)
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
        x_d = kp_lib.motion_keypoints(state["info"], infos, first, relative, region)
        return self._adjusted(
            mlps, state["kp"], x_d, eye_ratio, lip_ratio, multiplier,
            relative=relative, stitching=stitching, eye=eye, lip=lip,
        )  # fmt: skip

    def _video_driven(
        self, mlps, infos, rotation, exp, driving_t, eye_ratio, lip_ratio, hold_ratio,
        multiplier, *, relative: bool, region: str, stitching: bool, eye: bool, lip: bool,
        hold: bool,
    ):  # fmt: skip
        """(x_s, driven keypoints) of every source-video frame, from its smoothed targets."""
        x_s = kp_lib.transform_keypoints(infos)
        x_d = kp_lib.source_video_keypoints(infos, rotation, exp, driving_t, relative, region)
        return x_s, self._adjusted(
            mlps, x_s, x_d, eye_ratio, lip_ratio, multiplier,
            relative=relative, stitching=stitching, eye=eye, lip=lip,
            hold_ratio=hold_ratio if hold else None,
        )  # fmt: skip

    def _adjusted(
        self, mlps, x_s, x_d, eye_ratio, lip_ratio, multiplier,
        *, relative: bool, stitching: bool, eye: bool, lip: bool, hold_ratio=None,
    ):  # fmt: skip
        """Retargeting, stitching and the driving multiplier on driven keypoints x_d, against
        x_s (one source: (1, K, 3); a source video: one per frame). `hold_ratio`: the
        source-video eye retargeting's ratios, its offset added after stitching (as
        released, only without eye / lip retargeting)."""
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
        if hold_ratio is not None and not (eye or lip):
            x_d = x_d + kp_lib.retarget_eye(mlps["eye"], tile, hold_ratio)
        return x_s + (x_d - x_s) * multiplier

    def _needs(self, name: str, option: str):
        if name not in self.mlps:
            raise AnimationError(f"{self.source_name}: has no {name} module, needed for {option}")

    # ------------------------------------------------------------------ the contract
    def prepare(self, source: np.ndarray):
        """A source image: F and M now. A source video (T, S, S, 3): its frames, kept on
        the host: `start` runs M on those it animates, `drive` F chunk by chunk."""
        source = np.asarray(source)
        if source.ndim == 4:
            if not len(source):
                raise AnimationError("the source video has no frames")
            return dict(video=source)
        return self._prepare(self.variables, source[None])

    def driving_motion(self, driving: np.ndarray) -> dict:
        """M's heads for every frame (driving frames, or a source video's), `chunk` frames
        per call (one compilation)."""
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
        smooth_variance: float = 3e-7,
        source_video_eye_retargeting: bool = False,
    ):
        """driving (T, S, S, 3) uint8 crops. Options as released: mode relative / absolute;
        stitching (default: on when the file has S); eye_ratio / lip_ratio: the target open
        ratios, one number or one per frame (the release takes the driving frame's left-eye
        ratio and its lip ratio), with source_eye_ratio (left, right) / source_lip_ratio
        from the source's landmarks; driving_multiplier; animation_region (all, exp, pose,
        lip, eyes); paste_back: {"image": the uncropped source (H, W, 3) uint8,
        "crop_to_image": the 3x3 map from crop to image pixels, "crop_size": the crop's
        side (512)}.

        A source video (`prepare` of (T, S, S, 3) frames) animates min(T, driving frames)
        frames, frame i by driving frame i (see the module docstring): steps are then the
        frame indices, and the state holds every frame's x_s and driven keypoints ("kp",
        "driven"). Source ratios may be given per source frame, paste_back's "image" and
        "crop_to_image" must be (per source frame: (T, H, W, 3), (T, 3, 3)).
        smooth_variance: the release's driving_smooth_observation_variance (larger:
        smoother, less accurate motion), a source video only.
        source_video_eye_retargeting (the release's flag, off by default): every frame's
        eyes opened as the first source frame's (their mean ratio; 0.39 when under 0.18),
        from per-frame source_eye_ratio; as released, ignored with eye / lip retargeting."""
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
        multiplier = _number(driving_multiplier, "driving_multiplier")
        video = state.get("video")
        if source_video_eye_retargeting and video is None:
            raise AnimationError("source_video_eye_retargeting needs a source video")
        if video is not None and (video.ndim != 4 or video.shape[1:] != driving.shape[1:]):
            raise AnimationError(
                f"source frames must be (T, {self.size}, {self.size}, 3), got {video.shape}"
            )
        sources = 1 if video is None else len(video)
        n = len(driving) if video is None else min(sources, len(driving))
        eye = lip = np.zeros((n, 1), np.float32)
        frames = (sources, len(driving))
        if eye_ratio is not None:
            self._needs("eye", "eye retargeting")
            eye = _retarget_input(eye_ratio, source_eye_ratio, 2, "eye", "eye ratios", frames, n)
        if lip_ratio is not None:
            self._needs("lip", "lip retargeting")
            lip = _retarget_input(lip_ratio, source_lip_ratio, 1, "lip", "lip ratio", frames, n)
        infos = self.driving_motion(driving[:n])
        first = jax.tree.map(lambda a: a[:1], infos)
        options = dict(
            relative=mode == "relative",
            region=animation_region,
            stitching=bool(stitching),
            eye=eye_ratio is not None,
            lip=lip_ratio is not None,
        )
        if video is not None:
            hold = None
            if source_video_eye_retargeting:
                self._needs("eye", "source_video_eye_retargeting")
                hold = _eye_hold(source_eye_ratio, sources, n)
            return self._start_video(
                video, infos, first, eye, lip, hold, multiplier, options, paste_back,
                smooth_variance,
            )  # fmt: skip
        steps = self._keypoints(self.mlps, state, infos, first, eye, lip, multiplier, **options)
        state = dict(state, paste=self._paste_state(paste_back))
        return state, np.asarray(steps)  # float32 (float64 under a float64 dtype)

    def _start_video(
        self, video, infos, first, eye, lip, hold, multiplier, options, paste, variance
    ):  # fmt: skip
        """`start` with a source video: M on its first n frames, the release's targets
        smoothed over time (float64, on the host), then the keypoints of every frame."""
        variance = _number(variance, "smooth_variance")
        if variance <= 0:
            raise AnimationError(f"smooth_variance must be positive, not {variance}")
        n = len(eye)
        source = self.driving_motion(video[:n])
        rotation, exp = self._video_targets(source, infos, first, relative=options["relative"])
        smoothed = [kalman_smooth(a, variance).astype(a.dtype) for a in (rotation, exp)]
        kp, driven = self._video_keypoints(
            self.mlps, source, *smoothed, infos["t"], eye, lip,
            np.zeros((n, 3), np.float32) if hold is None else hold, multiplier,
            hold=hold is not None, **options,
        )  # fmt: skip
        state = dict(
            video=video,
            kp=np.asarray(kp),
            driven=np.asarray(driven),
            paste=self._paste_state(paste, n),
        )
        return state, np.arange(n)

    def _paste_state(self, paste_back: Mapping | None, frames: int | None = None):
        """The full image, the output-to-image map and the feathered mask, once; for a
        source video (`frames` of them) the images and maps per frame, on the host (the
        masks are made chunk by chunk in `drive`)."""
        if paste_back is None:
            return None
        from jaxtalk.media import portrait_crop

        image = np.asarray(paste_back.get("image"))
        shape = "(H, W, 3)" if frames is None else f"({frames} or more, H, W, 3)"
        if (
            image.ndim != (3 if frames is None else 4)
            or image.shape[-1] != 3
            or image.dtype != np.uint8
            or (frames is not None and len(image) < frames)
        ):
            raise AnimationError(f"paste_back: image must be {shape} uint8, got {image.shape}")
        out = self.output_size()
        crop_size = int(paste_back.get("crop_size", portrait_crop.SOURCE.dsize))
        if frames is not None:
            c2o = paste_back.get("crop_to_image")
            if np.ndim(c2o) != 3 or len(c2o) < frames:
                raise AnimationError(
                    f"paste_back: crop_to_image must hold {frames} or more maps with a "
                    f"source video, not {np.shape(c2o)}"
                )
            c2o = np.stack([_matrix(m) for m in c2o[:frames]])
            resize = resize_map(crop_size, out)
            return dict(image=image[:frames], c2o=c2o, resize=resize, crop_size=crop_size)
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
        if "video" in state:
            return self._drive_video(state, np.asarray(steps))
        frames = self._render(
            self._render_variables(), state["feature"], state["kp"], jnp.asarray(steps)
        )
        if state.get("paste") is None:
            return frames
        return self._paste(frames, **state["paste"])

    def _drive_video(self, state, index: np.ndarray):
        """A chunk of source-video frames (their indices): F on those source frames, W + G
        against each frame's own x_s, each pasted into its own uncropped frame."""
        feature = self._features(self.variables, state["video"][index])
        frames = self._render(
            self._render_variables(),
            feature,
            jnp.asarray(state["kp"][index]),
            jnp.asarray(state["driven"][index]),
        )
        paste = state.get("paste")
        if paste is None:
            return frames
        from jaxtalk.media import portrait_crop

        size = paste["image"].shape[1:3]
        out = []
        for k, i in enumerate(index):  # one crop transform (and mask) per source frame
            c2o = paste["c2o"][i]
            mask = portrait_crop.paste_mask(c2o, size, dsize=paste["crop_size"])
            o2i = jnp.asarray(c2o @ paste["resize"], jnp.float32)
            out.append(self._paste(frames[k : k + 1], jnp.asarray(paste["image"][i]), mask, o2i))
        return jnp.concatenate(out)

    def pipeline(self, variables, source, first, driving):
        """The per-frame pipeline as one pure function (what `export_function` exports):
        pixels in [0, 1] (what the release feeds F and M): the source (1, S, S, 3), the
        driving video's first frame (1, S, S, 3) and driving frames (T, S, S, 3) -> frames
        (T, H, W, 3) in [-1, 1]. F and M on the source, M on the driving frames, relative
        motion to the first one, stitching when `variables["mlps"]` hold S, then W + G:
        what `prepare`, `start` and `drive` do with their defaults."""
        nets, mlps = variables["networks"], variables["mlps"]
        apply = lambda g, x: self.nets[g].apply(nets[g], x.astype(self.pixel_dtype))  # noqa: E731
        motion = lambda x: apply("motion", x)  # noqa: E731
        info, feature = motion(source), apply("appearance", source)
        unused = jnp.zeros((driving.shape[0], 1), jnp.float32)  # no retargeting
        state = dict(info=info, kp=kp_lib.transform_keypoints(info))
        kp_driving = self._driven(
            mlps, state, motion(driving), motion(first), unused, unused, 1.0,
            relative=True, region="all", stitching="stitching" in mlps, eye=False, lip=False,
        )  # fmt: skip
        return self.render(nets, feature, state["kp"], kp_driving)

    def export_function(self) -> ExportedFunction:
        """`frames = f(source (1, S, S, 3), first (1, S, S, 3), driving (T, S, S, 3))`, pixels
        in [0, 1], frames in [-1, 1]: `pipeline`, the whole per-frame pipeline (M, the
        keypoint algebra with relative motion, stitching when the weights have S, W, G).
        Each call runs F and M on the source and M on the first frame again: give it
        several frames at a time."""
        (frames,) = jax.export.symbolic_shape("T")
        image = (self.size, self.size, 3)
        specs = [
            jax.ShapeDtypeStruct((1,) + image, jnp.float32),
            jax.ShapeDtypeStruct((1,) + image, jnp.float32),
            jax.ShapeDtypeStruct((frames,) + image, jnp.float32),
        ]
        stitching = {k: self.mlps[k] for k in ("stitching",) if k in self.mlps}
        return ExportedFunction(
            self.pipeline,
            {"networks": self.variables, "mlps": stitching},
            specs,
            ["source", "first", "driving"],
            ["frames"],
            {
                "model": "liveportrait",
                "input_size": self.size,
                "motion": "relative",
                "stitching": bool(stitching),
            },
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
