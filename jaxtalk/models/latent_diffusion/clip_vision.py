"""CLIP's image tower with its projection (transformers `CLIPVisionModelWithProjection`), NHWC.

The latent video diffusion systems condition their UNets' cross-attention on it:
AniPortrait on `image_embeds`, the projected pooled (class) token, as one context token
(lambdalabs/sd-image-variations-diffusers' image_encoder); MegActor on all 257 tokens,
each put through `post_layernorm` and `visual_projection` as the pooled one is
(megvii-research/megactor: `visual_projection(post_layernorm(last_hidden_state))`).

Structure (ViT-L/14: width 1024, 24 layers, 16 heads, MLP 4096, projection 768):
patch conv (no bias) -> prepend the class embedding -> add position embeddings ->
`pre_layrnorm` (transformers' spelling) -> pre-LN layers (attention with q/k/v/out biases,
MLP fc1 -> quick-GELU -> fc2) -> `last_hidden_state`; the class token through
`post_layernorm` is the pooled output, `visual_projection` (no bias) maps it to the
joint embedding space.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.models.layers.torch_nn import conv, dense, layer_norm

Dtype = Any

# OpenAI CLIP's pixel statistics (transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """The transformers `CLIPVisionConfig` fields that shape the network, and the
    projection width."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 14
    projection_dim: int = 768
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


CLIP_VIT_L14 = CLIPVisionConfig()  # 303,966,208 parameters
TINY_CLIP = CLIPVisionConfig(
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=28,
    patch_size=7,
    projection_dim=24,
)

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
}


@flax.struct.dataclass
class CLIPVisionOutput:
    image_embeds: jax.Array  # (B, projection_dim): the projected pooled token
    last_hidden_state: jax.Array  # (B, num_positions, hidden_size), before post_layernorm
    token_embeds: jax.Array  # (B, num_positions, projection_dim): every token projected


class _Module(nn.Module):
    config: CLIPVisionConfig = CLIP_VIT_L14
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @property
    def kw(self) -> dict:
        return dict(dtype=self.dtype, param_dtype=self.param_dtype)

    def norm(self, name: str) -> nn.LayerNorm:
        return layer_norm(name, self.config.layer_norm_eps, **self.kw)


class Embeddings(_Module):
    """Pixels (B, H, W, C) -> patch tokens with the class token first, plus positions."""

    @nn.compact
    def __call__(self, pixels):
        cfg = self.config
        p, d = cfg.patch_size, cfg.hidden_size
        patches = conv(d, p, stride=p, use_bias=False, name="patch_embedding", **self.kw)(
            pixels.astype(self.dtype)
        )
        b = patches.shape[0]
        patches = patches.reshape(b, -1, d)
        init = nn.initializers.normal(d**-0.5)
        cls = self.param(
            "class_embedding",
            nn.with_logical_partitioning(init, ("embed",)),
            (d,),
            self.param_dtype,
        )
        positions = self.param(
            "position_embedding",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "embed")),
            (cfg.num_positions, d),
            self.param_dtype,
        )
        cls = jnp.broadcast_to(cls.astype(self.dtype), (b, 1, d))
        tokens = jnp.concatenate([cls, patches], axis=1)
        if tokens.shape[1] != cfg.num_positions:
            raise ValueError(
                f"{pixels.shape[1]}x{pixels.shape[2]} pixels give {tokens.shape[1]} tokens; "
                f"the model has {cfg.num_positions} positions ({cfg.image_size}px images)"
            )
        return tokens + positions.astype(self.dtype)


class Attention(_Module):
    """Multi-head self-attention, q scaled by head_dim ** -0.5; softmax in >= float32."""

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        h = self.config.num_attention_heads
        split = lambda y: y.reshape(b, t, h, d // h)
        q = dense(d, ("embed", "heads"), "q_proj", **self.kw)(x) * (d // h) ** -0.5
        k = dense(d, ("embed", "heads"), "k_proj", **self.kw)(x)
        v = dense(d, ("embed", "heads"), "v_proj", **self.kw)(x)
        scores = jnp.einsum("bqhd,bkhd->bhqk", split(q), split(k))
        hi = jnp.promote_types(self.dtype, jnp.float32)
        probs = jax.nn.softmax(scores.astype(hi), axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, split(v)).reshape(b, t, d)
        return dense(d, ("heads", "embed"), "out_proj", **self.kw)(out)


class EncoderLayer(_Module):
    """x + attn(ln1(x)), then + fc2(act(fc1(ln2(x))))."""

    @nn.compact
    def __call__(self, x):
        cfg = self.config
        x = x + Attention(cfg, name="self_attn", **self.kw)(self.norm("layer_norm1")(x))
        y = dense(cfg.intermediate_size, ("embed", "mlp"), "fc1", **self.kw)(
            self.norm("layer_norm2")(x)
        )
        y = ACTIVATIONS[cfg.hidden_act](y)
        return x + dense(cfg.hidden_size, ("mlp", "embed"), "fc2", **self.kw)(y)


class CLIPVisionModelWithProjection(_Module):
    """Normalised pixels (B, image_size, image_size, 3), as `preprocess` makes them ->
    CLIPVisionOutput. `token_post_layernorm`: whether the all-token projection
    (`token_embeds`) applies `post_layernorm` first, as MegActor does (default), or
    projects the raw `last_hidden_state`."""

    token_post_layernorm: bool = True

    @nn.compact
    def __call__(self, pixels) -> CLIPVisionOutput:
        cfg = self.config
        x = self.norm("pre_layrnorm")(Embeddings(cfg, name="embeddings", **self.kw)(pixels))
        for i in range(cfg.num_hidden_layers):
            x = EncoderLayer(cfg, name=f"layers_{i}", **self.kw)(x)
        post_norm = self.norm("post_layernorm")
        projection = dense(
            cfg.projection_dim, ("embed", "mlp"), "visual_projection", use_bias=False, **self.kw
        )
        tokens = post_norm(x) if self.token_post_layernorm else x
        return CLIPVisionOutput(
            image_embeds=projection(post_norm(x[:, 0])),
            last_hidden_state=x,
            token_embeds=projection(tokens),
        )


def preprocess(images, size: int = 224) -> np.ndarray:
    """transformers' CLIPImageProcessor defaults on uint8 RGB images (H, W, 3) or a batch:
    resize the shorter side to `size` (PIL bicubic, the other side rounded down as
    transformers does), center-crop `size` x `size`, scale to [0, 1], normalise with the
    CLIP mean and std. -> float32 (B, size, size, 3)."""
    from PIL import Image

    batch = np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB images (B, H, W, 3), got {batch.dtype} {batch.shape}")
    out = []
    for image in batch:
        h, w = image.shape[:2]
        short, long = (h, w) if h <= w else (w, h)
        new_long = int(size * long / short)
        new_h, new_w = (size, new_long) if h <= w else (new_long, size)
        resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
        top, left = (new_h - size) // 2, (new_w - size) // 2
        out.append(resized[top : top + size, left : left + size])
    pixels = np.stack(out).astype(np.float32) / 255.0
    return ((pixels - np.float32(CLIP_MEAN)) / np.float32(CLIP_STD)).astype(np.float32)
