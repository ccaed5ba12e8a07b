"""Schedules, objectives and DDIM/DDPM samplers against closed-form numpy computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.diffusion import objectives, samplers, schedules


def test_linear_schedule_values():
    s = schedules.make_schedule("linear", 1000)
    assert s.betas[0] == pytest.approx(1e-4) and s.betas[-1] == pytest.approx(0.02)
    assert s.betas[1] - s.betas[0] == pytest.approx((0.02 - 1e-4) / 999)
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(s.alphas_cumprod, ab, rtol=1e-12)
    assert s.alphas_cumprod[-1] == pytest.approx(4.0358e-5, rel=1e-3)
    np.testing.assert_allclose(
        s.posterior_variance[1:], s.betas[1:] * (1 - ab[:-1]) / (1 - ab[1:]), rtol=1e-12
    )
    assert s.posterior_variance[0] == 0.0
    # 1000-step linear with T=250 keeps the same shape (betas scaled by 4)
    assert schedules.linear_betas(250)[-1] == pytest.approx(0.08)


def test_cosine_and_zero_terminal_snr():
    c = schedules.make_schedule("cosine", 100)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    np.testing.assert_allclose(
        c.alphas_cumprod[:50], [f((i + 1) / 100) / f(0) for i in range(50)], rtol=1e-9
    )
    z = schedules.make_schedule("scaled_linear", 1000, zero_terminal_snr=True)
    plain = schedules.make_schedule("scaled_linear", 1000)
    assert z.alphas_cumprod[-1] == pytest.approx(0.0, abs=1e-12)
    assert z.alphas_cumprod[0] == pytest.approx(plain.alphas_cumprod[0], rel=1e-9)
    assert np.all(np.diff(z.alphas_cumprod) < 0)


def test_timestep_spacing_as_released():
    np.testing.assert_array_equal(schedules.space_timesteps(1000, 50), np.arange(0, 1000, 20))
    np.testing.assert_array_equal(schedules.space_timesteps(1000, 20), np.arange(0, 1000, 50))
    assert schedules.space_timesteps(1000, 10, "trailing")[-1] == 999
    np.testing.assert_array_equal(schedules.space_timesteps(1000, 4, "leading"), [0, 250, 500, 750])
    with pytest.raises(ValueError):
        schedules.space_timesteps(1000, 999)  # no integer stride gives 999 steps


def test_respace_keeps_alpha_bar_at_the_kept_steps():
    s = schedules.make_schedule("linear", 1000)
    r = schedules.respace(s, np.arange(0, 1000, 20))
    np.testing.assert_allclose(r.alphas_cumprod, s.alphas_cumprod[::20], rtol=1e-12)
    np.testing.assert_array_equal(r.timesteps, np.arange(0, 1000, 20))


@pytest.mark.parametrize("prediction", objectives.PREDICTIONS)
def test_targets_and_conversions_are_consistent(prediction):
    s = schedules.make_schedule("linear", 1000)
    rng = np.random.RandomState(0)
    x0, noise = rng.randn(3, 4, 5).astype(np.float32), rng.randn(3, 4, 5).astype(np.float32)
    t = np.array([0, 500, 999])
    x_t = objectives.q_sample(s, x0, t, noise)
    a = np.sqrt(s.alphas_cumprod[t])[:, None, None]
    np.testing.assert_allclose(x_t, a * x0 + np.sqrt(1 - a**2) * noise, rtol=1e-5, atol=1e-6)
    target = objectives.prediction_target(prediction, s, x0, noise, t)
    x0_hat, eps_hat = objectives.x0_and_eps(prediction, s, x_t, t, target)
    np.testing.assert_allclose(x0_hat, x0, atol=2e-3 if prediction == "eps" else 1e-4)
    np.testing.assert_allclose(eps_hat, noise, atol=1e-4)
    assert objectives.mse_loss(target, target).shape == (3,)


def test_diffusion_loss_is_zero_for_the_oracle_denoiser():
    s = schedules.make_schedule("linear", 1000)
    x0 = jnp.asarray(np.random.RandomState(1).randn(4, 6, 3), jnp.float32)
    sa = jnp.asarray(s.sqrt_alphas_cumprod, jnp.float32)
    sb = jnp.asarray(s.sqrt_one_minus_alphas_cumprod, jnp.float32)
    oracle = lambda x_t, t: (x_t - sa[t][:, None, None] * x0) / sb[t][:, None, None]
    loss, aux = objectives.diffusion_loss(oracle, s, x0, jax.random.PRNGKey(0))
    assert loss.shape == (4,) and float(loss.max()) < 1e-3
    assert (
        float(objectives.diffusion_loss(lambda x, t: 0 * x, s, x0, jax.random.PRNGKey(0))[0].mean())
        > 0.5
    )


def _oracle(schedule, x0):
    """Returns the exact noise of x_t for a known x0 at any original timestep."""
    sa = jnp.asarray(schedule.sqrt_alphas_cumprod, jnp.float32)
    sb = jnp.asarray(schedule.sqrt_one_minus_alphas_cumprod, jnp.float32)
    return lambda x_t, t: (x_t - sa[t][:, None, None] * x0) / sb[t][:, None, None]


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_recovers_x0_with_the_true_noise(eta):
    s = schedules.make_schedule("linear", 1000)
    rng = np.random.RandomState(2)
    x0 = jnp.asarray(rng.uniform(-0.9, 0.9, (2, 7, 3)), jnp.float32)
    x_T = jnp.asarray(rng.randn(2, 7, 3), jnp.float32)
    out = jax.jit(
        lambda x: samplers.ddim_sample(
            _oracle(s, x0), x, s, num_steps=50, eta=eta, rng=jax.random.PRNGKey(0)
        )
    )(x_T)
    np.testing.assert_allclose(out, x0, atol=1e-4)


def test_ddim_matches_a_numpy_loop_of_the_released_update():
    s = schedules.make_schedule("linear", 1000)
    x_T = np.random.RandomState(3).randn(2, 5, 4).astype(np.float32)
    denoise = lambda x, t: 0.8 * x + 1e-3 * t[:, None, None].astype(jnp.float32)
    got = samplers.ddim_sample(denoise, jnp.asarray(x_T), s, num_steps=10, clip_x0=1.0)

    steps = np.arange(0, 1000, 100)
    ab = s.alphas_cumprod[steps]
    x = x_T.astype(np.float64)
    for i in range(9, -1, -1):
        eps = 0.8 * x + 1e-3 * steps[i]
        x0 = np.clip((x - np.sqrt(1 - ab[i]) * eps) / np.sqrt(ab[i]), -1, 1)
        eps = (x / np.sqrt(ab[i]) - x0) / np.sqrt(1 / ab[i] - 1)
        prev = ab[i - 1] if i > 0 else 1.0
        x = x0 * np.sqrt(prev) + np.sqrt(1 - prev) * eps
    np.testing.assert_allclose(got, x, atol=1e-4)


def test_ddpm_ancestral_recovers_x0_with_the_true_noise():
    s = schedules.make_schedule("linear", 1000)
    rng = np.random.RandomState(4)
    x0 = jnp.asarray(rng.uniform(-0.9, 0.9, (2, 6, 3)), jnp.float32)
    x_T = jnp.asarray(rng.randn(2, 6, 3), jnp.float32)
    out = samplers.ddpm_sample(_oracle(s, x0), x_T, s, jax.random.PRNGKey(1), num_steps=25)
    np.testing.assert_allclose(out, x0, atol=1e-4)
    # with a denoiser that is not the oracle the sample depends on the rng
    bad = lambda x, t: 0.5 * x
    a = samplers.ddpm_sample(bad, x_T, s, jax.random.PRNGKey(1), num_steps=5)
    b = samplers.ddpm_sample(bad, x_T, s, jax.random.PRNGKey(2), num_steps=5)
    assert float(jnp.abs(a - b).max()) > 1e-3
