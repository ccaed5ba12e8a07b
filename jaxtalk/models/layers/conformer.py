"""Conformer encoder with the semantics of ESPnet 202301 (the one AniTalker stage 2 uses).

Configuration reproduced (the only one the release builds): relative-position self-attention
"new style" (Transformer-XL biases pos_bias_u / pos_bias_v, 2T-1 relative positions, the
rel-shift), macaron feed-forward with half-step residuals, the convolution module
(pointwise 1x1 C->2C, GLU, depthwise conv, BatchNorm, Swish, pointwise C->C), post-LN
(normalize_before=False, LayerNorm eps 1e-12, a final LayerNorm per block and no encoder
after-norm) and dropout at the same places as ESPnet. The input "embedding" has no
parameters: it scales x by sqrt(d) and produces the relative positional table.

Layouts are channels-last: sequences are (B, T, C). Submodule names follow the PyTorch
state_dict (`encoders_<i>/self_attn/linear_q`, `.../conv_module/norm`, ...), which keeps the
converters one rule per key. BatchNorm running statistics live in `batch_stats`.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers.sharding import constrain

Dtype = Any

LAYER_NORM_EPS = 1e-12
BATCH_NORM_EPS = 1e-5

# PyTorch's default Linear/Conv initialisation U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for kernels.
torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def swish(x):
    return x * jax.nn.sigmoid(x)


def dense(features: int, axes: tuple, name: str, use_bias: bool = True,
          dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32) -> nn.Dense:
    """A Dense with logical axis names on its kernel (`axes`) and bias (`axes[-1]`)."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                    kernel_init=nn.with_logical_partitioning(torch_kernel_init, axes),
                    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                           (axes[-1],)),
                    name=name)


def conv1d(features: int, kernel_size: int, name: str, stride: int = 1, padding: int = 0,
           groups: int = 1, dtype: Dtype = jnp.float32,
           param_dtype: Dtype = jnp.float32) -> nn.Conv:
    """PyTorch-style Conv1d on (B, T, C): symmetric zero padding, optional groups."""
    return nn.Conv(features, (kernel_size,), strides=(stride,), padding=[(padding, padding)],
                   feature_group_count=groups, dtype=dtype, param_dtype=param_dtype,
                   kernel_init=nn.with_logical_partitioning(torch_kernel_init,
                                                            (None, "conv_in", "conv_out")),
                   bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                          ("conv_out",)),
                   name=name)


def layer_norm(name: str, dtype: Dtype = jnp.float32, param_dtype: Dtype = jnp.float32,
               eps: float = LAYER_NORM_EPS) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
                        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                ("norm",)),
                        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("norm",)))


class TorchBatchNorm(nn.Module):
    """BatchNorm over all axes but the last, with torch.nn.BatchNorm semantics.

    Train mode normalises with the biased batch variance and updates the running stats
    with momentum 0.1 using the *unbiased* variance (as PyTorch does; flax.linen.BatchNorm
    uses the biased one). Eval mode uses the running stats. Params `scale`, `bias`;
    `batch_stats`: `mean`, `var`.
    """

    epsilon: float = BATCH_NORM_EPS
    momentum: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        c = x.shape[-1]
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                 ("norm",)), (c,),
                           self.param_dtype)
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("norm",)), (c,),
                          self.param_dtype)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        if train:
            axes = tuple(range(x.ndim - 1))
            xf = x.astype(jnp.float32)
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            if not self.is_initializing():
                n = math.prod(x.shape[:-1])
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
                ra_var.value = (1 - self.momentum) * ra_var.value + self.momentum * unbiased
        else:
            mean, var = ra_mean.value, ra_var.value
        inv = jax.lax.rsqrt(var + self.epsilon) * scale
        y = (x.astype(jnp.float32) - mean) * inv + bias
        return y.astype(self.dtype)


def relative_positional_encoding(length: int, d_model: int) -> np.ndarray:
    """ESPnet's RelPositionalEncoding table for a length-T input: (2T-1, d_model).

    Row k encodes the relative position T-1-k (from T-1 down to -(T-1)); even channels are
    sin(pos * w_i), odd channels cos(pos * w_i), w_i = 10000^(-2i/d). Computed in float32
    as in the release so the table matches bit for bit up to sin/cos rounding.
    """
    positions = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]
    freqs = np.exp(np.arange(0, d_model, 2, dtype=np.float32)
                   * np.float32(-(math.log(10000.0) / d_model)))
    angles = positions * freqs
    table = np.zeros((2 * length - 1, d_model), np.float32)
    table[:, 0::2] = np.sin(angles)
    table[:, 1::2] = np.cos(angles)
    return table


def rel_shift_indices(length: int) -> np.ndarray:
    """Index into the 2T-1 relative axis for query i and key j: (T-1) - i + j.

    Row k of the table holds relative position T-1-k, so this picks position i - j, which
    is what ESPnet's pad-and-reshape rel-shift does.
    """
    i = np.arange(length)[:, None]
    j = np.arange(length)[None, :]
    return (length - 1) - i + j


class RelPositionMultiHeadAttention(nn.Module):
    """Self-attention with Transformer-XL relative positions (ESPnet rel_selfattn).

    scores = ((q + u) k^T + rel_shift((q + v) p^T)) / sqrt(d_k), p = linear_pos(pos_emb)
    with no bias; softmax, dropout on the probabilities, weighted values, linear_out.
    """

    d_model: int
    num_heads: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, pos_emb, train: bool = False):
        b, t, _ = x.shape
        h, d_k = self.num_heads, self.d_model // self.num_heads
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)

        def heads(y):  # (B, T, H*dk) -> (B, T, H, dk)
            return y.reshape(y.shape[0], y.shape[1], h, d_k)

        q = heads(dense(self.d_model, ("embed", "heads"), "linear_q", **kw)(x))
        k = heads(dense(self.d_model, ("embed", "heads"), "linear_k", **kw)(x))
        v = heads(dense(self.d_model, ("embed", "heads"), "linear_v", **kw)(x))
        p = dense(self.d_model, ("embed", "heads"), "linear_pos", use_bias=False, **kw)(pos_emb)
        p = p.reshape(p.shape[0], p.shape[1], h, d_k)  # (1 or B, 2T-1, H, dk)

        bias_init = nn.with_logical_partitioning(nn.initializers.xavier_uniform(), (None, None))
        pos_bias_u = self.param("pos_bias_u", bias_init, (h, d_k), self.param_dtype)
        pos_bias_v = self.param("pos_bias_v", bias_init, (h, d_k), self.param_dtype)

        content = jnp.einsum("bqhd,bkhd->bhqk", q + pos_bias_u.astype(self.dtype), k)
        position = jnp.einsum("bqhd,bphd->bhqp", q + pos_bias_v.astype(self.dtype),
                              jnp.broadcast_to(p, (b,) + p.shape[1:]))
        position = jnp.take_along_axis(
            position, jnp.asarray(rel_shift_indices(t))[None, None], axis=-1)
        scores = (content + position) / jnp.asarray(math.sqrt(d_k), self.dtype)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(self.dtype)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=not train)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, t, self.d_model)
        return dense(self.d_model, ("heads", "embed"), "linear_out", **kw)(out)


class PositionwiseFeedForward(nn.Module):
    """w_2(dropout(swish(w_1(x)))), as ESPnet's PositionwiseFeedForward with Swish."""

    d_model: int
    hidden_units: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        y = swish(dense(self.hidden_units, ("embed", "mlp"), "w_1", **kw)(x))
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        return dense(self.d_model, ("mlp", "embed"), "w_2", **kw)(y)


class ConvolutionModule(nn.Module):
    """Pointwise conv C->2C, GLU, depthwise conv (same padding), BatchNorm, Swish, pointwise."""

    channels: int
    kernel_size: int = 13
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        assert (self.kernel_size - 1) % 2 == 0, "the depthwise kernel must be odd"
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        c = self.channels
        y = conv1d(2 * c, 1, "pointwise_conv1", **kw)(x)
        y = y[..., :c] * jax.nn.sigmoid(y[..., c:])  # GLU: first half gated by the second
        y = conv1d(c, self.kernel_size, "depthwise_conv", padding=(self.kernel_size - 1) // 2,
                   groups=c, **kw)(y)
        y = swish(TorchBatchNorm(name="norm", **kw)(y, train=train))
        return conv1d(c, 1, "pointwise_conv2", **kw)(y)


class ConformerBlock(nn.Module):
    """One post-LN macaron Conformer block (ESPnet EncoderLayer, normalize_before=False)."""

    d_model: int
    num_heads: int
    linear_units: int
    kernel_size: int = 13
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, pos_emb, train: bool = False):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        drop = nn.Dropout(self.dropout_rate)

        def residual(y, sub, scale=1.0):
            return y + scale * drop(sub, deterministic=not train)

        ff = dict(d_model=self.d_model, hidden_units=self.linear_units,
                  dropout_rate=self.dropout_rate, **kw)
        x = residual(x, PositionwiseFeedForward(name="feed_forward_macaron", **ff)(x, train), 0.5)
        x = layer_norm("norm_ff_macaron", **kw)(x)
        attn = RelPositionMultiHeadAttention(self.d_model, self.num_heads,
                                             self.attention_dropout_rate, name="self_attn", **kw)
        x = layer_norm("norm_mha", **kw)(residual(x, attn(x, pos_emb, train)))
        conv = ConvolutionModule(self.d_model, self.kernel_size, name="conv_module", **kw)
        x = layer_norm("norm_conv", **kw)(residual(x, conv(x, train)))
        x = residual(x, PositionwiseFeedForward(name="feed_forward", **ff)(x, train), 0.5)
        x = layer_norm("norm_ff", **kw)(x)
        return layer_norm("norm_final", **kw)(x)


class ConformerEncoder(nn.Module):
    """ESPnet conformer Encoder with input_layer=None: x*sqrt(d) + rel-pos, N blocks.

    Call: `(x (B, T, d_model), train) -> (B, T, d_model)`. Dropout needs the 'dropout' rng
    in train mode; BatchNorm updates `batch_stats` in train mode (make it mutable).
    """

    d_model: int
    num_heads: int = 2
    linear_units: int | None = None  # ESPnet's linear_units; AniTalker uses d_model
    num_blocks: int = 4
    kernel_size: int = 13
    dropout_rate: float = 0.2
    positional_dropout_rate: float = 0.2
    attention_dropout_rate: float = 0.2
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        self.encoders = [
            ConformerBlock(self.d_model, self.num_heads, self.linear_units or self.d_model,
                           self.kernel_size, self.dropout_rate, self.attention_dropout_rate,
                           dtype=self.dtype, param_dtype=self.param_dtype)
            for _ in range(self.num_blocks)]
        self.pos_dropout = nn.Dropout(self.positional_dropout_rate)

    def __call__(self, x, train: bool = False):
        if x.shape[-1] != self.d_model:
            raise ValueError(f"ConformerEncoder expects {self.d_model} channels, got {x.shape}")
        x = x.astype(self.dtype) * jnp.asarray(math.sqrt(self.d_model), self.dtype)
        pos_emb = jnp.asarray(relative_positional_encoding(x.shape[1], self.d_model),
                              self.dtype)[None]
        # ESPnet applies the positional dropout to both the input and the table.
        x = self.pos_dropout(x, deterministic=not train)
        pos_emb = self.pos_dropout(pos_emb, deterministic=not train)
        for block in self.encoders:
            x = constrain(block(x, pos_emb, train))
        return x
