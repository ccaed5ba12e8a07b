"""torchvision AlexNet feature stack (the LPIPS-alex backbone), NHWC."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import conv, lecun_kernel_init, max_pool

# name: (out channels, kernel, stride, padding, torchvision features index). The final
# MaxPool after relu5 is not needed by any metric and is left out.
CONVS = {
    "conv1": (64, 11, 4, 2, 0),
    "conv2": (192, 5, 1, 2, 3),
    "conv3": (384, 3, 1, 1, 6),
    "conv4": (256, 3, 1, 1, 8),
    "conv5": (256, 3, 1, 1, 10),
}


class AlexNetFeatures(nn.Module):
    """Returns {"relu1": ..., ..., "relu5": ...} (those in `output_layers`)."""

    output_layers: Sequence[str] = ("relu1", "relu2", "relu3", "relu4", "relu5")
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
        outputs = {}
        x = x.astype(self.dtype)
        for i, (name, (width, kernel, stride, padding, _)) in enumerate(CONVS.items(), start=1):
            if name in ("conv2", "conv3"):  # MaxPool2d(3, 2) after relu1 and relu2
                x = max_pool(x, 3, 2)
            x = nn.relu(
                conv(
                    width,
                    kernel,
                    stride=stride,
                    padding=padding,
                    name=name,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    kernel_init=lecun_kernel_init,
                )(x)
            )
            if f"relu{i}" in self.output_layers:
                outputs[f"relu{i}"] = x
        return outputs
