"""AAM-Softmax (additive angular margin, ArcFace) identity head and loss.

AniTalker's identity metric learning (the paper's ablation prefers it to a triplet loss):
logits = s * cos(theta_y + m) for the true class, s * cos(theta_j) otherwise, with
cos(theta) between the L2-normalised embedding and the L2-normalised class weights, then
cross entropy. Conventions as the widely used voxceleb_trainer AAMSoftmax: without
`easy_margin`, where theta_y + m would pass pi the logit becomes cos(theta) - m*sin(m)
(threshold cos(pi - m)), keeping it monotonic. margin 0.2 and scale 30 by default.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


def _l2n(x, axis=-1, eps=1e-12):
    return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), eps)


def aam_softmax_logits(
    cosine, labels, margin: float = 0.2, scale: float = 30.0, easy_margin: bool = False
):
    """cosine (B, K) and int labels (B,) -> margin-adjusted, scaled logits (B, K)."""
    cosine = cosine.astype(jnp.float32)
    sine = jnp.sqrt(jnp.clip(1.0 - cosine * cosine, 0.0, 1.0))
    phi = cosine * math.cos(margin) - sine * math.sin(margin)
    if easy_margin:
        phi = jnp.where(cosine > 0, phi, cosine)
    else:
        th, mm = math.cos(math.pi - margin), math.sin(math.pi - margin) * margin
        phi = jnp.where(cosine - th > 0, phi, cosine - mm)
    onehot = jax.nn.one_hot(labels, cosine.shape[-1], dtype=cosine.dtype)
    return scale * (onehot * phi + (1.0 - onehot) * cosine)


class AAMSoftmax(nn.Module):
    """Class weights `weight` (embed_dim, num_classes); returns (loss, accuracy).

    Call with embeddings (B, D) and integer identity labels (B,)."""

    num_classes: int
    margin: float = 0.2
    scale: float = 30.0
    easy_margin: bool = False
    param_dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, embeddings, labels):
        weight = self.param(
            "weight",
            nn.with_logical_partitioning(nn.initializers.xavier_normal(), ("embed", "mlp")),
            (embeddings.shape[-1], self.num_classes),
            self.param_dtype,
        )
        cosine = jnp.dot(_l2n(embeddings.astype(jnp.float32)), _l2n(weight.astype(jnp.float32), 0))
        logits = aam_softmax_logits(cosine, labels, self.margin, self.scale, self.easy_margin)
        loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))
        accuracy = jnp.mean((jnp.argmax(cosine, -1) == labels).astype(jnp.float32))
        return loss, accuracy
