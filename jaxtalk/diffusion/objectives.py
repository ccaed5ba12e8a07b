"""Training objectives: forward noising, prediction targets and their conversions, MSE loss.

Generic over array shapes: per-example coefficients are gathered at `t` (shape (B,)) and
broadcast over the remaining axes of x. `t` indexes the schedule's steps (for a training
schedule that is the original timestep).

The latent video diffusion recipes (AniPortrait, MegActor) add offset noise, Min-SNR-gamma
weighting and a `TrainObjective` record that pairs them with a `NoiseProcess`
(`latent_diffusion_loss`); layouts are channels-last, (B, F, H, W, C) or (B, H, W, C).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.diffusion.schedules import NoiseProcess, Schedule

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


# ----------------------------------------------------------------------------- latent diffusion


def offset_noise(rng, shape, strength: float = 0.0, dtype=jnp.float32):
    """Gaussian noise plus `strength` times one extra draw per (sample, channel), constant over
    frames and pixels, as AnimateDiff-based trainers add it (`noise += offset * randn(B, C, 1,
    1, 1)` in NCFHW); channels are the last axis here. Lets the model shift a whole
    channel's mean, i.e. learn very dark or bright videos."""
    k_noise, k_offset = jax.random.split(rng)
    noise = jax.random.normal(k_noise, shape, dtype)
    if not strength:
        return noise
    per_channel = (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
    return noise + strength * jax.random.normal(k_offset, per_channel, dtype)


def snr(schedule: Schedule, t, dtype=jnp.float32):
    """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) at timesteps t (B,); 0 at the last
    step of a zero-terminal-SNR schedule."""
    ab = np.asarray(schedule.alphas_cumprod, np.float64)
    values = np.divide(ab, 1.0 - ab, out=np.full_like(ab, np.inf), where=ab < 1.0)
    return extract(values, t, 1, dtype)


def min_snr_weights(snr_t, gamma: float, prediction: str):
    """Min-SNR-gamma loss weights (Hang et al. 2023) per example.

    eps: min(snr, gamma) / snr, taken as its limit 1 where snr == 0 (zero-terminal-SNR);
    v:   min(snr + 1, gamma) / (snr + 1), as AniPortrait's train_stage_{1,2}.py compute it
         (they add one to the SNR before both the clamp and the division; diffusers'
         train_text_to_image.py clamps the plain SNR instead).
    """
    if prediction == "v":
        s = snr_t + 1.0
        return jnp.minimum(s, gamma) / s
    if prediction == "eps":
        safe = jnp.where(snr_t > 0, snr_t, 1.0)
        return jnp.where(snr_t > 0, jnp.minimum(snr_t, gamma) / safe, 1.0)
    raise ValueError(f"Min-SNR weighting is defined for 'eps' and 'v', not {prediction!r}")


@dataclasses.dataclass(frozen=True)
class TrainObjective:
    """What a latent diffusion recipe trains: the forward process, the parameterisation,
    offset noise, Min-SNR gamma (0 = plain MSE) and the condition-dropout ratio its task
    applies (the unconditional half of classifier-free guidance)."""

    process: NoiseProcess = NoiseProcess()
    prediction: str = "eps"
    noise_offset: float = 0.0
    snr_gamma: float = 0.0
    uncond_ratio: float = 0.0

    def __post_init__(self):
        if self.prediction not in ("eps", "v"):
            raise ValueError(f"prediction must be 'eps' or 'v', got {self.prediction!r}")


def latent_diffusion_loss(objective: TrainObjective, schedule: Schedule, denoise_fn, x0, rng):
    """One training loss as the releases compute it: uniform t, offset noise, q_sample, the
    target of the objective's parameterisation, per-example MSE times the Min-SNR weight.
    Returns (per-example loss (B,), aux with t, noise, x_t, model_output, weights); the
    releases' scalar loss is its mean. `denoise_fn(x_t, t)` gets the (B,) timesteps."""
    t_rng, n_rng = jax.random.split(rng)
    t = sample_timesteps(t_rng, x0.shape[0], schedule.num_timesteps)
    noise = offset_noise(n_rng, x0.shape, objective.noise_offset, x0.dtype)
    x_t = q_sample(schedule, x0, t, noise)
    out = denoise_fn(x_t, jnp.asarray(schedule.timesteps)[t])
    target = prediction_target(objective.prediction, schedule, x0, noise, t)
    loss = mse_loss(out, target)
    if objective.snr_gamma > 0:
        weights = min_snr_weights(
            snr(schedule, t, loss.dtype), objective.snr_gamma, objective.prediction
        )
    else:
        weights = jnp.ones_like(loss)
    aux = {"t": t, "noise": noise, "x_t": x_t, "model_output": out, "weights": weights}
    return loss * weights, aux
