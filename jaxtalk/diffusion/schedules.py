"""Noise schedules: betas, the quantities derived from them, timestep spacing and respacing.

Everything is computed once in float64 numpy (as guided-diffusion / diff-ae / diffusers do)
and handed to JAX as float32 constants, so a `Schedule` is a static, hashable-free bundle
that jit-compiled samplers and train steps close over.

Two families of helpers live here. AniTalker's (guided-diffusion semantics): `make_schedule`,
`space_timesteps`, `respace`. Stable Diffusion's (diffusers semantics, used by the latent
video diffusion releases): `sd_betas`, the `NoiseProcess` record and `inference_timesteps`,
which reproduces `DDIMScheduler.set_timesteps` (descending, with `steps_offset`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np


def linear_betas(
    num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02
) -> np.ndarray:
    """Ho et al.'s linear schedule, scaled by 1000/T so other T keep the same shape."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def scaled_linear_betas(
    num_timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> np.ndarray:
    """Stable Diffusion's schedule: linear in sqrt(beta)."""
    return np.linspace(beta_start**0.5, beta_end**0.5, num_timesteps, dtype=np.float64) ** 2


def cosine_betas(
    num_timesteps: int = 1000, s: float = 0.008, max_beta: float = 0.999
) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule: alpha_bar(t) = cos((t/T + s)/(1 + s) * pi/2)^2."""

    def alpha_bar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    return np.array(
        [
            min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), max_beta)
            for i in range(num_timesteps)
        ],
        np.float64,
    )


def rescale_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Lin et al. 2023: shift/scale sqrt(alpha_bar) so the last step has SNR 0 exactly
    while the first step keeps its value."""
    sqrt_ab = np.sqrt(np.cumprod(1.0 - np.asarray(betas, np.float64)))
    first, last = sqrt_ab[0], sqrt_ab[-1]
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    alpha_bar = sqrt_ab**2
    alphas = np.concatenate([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1.0 - alphas


def named_betas(name: str, num_timesteps: int = 1000, zero_terminal_snr: bool = False):
    makers = {"linear": linear_betas, "scaled_linear": scaled_linear_betas, "cosine": cosine_betas}
    if name not in makers:
        raise ValueError(f"unknown beta schedule {name!r}; choose one of {sorted(makers)}")
    betas = makers[name](num_timesteps)
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas


def sd_betas(
    name: str,
    num_timesteps: int = 1000,
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    zero_terminal_snr: bool = False,
) -> np.ndarray:
    """diffusers' `beta_schedule` names: "linear" is linspace(start, end) with no 1000/T
    rescaling (unlike `linear_betas`), "scaled_linear" is linear in sqrt(beta); then the
    optional zero-terminal-SNR rescale (`rescale_betas_zero_snr`)."""
    if name == "linear":
        betas = np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    elif name == "scaled_linear":
        betas = scaled_linear_betas(num_timesteps, beta_start, beta_end)
    else:
        raise ValueError(f"unknown beta schedule {name!r}; choose 'linear' or 'scaled_linear'")
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A discrete diffusion process; all arrays are float64 numpy of length T.

    `timesteps[i]` is the timestep of the original (training) process that step i of this
    one stands for: arange(T) for a full schedule, the kept steps after `respace`.
    Denoisers are always given these original timesteps.
    """

    betas: np.ndarray
    timesteps: np.ndarray

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    @property
    def alphas_cumprod_prev(self) -> np.ndarray:
        return np.concatenate([[1.0], self.alphas_cumprod[:-1]])

    @property
    def sqrt_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(self.alphas_cumprod)

    @property
    def sqrt_one_minus_alphas_cumprod(self) -> np.ndarray:
        return np.sqrt(1.0 - self.alphas_cumprod)

    @property
    def posterior_variance(self) -> np.ndarray:
        """Variance of q(x_{t-1} | x_t, x_0) ("fixed_small")."""
        return self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_log_variance_clipped(self) -> np.ndarray:
        v = self.posterior_variance
        return np.log(np.append(v[1], v[1:])) if len(v) > 1 else np.log(np.maximum(v, 1e-20))

    @property
    def posterior_mean_coef1(self) -> np.ndarray:
        return self.betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)

    @property
    def posterior_mean_coef2(self) -> np.ndarray:
        return (
            (1.0 - self.alphas_cumprod_prev)
            * np.sqrt(1.0 - self.betas)
            / (1.0 - self.alphas_cumprod)
        )

    def fixed_large_variance(self) -> np.ndarray:
        """guided-diffusion's "fixed_large": betas, with the first entry replaced by the
        posterior variance of step 1 for a better decoder likelihood."""
        return np.append(self.posterior_variance[1], self.betas[1:])


def make_schedule(
    name: str = "linear", num_timesteps: int = 1000, zero_terminal_snr: bool = False
) -> Schedule:
    """The training process, e.g. AniTalker's `make_schedule("linear", 1000)`."""
    betas = named_betas(name, num_timesteps, zero_terminal_snr)
    return Schedule(betas=betas, timesteps=np.arange(num_timesteps))


def space_timesteps(num_timesteps: int, num_steps: int, spacing: str = "ddim") -> np.ndarray:
    """Which original timesteps a `num_steps` sampler visits, ascending.

    "ddim": the smallest integer stride giving exactly num_steps steps, from 0 (the
      guided-diffusion / AniTalker "ddimN" rule: 50 of 1000 -> 0, 20, ..., 980);
    "leading": arange(num_steps) * (T // num_steps) (+ offset 0), diffusers' default;
    "trailing": round(arange(T, 0, -T/num_steps)) - 1, which includes T-1 (zero-SNR papers);
    "linspace": round(linspace(0, T-1, num_steps)).
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_timesteps}], got {num_steps}")
    if spacing == "ddim":
        for stride in range(1, num_timesteps + 1):
            steps = np.arange(0, num_timesteps, stride)
            if len(steps) == num_steps:
                return steps
        raise ValueError(
            f"cannot take exactly {num_steps} of {num_timesteps} steps with an "
            "integer stride; use spacing='linspace'"
        )
    if spacing == "leading":
        return np.arange(num_steps) * (num_timesteps // num_steps)
    if spacing == "trailing":
        return np.sort(
            np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)).astype(np.int64) - 1
        )
    if spacing == "linspace":
        return np.round(np.linspace(0, num_timesteps - 1, num_steps)).astype(np.int64)
    raise ValueError(f"unknown spacing {spacing!r}")


def respace(schedule: Schedule, timesteps) -> Schedule:
    """The sub-process that visits only `timesteps` (ascending original indices): its
    alpha_bar at step i equals the original alpha_bar at timesteps[i]."""
    timesteps = np.asarray(timesteps, np.int64)
    if np.any(np.diff(timesteps) <= 0):
        raise ValueError("timesteps must be strictly increasing")
    ab = schedule.alphas_cumprod[timesteps]
    betas = 1.0 - ab / np.concatenate([[1.0], ab[:-1]])
    return Schedule(betas=betas, timesteps=schedule.timesteps[timesteps])


SPACINGS = ("leading", "trailing", "linspace")


def inference_timesteps(
    num_train_timesteps: int, num_steps: int, spacing: str = "leading", steps_offset: int = 0
) -> np.ndarray:
    """The timesteps a diffusers scheduler visits, in sampling (descending) order, exactly as
    `DDIMScheduler.set_timesteps` computes them:

    "leading":  arange(N) * (T // N) + steps_offset  (SD's default; offset 1 in its config)
    "trailing": round(arange(T, 0, -T / N)) - 1      (always starts at T - 1; zero-SNR paper)
    "linspace": round(linspace(0, T - 1, N))

    `steps_offset` only applies to "leading", as in diffusers.
    """
    if not 1 <= num_steps <= num_train_timesteps:
        raise ValueError(f"num_steps must be in [1, {num_train_timesteps}], got {num_steps}")
    if spacing == "leading":
        steps = np.arange(num_steps, dtype=np.int64) * (num_train_timesteps // num_steps)
        return steps[::-1] + steps_offset
    if spacing == "trailing":
        ratio = num_train_timesteps / num_steps
        return np.round(np.arange(num_train_timesteps, 0, -ratio)).astype(np.int64) - 1
    if spacing == "linspace":
        return np.round(np.linspace(0, num_train_timesteps - 1, num_steps))[::-1].astype(np.int64)
    raise ValueError(f"unknown timestep spacing {spacing!r}; choose one of {SPACINGS}")


@dataclasses.dataclass(frozen=True)
class NoiseProcess:
    """The forward process a latent diffusion model was trained on (or is sampled over),
    named as diffusers' scheduler config names it; a small record paper configs carry."""

    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    num_train_timesteps: int = 1000
    zero_terminal_snr: bool = False

    def betas(self) -> np.ndarray:
        return sd_betas(
            self.beta_schedule,
            self.num_train_timesteps,
            self.beta_start,
            self.beta_end,
            self.zero_terminal_snr,
        )

    def schedule(self) -> Schedule:
        return Schedule(betas=self.betas(), timesteps=np.arange(self.num_train_timesteps))
