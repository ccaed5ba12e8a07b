"""Stable Diffusion's KL autoencoder (diffusers `AutoencoderKL`, e.g. sd-vae-ft-mse), NHWC.

The latent video diffusion systems never train it: they encode frames to latents once
(mean or a sample of the diagonal Gaussian, times `LATENT_SCALE`) and decode the sampled
latents. Structure, as diffusers builds it (param names mirror its module names, so the
importer maps one rule per key):

  encoder   conv_in 3x3; down_blocks_i: `layers_per_block` resnets, then (all but the last)
            a stride-2 3x3 conv after a (0, 1) pad right and bottom; mid_block: resnet,
            single-head spatial self-attention, resnet; GroupNorm, SiLU, conv_out to
            2 x latent channels (mean, log-variance)
  quant_conv, post_quant_conv   1x1 convs on the moments and on the latent
  decoder   conv_in 3x3; mid_block; up_blocks_i (widths reversed): layers_per_block + 1
            resnets, then (all but the last) nearest 2x upsampling and a 3x3 conv;
            GroupNorm, SiLU, conv_out 3x3

Every GroupNorm has 32 groups and eps 1e-6 (the VAE's `norm_eps`, unlike the UNet's 1e-5).
Frames are folded into the batch by the caller: the model is 2-D.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.torch_nn import conv, dense, group_norm
from jaxtalk.models.layers.upsampled_conv import UpsampledConv

Dtype = Any

# sd-vae-ft-mse's `scaling_factor`: latents the UNet sees are encoder samples times this.
LATENT_SCALE = 0.18215
# diffusers clamps the log-variance to this range before taking the standard deviation.
LOGVAR_RANGE = (-30.0, 20.0)


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """The diffusers `AutoencoderKL` config fields that shape the network."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 4
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    norm_eps: float = 1e-6
    mid_block_add_attention: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True
    scaling_factor: float = LATENT_SCALE


SD_VAE = VAEConfig()  # stabilityai/sd-vae-ft-mse, the SD 1.5 VAE: 83,653,863 parameters
TINY_VAE = VAEConfig(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4)


@flax.struct.dataclass
class DiagonalGaussian:
    """The encoder's posterior: per-element mean and (clamped) log-variance, NHWC."""

    mean: jax.Array
    logvar: jax.Array

    @classmethod
    def from_moments(cls, moments: jax.Array) -> "DiagonalGaussian":
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return cls(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    @property
    def std(self) -> jax.Array:
        return jnp.exp(0.5 * self.logvar)

    def sample(self, key: jax.Array) -> jax.Array:
        return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)

    def mode(self) -> jax.Array:
        return self.mean

    def kl(self) -> jax.Array:
        """KL to the standard normal, summed over H, W, C (diffusers' `kl()`)."""
        terms = jnp.square(self.mean) + jnp.exp(self.logvar) - 1.0 - self.logvar
        return 0.5 * jnp.sum(terms, axis=(1, 2, 3))


class _Module(nn.Module):
    """Shared fields: the config and the compute / parameter dtypes."""

    config: VAEConfig = SD_VAE
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def kw(self) -> dict:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def norm(self, name: str) -> nn.GroupNorm:
        return group_norm(name, self.config.norm_num_groups, self.config.norm_eps, **self.kw)


class ResnetBlock(_Module):
    """diffusers ResnetBlock2D without a time embedding: two GroupNorm-SiLU-conv3x3 steps,
    a 1x1 `conv_shortcut` when the width changes."""

    features: int = 0

    @nn.compact
    def __call__(self, x):
        h = conv(self.features, 3, padding=1, name="conv1", **self.kw)(
            nn.silu(self.norm("norm1")(x))
        )
        h = conv(self.features, 3, padding=1, name="conv2", **self.kw)(
            nn.silu(self.norm("norm2")(h))
        )
        if x.shape[-1] != self.features:
            x = conv(self.features, 1, name="conv_shortcut", **self.kw)(x)
        return x + h


class SpatialAttention(_Module):
    """The mid block's single-head self-attention over all H*W positions, pre-GroupNorm,
    residual; softmax in at least float32 (diffusers' upcast_softmax)."""

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        y = self.norm("group_norm")(x).reshape(b, h * w, c)
        q = dense(c, ("embed", "heads"), "to_q", **self.kw)(y)
        k = dense(c, ("embed", "heads"), "to_k", **self.kw)(y)
        v = dense(c, ("embed", "heads"), "to_v", **self.kw)(y)
        scores = jnp.einsum("bqc,bkc->bqk", q, k) * (c**-0.5)
        hi = jnp.promote_types(self.dtype, jnp.float32)
        probs = jax.nn.softmax(scores.astype(hi), axis=-1).astype(self.dtype)
        out = dense(c, ("heads", "embed"), "to_out", **self.kw)(
            jnp.einsum("bqk,bkc->bqc", probs, v)
        )
        return x + out.reshape(b, h, w, c)


class MidBlock(_Module):
    """resnet -> attention -> resnet at the lowest resolution (diffusers UNetMidBlock2D)."""

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        x = ResnetBlock(self.config, features=c, name="resnets_0", **self.kw)(x)
        if self.config.mid_block_add_attention:
            x = SpatialAttention(self.config, name="attentions_0", **self.kw)(x)
        return ResnetBlock(self.config, features=c, name="resnets_1", **self.kw)(x)


class Downsample(_Module):
    """Stride-2 3x3 conv after padding one row and column at the bottom and right (the
    asymmetric padding diffusers' Downsample2D applies with padding=0)."""

    @nn.compact
    def __call__(self, x):
        x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
        return conv(x.shape[-1], 3, stride=2, name="conv", **self.kw)(x)


class Upsample(_Module):
    """Nearest-neighbour 2x upsampling, then a 3x3 conv (computed at x's resolution:
    jaxtalk/models/layers/upsampled_conv.py)."""

    @nn.compact
    def __call__(self, x):
        return UpsampledConv(x.shape[-1], 3, 2, name="conv", **self.kw)(x)


class Encoder(_Module):
    """Image (B, H, W, in_channels) -> moments (B, H/f, W/f, 2 * latent_channels),
    f = 2 ** (len(block_out_channels) - 1)."""

    @nn.compact
    def __call__(self, x):
        cfg, kw = self.config, self.kw
        widths = cfg.block_out_channels
        x = conv(widths[0], 3, padding=1, name="conv_in", **kw)(x.astype(self.dtype))
        for i, width in enumerate(widths):
            for j in range(cfg.layers_per_block):
                x = ResnetBlock(cfg, features=width, name=f"down_blocks_{i}_resnets_{j}", **kw)(x)
            if i < len(widths) - 1:
                x = Downsample(cfg, name=f"down_blocks_{i}_downsamplers_0", **kw)(x)
        x = MidBlock(cfg, name="mid_block", **kw)(x)
        x = nn.silu(self.norm("conv_norm_out")(x))
        return conv(2 * cfg.latent_channels, 3, padding=1, name="conv_out", **kw)(x)


class Decoder(_Module):
    """Latent (B, h, w, latent_channels) -> image (B, h*f, w*f, out_channels)."""

    @nn.compact
    def __call__(self, z):
        cfg, kw = self.config, self.kw
        widths = tuple(reversed(cfg.block_out_channels))
        x = conv(widths[0], 3, padding=1, name="conv_in", **kw)(z.astype(self.dtype))
        x = MidBlock(cfg, name="mid_block", **kw)(x)
        for i, width in enumerate(widths):
            for j in range(cfg.layers_per_block + 1):
                x = ResnetBlock(cfg, features=width, name=f"up_blocks_{i}_resnets_{j}", **kw)(x)
            if i < len(widths) - 1:
                x = Upsample(cfg, name=f"up_blocks_{i}_upsamplers_0", **kw)(x)
        x = nn.silu(self.norm("conv_norm_out")(x))
        return conv(cfg.out_channels, 3, padding=1, name="conv_out", **kw)(x)


class AutoencoderKL(_Module):
    """`encode(images)` -> DiagonalGaussian over latents; `decode(latents)` -> images, both
    NHWC in the model's own units (images in [-1, 1]; latents unscaled: multiply by
    `config.scaling_factor` before the UNet, divide after). `__call__` reconstructs (the
    posterior's mean, or a sample when given a key) and exists for `init`."""

    def setup(self):
        cfg, kw = self.config, self.kw
        self.encoder = Encoder(cfg, **kw)
        self.decoder = Decoder(cfg, **kw)
        moments, latent = 2 * cfg.latent_channels, cfg.latent_channels
        self.quant_conv = conv(moments, 1, name="quant_conv", **kw) if cfg.use_quant_conv else None
        self.post_quant_conv = (
            conv(latent, 1, name="post_quant_conv", **kw) if cfg.use_post_quant_conv else None
        )

    def encode(self, images: jax.Array) -> DiagonalGaussian:
        moments = self.encoder(images)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return DiagonalGaussian.from_moments(moments)

    def decode(self, latents: jax.Array) -> jax.Array:
        z = latents.astype(self.dtype)
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def encode_latents(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        """What the UNet sees: the posterior's mean (or a sample, given a key) times the
        latent scale."""
        posterior = self.encode(images)
        z = posterior.mode() if key is None else posterior.sample(key)
        return z * self.config.scaling_factor

    def decode_latents(self, latents: jax.Array) -> jax.Array:
        """Images from the UNet's latents (divided by the latent scale first)."""
        return self.decode(latents / self.config.scaling_factor)

    def __call__(self, images: jax.Array, key: jax.Array | None = None) -> jax.Array:
        posterior = self.encode(images)
        return self.decode(posterior.mode() if key is None else posterior.sample(key))


def downsampling_factor(config: VAEConfig) -> int:
    return 2 ** (len(config.block_out_channels) - 1)
