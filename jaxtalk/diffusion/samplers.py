"""DDIM and DDPM (ancestral) samplers over any `denoise_fn(x_t, t) -> model_output`.

`t` handed to denoise_fn is a (B,) int32 array of *original* timesteps (980, 960, ... for
50 DDIM steps of a 1000-step process), as the released AniTalker sampler feeds its model.
The loop is a `lax.scan`, so a sampler call jit-compiles once per step count; the
denoiser is traced once. x0 clamping ("clip_denoised" in guided-diffusion) is optional.

Latent video diffusion (AniPortrait, MegActor) samples with diffusers' `DDIMScheduler`
instead, whose step differs from the guided-diffusion one above: the previous alpha_bar is
read at `t - T // N` (not at the next visited timestep), the final one is 1 or alpha_bar[0]
(`set_alpha_to_one`), clipping x0 leaves eps as predicted. `DDIMConfig`, `ddim_table`,
`ddim_update` reproduce it; `sample_video` runs it as one `lax.scan` with classifier-free
guidance (one batched call on [uncond, cond]) and AnimateDiff's overlapping context windows
(an inner `lax.scan` over windows, so compile time and activation memory do not grow with
the video length).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxtalk.diffusion import objectives
from jaxtalk.diffusion.context import ContextWindows, window_arrays
from jaxtalk.diffusion.schedules import (
    NoiseProcess,
    Schedule,
    inference_timesteps,
    respace,
    space_timesteps,
)

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


# ----------------------------------------------------------------------------- diffusers DDIM


@dataclasses.dataclass(frozen=True)
class DDIMConfig:
    """diffusers' DDIMScheduler settings; the defaults are its defaults (SD's released
    scheduler_config sets steps_offset 1 and clip_sample False)."""

    process: NoiseProcess = NoiseProcess()
    prediction: str = "eps"  # "eps" | "v" | "x0" (diffusers: epsilon, v_prediction, sample)
    timestep_spacing: str = "leading"
    steps_offset: int = 0
    clip_sample: bool = True
    clip_sample_range: float = 1.0
    set_alpha_to_one: bool = True
    num_steps: int = 50
    eta: float = 0.0

    def __post_init__(self):
        if self.prediction not in objectives.PREDICTIONS:
            raise ValueError(
                f"unknown prediction {self.prediction!r}; choose one of {objectives.PREDICTIONS}"
            )


@dataclasses.dataclass(frozen=True)
class DDIMTable:
    """Per sampling step (in sampling order): the timestep the model is given and the
    alpha_bar pair the update uses, all float64 numpy."""

    timesteps: np.ndarray
    alpha: np.ndarray
    alpha_prev: np.ndarray


def ddim_table(config: DDIMConfig, num_steps: int | None = None) -> DDIMTable:
    """`DDIMScheduler.set_timesteps(N)` and the alpha_bar pair each `step` reads."""
    n = config.num_steps if num_steps is None else num_steps
    total = config.process.num_train_timesteps
    ts = inference_timesteps(total, n, config.timestep_spacing, config.steps_offset)
    if ts.max() >= total or ts.min() < 0:
        raise ValueError(f"timesteps {ts.min()}..{ts.max()} fall outside [0, {total})")
    ab = config.process.schedule().alphas_cumprod
    prev = ts - total // n
    final = 1.0 if config.set_alpha_to_one else ab[0]
    alpha_prev = np.where(prev >= 0, ab[np.maximum(prev, 0)], final)
    return DDIMTable(timesteps=ts, alpha=ab[ts], alpha_prev=alpha_prev)


def ddim_update(
    config: DDIMConfig, x, model_output, alpha, alpha_prev, noise=None
) -> tuple[jax.Array, jax.Array]:
    """One `DDIMScheduler.step`: (x_prev, x0). alpha / alpha_prev are scalars (or arrays
    broadcasting against x); `noise` is the variance noise, used only when eta > 0. The
    arithmetic runs in x's dtype or float32 when x is narrower."""
    hi = jnp.promote_types(x.dtype, jnp.float32)
    x, out = x.astype(hi), model_output.astype(hi)
    a, a_prev = jnp.asarray(alpha, hi), jnp.asarray(alpha_prev, hi)
    sqrt_a, sqrt_b = jnp.sqrt(a), jnp.sqrt(1 - a)
    if config.prediction == "eps":
        x0, eps = (x - sqrt_b * out) / sqrt_a, out
    elif config.prediction == "v":
        x0, eps = sqrt_a * x - sqrt_b * out, sqrt_a * out + sqrt_b * x
    else:
        x0, eps = out, (x - sqrt_a * out) / sqrt_b
    if config.clip_sample:
        x0 = jnp.clip(x0, -config.clip_sample_range, config.clip_sample_range)
    std = config.eta * jnp.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    x_prev = jnp.sqrt(a_prev) * x0 + jnp.sqrt(jnp.maximum(1 - a_prev - std**2, 0)) * eps
    if config.eta > 0:
        if noise is None:
            raise ValueError("a DDIM step with eta > 0 needs its variance noise")
        x_prev = x_prev + std * noise.astype(hi)
    return x_prev, x0


# ----------------------------------------------------------------------------- video sampling

# denoise_fn(x (N, K, H, W, C), t (N,) int32, cond pytree with batch N, frames (K,) int32):
# the model's output for a window of K frames of the video (`frames` indexes the video, so
# the model can gather its own per-frame conditions, e.g. pose features).
VideoDenoiseFn = Callable[[jax.Array, jax.Array, Any, jax.Array], jax.Array]


def _concat(a, b):
    return jax.tree_util.tree_map(lambda u, c: jnp.concatenate([u, c], axis=0), a, b)


def window_prediction(
    denoise_fn: VideoDenoiseFn,
    x,
    t,
    cond,
    uncond=None,
    guidance_scale: float = 1.0,
    context: ContextWindows | None = None,
):
    """The guided model output for a whole video x (B, F, H, W, C) at timestep t.

    With guidance (scale > 1, `uncond` given) every call is one batch [uncond, cond] of 2B;
    with context windows the calls run over the windows (a `lax.scan`), each window's output
    is added to its frames and every frame is divided by the number of windows that cover
    it; then out = uncond + scale * (cond - uncond). That is AniPortrait's
    pipeline_pose2vid_long order (average, then guide). Without guidance the release skips
    the average; here it always averages (the same for non-overlapping windows).
    """
    b, f = x.shape[:2]
    guided = guidance_scale > 1.0 and uncond is not None
    batch_cond = _concat(uncond, cond) if guided else cond
    n = 2 * b if guided else b
    t_batch = jnp.full((n,), t, jnp.int32)

    def call(frames):
        xw = jnp.take(x, frames, axis=1)
        xw = jnp.concatenate([xw, xw], axis=0) if guided else xw
        return denoise_fn(xw, t_batch, batch_cond, frames)

    if context is None or f <= context.size:
        pred = call(jnp.arange(f, dtype=jnp.int32))
    else:
        idx, weights, counts = window_arrays(context.windows(f), f)
        if counts.min() <= 0:
            raise ValueError(
                f"context windows {context} leave frames of a {f}-frame video uncovered"
            )
        acc_dtype = jnp.promote_types(x.dtype, jnp.float32)
        w = jnp.asarray(weights, acc_dtype)

        def body(acc, window):
            frames, weight = window
            out = call(frames).astype(acc_dtype)
            out = out * weight.reshape((1, -1) + (1,) * (out.ndim - 2))
            return acc.at[:, frames].add(out), None

        acc = jnp.zeros((n,) + x.shape[1:], acc_dtype)
        acc, _ = jax.lax.scan(body, acc, (jnp.asarray(idx), w))
        pred = acc / jnp.asarray(counts, acc_dtype).reshape((1, f) + (1,) * (x.ndim - 2))
    if not guided:
        return pred
    pred_uncond, pred_cond = jnp.split(pred, 2, axis=0)
    return pred_uncond + guidance_scale * (pred_cond - pred_uncond)


def sample_video(
    denoise_fn: VideoDenoiseFn,
    x_T,
    config: DDIMConfig,
    cond=None,
    make_uncond: Callable[[Any], Any] | None = None,
    guidance_scale: float = 1.0,
    context: ContextWindows | None = None,
    rng=None,
    num_steps: int | None = None,
):
    """DDIM sampling of video latents x_T (B, F, H, W, C) as the long-video pipelines run it.

    `cond` is a pytree whose leaves have a leading batch axis (B, ...); `make_uncond(cond)`
    is the model's unconditional half of the same structure (AniPortrait: a zero CLIP
    embedding and reference attention off, e.g. a per-example flag leaf); guidance applies when
    `guidance_scale` > 1. x_T is scaled by the scheduler's init sigma, 1 for DDIM. `rng`
    draws the variance noise and is needed only when eta > 0. jit-able: one trace of the
    step body, the window loop inside it.
    """
    table = ddim_table(config, num_steps)
    if config.eta > 0 and rng is None:
        raise ValueError("sample_video with eta > 0 needs an rng")
    rng = jax.random.PRNGKey(0) if rng is None else rng
    uncond = make_uncond(cond) if (make_uncond is not None and guidance_scale > 1.0) else None
    hi = jnp.promote_types(x_T.dtype, jnp.float32)

    def body(carry, step):
        x, key = carry
        t, a, a_prev = step
        key, sub = jax.random.split(key)
        out = window_prediction(denoise_fn, x, t, cond, uncond, guidance_scale, context)
        noise = jax.random.normal(sub, x.shape, hi) if config.eta > 0 else None
        x, _ = ddim_update(config, x, out, a, a_prev, noise)
        return (x.astype(x_T.dtype), key), None

    steps = (
        jnp.asarray(table.timesteps, jnp.int32),
        jnp.asarray(table.alpha, hi),
        jnp.asarray(table.alpha_prev, hi),
    )
    (x, _), _ = jax.lax.scan(body, (x_T, rng), steps)
    return x
