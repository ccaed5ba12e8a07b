"""LivePortrait's SPADE decoder G: warped features (B, h, w, C) -> image (B, 8h, 8w, 3).

As released (55,365,388 parameters at the defaults; src/modules/spade_generator.py):
C = min(max_features, block_expansion * 2**num_down_blocks) = 256 channels serve both as
the input and as the SPADE segmentation map; `fc` conv 3x3 C -> 2C; six
SPADEResnetBlock(2C, 2C) (`G_middle_0..5`); nearest x2, `up_0` 2C -> C; nearest x2,
`up_1` C -> out_channels (64); leaky_relu(0.2); `conv_img` conv 3x3 to 3 * 4 channels and
PixelShuffle(2) (channel c*4 + i*2 + j -> colour c at sub-pixel (i, j)) when upscale > 1,
else conv 3x3 to 3; sigmoid. The released 64x64 features give 512x512 images.

Every SPADE block conv is spectrally normalised with PyTorch's semantics: params hold the
raw kernel, u and v the `batch_stats` collection (`train=True` runs the power iteration and
needs `mutable=["batch_stats"]`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers import torch_nn
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.models.layers.spade import LEAKY_SLOPE, SPADEResnetBlock
from jaxtalk.models.layers.upsampled_conv import upsample_nearest


def pixel_shuffle(x, r: int = 2):
    """nn.PixelShuffle(r) on NHWC: channel c*r*r + i*r + j -> (c, sub-pixel row i, col j)."""
    b, h, w, ch = x.shape
    c = ch // (r * r)
    x = x.reshape(b, h, w, c, r, r).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, h * r, w * r, c)


def feature_channels(block_expansion: int, max_features: int, num_down_blocks: int) -> int:
    """The channels of the decoder's input (the warping network's output): 256 released."""
    return min(max_features, block_expansion * 2**num_down_blocks)


class SPADEDecoder(nn.Module):
    """feature (B, h, w, C) -> image (B, 8h, 8w, 3) in [0, 1] (4h without upscale)."""

    upscale: int = 2
    block_expansion: int = 64
    max_features: int = 512
    num_down_blocks: int = 2
    out_channels: int = 64
    num_middle_blocks: int = 6
    spade_hidden: int = 128
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, feature, train: bool = False):
        if self.upscale not in (1, 2):
            raise ValueError(f"SPADEDecoder: upscale must be 1 or 2, got {self.upscale}")
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = feature_channels(self.block_expansion, self.max_features, self.num_down_blocks)
        if feature.shape[-1] != c:
            raise ValueError(f"SPADEDecoder expects {c} feature channels, got {feature.shape}")
        seg = feature.astype(self.dtype)
        x = torch_nn.conv(2 * c, 3, padding=1, name="fc", **kw)(seg)
        block = dict(hidden=self.spade_hidden, **kw)
        for i in range(self.num_middle_blocks):
            x = constrain(SPADEResnetBlock(2 * c, name=f"G_middle_{i}", **block)(x, seg, train))
        x = SPADEResnetBlock(c, name="up_0", **block)(upsample_nearest(x), seg, train)
        x = SPADEResnetBlock(self.out_channels, name="up_1", **block)(
            upsample_nearest(x), seg, train
        )
        x = nn.leaky_relu(x, LEAKY_SLOPE)
        if self.upscale > 1:
            x = pixel_shuffle(torch_nn.conv(3 * 4, 3, padding=1, name="conv_img", **kw)(x), 2)
        else:
            x = torch_nn.conv(3, 3, padding=1, name="conv_img", **kw)(x)
        return nn.sigmoid(x)
