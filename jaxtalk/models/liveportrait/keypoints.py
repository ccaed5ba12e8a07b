"""LivePortrait's keypoint algebra (src/utils/camera.py, live_portrait_wrapper.py and the
inference pipeline), as pure jnp functions on batches.

- `headpose_degrees`: pose bins (B, 66) -> degrees: softmax, expectation of the bin index,
  * 3 - 97.5.
- `rotation_matrix`: (pitch, yaw, roll) in degrees -> R = (Rz(roll) Ry(yaw) Rx(pitch))^T,
  the matrix keypoints are right-multiplied with (row vectors).
- `transform_keypoints`: the motion extractor's dict -> x = scale * (kp @ R + exp) + t with
  t_z = 0 (Eqn. 2 of the paper).
- `relative_motion`: the driven keypoints of the release's default (relative motion,
  animation_region 'all'): R = R_d R_d0^T R_s, exp = exp_s + (exp_d - exp_d0),
  scale = s_s (s_d / s_d0), t = t_s + (t_d - t_d0) with t_z = 0, applied to the source's
  canonical keypoints. (The 'expression-friendly' option's convex-hull rescaling is not here.)
- `motion_keypoints`: the release's motion options around it: relative or absolute motion,
  restricted to an animation region (all, exp, pose, lip, eyes; `expression_mask`).
- `source_video_targets`, `source_video_keypoints`: the same with a source *video* (each
  source frame moved by its driving frame; the inference module smooths the targets).
- `stitch`, `retarget_eye`, `retarget_lip`: the release's input packing around the
  `retargeting.RetargetingMLP`s; each takes that network's params or any function of the
  packed input.

A motion dict may hold pose bins (B, num_bins) or degrees (B,) / (B, 1); `kp` and `exp`
may be (B, 3K) or (B, K, 3). Softmax and trigonometry run in at least float32.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.liveportrait.retargeting import RetargetingMLP, mlp_config

Info = Mapping[str, Any]


def _hi(x):
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def headpose_degrees(bins):
    """(B, num_bins) logits -> (B,) degrees: sum(softmax(bins) * index) * 3 - 97.5."""
    bins = _hi(bins)
    prob = jax.nn.softmax(bins, axis=-1)
    index = jnp.arange(bins.shape[-1], dtype=bins.dtype)
    return jnp.sum(prob * index, axis=-1) * 3 - 97.5


def degrees(angle):
    """Pose bins (B, n > 1) or degrees (B,) / (B, 1) -> degrees (B,)."""
    angle = _hi(angle)
    if angle.ndim == 2 and angle.shape[1] > 1:
        return headpose_degrees(angle)
    return angle.reshape(angle.shape[0])


def rotation_matrix(pitch, yaw, roll):
    """Degrees (B,) or (B, 1) -> (B, 3, 3) = (Rz(roll) @ Ry(yaw) @ Rx(pitch))^T."""
    x, y, z = (degrees(a) / 180 * np.pi for a in (pitch, yaw, roll))
    one, zero = jnp.ones_like(x), jnp.zeros_like(x)

    def mat(rows):
        return jnp.stack([jnp.stack(r, axis=-1) for r in rows], axis=-2)

    rot_x = mat(
        [[one, zero, zero], [zero, jnp.cos(x), -jnp.sin(x)], [zero, jnp.sin(x), jnp.cos(x)]]
    )
    rot_y = mat(
        [[jnp.cos(y), zero, jnp.sin(y)], [zero, one, zero], [-jnp.sin(y), zero, jnp.cos(y)]]
    )
    rot_z = mat(
        [[jnp.cos(z), -jnp.sin(z), zero], [jnp.sin(z), jnp.cos(z), zero], [zero, zero, one]]
    )
    return jnp.swapaxes(rot_z @ rot_y @ rot_x, -1, -2)


def info_rotation(info: Info):
    """The rotation of a motion dict (its pitch, yaw, roll)."""
    return rotation_matrix(info["pitch"], info["yaw"], info["roll"])


def _points(a):
    """(B, 3K) or (B, K, 3) -> (B, K, 3)."""
    a = _hi(a)
    return a.reshape(a.shape[0], -1, 3)


def _translation(t):
    """(B, 3) -> (B, 1, 3) with t_z = 0 (the release moves keypoints in x and y only)."""
    t = _hi(t)  # concatenated, not .at[].set: ONNX has no scatter rule (exported pipeline)
    return jnp.concatenate([t[:, :2], jnp.zeros_like(t[:, 2:])], 1)[:, None, :]


def compose(kp, rotation, exp, scale, t):
    """scale * (kp @ rotation + exp) + t (t_z zeroed), batched: -> (B, K, 3)."""
    scale = _hi(scale).reshape(-1, 1, 1)
    return scale * (_points(kp) @ rotation + _points(exp)) + _translation(t)


def transform_keypoints(info: Info):
    """The implicit keypoints of one motion dict (the release's transform_keypoint)."""
    return compose(info["kp"], info_rotation(info), info["exp"], info["scale"], info["t"])


def relative_motion(source_info: Info, driving_info: Info, first_driving_info: Info):
    """The driven keypoints (B, K, 3): the source's canonical keypoints moved by the driving
    frame's motion relative to the first driving frame."""
    r_new = info_rotation(driving_info) @ jnp.swapaxes(info_rotation(first_driving_info), -1, -2)
    r_new = r_new @ info_rotation(source_info)
    exp_new = _points(source_info["exp"]) + (
        _points(driving_info["exp"]) - _points(first_driving_info["exp"])
    )
    scale_new = _hi(source_info["scale"]) * (
        _hi(driving_info["scale"]) / _hi(first_driving_info["scale"])
    )
    t_new = _hi(source_info["t"]) + (_hi(driving_info["t"]) - _hi(first_driving_info["t"]))
    return compose(source_info["kp"], r_new, exp_new, scale_new, t_new)


def _network(params_or_fn: Mapping | Callable) -> Callable:
    """A function of the packed input: `params_or_fn` itself, or a RetargetingMLP with
    those params ({"params": ...} or the params tree), its sizes read from the kernels."""
    if callable(params_or_fn):
        return params_or_fn
    params = nn.unbox(params_or_fn.get("params", params_or_fn))
    leaf = jax.tree_util.tree_leaves(params)[0]
    model = RetargetingMLP(**mlp_config(params), dtype=leaf.dtype, param_dtype=leaf.dtype)
    return lambda x: model.apply({"params": params}, x)


def _flat(a):
    a = _hi(a)
    return a.reshape(a.shape[0], -1)


def stitch(params_or_fn, kp_source, kp_driving):
    """kp_driving (B, K, 3) after stitching: the network sees [x_s, x_d] flattened (B, 6K)
    and returns a per-coordinate offset (B, 3K) and a shared (tx, ty) (B, 2)."""
    kp_driving = _points(kp_driving)
    b, k, _ = kp_driving.shape
    delta = _network(params_or_fn)(jnp.concatenate([_flat(kp_source), _flat(kp_driving)], 1))
    out = kp_driving + delta[:, : 3 * k].reshape(b, k, 3)
    shift = delta[:, 3 * k : 3 * k + 2]  # in x and y: z + 0 (no scatter in ONNX)
    return out + jnp.concatenate([shift, jnp.zeros_like(shift[:, :1])], 1)[:, None, :]


def _retarget(params_or_fn, kp_source, ratio):
    kp_source = _points(kp_source)
    delta = _network(params_or_fn)(jnp.concatenate([_flat(kp_source), _flat(ratio)], 1))
    return delta.reshape(kp_source.shape)


def retarget_eye(params_or_fn, kp_source, eye_close_ratio):
    """The eye offset (B, K, 3) for [x_s flattened, eye ratios (B, 3): two of the source,
    one of the driving frame]."""
    return _retarget(params_or_fn, kp_source, eye_close_ratio)


def retarget_lip(params_or_fn, kp_source, lip_close_ratio):
    """The lip offset (B, K, 3) for [x_s flattened, lip ratios (B, 2): source, driving]."""
    return _retarget(params_or_fn, kp_source, lip_close_ratio)


# ----------------------------------------------------------------------------- motion options
REGIONS = ("all", "exp", "pose", "lip", "eyes")
# The expression entries each region takes from the driving frame, as released (for the
# 21 released keypoints; rows past a smaller model's count are dropped). 'all' / 'exp' in
# absolute mode take whole rows and single coordinates; relative 'all' / 'exp' take all.
_ALL_ROWS = (1, 2, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20)
_ALL_ENTRIES = ((3, 1), (4, 1), (5, 2), (8, 2), (9, 1), (9, 2))
_LIP_ROWS = (6, 12, 14, 17, 19, 20)
_EYE_ROWS = (11, 13, 15, 16, 18)


def expression_mask(region: str, num_kp: int, relative: bool) -> np.ndarray:
    """(K, 3) bool: the expression entries of a region that follow the driving frame."""
    mask = np.zeros((num_kp, 3), bool)
    if region in ("all", "exp") and relative:
        mask[:] = True
    elif region in ("all", "exp"):
        mask[[r for r in _ALL_ROWS if r < num_kp]] = True
        for r, c in _ALL_ENTRIES:
            if r < num_kp:
                mask[r, c] = True
    elif region in ("lip", "eyes"):
        mask[[r for r in (_LIP_ROWS if region == "lip" else _EYE_ROWS) if r < num_kp]] = True
    return mask


def motion_keypoints(
    source: Info, driving: Info, first: Info, relative: bool = True, region: str = "all"
):
    """The driven keypoints (B, K, 3) of the release's motion options, before stitching and
    retargeting: `source` and `first` (the first driving frame) are one frame's motion
    dicts, `driving` B frames'. Relative: as `relative_motion`, but only the region's parts
    move (rotation and translation for all / pose, scale for all, the region's expression
    entries); absolute: the driving rotation and translation (all / pose), the source's
    scale, the driving expression's entries of the region over the source's."""
    if region not in REGIONS:
        raise ValueError(f"unknown animation region {region!r}: {', '.join(REGIONS)}")
    kp_s = _points(source["kp"])
    n = _points(driving["kp"]).shape[0]
    rot_s = info_rotation(source)
    exp_s = _points(source["exp"])
    exp_d = _points(driving["exp"])
    moves_pose = region in ("all", "pose")
    if relative:
        rot_d = info_rotation(driving) @ jnp.swapaxes(info_rotation(first), -1, -2)
        rot = rot_d @ rot_s if moves_pose else rot_s
        exp_d = exp_s + (exp_d - _points(first["exp"]))
        scale_s, t_s = _hi(source["scale"]), _hi(source["t"])
        ratio = _hi(driving["scale"]) / _hi(first["scale"])
        scale = scale_s * ratio if region == "all" else jnp.broadcast_to(scale_s, ratio.shape)
        t_d = t_s + (_hi(driving["t"]) - _hi(first["t"]))
        t = t_d if moves_pose else jnp.broadcast_to(t_s, t_d.shape)
    else:
        rot = info_rotation(driving) if moves_pose else jnp.broadcast_to(rot_s, (n, 3, 3))
        scale = jnp.broadcast_to(_hi(source["scale"]), (n, 1))
        t_d = _hi(driving["t"])
        t = t_d if moves_pose else jnp.broadcast_to(_hi(source["t"]), t_d.shape)
    mask = expression_mask(region, kp_s.shape[1], relative)
    exp = jnp.where(mask, exp_d, exp_s)
    return compose(jnp.broadcast_to(kp_s, exp.shape), rot, exp, scale, t)


# ----------------------------------------------------------------------------- source videos
def source_video_targets(source: Info, driving: Info, first: Info, relative: bool = True):
    """What the release smooths over time when the source is a video (B source frames
    `source`, each paired with driving frame `driving`; `first`: the first driving frame):
    (rotation (B, 3, 3), expression (B, K, 3)). Relative: R_d R_d0^T R_s and
    exp_s + exp_d - exp_d0 (each against its own source frame); absolute: R_d and exp_d."""
    rot_d, exp_d = info_rotation(driving), _points(driving["exp"])
    if not relative:
        return rot_d, exp_d
    rot = rot_d @ jnp.swapaxes(info_rotation(first), -1, -2) @ info_rotation(source)
    return rot, _points(source["exp"]) + (exp_d - _points(first["exp"]))


def source_video_keypoints(
    source: Info, rotation, exp, driving_t, relative: bool = True, region: str = "all"
):
    """The driven keypoints (B, K, 3) of B source-video frames, before stitching and
    retargeting: each frame's canonical keypoints with its (smoothed) target `rotation` for
    all / pose (else its own), the region's entries of the target `exp` over its own, and
    its own scale. Its own translation, but for absolute motion of all / pose: the driving
    frame's `driving_t` (B, 3). As released, relative motion writes the same expression
    entries as absolute motion (not every entry, as it does for a source image)."""
    if region not in REGIONS:
        raise ValueError(f"unknown animation region {region!r}: {', '.join(REGIONS)}")
    kp_s, exp_s = _points(source["kp"]), _points(source["exp"])
    moves_pose = region in ("all", "pose")
    rot = _hi(rotation) if moves_pose else info_rotation(source)
    t = _hi(driving_t) if moves_pose and not relative else _hi(source["t"])
    mask = expression_mask(region, kp_s.shape[1], relative=False)
    return compose(kp_s, rot, jnp.where(mask, _points(exp), exp_s), source["scale"], t)
