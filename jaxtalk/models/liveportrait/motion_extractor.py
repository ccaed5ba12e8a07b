"""LivePortrait's motion extractor M: a ConvNeXt-V2 trunk and seven linear heads.

As released (28,118,728 parameters at the defaults, state_dict prefix `detector.`): the
ConvNeXt-V2-tiny trunk (`jaxtalk/models/layers/convnext.py`), global average pooling,
LayerNorm(eps 1e-6) and the heads fc_kp (3K canonical keypoints), fc_pitch / fc_yaw /
fc_roll (`num_bins` pose bins each), fc_t (3), fc_exp (3K expression offsets), fc_scale
(1). The outputs are the raw head values; `keypoints.py` turns them into degrees,
rotations and driven keypoints. Any input size divisible by 32 works (the release feeds
256x256 RGB in [0, 1]).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.convnext import CONVNEXT_V2_TINY, ConvNeXtV2, LayerNorm

HEADS = ("kp", "pitch", "yaw", "roll", "t", "exp", "scale")


class MotionExtractor(nn.Module):
    """image (B, H, W, 3) -> dict(kp (B, 3K), pitch/yaw/roll (B, num_bins), t (B, 3),
    exp (B, 3K), scale (B, 1))."""

    num_kp: int = 21
    num_bins: int = 66
    depths: Sequence[int] = CONVNEXT_V2_TINY["depths"]
    dims: Sequence[int] = CONVNEXT_V2_TINY["dims"]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image, train: bool = False):
        del train  # no batch statistics or dropout in M
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = ConvNeXtV2(self.depths, self.dims, name="backbone", **kw)(image)
        hi = jnp.promote_types(self.dtype, jnp.float32)
        x = x.astype(hi).mean((1, 2)).astype(self.dtype)
        x = LayerNorm(1e-6, name="norm", **kw)(x)
        sizes = dict(
            kp=3 * self.num_kp,
            pitch=self.num_bins,
            yaw=self.num_bins,
            roll=self.num_bins,
            t=3,
            exp=3 * self.num_kp,
            scale=1,
        )
        return {head: torch_nn.dense(sizes[head], name=f"fc_{head}", **kw)(x) for head in HEADS}
