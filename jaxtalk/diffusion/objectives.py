"""Training objectives: forward noising, prediction targets and their conversions, MSE loss.

Generic over array shapes: per-example coefficients are gathered at `t` (shape (B,)) and
broadcast over the remaining axes of x. `t` indexes the schedule's steps (for a training
schedule that is the original timestep).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxtalk.diffusion.schedules import Schedule

PREDICTIONS = ("eps", "v", "x0")


def extract(values, t, ndim: int, dtype=jnp.float32):
    """values[t] shaped (B, 1, ..., 1) to broadcast against an ndim-dimensional x, in
    `dtype` or float32 when that is narrower (a float64 x gets float64 coefficients)."""
    out = jnp.asarray(values, jnp.promote_types(dtype, jnp.float32))[jnp.asarray(t, jnp.int32)]
    return out.reshape(out.shape + (1,) * (ndim - out.ndim))


def sample_timesteps(rng, batch: int, num_timesteps: int):
    """Uniform training timesteps (the release's UniformSampler)."""
    return jax.random.randint(rng, (batch,), 0, num_timesteps)


def q_sample(schedule: Schedule, x0, t, noise):
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    a = extract(schedule.sqrt_alphas_cumprod, t, x0.ndim, x0.dtype)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim, x0.dtype)
    return (a * x0 + s * noise).astype(x0.dtype)


def prediction_target(prediction: str, schedule: Schedule, x0, noise, t):
    """What a model with this parameterisation should output for (x0, noise, t)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":  # Salimans & Ho: v = sqrt(a) eps - sqrt(1-a) x0
        a = extract(schedule.sqrt_alphas_cumprod, t, x0.ndim, x0.dtype)
        s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0.ndim, x0.dtype)
        return a * noise - s * x0
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def x0_and_eps(prediction: str, schedule: Schedule, x_t, t, model_output):
    """(x0, eps) implied by a model output of the given parameterisation at step t."""
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim, x_t.dtype)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim, x_t.dtype)
    if prediction == "eps":
        return (x_t - s * model_output) / a, model_output
    if prediction == "x0":
        return model_output, (x_t - a * model_output) / s
    if prediction == "v":
        return a * x_t - s * model_output, s * x_t + a * model_output
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def eps_from_x0(schedule: Schedule, x_t, t, x0):
    a = extract(schedule.sqrt_alphas_cumprod, t, x_t.ndim, x_t.dtype)
    s = extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim, x_t.dtype)
    return (x_t - a * x0) / s


def mean_flat(x):
    """Mean over every axis but the batch axis: (B, ...) -> (B,)."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def mse_loss(model_output, target):
    """Per-example mean squared error (B,), computed in float32 or wider."""
    hi = jnp.promote_types(jnp.promote_types(model_output.dtype, target.dtype), jnp.float32)
    diff = model_output.astype(hi) - target.astype(hi)
    return mean_flat(jnp.square(diff))


def diffusion_loss(denoise_fn, schedule: Schedule, x0, rng, prediction: str = "eps"):
    """One-call DDPM training loss: draws t and noise, noises x0, returns
    (per-example MSE (B,), aux dict with t, noise, x_t and the model output)."""
    t_rng, n_rng = jax.random.split(rng)
    t = sample_timesteps(t_rng, x0.shape[0], schedule.num_timesteps)
    noise = jax.random.normal(n_rng, x0.shape, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    out = denoise_fn(x_t, jnp.asarray(schedule.timesteps)[t])
    loss = mse_loss(out, prediction_target(prediction, schedule, x0, noise, t))
    return loss, {"t": t, "noise": noise, "x_t": x_t, "model_output": out}
