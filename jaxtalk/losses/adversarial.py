"""Non-saturating logistic GAN losses (StyleGAN2 / LIA) and the R1 penalty.

LIA trained with `g = softplus(-D(fake)).mean()` and
`d = softplus(-D(real)).mean() + softplus(D(fake)).mean()`; its trainer built the R1
machinery (d_reg_every, Adam ratios) but never applied R1. `r1_penalty` is here for
recipes that want it (StyleGAN2: gamma/2 * E||grad_x D(x)||^2, lazily every N steps).
"""

from __future__ import annotations

from typing import Callable

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
