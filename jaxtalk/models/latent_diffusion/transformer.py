"""The SD UNet's spatial transformer (diffusers' Transformer2DModel with 1x1-conv
projections and BasicTransformerBlock), with reference attention.

A BasicTransformerBlock is pre-LN: self-attention `attn1`, cross-attention `attn2` to the
context, a GEGLU feed-forward (exact GELU), each added to its input. It returns its
`norm1` output beside its result, which is what a ReferenceNet records. Given a recorded
`reference` (N, Lr, C), attn1 attends with keys and values concat([norm1(x), reference])
(AniPortrait's and MegActor's reference attention); `reference_mask` (N,) switches that
off per sample (the unconditional half of classifier-free guidance) by masking the
reference keys out, which equals plain self-attention.

AniPortrait's PoseGuider uses the same transformer wider than its input (`inner_features`:
16 heads x 88 = 1408 on 320..1280 channels) and without the cross-attention
(`cross_attention=False`: no norm2 / attn2, the context is unused).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxtalk.models.layers.attention import attention
from jaxtalk.models.layers.sharding import constrain
from jaxtalk.models.layers.torch_nn import conv, dense, group_norm, layer_norm


class Attention(nn.Module):
    """Multi-head attention with bias-free to_q / to_k / to_v and a biased to_out.0."""

    heads: int
    features: int  # query (and output) width; the inner width too (heads * head dim)
    implementation: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, context=None, kv_lengths=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        context = x if context is None else context
        inner, h = self.features, self.heads

        def project(name, y):
            y = dense(inner, ("embed", "heads"), name, use_bias=False, **kw)(y)
            return y.reshape(y.shape[0], y.shape[1], h, inner // h)

        q, k, v = project("to_q", x), project("to_k", context), project("to_v", context)
        out = attention(q, k, v, implementation=self.implementation, kv_lengths=kv_lengths)
        out = out.reshape(x.shape[0], x.shape[1], inner)
        return dense(self.features, ("heads", "embed"), "to_out_0", **kw)(out)


class GEGLUFeedForward(nn.Module):
    """net.0.proj to 2 x inner, value * GELU(gate) (exact), net.2 back to the width."""

    features: int
    mult: int = 4
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        inner = self.mult * self.features
        value, gate = jnp.split(_GEGLUProj(2 * inner, **kw, name="net_0")(x), 2, axis=-1)
        h = value * jax.nn.gelu(gate, approximate=False)
        return dense(self.features, ("mlp", "embed"), "net_2", **kw)(h)


class _GEGLUProj(nn.Module):
    """The `net.0` wrapper of diffusers' GEGLU: one Linear named `proj`."""

    features: int
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        return dense(self.features, ("embed", "mlp"), "proj", **kw)(x)


class BasicTransformerBlock(nn.Module):
    """norm1 -> attn1 (self, or with the reference) -> norm2 -> attn2 (cross) -> norm3 ->
    GEGLU, each residual. Returns (output, norm1 output). `cut`: the block is only its norm1
    (MegActor's ReferenceNet keeps nothing after the last block's norm1); output None.
    `cross_attention=False`: no norm2 / attn2."""

    features: int
    heads: int
    layer_norm_eps: float = 1e-5
    cut: bool = False
    cross_attention: bool = True
    attention: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, context, reference=None, reference_mask=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        attn = dict(heads=self.heads, features=self.features, implementation=self.attention, **kw)

        def norm(name, y):
            return layer_norm(name, self.layer_norm_eps, fast_variance=False, **kw)(y)

        n = norm("norm1", x)
        if self.cut:
            return None, n
        keys, lengths = n, None
        if reference is not None:
            keys = jnp.concatenate([n, reference.astype(n.dtype)], axis=1)
            if reference_mask is not None:
                lengths = jnp.where(reference_mask, keys.shape[1], n.shape[1])
        x = Attention(**attn, name="attn1")(n, keys, lengths) + x
        if self.cross_attention:
            x = Attention(**attn, name="attn2")(norm("norm2", x), context) + x
        x = GEGLUFeedForward(self.features, **kw, name="ff")(norm("norm3", x)) + x
        return x, n


class Transformer2DModel(nn.Module):
    """GroupNorm (eps 1e-6) -> proj_in (1x1 conv) -> tokens -> BasicTransformerBlocks ->
    proj_out (1x1 conv) -> + input, on (N, H, W, C). Returns (output, [norm1 per block]);
    `references` holds one entry (or None) per block. `cut_last`: the last block is cut to
    its norm1 and proj_out is absent (output None). `inner_features`: the blocks' width
    (None: the input's); `cross_attention=False`: blocks without attn2 (context unused)."""

    heads: int
    num_layers: int = 1
    groups: int = 32
    eps: float = 1e-6
    layer_norm_eps: float = 1e-5
    cut_last: bool = False
    inner_features: int | None = None
    cross_attention: bool = True
    attention: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, context, references: Sequence | None = None, reference_mask=None):
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        n, hgt, wid, c = x.shape
        inner = self.inner_features or c
        h = group_norm("norm", self.groups, self.eps, **kw)(x)
        h = conv(inner, 1, name="proj_in", **kw)(h).reshape(n, hgt * wid, inner)
        references = references or (None,) * self.num_layers
        recorded = []
        for i in range(self.num_layers):
            cut = self.cut_last and i == self.num_layers - 1
            h, normed = BasicTransformerBlock(
                inner,
                self.heads,
                self.layer_norm_eps,
                cut=cut,
                cross_attention=self.cross_attention,
                attention=self.attention,
                **kw,
                name=f"transformer_blocks_{i}",
            )(h, context, references[i], reference_mask)
            recorded.append(normed)
            if h is not None:
                h = constrain(h)
        if self.cut_last:
            return None, recorded
        h = conv(c, 1, name="proj_out", **kw)(h.reshape(n, hgt, wid, inner))
        return h + x, recorded
