"""ArcFace IResNet (insightface arcface_torch `iresnet`), NHWC, inference mode.

Input: aligned 112x112 RGB faces normalised to [-1, 1]; output: the 512-d embedding
(before L2 normalisation). IResNet-100 has stages of (3, 13, 30, 3) blocks.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import batch_norm, conv, dense, lecun_kernel_init

DEPTHS = {
    "iresnet18": (2, 2, 2, 2),
    "iresnet34": (3, 4, 6, 3),
    "iresnet50": (3, 4, 14, 3),
    "iresnet100": (3, 13, 30, 3),
}
WIDTHS = (64, 128, 256, 512)


def depths_of(params) -> tuple[int, ...]:
    """Blocks per stage of IResNet params, read from their `layer<stage>_<i>` names: a loss
    takes whichever depth was imported (iresnet50 or 100 weights, a tiny one in tests)."""
    stages = [int(k[len("layer") :].split("_")[0]) for k in params if k.startswith("layer")]
    return tuple(stages.count(s) for s in range(1, len(WIDTHS) + 1))


class PReLU(nn.Module):
    """torch.nn.PReLU(channels): one learned negative slope per channel (last axis)."""

    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        alpha = self.param(
            "alpha",
            nn.with_logical_partitioning(nn.initializers.constant(0.25), ("conv_out",)),
            (x.shape[-1],),
            self.param_dtype,
        )
        return jnp.where(x >= 0, x, alpha.astype(x.dtype) * x)


class IBasicBlock(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN, plus the (projected) input."""

    width: int
    stride: int = 1
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ckw = dict(kw, kernel_init=lecun_kernel_init)  # conv / dense
        y = batch_norm(name="bn1", **kw)(x)
        y = conv(self.width, 3, padding=1, use_bias=False, name="conv1", **ckw)(y)
        y = batch_norm(name="bn2", **kw)(y)
        y = PReLU(self.param_dtype, name="prelu")(y)
        y = conv(self.width, 3, stride=self.stride, padding=1, use_bias=False, name="conv2", **ckw)(
            y
        )
        y = batch_norm(name="bn3", **kw)(y)
        if self.stride != 1 or x.shape[-1] != self.width:
            x = conv(
                self.width, 1, stride=self.stride, use_bias=False, name="downsample_conv", **ckw
            )(x)
            x = batch_norm(name="downsample_bn", **kw)(x)
        return y + x


class IResNet(nn.Module):
    depths: Sequence[int] = DEPTHS["iresnet100"]
    num_features: int = 512
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        ckw = dict(kw, kernel_init=lecun_kernel_init)  # conv / dense
        x = conv(64, 3, padding=1, use_bias=False, name="conv1", **ckw)(x.astype(self.dtype))
        x = batch_norm(name="bn1", **kw)(x)
        x = PReLU(self.param_dtype, name="prelu")(x)
        for stage, (depth, width) in enumerate(zip(self.depths, WIDTHS), start=1):
            for i in range(depth):
                x = IBasicBlock(width, 2 if i == 0 else 1, name=f"layer{stage}_{i}", **kw)(x)
        x = batch_norm(name="bn2", **kw)(x)
        # torch.flatten of NCHW: channel-major order, which the fc weights assume.
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1)
        x = dense(self.num_features, name="fc", **ckw)(x)
        return batch_norm(name="features", **kw)(x)
