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
from jaxtalk.models.layers.torch_nn import TorchBatchNorm, conv1d, dense, layer_norm

Dtype = Any

LAYER_NORM_EPS = 1e-12


def swish(x):
    return x * jax.nn.sigmoid(x)


def relative_positional_encoding(length: int, d_model: int) -> np.ndarray:
    """ESPnet's RelPositionalEncoding table for a length-T input: (2T-1, d_model).

    Row k encodes the relative position T-1-k (from T-1 down to -(T-1)); even channels are
    sin(pos * w_i), odd channels cos(pos * w_i), w_i = 10000^(-2i/d). Computed in float32
    as in the release so the table matches bit for bit up to sin/cos rounding: ESPnet
    builds it in float32 whatever the model's dtype and casts it, so its float32 values
    are part of the model and a float64 model gets them cast, as the release does.
    """
    positions = np.arange(length - 1, -length, -1, dtype=np.float32)[:, None]
    freqs = np.exp(
        np.arange(0, d_model, 2, dtype=np.float32) * np.float32(-(math.log(10000.0) / d_model))
    )
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
        position = jnp.einsum(
            "bqhd,bphd->bhqp",
            q + pos_bias_v.astype(self.dtype),
            jnp.broadcast_to(p, (b,) + p.shape[1:]),
        )
        position = jnp.take_along_axis(
            position, jnp.asarray(rel_shift_indices(t))[None, None], axis=-1
        )
        scores = (content + position) / jnp.asarray(math.sqrt(d_k), self.dtype)
        probs = jax.nn.softmax(
            scores.astype(jnp.promote_types(self.dtype, jnp.float32)), axis=-1
        ).astype(self.dtype)
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
        y = conv1d(
            c,
            self.kernel_size,
            "depthwise_conv",
            padding=(self.kernel_size - 1) // 2,
            groups=c,
            **kw,
        )(y)
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

        ff = dict(
            d_model=self.d_model,
            hidden_units=self.linear_units,
            dropout_rate=self.dropout_rate,
            **kw,
        )
        x = residual(x, PositionwiseFeedForward(name="feed_forward_macaron", **ff)(x, train), 0.5)
        x = layer_norm("norm_ff_macaron", LAYER_NORM_EPS, **kw)(x)
        attn = RelPositionMultiHeadAttention(
            self.d_model, self.num_heads, self.attention_dropout_rate, name="self_attn", **kw
        )
        x = layer_norm("norm_mha", LAYER_NORM_EPS, **kw)(residual(x, attn(x, pos_emb, train)))
        conv = ConvolutionModule(self.d_model, self.kernel_size, name="conv_module", **kw)
        x = layer_norm("norm_conv", LAYER_NORM_EPS, **kw)(residual(x, conv(x, train)))
        x = residual(x, PositionwiseFeedForward(name="feed_forward", **ff)(x, train), 0.5)
        x = layer_norm("norm_ff", LAYER_NORM_EPS, **kw)(x)
        return layer_norm("norm_final", LAYER_NORM_EPS, **kw)(x)


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
            ConformerBlock(
                self.d_model,
                self.num_heads,
                self.linear_units or self.d_model,
                self.kernel_size,
                self.dropout_rate,
                self.attention_dropout_rate,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
            )
            for _ in range(self.num_blocks)
        ]
        self.pos_dropout = nn.Dropout(self.positional_dropout_rate)

    def __call__(self, x, train: bool = False):
        if x.shape[-1] != self.d_model:
            raise ValueError(f"ConformerEncoder expects {self.d_model} channels, got {x.shape}")
        x = x.astype(self.dtype) * jnp.asarray(math.sqrt(self.d_model), self.dtype)
        pos_emb = jnp.asarray(relative_positional_encoding(x.shape[1], self.d_model), self.dtype)[
            None
        ]
        # ESPnet applies the positional dropout to both the input and the table.
        x = self.pos_dropout(x, deterministic=not train)
        pos_emb = self.pos_dropout(pos_emb, deterministic=not train)
        for block in self.encoders:
            x = constrain(block(x, pos_emb, train))
        return x
