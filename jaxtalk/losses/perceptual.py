"""VGG19 pyramid perceptual loss as trained by LIA (after FOMM).

For each scale in (1, 0.5, 0.25, 0.125) both images are anti-alias downsampled (Gaussian
sigma = (1/scale - 1)/2, kernel 2*round(4*sigma)+1, zero padding, then every
(1/scale)-th pixel, as FOMM's AntiAliasInterpolation2d), clamped to [-1, 1], mapped to
[0, 1], ImageNet-normalised and passed through VGG19 up to relu5_1; the loss is
sum_scales sum_{relu1_1..relu5_1} 10 * mean|f(recon) - stop_grad(f(target))|.

The VGG is any callable `features(images_nhwc_normalised) -> list of 5 arrays`;
`VGG19PerceptualLoss` wires in `jaxtalk.models.vgg.VGGFeatures` (torchvision weights
via `jaxtalk/convert/torchvision_vgg.py`) as the submodule `vgg`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers.sharding import join_batches, split_batches
from jaxtalk.models.layers.upfirdn import upfirdn2d

SCALES = (1.0, 0.5, 0.25, 0.125)
WEIGHTS = (10.0, 10.0, 10.0, 10.0, 10.0)
LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
# The smallest side every scale keeps a non-empty relu5_1 map at: it is 1/16 of its input
# (four 2x poolings before it), and the pyramid's smallest scale is 1/8. Under this the
# last scale's features are empty and their mean (the loss) is NaN.
MIN_SIZE = int(16 / min(SCALES))
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def gaussian_taps(scale: float) -> tuple[np.ndarray, int, int]:
    """1-D normalised Gaussian taps and (pad_before, pad_after) of FOMM's anti-alias filter."""
    sigma = (1.0 / scale - 1.0) / 2.0
    size = 2 * round(sigma * 4) + 1
    ka = size // 2
    kb = ka - 1 if size % 2 == 0 else ka
    grid = np.arange(size, dtype=np.float64)
    taps = np.exp(-((grid - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return taps / taps.sum(), ka, kb


def antialias_downsample(x, scale: float):
    """FOMM's AntiAliasInterpolation2d on NHWC images."""
    if scale == 1.0:
        return x
    taps, ka, kb = gaussian_taps(scale)
    if ka != kb:
        raise ValueError("even Gaussian kernels are not used by the released scales")
    return upfirdn2d(x, taps, down=int(1.0 / scale), pad=(ka, ka))


def normalize_for_vgg(images):
    """[-1, 1] images -> clamp -> [0, 1] -> ImageNet normalisation (as LIA's Vgg19)."""
    x = jnp.clip(images, -1.0, 1.0) * 0.5 + 0.5
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def pyramid_perceptual_loss(
    features: Callable[[jnp.ndarray], Sequence[jnp.ndarray]],
    recon,
    target,
    scales: Sequence[float] = SCALES,
    weights: Sequence[float] = WEIGHTS,
):
    """features: normalised NHWC images -> per-layer activations. recon/target in [-1, 1].

    Both images go through the network in one batch per scale; gradients flow only
    through `recon` (the target features are stop_gradient'ed, as released)."""
    total = jnp.zeros((), jnp.float32)
    for scale in scales:
        both = antialias_downsample(join_batches(recon, target).astype(jnp.float32), scale)
        feats = features(normalize_for_vgg(both))
        if len(feats) != len(weights):
            raise ValueError(f"{len(feats)} feature maps but {len(weights)} weights")
        for f, w in zip(feats, weights):
            fake, real = split_batches(f.astype(jnp.float32), 2)
            total = total + w * jnp.mean(jnp.abs(fake - jax.lax.stop_gradient(real)))
    return total


class VGG19PerceptualLoss(nn.Module):
    """`loss = module.apply({'params': {'vgg': vgg19_params}}, recon, target)`."""

    scales: Sequence[float] = SCALES
    weights: Sequence[float] = WEIGHTS
    layers: Sequence[str] = LAYERS
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, recon, target):
        from jaxtalk.models.vgg import VGGFeatures

        vgg = VGGFeatures(
            config="vgg19", output_layers=tuple(self.layers), dtype=self.dtype, name="vgg"
        )
        return pyramid_perceptual_loss(
            lambda x: [vgg(x)[n] for n in self.layers], recon, target, self.scales, self.weights
        )
