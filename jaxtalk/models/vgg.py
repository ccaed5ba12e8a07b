"""torchvision VGG feature stacks (`vgg16` / `vgg19`, no batch norm) in NHWC.

Used by LPIPS-vgg (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 of vgg16) and by VGG19
perceptual losses (relu1_1 ... relu5_1). Layers are named as in the VGG paper
(`conv3_2`, `relu3_2`, `pool3`); `TORCHVISION_INDEX` gives each layer's index in
torchvision's `features` Sequential, which is what `convert/torchvision_vgg.py` maps.

Only the layers up to the deepest requested output are built, so a perceptual loss that
stops at relu5_1 carries no conv5_2..conv5_4 parameters.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

# Convs per block, as in torchvision's cfgs "D" (vgg16) and "E" (vgg19).
CONFIGS = {
    "vgg16": ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)),
    "vgg19": ((64, 2), (128, 2), (256, 4), (512, 4), (512, 4)),
}

# ImageNet normalisation torchvision's VGG weights were trained with (RGB, inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names(config: str) -> list[str]:
    """All layer names in torchvision `features` order (conv, relu, ..., pool per block)."""
    names = []
    for block, (_, convs) in enumerate(CONFIGS[config], start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


def torchvision_index(config: str) -> dict[str, int]:
    """Layer name -> index in torchvision's `vgg.features` (e.g. vgg16 relu5_3 -> 29)."""
    return {name: i for i, name in enumerate(layer_names(config))}


def conv_channels(config: str) -> dict[str, int]:
    """conv layer name -> output channels."""
    return {
        f"conv{b}_{i}": width
        for b, (width, convs) in enumerate(CONFIGS[config], start=1)
        for i in range(1, convs + 1)
    }


class VGGFeatures(nn.Module):
    """Returns {layer name: activation} for `output_layers` of a torchvision VGG.

    Input: NHWC images already normalised as the weights expect (see `imagenet_normalize`).
    """

    config: str = "vgg16"
    output_layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
    dtype: jnp.dtype = jnp.float32
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
        if self.config not in CONFIGS:
            raise ValueError(f"unknown VGG config {self.config!r}; known: {sorted(CONFIGS)}")
        index = torchvision_index(self.config)
        unknown = [name for name in self.output_layers if name not in index]
        if unknown or not self.output_layers:
            raise ValueError(f"unknown VGG layers {unknown}; known: {list(index)}")
        last = max(index[name] for name in self.output_layers)
        widths = conv_channels(self.config)
        wanted = set(self.output_layers)
        outputs = {}
        x = x.astype(self.dtype)
        for name in layer_names(self.config)[: last + 1]:
            if name.startswith("conv"):
                x = nn.Conv(
                    widths[name],
                    (3, 3),
                    padding=1,
                    dtype=self.dtype,
                    param_dtype=self.param_dtype,
                    name=name,
                    kernel_init=nn.with_logical_partitioning(
                        nn.initializers.lecun_normal(), (None, None, "conv_in", "conv_out")
                    ),
                    bias_init=nn.with_logical_partitioning(
                        nn.initializers.zeros_init(), ("conv_out",)
                    ),
                )(x)
            elif name.startswith("relu"):
                x = nn.relu(x)
            else:  # torchvision MaxPool2d(2, 2): floor mode, no padding
                x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
            if name in wanted:
                outputs[name] = x
        return outputs


def imagenet_normalize(images: jnp.ndarray) -> jnp.ndarray:
    """RGB images in [0, 1] -> the normalisation torchvision's ImageNet weights expect."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    return (images - mean) / std
