"""LivePortrait's appearance feature extractor F: source image -> 3-D feature volume.

As released (src/modules/appearance_feature_extractor.py): SameBlock2d(3, expansion),
`num_down_blocks` DownBlock2d (channels min(max_features, expansion * 2^(i+1))), a 1x1
conv to `max_features`, the reshape of those channels into (reshape_channel,
reshape_depth) volumes, then `num_resblocks` pre-activation ResBlock3d.

The release reshapes an NCHW tensor with `view(B, C, D, H, W)`, so torch channel
c * reshape_depth + d becomes volume channel c at depth d; here (B, H, W, C*D) ->
(B, H, W, C, D) -> (B, D, H, W, C) keeps exactly that indexing. The warping network folds
the volume back the same way (`fold_depth`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import conv
from jaxtalk.models.liveportrait.blocks import DownBlock2d, ResBlock3d, SameBlock2d


def unfold_depth(x, depth: int):
    """(B, H, W, C*depth) -> (B, depth, H, W, C), torch channel c*depth + d -> (d, c)."""
    b, h, w, cd = x.shape
    if cd % depth:
        raise ValueError(f"{cd} channels do not split into depth {depth}")
    return x.reshape(b, h, w, cd // depth, depth).transpose(0, 4, 1, 2, 3)


def fold_depth(x):
    """(B, D, H, W, C) -> (B, H, W, C*D) with channel c*D + d (torch's `view(B, C*D, H, W)`
    of an NCDHW tensor); the inverse of `unfold_depth`."""
    b, d, h, w, c = x.shape
    return x.transpose(0, 2, 3, 4, 1).reshape(b, h, w, c * d)


def check_volume_config(module: nn.Module) -> None:
    """The volume's reshape_channel x reshape_depth channels fold into max_features."""
    if module.reshape_channel * module.reshape_depth != module.max_features:
        raise ValueError(
            f"{type(module).__name__}: reshape_channel {module.reshape_channel} x "
            f"reshape_depth {module.reshape_depth} must equal max_features {module.max_features}"
        )


class AppearanceFeatureExtractor(nn.Module):
    """F: image (B, H, W, 3) in [0, 1] -> (B, reshape_depth, H / 2^n, W / 2^n,
    reshape_channel), n = num_down_blocks. Defaults are the release's."""

    block_expansion: int = 64
    num_down_blocks: int = 2
    max_features: int = 512
    reshape_channel: int = 32
    reshape_depth: int = 16
    num_resblocks: int = 6
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image, train: bool = False):
        check_volume_config(self)
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        x = SameBlock2d(self.block_expansion, name="first", **kw)(image.astype(self.dtype), train)
        for i in range(self.num_down_blocks):
            features = min(self.max_features, self.block_expansion * 2 ** (i + 1))
            x = DownBlock2d(features, name=f"down_blocks_{i}", **kw)(x, train)
        x = conv(self.max_features, 1, name="second", **kw)(x)
        x = unfold_depth(x, self.reshape_depth)
        for i in range(self.num_resblocks):
            x = ResBlock3d(name=f"resblocks_3d_{i}", **kw)(x, train)
        return x
