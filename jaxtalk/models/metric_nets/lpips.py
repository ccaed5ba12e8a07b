"""LPIPS v0.1 (Zhang et al. 2018) with the AlexNet or VGG16 backbone, as the lpips package.

distance = sum over backbone layers l of mean_hw( w_l . (n(f0_l) - n(f1_l))^2 ), where
n() scales each feature vector to unit length and w_l is the learned 1x1 head ("lin" l).
The module takes images in [-1, 1] like the reference; the metric
(`jaxtalk.evaluate.lpips.lpips`) takes [0, 1] images.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import conv, lecun_kernel_init
from jaxtalk.models.metric_nets.alexnet import AlexNetFeatures
from jaxtalk.models.vgg import VGGFeatures

BACKBONE_LAYERS = {
    "alex": ("relu1", "relu2", "relu3", "relu4", "relu5"),
    "vgg": ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"),
}
# The lpips package's ScalingLayer: inputs in [-1, 1] -> roughly ImageNet-normalised.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def _unit_normalize(x: jnp.ndarray) -> jnp.ndarray:
    return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + EPS)


class LPIPS(nn.Module):
    """LPIPS distance between two NHWC batches in [-1, 1] -> (N,)."""

    net: str = "alex"
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x0: jnp.ndarray, x1: jnp.ndarray) -> jnp.ndarray:
        if self.net not in BACKBONE_LAYERS:
            raise ValueError(f"unknown LPIPS net {self.net!r}; known: {sorted(BACKBONE_LAYERS)}")
        layers = BACKBONE_LAYERS[self.net]
        if self.net == "alex":
            backbone = AlexNetFeatures(layers, self.dtype, self.param_dtype, name="backbone")
        else:
            backbone = VGGFeatures("vgg16", layers, self.dtype, self.param_dtype, name="backbone")
        x = jnp.concatenate([x0, x1]).astype(jnp.float32)  # one backbone pass for both
        x = (x - jnp.asarray(SHIFT)) / jnp.asarray(SCALE)
        features = backbone(x)
        n = x0.shape[0]
        total = 0.0
        for i, name in enumerate(layers):
            f = _unit_normalize(features[name].astype(jnp.float32))
            diff = jnp.square(f[:n] - f[n:])
            head = conv(
                1,
                1,
                use_bias=False,
                name=f"lin{i}",
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                kernel_init=lecun_kernel_init,
            )
            total = total + jnp.mean(
                head(diff.astype(self.dtype)).astype(jnp.float32), axis=(1, 2, 3)
            )
        return total
