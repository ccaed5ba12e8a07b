"""Scaled dot-product attention through one dispatch over kernels.

`attention(q, k, v)` computes softmax(q k^T * scale) v on (B, L, heads, head_dim) arrays,
with scale = head_dim ** -0.5 as PyTorch's scaled_dot_product_attention (and so diffusers)
applies it, and picks the kernel per platform and sequence length:

- "cudnn": cuDNN flash attention (`jax.nn.dot_product_attention(implementation="cudnn")`),
  on NVIDIA GPUs for fp16/bf16 with a head dim that is a multiple of 8 up to 128;
- "pallas": the Pallas flash-attention kernel on TPU, for sequence lengths that are
  multiples of its 128 block;
- "xla": the plain dot product, written out (logits and softmax in at least float32), for
  every other case and for short sequences (temporal attention over 16 frames, cross
  attention to a few tokens), where a fused kernel buys nothing;
- "dot_product": `jax.nn.dot_product_attention(implementation="xla")`, the library's
  version of the plain one.

"auto" takes the fused kernel of the platform when its constraints hold and the keys are
at least `FLASH_MIN_KEYS` long, else "xla". All choices take `kv_lengths` (B,): the keys of
sample b are its first kv_lengths[b], the rest are masked out (as if absent), which is how
reference attention is switched off per sample without a second pass.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("auto", "xla", "dot_product", "cudnn", "pallas")
FLASH_MIN_KEYS = 256  # below this many keys the plain dot product is as fast
_PALLAS_BLOCK = 128


def _platform() -> str:
    return jax.default_backend()


def _cudnn_ok(q, k) -> bool:
    d = q.shape[-1]
    return q.dtype in (jnp.float16, jnp.bfloat16) and d % 8 == 0 and d <= 128 and k.dtype == q.dtype


def _pallas_ok(q, k) -> bool:
    return q.shape[1] % _PALLAS_BLOCK == 0 and k.shape[1] % _PALLAS_BLOCK == 0


def choose(q, k, implementation: str = "auto") -> str:
    """The kernel `attention` runs for these shapes and dtypes on this platform."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation {implementation!r}; one of {IMPLEMENTATIONS}")
    if implementation != "auto":
        return implementation
    if k.shape[1] < FLASH_MIN_KEYS:
        return "xla"
    platform = _platform()
    if platform == "gpu" and _cudnn_ok(q, k):
        return "cudnn"
    if platform == "tpu" and _pallas_ok(q, k):
        return "pallas"
    return "xla"


def _key_mask(kv_lengths, num_keys: int):
    """(B, 1, 1, Lk) True where a key is present."""
    return (jnp.arange(num_keys)[None, :] < jnp.asarray(kv_lengths)[:, None])[:, None, None, :]


def dot_product_reference(q, k, v, scale: float, kv_lengths=None):
    """The plain dot product: logits and softmax in at least float32, the weighted sum of
    the values in their dtype."""
    hi = jnp.promote_types(q.dtype, jnp.float32)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q.astype(hi), k.astype(hi)) * jnp.asarray(scale, hi)
    if kv_lengths is not None:
        logits = jnp.where(_key_mask(kv_lengths, k.shape[1]), logits, jnp.finfo(hi).min)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def _pallas(q, k, v, scale: float, kv_lengths=None):
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    segments = None
    if kv_lengths is not None:
        b, lq, lk = q.shape[0], q.shape[1], k.shape[1]
        present = jnp.arange(lk)[None, :] < jnp.asarray(kv_lengths)[:, None]
        segments = fa.SegmentIds(q=jnp.ones((b, lq), jnp.int32), kv=present.astype(jnp.int32))
    out = fa.flash_attention(
        *(x.transpose(0, 2, 1, 3) for x in (q, k, v)), segment_ids=segments, sm_scale=scale
    )
    return out.transpose(0, 2, 1, 3)


def attention(
    q, k, v, *, implementation: str = "auto", scale: float | None = None, kv_lengths=None
):
    """softmax(q k^T * scale) v: q (B, Lq, H, D), k and v (B, Lk, H, D) -> (B, Lq, H, D)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    kind = choose(q, k, implementation)
    if kind == "xla":
        return dot_product_reference(q, k, v, scale, kv_lengths)
    if kind == "pallas":
        return _pallas(q, k, v, scale, kv_lengths)
    lengths = None if kv_lengths is None else jnp.asarray(kv_lengths, jnp.int32)
    return jax.nn.dot_product_attention(
        q,
        k,
        v,
        scale=scale,
        key_value_seq_lengths=lengths,
        implementation="xla" if kind == "dot_product" else "cudnn",
    )
