"""Non-saturating logistic GAN losses (StyleGAN2 / LIA), the R1 penalty, and the hinge GAN
and feature-matching losses of face-vid2vid / LivePortrait (pix2pixHD-style).

LIA trained with `g = softplus(-D(fake)).mean()` and
`d = softplus(-D(real)).mean() + softplus(D(fake)).mean()`; its trainer built the R1
machinery (d_reg_every, Adam ratios) but never applied R1. `r1_penalty` is here for
recipes that want it (StyleGAN2: gamma/2 * E||grad_x D(x)||^2, lazily every N steps).
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp


def g_nonsaturating_loss(fake_logits):
    """Generator side: mean softplus(-D(G(z)))."""
    return jnp.mean(jax.nn.softplus(-fake_logits.astype(jnp.float32)))


def d_nonsaturating_loss(real_logits, fake_logits):
    """Discriminator side: mean softplus(-D(x)) + mean softplus(D(G(z)))."""
    return jnp.mean(jax.nn.softplus(-real_logits.astype(jnp.float32))) + jnp.mean(
        jax.nn.softplus(fake_logits.astype(jnp.float32))
    )


def r1_penalty(logits_fn: Callable[[jnp.ndarray], jnp.ndarray], real):
    """E_x ||d sum(D(x)) / dx||^2 over the real batch (per-sample squared grad norm, mean)."""
    grad = jax.grad(lambda x: jnp.sum(logits_fn(x).astype(jnp.float32)))(real)
    return jnp.mean(jnp.sum(jnp.square(grad.astype(jnp.float32)), axis=tuple(range(1, grad.ndim))))


def d_r1_loss(
    logits_fn: Callable[[jnp.ndarray], jnp.ndarray], real, gamma: float = 10.0, every: int = 16
):
    """The lazy-regularisation R1 term StyleGAN2 adds every `every` D steps:
    gamma / 2 * R1 * every (the `* every` keeps its weight per step unchanged)."""
    return 0.5 * gamma * r1_penalty(logits_fn, real) * every


def d_hinge_loss(real_logits, fake_logits):
    """Discriminator side: mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    real = real_logits.astype(jnp.float32)
    fake = fake_logits.astype(jnp.float32)
    return jnp.mean(jax.nn.relu(1.0 - real)) + jnp.mean(jax.nn.relu(1.0 + fake))


def g_hinge_loss(fake_logits):
    """Generator side of the hinge GAN: -mean D(G(z))."""
    return -jnp.mean(fake_logits.astype(jnp.float32))


def feature_matching_loss(real_features: Sequence, fake_features: Sequence):
    """sum over the discriminator's layers of mean |f(fake) - stop_grad(f(real))|."""
    if len(real_features) != len(fake_features):
        raise ValueError(f"{len(real_features)} real but {len(fake_features)} fake feature maps")
    total = jnp.zeros((), jnp.float32)
    for r, f in zip(real_features, fake_features):
        r = jax.lax.stop_gradient(r.astype(jnp.float32))
        total = total + jnp.mean(jnp.abs(f.astype(jnp.float32) - r))
    return total
