"""MegActor's DrivenEncoder (the release's `ConvInputLayer`, `unet.condition_input_layer`):
driving frames -> latent-sized features that the denoising UNet takes as 4 of its 13 input
channels.

Driving branch, per frame (frames folded into the batch), SiLU after every conv: for each
width w of `widths` (16, 32, 64, 128) a 3x3 conv keeping the channels, then a 4x4 stride-2
conv to w (a 3x3 stride-1 conv at the last width): 512 -> 64 pixels at the release's sizes.
Reference branch (FiLM): the reference image through a conv pyramid (`reference_widths`:
3x3 conv to the first width, then 4x4 stride-2 convs up the widths, each after the first
preceded by a 3x3 conv keeping the channels, then a 3x3 and a 4x4 valid conv at the last
width) down to 1x1, Linear 512 -> 256 + SiLU, then a zero-initialised Linear 256 -> 2 x 128
giving (scale, shift): features * (1 + scale) + shift, per video. A 1x1 conv to 4 channels
ends it. The reference image must be the size the pyramid takes to 1x1: 512 for the
release (`reference_side`).

Inputs are in [0, 1], as the release gets them (it maps them to [-1, 1] itself): driving
(B, F, H, W, 3), H and W divisible by 8; reference (B, S, S, 3). Output (B, F, H/8, W/8, 4).
Params are named after the release's torch modules (`spatial_conv_layers_0_2` for
`spatial_conv_layers.0.2`), so jaxtalk/convert/megactor.py maps them one rule per key. The
convs start as the release initialises them (He normal, zero bias); the FiLM output layer at
zero, so a fresh encoder ignores the reference. 10,500,440 parameters at the release's sizes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import conv, dense

# The release's _initialize_weights: normal(0, sqrt(2 / (k * k * in))) kernels.
he_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


@dataclasses.dataclass(frozen=True)
class DrivenEncoderConfig:
    widths: tuple[int, ...] = (16, 32, 64, 128)
    reference_widths: tuple[int, ...] = (4, 8, 16, 32, 64, 128, 256, 512)
    film: bool = True  # the release's use_refer_ada
    film_hidden: int = 256
    out_channels: int = 4

    @property
    def downsampling(self) -> int:
        """Pixels per output position (8 at the release's widths)."""
        return 2 ** (len(self.widths) - 1)

    @property
    def reference_side(self) -> int:
        """The reference image side that the pyramid takes to 1x1 (512 for the release)."""
        return 4 * 2 ** (len(self.reference_widths) - 1)


RELEASE = DrivenEncoderConfig()
# Seconds on a CPU: the release's 8x downsampling at narrow widths, 64-pixel references.
TINY = DrivenEncoderConfig(
    widths=(4, 8, 8, 8), reference_widths=(4, 8, 8, 8, 8), film_hidden=16, out_channels=4
)


def driving_convs(cfg: DrivenEncoderConfig) -> list[tuple[str, int, int, int, int]]:
    """(name, features, kernel, stride, padding) of the driving branch, in order."""
    out, previous = [], 3
    for i, width in enumerate(cfg.widths):
        last = i == len(cfg.widths) - 1
        out.append((f"spatial_conv_layers_{i}_0", previous, 3, 1, 1))
        out.append((f"spatial_conv_layers_{i}_2", width, 3 if last else 4, 1 if last else 2, 1))
        previous = width
    return out


def reference_convs(cfg: DrivenEncoderConfig) -> list[tuple[str, int, int, int, int]]:
    """(name, features, kernel, stride, padding) of the reference pyramid, in order (the
    torch Sequential's indices: a SiLU after each conv)."""
    widths = cfg.reference_widths
    specs = [(widths[0], 3, 1, 1)]
    for i in range(1, len(widths)):
        specs += [(widths[i - 1], 3, 1, 1)] if i > 1 else []
        specs.append((widths[i], 4, 2, 1))
    specs += [(widths[-1], 3, 1, 1), (widths[-1], 4, 1, 0)]
    return [(f"refer_convs_{2 * k}", *spec) for k, spec in enumerate(specs)]


class ConvStack(nn.Module):
    """Convs, each followed by SiLU, from (name, features, kernel, stride, padding) specs."""

    specs: tuple[tuple[str, int, int, int, int], ...]
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, kernel_init=he_normal)
        for name, features, kernel, stride, padding in self.specs:
            x = jax.nn.silu(
                conv(features, kernel, stride=stride, padding=padding, name=name, **kw)(x)
            )
        return x


class ReferenceFiLM(nn.Module):
    """Reference image (B, S, S, 3) in [-1, 1] -> (scale, shift), each (B, channels)."""

    cfg: DrivenEncoderConfig
    channels: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, image):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        side = self.cfg.reference_side
        if image.ndim != 4 or image.shape[1:] != (side, side, 3):
            raise ValueError(
                f"the DrivenEncoder's reference image must be (B, {side}, {side}, 3), got "
                f"{image.shape}"
            )
        feat = ConvStack(tuple(reference_convs(self.cfg)), **kw, name="convs")(image)
        feat = feat.reshape(feat.shape[0], -1)  # 1x1: the same order as torch's view
        feat = jax.nn.silu(dense(self.cfg.film_hidden, name="refer_linears_0", **kw)(feat))
        zero = nn.initializers.zeros_init()
        out = dense(2 * self.channels, name="refer_linears_out_0", kernel_init=zero, **kw)(feat)
        return jnp.split(out, 2, axis=-1)


class DrivenEncoder(nn.Module):
    """(driving (B, F, H, W, 3), reference (B, S, S, 3) or None without FiLM), both in [0, 1]
    -> (B, F, H/8, W/8, out_channels)."""

    config: DrivenEncoderConfig = RELEASE
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, driving, reference=None):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        if driving.ndim != 5 or driving.shape[-1] != 3:
            raise ValueError(f"driving frames must be (B, F, H, W, 3), got {driving.shape}")
        b, f, h, w, _ = driving.shape
        if h % cfg.downsampling or w % cfg.downsampling:
            raise ValueError(f"driving frames of {h}x{w} are not divisible by {cfg.downsampling}")
        x = driving.reshape(b * f, h, w, 3).astype(self.dtype) * 2.0 - 1.0
        x = ConvStack(tuple(driving_convs(cfg)), **kw, name="spatial")(x)
        if cfg.film:
            if reference is None:
                raise ValueError("this DrivenEncoder has a FiLM branch: pass the reference image")
            reference = jnp.asarray(reference, self.dtype) * 2.0 - 1.0
            scale, shift = ReferenceFiLM(cfg, cfg.widths[-1], **kw, name="film")(reference)
            x = (
                x * (1.0 + jnp.repeat(scale, f, 0)[:, None, None])
                + jnp.repeat(shift, f, 0)[:, None, None]
            )
        out = conv(cfg.out_channels, 1, name="spatial_conv_out", kernel_init=he_normal, **kw)(x)
        return out.reshape(b, f, *out.shape[1:])
