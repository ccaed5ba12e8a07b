"""HuBERT / wav2vec2 feature extractor (Hugging Face `HubertModel` / `Wav2Vec2Model` layout)
returning every hidden state.

AniTalker's hubert_* variants mix all 25 hidden states of chinese-hubert-large (1024-d,
50 Hz). AniPortrait's Audio2Mesh reads wav2vec2-base-960h's last state after resampling
the conv features to the video's frame rate (`frames=`). HuBERT-base and wav2vec2-base are
the same network (`WAV2VEC2_BASE`); only their checkpoints' key names differ
(jaxtalk/convert/hubert.py). Structure, for raw 16 kHz audio (B, samples):

  conv feature encoder  7 x Conv1d(512, k=(10,3,3,3,3,2,2), s=(5,2,2,2,2,2,2)) + GELU, with
                        "layer": LayerNorm over channels after every conv (large), or
                        "group": GroupNorm(512 groups) after the first conv only (base)
  [resampling]          AniPortrait: conv features linearly interpolated over time to the
                        number of video frames (`linear_resample`, align_corners=True)
  feature projection    LayerNorm(512) -> Linear(512, hidden) -> dropout
  positional conv       Conv1d(hidden, hidden, k=128, pad=64, groups=16) with weight norm
                        over dim 2 (we keep `weight_g` and `weight_v` as params, so export
                        is exact), drop the last step, GELU; added to the features
  transformer           stable (pre-LN, large): hidden states = inputs of each layer, then
                        the final LayerNorm output -> num_layers + 1 states;
                        post-LN (base): LayerNorm after the addition, states likewise.

Channels-last throughout; `__call__` returns a tuple of (B, T, hidden) arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers.torch_nn import (
    conv1d,
    dense,
    layer_norm,
    norm_affine,
    torch_kernel_init,
)

Dtype = Any


@dataclasses.dataclass(frozen=True)
class HubertConfig:
    hidden_size: int = 1024
    num_layers: int = 24
    num_heads: int = 16
    intermediate_size: int = 4096
    conv_dim: tuple = (512,) * 7
    conv_kernel: tuple = (10, 3, 3, 3, 3, 2, 2)
    conv_stride: tuple = (5, 2, 2, 2, 2, 2, 2)
    conv_bias: bool = True
    feat_extract_norm: str = "layer"  # "layer" | "group"
    feat_proj_layer_norm: bool = True
    stable_layer_norm: bool = True  # pre-LN transformer (large) vs post-LN (base)
    pos_conv_kernel: int = 128
    pos_conv_groups: int = 16
    layer_norm_eps: float = 1e-5
    masked_spec_embed: bool = True  # the (unused at inference) mask embedding param
    dropout: float = 0.1


HUBERT_LARGE = HubertConfig()
HUBERT_BASE = HubertConfig(
    hidden_size=768,
    num_layers=12,
    num_heads=12,
    intermediate_size=3072,
    conv_bias=False,
    feat_extract_norm="group",
    stable_layer_norm=False,
)

# facebook/wav2vec2-base(-960h): the HuBERT-base network (group-norm first conv, post-LN).
WAV2VEC2_BASE = HUBERT_BASE


def gelu(x):
    return jax.nn.gelu(x, approximate=False)  # HF "gelu" is the exact erf form


def normalize_waveform(wav: np.ndarray) -> np.ndarray:
    """Wav2Vec2FeatureExtractor(do_normalize=True): zero mean, unit variance per utterance."""
    wav = np.asarray(wav, np.float32)
    return (wav - wav.mean()) / np.sqrt(wav.var() + 1e-7)


def num_frames(num_samples: int, config: HubertConfig = HUBERT_LARGE) -> int:
    for k, s in zip(config.conv_kernel, config.conv_stride):
        num_samples = (num_samples - k) // s + 1
    return num_samples


def linear_resample(x: jax.Array, frames: int) -> jax.Array:
    """(B, T, C) -> (B, frames, C) by linear interpolation over time with the end points
    kept (torch's F.interpolate(mode="linear", align_corners=True)), as AniPortrait
    resamples wav2vec2's 50 Hz conv features to the video frame rate."""
    steps = x.shape[1]
    if frames < 1 or steps < 1:
        raise ValueError(f"cannot resample {steps} steps to {frames} frames")
    scale = (steps - 1) / (frames - 1) if frames > 1 else 0.0
    src = np.arange(frames, dtype=np.float64) * scale
    low = np.floor(src).astype(np.int64)
    high = np.minimum(low + 1, steps - 1)
    frac = jnp.asarray(src - low, x.dtype)[None, :, None]
    return x[:, low] * (1 - frac) + x[:, high] * frac


class ChannelGroupNorm(nn.Module):
    """GroupNorm with one group per channel on (B, T, C): normalise each channel over time."""

    epsilon: float = 1e-5
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale, bias = norm_affine(self, c, self.param_dtype)
        xf = x.astype(jnp.promote_types(self.dtype, jnp.float32))  # stats in >= fp32
        mean = xf.mean(1, keepdims=True)
        var = jnp.square(xf - mean).mean(1, keepdims=True)
        return ((xf - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias).astype(self.dtype)


class FeatureEncoder(nn.Module):
    """Raw audio (B, samples) -> conv features (B, frames, conv_dim[-1])."""

    config: HubertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, wav):
        cfg = self.config
        x = wav.astype(self.dtype)[..., None]
        for i, (c, k, s) in enumerate(zip(cfg.conv_dim, cfg.conv_kernel, cfg.conv_stride)):
            x = conv1d(
                c,
                k,
                f"conv_{i}",
                stride=s,
                use_bias=cfg.conv_bias,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )(x)
            if cfg.feat_extract_norm == "layer":
                x = layer_norm(f"norm_{i}", 1e-5, self.dtype, self.param_dtype)(x)
            elif cfg.feat_extract_norm == "group" and i == 0:
                x = ChannelGroupNorm(dtype=self.dtype, param_dtype=self.param_dtype, name="norm_0")(
                    x
                )
            x = gelu(x)
        return x


class WeightNormPositionalConv(nn.Module):
    """HF HubertPositionalConvEmbedding: grouped conv whose weight = g * v / ||v|| with the
    norm over every axis but the kernel axis (weight_norm dim=2), SamePad, GELU."""

    features: int
    kernel_size: int = 128
    groups: int = 16
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, c, g = self.kernel_size, self.features, self.groups
        v = self.param(
            "weight_v",
            nn.with_logical_partitioning(torch_kernel_init, (None, "conv_in", "conv_out")),
            (k, c // g, c),
            self.param_dtype,
        )
        gain = self.param(
            "weight_g",
            nn.with_logical_partitioning(
                lambda key, shape, dtype: jnp.sqrt(
                    jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True)
                ).astype(dtype),
                (None, None, None),
            ),
            (k, 1, 1),
            self.param_dtype,
        )
        bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
            (c,),
            self.param_dtype,
        )
        weight = gain * v * jax.lax.rsqrt(jnp.sum(jnp.square(v), axis=(1, 2), keepdims=True))
        pad = k // 2
        y = jax.lax.conv_general_dilated(
            x.astype(self.dtype),
            weight.astype(self.dtype),
            (1,),
            [(pad, pad)],
            dimension_numbers=("NWC", "WIO", "NWC"),
            feature_group_count=g,
        )
        if k % 2 == 0:
            y = y[:, :-1]  # SamePad: an even kernel with pad k/2 gives one extra step
        return gelu(y + bias.astype(self.dtype))


class HubertAttention(nn.Module):
    hidden_size: int
    num_heads: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        h = self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        q = dense(d, ("embed", "heads"), "q_proj", **kw)(x) * (d // h) ** -0.5
        k = dense(d, ("embed", "heads"), "k_proj", **kw)(x)
        v = dense(d, ("embed", "heads"), "v_proj", **kw)(x)
        split = lambda y: y.reshape(b, t, h, d // h)
        scores = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k))
        probs = jax.nn.softmax(
            scores.astype(jnp.promote_types(self.dtype, jnp.float32)), -1
        ).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, split(v)).reshape(b, t, d)
        return dense(d, ("heads", "embed"), "out_proj", **kw)(out)


class HubertLayer(nn.Module):
    config: HubertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=not train)
        attention = HubertAttention(cfg.hidden_size, cfg.num_heads, name="attention", **kw)
        norm = layer_norm("layer_norm", cfg.layer_norm_eps, **kw)
        final_norm = layer_norm("final_layer_norm", cfg.layer_norm_eps, **kw)

        def feed_forward(y):
            y = gelu(dense(cfg.intermediate_size, ("embed", "mlp"), "intermediate_dense", **kw)(y))
            return drop(dense(cfg.hidden_size, ("mlp", "embed"), "output_dense", **kw)(drop(y)))

        if cfg.stable_layer_norm:
            x = x + drop(attention(norm(x)))
            return x + feed_forward(final_norm(x))
        x = norm(x + drop(attention(x)))
        return final_norm(x + feed_forward(x))


class HubertModel(nn.Module):
    """Raw 16 kHz audio (B, samples), normalised as `normalize_waveform` does ->
    tuple of num_layers + 1 hidden states, each (B, frames, hidden_size); `frames`
    resamples the conv features to that many steps first (AniPortrait)."""

    config: HubertConfig = HUBERT_LARGE
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, wav, train: bool = False, frames: int | None = None):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = lambda y: nn.Dropout(cfg.dropout)(y, deterministic=not train)
        feats = FeatureEncoder(cfg, name="feature_extractor", **kw)(wav)
        if frames is not None:
            feats = linear_resample(feats, frames)
        if cfg.feat_proj_layer_norm:
            feats = layer_norm("feature_projection_norm", cfg.layer_norm_eps, **kw)(feats)
        x = drop(dense(cfg.hidden_size, ("embed", "mlp"), "feature_projection", **kw)(feats))
        if cfg.masked_spec_embed:  # kept for exact import/export; unused without masking
            self.param(
                "masked_spec_embed",
                nn.with_logical_partitioning(nn.initializers.uniform(1.0), ("embed",)),
                (cfg.hidden_size,),
                self.param_dtype,
            )
        x = x + WeightNormPositionalConv(
            cfg.hidden_size, cfg.pos_conv_kernel, cfg.pos_conv_groups, name="pos_conv_embed", **kw
        )(x)
        encoder_norm = layer_norm("encoder_layer_norm", cfg.layer_norm_eps, **kw)
        x = drop(x if cfg.stable_layer_norm else encoder_norm(x))
        states = []
        for i in range(cfg.num_layers):
            states.append(x)
            x = HubertLayer(cfg, name=f"layers_{i}", **kw)(x, train)
        states.append(encoder_norm(x) if cfg.stable_layer_norm else x)
        return tuple(states)


def stack_for_anitalker(hidden_states: Sequence[jax.Array]) -> jax.Array:
    """AniTalker's input layout: (B, T50, layers, C), with the release's one-frame edge
    pad at the end (HuBERT yields 49 frames per second of audio, the video needs 50)."""
    stacked = jnp.stack(hidden_states, axis=2)
    return jnp.concatenate([stacked, stacked[:, -1:]], axis=1)
