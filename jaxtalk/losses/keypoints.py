"""Implicit-keypoint losses of face-vid2vid and LivePortrait, and landmark region crops.

Keypoints are (B, K, 3) in the warping grid's normalised coordinates: x along the width and
y along the height, both in [-1, 1] (x = -1 is the left edge, y = -1 the top), z the depth.

- `RandomTransform`: face-vid2vid's (after FOMM) random deformation for the equivariance
  loss: an affine map (identity + N(0, sigma_affine) on its 2x3 matrix) plus a thin-plate
  spline term on a 5x5 control grid (weights N(0, sigma_tps)). `warp_coordinates` maps a
  point of the transformed image to the point of the original it shows; `transform_image`
  resamples an image with it, so `kp(image) ~ warp_coordinates(kp(transform_image(image)))`.
- `equivariance_loss`: L1 between a frame's keypoints and the back-warped keypoints of
  its transformed copy (x, y warped, z copied: a 2-D warp does not move depth).
- `keypoint_prior_loss`: sum over pairs i != j of max(0, Dt - |x_i - x_j|^2) plus
  |mean_k z_k - zt| (Dt 0.1, zt 0.33), per sample, mean over the batch. The paper's sum
  runs over i = j too; those K terms are the constant K * Dt and are left out.
- `head_pose_loss`: L1 in degrees between predicted and target (yaw, pitch, roll), summed
  over the three angles, mean over the valid samples (face-vid2vid's weight 20 is on this).
- `deformation_prior_loss`: L1 norm of the expression deltas per sample, batch mean.
- `wing_loss` (Feng et al. 2018) and `landmark_guided_loss`: LivePortrait's landmark-guided
  term, Wing between 2-D landmarks and the x, y of the first N implicit keypoints.
- `landmark_boxes` / `crop_regions`: square face and lip boxes from landmarks, and the
  differentiable crop-and-resize that feeds the cascaded perceptual and GAN losses.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp

from jaxtalk.models.layers.grid_sample import grid_sample_2d


def coordinate_grid(height: int, width: int) -> jnp.ndarray:
    """(H, W, 2) pixel centres as (x, y) in [-1, 1], corners included (align_corners)."""
    xs = jnp.linspace(-1.0, 1.0, width) if width > 1 else jnp.zeros((1,))
    ys = jnp.linspace(-1.0, 1.0, height) if height > 1 else jnp.zeros((1,))
    return jnp.stack(jnp.meshgrid(xs, ys, indexing="xy"), -1)


@dataclasses.dataclass(frozen=True)
class RandomTransform:
    """One random deformation per sample: theta (B, 2, 3) and tps_weights (B, P*P)."""

    theta: jnp.ndarray
    tps_weights: jnp.ndarray
    control_points: jnp.ndarray  # (P*P, 2)

    @classmethod
    def sample(
        cls,
        rng: jax.Array,
        batch: int,
        sigma_affine: float = 0.05,
        sigma_tps: float = 0.005,
        points_tps: int = 5,
    ) -> "RandomTransform":
        r_affine, r_tps = jax.random.split(rng)
        noise = sigma_affine * jax.random.normal(r_affine, (batch, 2, 3))
        theta = jnp.eye(2, 3)[None] + noise
        control = coordinate_grid(points_tps, points_tps).reshape(-1, 2)
        weights = sigma_tps * jax.random.normal(r_tps, (batch, control.shape[0]))
        return cls(theta, weights, control)

    @classmethod
    def identity(cls, batch: int, points_tps: int = 5) -> "RandomTransform":
        control = coordinate_grid(points_tps, points_tps).reshape(-1, 2)
        return cls(
            jnp.tile(jnp.eye(2, 3)[None], (batch, 1, 1)),
            jnp.zeros((batch, control.shape[0])),
            control,
        )

    def warp_coordinates(self, points: jnp.ndarray) -> jnp.ndarray:
        """(B, N, 2) points (x, y) of the transformed image -> where they come from.

        Affine part theta[:, :, :2] p + theta[:, :, 2]; the spline part, as FOMM writes it,
        adds sum_c w_c r_c^2 log r_c with r_c the L1 distance of p to control point c to both
        coordinates."""
        points = points.astype(jnp.float32)
        affine = (
            jnp.einsum("bij,bnj->bni", self.theta[:, :, :2], points) + self.theta[:, None, :, 2]
        )
        r = jnp.sum(jnp.abs(points[:, :, None, :] - self.control_points[None, None]), -1)
        radial = jnp.square(r) * jnp.log(r + 1e-6)
        return affine + jnp.einsum("bnc,bc->bn", radial, self.tps_weights)[..., None]

    def transform_image(self, images: jnp.ndarray) -> jnp.ndarray:
        """NHWC images resampled through the transform (border padding: FOMM reflects at
        the border, which jaxtalk's grid sampler does not offer; both avoid black edges)."""
        b, h, w, _ = images.shape
        grid = jnp.broadcast_to(coordinate_grid(h, w).reshape(1, -1, 2), (b, h * w, 2))
        source = self.warp_coordinates(grid).reshape(b, h, w, 2)
        return grid_sample_2d(images, source, align_corners=True, padding_mode="border")


def equivariance_loss(
    kp: jnp.ndarray, kp_transformed: jnp.ndarray, transform: RandomTransform, depth: bool = True
) -> jnp.ndarray:
    """mean |kp - (warp(kp_transformed.xy), kp_transformed.z)| over samples, points, axes."""
    kp = kp.astype(jnp.float32)
    back = transform.warp_coordinates(kp_transformed[..., :2])
    if depth and kp.shape[-1] > 2:
        back = jnp.concatenate([back, kp_transformed[..., 2:].astype(jnp.float32)], -1)
        return jnp.mean(jnp.abs(kp - back))
    return jnp.mean(jnp.abs(kp[..., :2] - back))


def keypoint_prior_loss(kp: jnp.ndarray, dt: float = 0.1, zt: float = 0.33) -> jnp.ndarray:
    """face-vid2vid's prior: keypoints at least sqrt(Dt) apart, mean depth near zt."""
    kp = kp.astype(jnp.float32)
    k = kp.shape[1]
    d2 = jnp.sum(jnp.square(kp[:, :, None, :] - kp[:, None, :, :]), -1)
    off_diagonal = 1.0 - jnp.eye(k)
    spread = jnp.sum(jax.nn.relu(dt - d2) * off_diagonal, axis=(1, 2))
    depth = jnp.abs(jnp.mean(kp[..., 2], -1) - zt)
    return jnp.mean(spread + depth)


def _masked_mean(per_sample: jnp.ndarray, valid: jnp.ndarray | None) -> jnp.ndarray:
    if valid is None:
        return jnp.mean(per_sample)
    valid = valid.astype(jnp.float32).reshape(per_sample.shape)
    return jnp.sum(per_sample * valid) / jnp.maximum(jnp.sum(valid), 1.0)


def head_pose_loss(
    pred_degrees: jnp.ndarray, target_degrees: jnp.ndarray, valid: jnp.ndarray | None = None
) -> jnp.ndarray:
    """(B, 3) angles in degrees (same order on both sides); samples with valid False are
    left out (a frame without a pose estimate)."""
    err = jnp.abs(pred_degrees.astype(jnp.float32) - target_degrees.astype(jnp.float32))
    return _masked_mean(jnp.sum(err, -1), valid)


def deformation_prior_loss(expression: jnp.ndarray) -> jnp.ndarray:
    """mean over the batch of the L1 norm of each sample's expression deltas."""
    flat = expression.astype(jnp.float32).reshape(expression.shape[0], -1)
    return jnp.mean(jnp.sum(jnp.abs(flat), -1))


def wing_loss(pred, target, width: float = 10.0, curvature: float = 2.0) -> jnp.ndarray:
    """Per point (..., D) -> (...): sum over D of wing(|pred - target|), where wing(x) =
    width * ln(1 + x / curvature) below `width` and x - C above it (C joins the pieces)."""
    x = jnp.abs(pred.astype(jnp.float32) - target.astype(jnp.float32))
    c = width - width * math.log1p(width / curvature)
    per_axis = jnp.where(x < width, width * jnp.log1p(x / curvature), x - c)
    return jnp.sum(per_axis, -1)


def landmark_guided_loss(
    kp: jnp.ndarray,
    landmarks: jnp.ndarray,
    valid: jnp.ndarray | None = None,
    width: float = 10.0,
    curvature: float = 2.0,
) -> jnp.ndarray:
    """Wing between landmarks (B, N, 2) in the keypoints' [-1, 1] frame and the x, y of the
    first N keypoints, mean over points and valid samples."""
    n = landmarks.shape[1]
    per_point = wing_loss(kp[:, :n, :2], landmarks, width, curvature)
    return _masked_mean(jnp.mean(per_point, -1), valid)


def landmarks_to_grid(landmarks_xy: jnp.ndarray) -> jnp.ndarray:
    """(B, 2N) landmarks as stored by the data pipeline (x, y pairs, 0..1 of the crop) ->
    (B, N, 2) in the keypoints' [-1, 1] frame."""
    return landmarks_xy.astype(jnp.float32).reshape(landmarks_xy.shape[0], -1, 2) * 2.0 - 1.0


# The 5-point convention of the synthetic set, VFHQ and InsightFace: left eye, right eye,
# nose tip, left mouth corner, right mouth corner.
FIVE_POINT_REGIONS = {"face": (0, 1, 2, 3, 4), "lip": (3, 4)}


def landmark_boxes(
    landmarks: jnp.ndarray, indices: Sequence[int], scale: float, min_half: float = 0.05
) -> jnp.ndarray:
    """(B, N, 2) landmarks in [-1, 1] -> (B, 3) square boxes (cx, cy, half side): centred on
    the chosen points' bounding box, side = its longer edge times `scale` (at least
    2 * min_half, so two coincident points still give a box)."""
    pts = landmarks[:, jnp.asarray(tuple(indices))].astype(jnp.float32)
    lo, hi = jnp.min(pts, 1), jnp.max(pts, 1)
    centre = (lo + hi) / 2.0
    half = jnp.maximum(jnp.max(hi - lo, -1) * scale / 2.0, min_half)
    return jnp.concatenate([centre, half[:, None]], -1)


def crop_regions(images: jnp.ndarray, boxes: jnp.ndarray, size: int) -> jnp.ndarray:
    """NHWC images and (B, 3) boxes -> (B, size, size, C) bilinear crops (border padding
    where a box leaves the image); differentiable in the images."""
    b = images.shape[0]
    unit = coordinate_grid(size, size).reshape(1, -1, 2)
    grid = boxes[:, None, :2] + boxes[:, None, 2:3] * unit
    crops = grid_sample_2d(
        images, grid.reshape(b, size, size, 2), align_corners=True, padding_mode="border"
    )
    return crops.astype(images.dtype)
