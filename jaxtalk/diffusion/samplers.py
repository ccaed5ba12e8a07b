"""DDIM and DDPM (ancestral) samplers over any `denoise_fn(x_t, t) -> model_output`.

`t` handed to denoise_fn is a (B,) int32 array of *original* timesteps (980, 960, ... for
50 DDIM steps of a 1000-step process), as the released AniTalker sampler feeds its model.
The loop is a `lax.scan`, so a sampler call jit-compiles once per step count; the
denoiser is traced once. x0 clamping ("clip_denoised" in guided-diffusion) is optional.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.diffusion import objectives
from jaxtalk.diffusion.schedules import Schedule, respace, space_timesteps

DenoiseFn = Callable[[jax.Array, jax.Array], jax.Array]


def _predict_x0(denoise_fn, schedule, prediction, x, i, clip_x0):
    """Model call at step i of `schedule`; returns (x0, eps) with x0 optionally clamped and
    eps re-derived from the clamped x0 (as guided-diffusion does)."""
    b = x.shape[0]
    steps = jnp.full((b,), i, jnp.int32)
    t_orig = jnp.asarray(schedule.timesteps, jnp.int32)[steps]
    out = denoise_fn(x, t_orig)
    hi = jnp.promote_types(x.dtype, jnp.float32)  # the update in >= fp32, never below x
    x0, eps = objectives.x0_and_eps(prediction, schedule, x, steps, out.astype(hi))
    if clip_x0 is not None:
        x0 = jnp.clip(x0, -clip_x0, clip_x0)
        eps = objectives.eps_from_x0(schedule, x, steps, x0)
    return x0, eps, steps


def ddim_step(schedule: Schedule, x, x0, eps, steps, eta: float, noise):
    """DDIM update (Song et al. eq. 12) from step i to i-1 of `schedule`."""
    ab = objectives.extract(schedule.alphas_cumprod, steps, x.ndim, x.dtype)
    ab_prev = objectives.extract(schedule.alphas_cumprod_prev, steps, x.ndim, x.dtype)
    sigma = eta * jnp.sqrt((1 - ab_prev) / (1 - ab)) * jnp.sqrt(1 - ab / ab_prev)
    mean = x0 * jnp.sqrt(ab_prev) + jnp.sqrt(jnp.maximum(1 - ab_prev - sigma**2, 0.0)) * eps
    nonzero = (steps != 0).astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return mean + nonzero * sigma * noise


def sampling_schedule(
    schedule: Schedule, num_steps: int | None = None, spacing: str = "ddim"
) -> Schedule:
    """The respaced schedule a `num_steps` sampler runs (the full one when None)."""
    if num_steps is None or num_steps == schedule.num_timesteps:
        return schedule
    return respace(schedule, space_timesteps(schedule.num_timesteps, num_steps, spacing))


def ddim_sample(
    denoise_fn: DenoiseFn,
    x_T,
    schedule: Schedule,
    num_steps: int | None = 50,
    eta: float = 0.0,
    clip_x0: float | None = 1.0,
    rng=None,
    prediction: str = "eps",
    spacing: str = "ddim",
):
    """DDIM from x_T (any shape, batch first) to x_0. `rng` is needed only when eta > 0.

    AniTalker's release: linear T=1000 schedule, num_steps=50 ("ddim" spacing: 0..980 by
    20), eta 0, clip_x0 1.0, eps prediction.
    """
    sched = sampling_schedule(schedule, num_steps, spacing)
    if eta > 0 and rng is None:
        raise ValueError("ddim_sample with eta > 0 needs an rng")
    rng = jax.random.PRNGKey(0) if rng is None else rng

    def body(carry, i):
        x, key = carry
        key, sub = jax.random.split(key)
        x0, eps, steps = _predict_x0(denoise_fn, sched, prediction, x, i, clip_x0)
        noise = jax.random.normal(sub, x.shape, x0.dtype) if eta > 0 else jnp.zeros_like(x)
        x = ddim_step(sched, x, x0, eps, steps, eta, noise).astype(x_T.dtype)
        return (x, key), None

    order = jnp.arange(sched.num_timesteps - 1, -1, -1)
    (x, _), _ = jax.lax.scan(body, (x_T, rng), order)
    return x


def ddpm_sample(
    denoise_fn: DenoiseFn,
    x_T,
    schedule: Schedule,
    rng,
    num_steps: int | None = None,
    variance: str = "fixed_large",
    clip_x0: float | None = 1.0,
    prediction: str = "eps",
    spacing: str = "ddim",
):
    """Ancestral sampling: x_{t-1} ~ N(posterior mean(x0_hat, x_t), fixed variance).

    variance: "fixed_large" (betas; guided-diffusion / AniTalker default) or "fixed_small"
    (the true posterior variance). No noise is added at the last step.
    """
    sched = sampling_schedule(schedule, num_steps, spacing)
    if variance == "fixed_large":
        log_var = np.log(sched.fixed_large_variance())
    elif variance == "fixed_small":
        log_var = sched.posterior_log_variance_clipped
    else:
        raise ValueError(f"unknown variance {variance!r}")

    def body(carry, i):
        x, key = carry
        key, sub = jax.random.split(key)
        x0, _, steps = _predict_x0(denoise_fn, sched, prediction, x, i, clip_x0)
        mean = (
            objectives.extract(sched.posterior_mean_coef1, steps, x.ndim, x.dtype) * x0
            + objectives.extract(sched.posterior_mean_coef2, steps, x.ndim, x.dtype) * x
        )
        std = jnp.exp(0.5 * objectives.extract(log_var, steps, x.ndim, x.dtype))
        nonzero = (steps != 0).astype(x0.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
        noise = jax.random.normal(sub, x.shape, x0.dtype)
        return ((mean + nonzero * std * noise).astype(x_T.dtype), key), None

    order = jnp.arange(sched.num_timesteps - 1, -1, -1)
    (x, _), _ = jax.lax.scan(body, (x_T, rng), order)
    return x
