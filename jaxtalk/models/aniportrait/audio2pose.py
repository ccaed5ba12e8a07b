"""AniPortrait's Audio2Pose: speech -> per-frame 6-D head pose (3 Euler angles in degrees,
3 translations), generated autoregressively (Zejun-Yang/AniPortrait
src/audio_models/pose_model.py, `Audio2PoseModel`).

  memory   wav2vec2-base at the video's frame count (as Audio2Mesh) -> Linear 768->512
  queries  the previous frame's pose (zeros before the first) -> Linear 6->512 (`pose_map`)
           + sinusoidal position (`PPE`, a 600-row table) + an identity embedding
           (`id_embed`, 100 learned styles; the release draws one at random per video)
  decoder  8 x torch.nn.TransformerDecoderLayer (d 512, 8 heads, FFN 1024 ReLU, post-LN,
           dropout 0.1) with the release's causal mask biased ALiBi-style (head h adds
           -slope_h * (i - j) to the logit of query i on key j <= i)
  output   Linear 512->6 (`pose_map_r`); the generated pose is fed back as the next query.

The release's memory mask lets query t attend to audio frame t only, so every cross
attention has one-hot weights: its output is out_proj(v_proj(memory_t)) exactly, which
is how `aligned_cross_attention` computes it (the packed query/key projections are still
parameters, for the checkpoint, but cannot reach the output).

Generation (`rollout`) keeps each layer's self-attention keys and values (a cache), so a
step costs one token through the decoder instead of the release's full re-run of the
prefix; causality makes the two identical. 120,058,758 parameters with the released sizes.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.aniportrait.audio2mesh import audio_features
from jaxtalk.models.audio.hubert import WAV2VEC2_BASE, HubertConfig, HubertModel
from jaxtalk.models.layers.torch_nn import dense, layer_norm

Dtype = Any

POSITION_BUFFER = "PPE.pe"  # the release's position table, (1, max_len, d)
POSE_DIM = 6  # pitch, yaw, roll (degrees, scipy 'xyz' Euler) and x, y, z translation


# ----------------------------------------------------------------------------- constants
def alibi_slopes(num_heads: int) -> np.ndarray:
    """The ALiBi head slopes: 2^(-8/n * (h+1)) for a power-of-two n, else the power-of-two
    set topped up with every other slope of the doubled set (Press et al.)."""

    def power_of_two(n):
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        low = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(low) + alibi_slopes(2 * low)[0::2][: num_heads - low].tolist()
    return np.asarray(slopes, np.float32)


def causal_alibi_bias(num_heads: int, queries: np.ndarray, keys: int) -> jnp.ndarray:
    """(H, Q, keys) additive logits bias for query positions `queries` (Q,): -slope_h *
    (i - j) on keys j <= i and -inf on later keys (the release's `init_biased_mask`,
    period 1)."""
    slopes = jnp.asarray(alibi_slopes(num_heads))[:, None, None]
    distance = jnp.asarray(queries)[:, None] - jnp.arange(keys)[None, :]
    return jnp.where(distance[None] >= 0, -slopes * distance[None], -jnp.inf)


def sinusoid_table(max_len: int, dim: int) -> np.ndarray:
    """(max_len, dim) float32 sin on even / cos on odd channels of position * 10000^(-2i/dim),
    the product rounded to float32 as in the release's PositionalEncoding buffer (whose
    float32 exp and sin are torch's: its values differ from these in the last bits)."""
    position = np.arange(max_len, dtype=np.float32)[:, None]
    div = np.exp(np.arange(0, dim, 2) * (-math.log(10000.0) / dim)).astype(np.float32)
    angle = (position * div).astype(np.float64)
    table = np.zeros((max_len, dim), np.float32)
    table[:, 0::2] = np.sin(angle)
    table[:, 1::2] = np.cos(angle)
    return table


# ----------------------------------------------------------------------------- layers
class TorchMultiheadAttention(nn.Module):
    """torch.nn.MultiheadAttention (batch_first, packed `in_proj` kernel (d, 3d) for q, k, v,
    biases) with an additive logits bias and dropout on the attention weights; split into
    projections and the attention itself so a decoder can cache keys and values."""

    embed_dim: int
    num_heads: int
    dropout: float = 0.0
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        d = self.embed_dim
        self.in_proj_kernel = self.param(
            "in_proj_kernel",
            nn.with_logical_partitioning(nn.initializers.xavier_uniform(), ("embed", "heads")),
            (d, 3 * d),
            self.param_dtype,
        )
        self.in_proj_bias = self.param(
            "in_proj_bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), ("heads",)),
            (3 * d,),
            self.param_dtype,
        )
        self.out_proj = dense(d, ("heads", "embed"), dtype=self.dtype, param_dtype=self.param_dtype)
        self.attention_dropout = nn.Dropout(self.dropout)

    def _project(self, x, which: int):
        """(B, L, d) -> (B, L, heads, head_dim) through the q (0), k (1) or v (2) slice."""
        d = self.embed_dim
        kernel = self.in_proj_kernel[:, which * d : (which + 1) * d].astype(self.dtype)
        y = jnp.dot(x.astype(self.dtype), kernel) + self.in_proj_bias[which * d : (which + 1) * d]
        return y.astype(self.dtype).reshape(x.shape[:-1] + (self.num_heads, d // self.num_heads))

    def keys_values(self, x):
        return self._project(x, 1), self._project(x, 2)

    def output(self, heads):
        """(B, L, heads, head_dim) -> out_proj (B, L, d)."""
        return self.out_proj(heads.reshape(heads.shape[:-2] + (self.embed_dim,)))

    def __call__(self, x, keys, values, bias, deterministic: bool = True):
        """x (B, Lq, d) attends to cached `keys`/`values` (B, Lk, heads, head_dim) with
        `bias` (heads, Lq, Lk) added to the scaled logits."""
        q = self._project(x, 0)
        hi = jnp.promote_types(self.dtype, jnp.float32)
        logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(hi), keys.astype(hi))
        logits = logits * jnp.asarray(q.shape[-1] ** -0.5, hi) + bias.astype(hi)[None]
        probs = jax.nn.softmax(logits, axis=-1)
        probs = self.attention_dropout(probs, deterministic=deterministic).astype(self.dtype)
        return self.output(jnp.einsum("bhqk,bkhd->bqhd", probs, values))

    def aligned_cross_attention(self, memory, deterministic: bool = True):
        """Query t attending to memory position t only (the release's diagonal memory
        mask): the one-hot weights (dropped out per head in training, as torch drops
        attention weights) times the values."""
        v = self._project(memory, 2)
        weight = jnp.ones(v.shape[:-1] + (1,), self.dtype)
        weight = self.attention_dropout(weight, deterministic=deterministic)
        return self.output(v * weight.astype(self.dtype))


class DecoderLayer(nn.Module):
    """torch.nn.TransformerDecoderLayer, post-LN (norm_first=False), ReLU feed-forward."""

    embed_dim: int
    num_heads: int
    ffn_dim: int
    dropout: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = lambda: TorchMultiheadAttention(  # noqa: E731
            self.embed_dim, self.num_heads, self.dropout, **kw
        )
        self.self_attn, self.multihead_attn = attn(), attn()
        self.linear1 = dense(self.ffn_dim, ("embed", "mlp"), **kw)
        self.linear2 = dense(self.embed_dim, ("mlp", "embed"), **kw)
        self.norm1 = layer_norm(None, 1e-5, fast_variance=False, **kw)
        self.norm2 = layer_norm(None, 1e-5, fast_variance=False, **kw)
        self.norm3 = layer_norm(None, 1e-5, fast_variance=False, **kw)
        self.drop = nn.Dropout(self.dropout)

    def keys_values(self, x):
        return self.self_attn.keys_values(x)

    def __call__(self, x, keys, values, bias, memory, deterministic: bool = True):
        """x (B, L, d) with its self-attention keys/values (its own, or a cache holding
        them), `bias` (heads, L, Lk), and the L memory frames aligned with x."""
        drop = lambda y: self.drop(y, deterministic=deterministic)  # noqa: E731
        x = self.norm1(x + drop(self.self_attn(x, keys, values, bias, deterministic)))
        x = self.norm2(x + drop(self.multihead_attn.aligned_cross_attention(memory, deterministic)))
        ff = self.linear2(drop(jax.nn.relu(self.linear1(x))))
        return self.norm3(x + drop(ff))


# ----------------------------------------------------------------------------- model
class Audio2Pose(nn.Module):
    """Raw normalised 16 kHz audio -> head poses (B, frames, 6).

    `__call__` is the teacher-forced pass (training): query t is built from the true pose
    of frame t-1. `rollout` generates, feeding each predicted pose back."""

    audio: HubertConfig = WAV2VEC2_BASE
    latent_dim: int = 512
    out_dim: int = POSE_DIM
    num_layers: int = 8
    num_heads: int = 8
    ffn_dim: int = 1024
    num_ids: int = 100
    max_len: int = 600  # rows of the release's position table (and biased mask)
    dropout: float = 0.1
    only_last_features: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        self.audio_encoder = HubertModel(self.audio, **kw)
        self.in_fn = dense(self.latent_dim, ("embed", "mlp"), **kw)
        self.pose_map = dense(self.latent_dim, (None, "embed"), **kw)
        self.pose_map_r = dense(self.out_dim, ("embed", None), **kw)
        self.id_embed = nn.Embed(
            self.num_ids,
            self.latent_dim,
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(1.0), ("vocab", "embed")
            ),
            **kw,
        )
        self.layers = [
            DecoderLayer(self.latent_dim, self.num_heads, self.ffn_dim, self.dropout, **kw)
            for _ in range(self.num_layers)
        ]

    def _check_length(self, frames: int):
        if frames > self.max_len:
            raise ValueError(
                f"Audio2Pose generates at most {self.max_len} frames at once (its position "
                f"table's length), asked for {frames}: split the audio into chunks"
            )

    def encode(self, wav, frames: int, train: bool = False):
        """The decoder memory (B, frames, latent_dim)."""
        self._check_length(frames)
        x = audio_features(self.audio_encoder, wav, frames, self.only_last_features, train)
        return self.in_fn(x)

    def position_table(self):
        """(max_len, d): the release file's `PPE.pe` when the variables carry it (collection
        "buffers", as the importer keeps it), else the same table computed here (they differ
        in the last bits: torch's float32 exp and sin are not numpy's)."""
        if self.has_variable("buffers", POSITION_BUFFER):
            return jnp.asarray(self.get_variable("buffers", POSITION_BUFFER))[0]
        return jnp.asarray(sinusoid_table(self.max_len, self.latent_dim))

    def queries(self, previous_poses, positions, identity):
        """Decoder inputs (B, L, d) from the poses fed back (B, L, out_dim) at `positions`."""
        table = self.position_table()
        x = self.pose_map(previous_poses) + table[positions].astype(self.dtype)
        return x + self.id_embed(identity)[:, None]

    def decode(self, x, memory, train: bool = False):
        """Teacher-forced decoder over queries x (B, L, d) at positions 0..L-1."""
        length = x.shape[1]
        bias = causal_alibi_bias(self.num_heads, np.arange(length), length)
        for layer in self.layers:
            k, v = layer.keys_values(x)
            x = layer(x, k, v, bias, memory[:, :length], deterministic=not train)
        return self.pose_map_r(x)

    def __call__(self, wav, poses, identity, train: bool = False):
        """Predicted poses (B, F, out_dim) for the F frames of `poses` (B, F, out_dim), query
        t seeing the true poses before t; `identity` (B,) int in [0, num_ids)."""
        frames = poses.shape[1]
        memory = self.encode(wav, frames, train)
        previous = jnp.concatenate([jnp.zeros_like(poses[:, :1]), poses[:, :-1]], axis=1)
        x = self.queries(previous.astype(self.dtype), np.arange(frames), identity)
        return self.decode(x, memory, train)

    def init_cache(self, batch: int, frames: int):
        """Zero self-attention keys/values for `frames` steps: per layer (k, v)."""
        shape = (batch, frames, self.num_heads, self.latent_dim // self.num_heads)
        return [(jnp.zeros(shape, self.dtype), jnp.zeros(shape, self.dtype))] * self.num_layers

    def step(self, previous_pose, index, memory, cache, identity):
        """One generated frame at position `index` (traced int): previous_pose (B, out_dim)
        (zeros at index 0), the whole memory (B, F, d) and the cache -> (pose, cache)."""
        x = self.queries(previous_pose[:, None].astype(self.dtype), index[None], identity)
        memory_t = jax.lax.dynamic_slice_in_dim(memory, index, 1, axis=1)
        bias = causal_alibi_bias(self.num_heads, index[None], cache[0][0].shape[1])
        new_cache = []
        for layer, (keys, values) in zip(self.layers, cache):
            k, v = layer.keys_values(x)
            keys = jax.lax.dynamic_update_slice_in_dim(keys, k, index, axis=1)
            values = jax.lax.dynamic_update_slice_in_dim(values, v, index, axis=1)
            x = layer(x, keys, values, bias, memory_t)
            new_cache.append((keys, values))
        return self.pose_map_r(x)[:, 0], new_cache


def rollout(model: Audio2Pose, variables, wav, frames: int, identity):
    """Autoregressive generation as the release's `infer`: (B, frames, out_dim) poses, each
    frame's prediction fed back as the next query. Jit-able (frames static)."""
    memory = model.apply(variables, wav, frames, method=Audio2Pose.encode)
    cache = model.apply(variables, wav.shape[0], frames, method=Audio2Pose.init_cache)

    def body(carry, index):
        previous, cache = carry
        pose, cache = model.apply(
            variables, previous, index, memory, cache, identity, method=Audio2Pose.step
        )
        return (pose, cache), pose

    first = jnp.zeros((wav.shape[0], model.out_dim), memory.dtype)
    _, poses = jax.lax.scan(body, (first, cache), jnp.arange(frames))
    return jnp.swapaxes(poses, 0, 1)
