"""StyleGAN2 discriminator as used by LIA / AniTalker (24.00 M params at 256), NHWC.

convs: ConvLayer(3, C[S], 1), ResBlocks halving to 4x4; minibatch standard deviation
(group min(batch, 4), 1 feature: samples b and b + k * batch/group form a group, as the
release's `view(group, -1, ...)`); final_conv ConvLayer(C[4] + 1, C[4], 3);
final_linear EqualLinear(C[4]*16, C[4], fused lrelu) -> EqualLinear(C[4], 1).
The flatten before final_linear uses the release's NCHW order so that its weight maps
by a plain transpose. Param names mirror the state_dict (`convs_N`, `final_conv`,
`final_linear_0/1`); the mapping is in `jaxtalk/convert/lia.py`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.equalized import ConvLayer, EqualLinear, ResBlock
from jaxtalk.models.lia.generator import channel_map


def minibatch_stddev(x, group_size: int = 4, eps: float = 1e-8):
    """Appends the release's minibatch-stddev feature map: (B, H, W, C) -> (B, H, W, C+1)."""
    b, h, w, c = x.shape
    group = min(b, group_size)
    if b % group:
        raise ValueError(f"batch {b} is not divisible by the stddev group {group}")
    y = x.astype(jnp.promote_types(x.dtype, jnp.float32)).reshape(group, b // group, h, w, c)
    std = jnp.sqrt(jnp.var(y, axis=0) + eps)  # (B/g, H, W, C)
    std = jnp.mean(std, axis=(1, 2, 3))  # (B/g,)
    std = jnp.tile(std, group)[:, None, None, None]  # sample b -> stat of b % (B/g)
    std = jnp.broadcast_to(std, (b, h, w, 1)).astype(x.dtype)
    return jnp.concatenate([x, std], axis=-1)


class Discriminator(nn.Module):
    size: int = 256
    width: float = 1.0
    blur_kernel: Sequence[int] = (1, 3, 3, 1)
    stddev_group: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: (B, S, S, 3) in [-1, 1] -> logits (B, 1)."""
        ch = channel_map(self.width)
        log = int(math.log2(self.size))
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = ConvLayer(ch[self.size], 1, blur_kernel=self.blur_kernel, name="convs_0", **kw)(x)
        for n, i in enumerate(range(log, 2, -1), start=1):
            h = ResBlock(ch[2 ** (i - 1)], blur_kernel=self.blur_kernel, name=f"convs_{n}", **kw)(h)
        h = minibatch_stddev(h, self.stddev_group)
        h = ConvLayer(ch[4], 3, blur_kernel=self.blur_kernel, name="final_conv", **kw)(h)
        h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # NCHW flatten, as released
        h = EqualLinear(ch[4], activation=True, name="final_linear_0", **kw)(h)
        return EqualLinear(1, kernel_axes=("mlp", "embed"), name="final_linear_1", **kw)(h)
