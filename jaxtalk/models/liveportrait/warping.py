"""LivePortrait's warping module W: warps F's feature volume from source to driving
keypoints (src/modules/warping_network.py and dense_motion.py of the release).

DenseMotionNetwork, on the volume compressed to `compress` channels (1x1x1 conv, BN,
ReLU):
- sparse motions: for every keypoint k, grid - kp_driving[k] + kp_source[k], and the
  identity grid for the background (index 0), 1 + K in all;
- the compressed volume sampled at each of them (3-D grid_sample, align_corners=False);
- heatmaps: Gaussian(kp_driving) - Gaussian(kp_source), variance 0.01, zero for the
  background;
- [heatmap, deformed feature] per motion (1 + compress channels, motion-major: channel
  k * (1 + compress) + j) into the hourglass;
- mask = softmax over motions of a 7x7x7 conv; deformation = sum over motions of
  mask * sparse motion; occlusion = sigmoid of a 7x7 conv over the hourglass output with
  its depth folded into channels (c * D + d).

The coordinate grid is the release's: x / (w - 1) mapped to [-1, 1] (pixel centres at
the ends), while every sampling uses align_corners=False, exactly as released.

WarpingNetwork then samples the full volume at the deformation, folds depth into channels
(c * D + d), applies SameBlock2d(LeakyReLU 0.01) and a 1x1 conv, and multiplies by the
occlusion map. Shapes: feature (B, D, h, w, C), keypoints (B, K, 3) as (x, y, z) in
[-1, 1]; `out` (B, h, w, 256), `occlusion_map` (B, h, w, 1) (None without occlusion),
`deformation` (B, D, h, w, 3).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.grid_sample import grid_sample_3d
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.models.layers.torch_nn import TorchBatchNorm, conv
from jaxtalk.models.liveportrait.appearance import check_volume_config, fold_depth
from jaxtalk.models.liveportrait.blocks import Hourglass, SameBlock2d, same_conv

KP_VARIANCE = 0.01


def coordinate_grid(depth: int, height: int, width: int, dtype=jnp.float32):
    """(D, H, W, 3) grid of (x, y, z), each 2 * i / (n - 1) - 1 (the release's convention)."""

    def axis(n):
        return 2 * (jnp.arange(n, dtype=dtype) / (n - 1)) - 1

    z, y, x = jnp.meshgrid(axis(depth), axis(height), axis(width), indexing="ij")
    return jnp.stack([x, y, z], axis=-1)


def gaussian_heatmaps(kp, grid, variance: float = KP_VARIANCE):
    """exp(-|grid - kp|^2 / (2 variance)): kp (B, K, 3), grid (D, H, W, 3) -> (B, K, D, H, W)."""
    diff = grid - kp[:, :, None, None, None, :]
    return jnp.exp(-0.5 * jnp.sum(diff**2, axis=-1) / variance)


def sparse_motions(grid, kp_driving, kp_source):
    """(B, 1 + K, D, H, W, 3): the identity grid, then grid - kp_driving + kp_source per
    keypoint (where each driving-frame point samples the source volume)."""
    per_kp = (grid - kp_driving[:, :, None, None, None, :]) + kp_source[:, :, None, None, None, :]
    identity = jnp.broadcast_to(grid, (per_kp.shape[0], 1) + grid.shape)
    return jnp.concatenate([identity, per_kp], axis=1)


def sample_motions(volume, motions):
    """volume (B, D, H, W, C) sampled at every motion (B, M, D', H', W', 3) ->
    (B, M, D', H', W', C), in one grid_sample call (no copy of the volume per motion)."""
    b, m = motions.shape[:2]
    grid = motions.reshape((b, m * motions.shape[2]) + motions.shape[3:])
    out = grid_sample_3d(volume, grid, align_corners=False)
    return out.reshape(motions.shape[:-1] + (volume.shape[-1],))


class DenseMotionNetwork(nn.Module):
    """Keypoints + feature volume -> dict(deformation (B, D, H, W, 3), mask
    (B, D, H, W, 1 + K), occlusion_map (B, H, W, 1) or None)."""

    num_kp: int = 21
    block_expansion: int = 32
    num_blocks: int = 5
    max_features: int = 1024
    compress: int = 4
    estimate_occlusion_map: bool = True
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature, kp_driving, kp_source, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        b, d, h, w, _ = feature.shape
        k = self.num_kp
        if kp_driving.shape != (b, k, 3) or kp_source.shape != (b, k, 3):
            raise ValueError(
                f"keypoints must be ({b}, {k}, 3), got driving {kp_driving.shape} and "
                f"source {kp_source.shape}"
            )
        x = same_conv(self.compress, 3, 1, "compress", **kw)(feature)
        x = nn.relu(TorchBatchNorm(name="norm", **kw)(x, train))

        # Motions and heatmaps in >= float32 whatever the compute dtype (coordinates).
        hi = jnp.promote_types(jnp.result_type(kp_source, kp_driving), jnp.float32)
        kp_driving, kp_source = kp_driving.astype(hi), kp_source.astype(hi)
        grid = coordinate_grid(d, h, w, hi)
        motions = sparse_motions(grid, kp_driving, kp_source)
        deformed = sample_motions(x, motions)  # (B, 1+K, D, H, W, compress)
        heat = gaussian_heatmaps(kp_driving, grid) - gaussian_heatmaps(kp_source, grid)
        heat = jnp.concatenate([jnp.zeros_like(heat[:, :1]), heat], axis=1)
        stacked = jnp.concatenate([heat[..., None].astype(x.dtype), deformed], axis=-1)
        # (B, 1+K, D, H, W, 1+c) -> (B, D, H, W, (1+K)*(1+c)), channel k*(1+c) + j
        hourglass_in = stacked.transpose(0, 2, 3, 4, 1, 5).reshape(b, d, h, w, -1)

        prediction = Hourglass(
            block_expansion=self.block_expansion,
            num_blocks=self.num_blocks,
            max_features=self.max_features,
            name="hourglass",
            **kw,
        )(constrain(hourglass_in), train)
        logits = same_conv(k + 1, 3, 7, "mask", **kw)(prediction)
        mask = jax.nn.softmax(logits.astype(hi), axis=-1)  # (B, D, H, W, 1+K)
        # Elementwise, not einsum: a matmul may run at reduced precision on TPU/GPU, and
        # the deformation is a sampling coordinate.
        deformation = jnp.sum(mask.transpose(0, 4, 1, 2, 3)[..., None] * motions, axis=1)
        occlusion = None
        if self.estimate_occlusion_map:
            occ = conv(1, (7, 7), padding=3, name="occlusion", **kw)(fold_depth(prediction))
            occlusion = jax.nn.sigmoid(occ)
        return dict(deformation=deformation, mask=mask, occlusion_map=occlusion)


class WarpingNetwork(nn.Module):
    """W: (feature_3d (B, D, h, w, C), kp_driving, kp_source) -> dict(out, occlusion_map,
    deformation). Defaults are the release's; `reshape_channel * reshape_depth` must equal
    `max_features` (the folded volume's channels)."""

    num_kp: int = 21
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    reshape_channel: int = 32
    reshape_depth: int = 16
    estimate_occlusion_map: bool = True
    dense_block_expansion: int = 32
    dense_max_features: int = 1024
    dense_num_blocks: int = 5
    compress: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature_3d, kp_driving, kp_source, train: bool = False):
        want = (self.reshape_depth, self.reshape_channel)
        check_volume_config(self)
        if feature_3d.ndim != 5 or (feature_3d.shape[1], feature_3d.shape[-1]) != want:
            raise ValueError(
                f"feature_3d must be (B, {want[0]}, h, w, {want[1]}), got {feature_3d.shape}"
            )
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        feature_3d = constrain(feature_3d.astype(self.dtype))
        dense = DenseMotionNetwork(
            num_kp=self.num_kp,
            block_expansion=self.dense_block_expansion,
            num_blocks=self.dense_num_blocks,
            max_features=self.dense_max_features,
            compress=self.compress,
            estimate_occlusion_map=self.estimate_occlusion_map,
            name="dense_motion_network",
            **kw,
        )(feature_3d, kp_driving, kp_source, train)
        warped = grid_sample_3d(feature_3d, dense["deformation"], align_corners=False)
        width = self.block_expansion * 2**self.num_down_blocks
        out = SameBlock2d(width, leaky=True, name="third", **kw)(fold_depth(warped), train)
        out = conv(width, 1, name="fourth", **kw)(out)
        occlusion = dense["occlusion_map"]
        if occlusion is not None:
            out = out * occlusion.astype(out.dtype)
        return dict(out=constrain(out), occlusion_map=occlusion, deformation=dense["deformation"])
