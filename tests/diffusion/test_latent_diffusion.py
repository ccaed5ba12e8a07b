"""Latent video diffusion schedules, objectives, DDIM, guidance and context windows, against
closed-form values, diffusers' DDIMScheduler (skipped without diffusers) and AniPortrait's
context.py (only when ANIPORTRAIT_CODE points at a checkout of Zejun-Yang/AniPortrait)."""

import dataclasses
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxtalk.diffusion import context, objectives, recipes, samplers, schedules
from jaxtalk.diffusion.schedules import NoiseProcess

CODE = os.environ.get("ANIPORTRAIT_CODE")
STEP_COUNTS = (1, 7, 25, 30, 50, 999)


# ----------------------------------------------------------------------------- schedules


def test_sd_betas_and_spacings():
    lin = schedules.sd_betas("linear", 1000, 0.00085, 0.012)
    assert lin[0] == 0.00085 and lin[-1] == pytest.approx(0.012, abs=1e-15)
    sl = schedules.sd_betas("scaled_linear", 1000)
    np.testing.assert_allclose(np.sqrt(sl[[0, -1]]), np.sqrt([0.00085, 0.012]), rtol=1e-14)
    assert np.all(np.diff(np.sqrt(sl)) > 0) and np.ptp(np.diff(np.sqrt(sl))) < 1e-15
    z = NoiseProcess("scaled_linear", zero_terminal_snr=True).schedule()
    assert z.alphas_cumprod[-1] == 0.0 and z.betas[-1] == 1.0
    ts = schedules.inference_timesteps
    np.testing.assert_array_equal(ts(1000, 25, "trailing")[[0, 1, -1]], [999, 959, 39])
    np.testing.assert_array_equal(ts(1000, 25, "leading", 1)[[0, 1, -1]], [961, 921, 1])
    np.testing.assert_array_equal(ts(1000, 4, "linspace"), [999, 666, 333, 0])
    for bad in [(1000, 0, "leading"), (1000, 1001, "leading"), (1000, 5, "ddim")]:
        with pytest.raises(ValueError):
            ts(*bad)
    with pytest.raises(ValueError):
        schedules.sd_betas("cosine")


def _diffusers_scheduler(torch, diffusers, cfg: samplers.DDIMConfig, float64: bool):
    """diffusers' scheduler for `cfg`; with float64 its tables are rebuilt in float64 by its
    own formulas (its constructor always makes float32 ones)."""
    p = cfg.process
    sched = diffusers.DDIMScheduler(
        num_train_timesteps=p.num_train_timesteps,
        beta_start=p.beta_start,
        beta_end=p.beta_end,
        beta_schedule=p.beta_schedule,
        rescale_betas_zero_snr=p.zero_terminal_snr,
        prediction_type={"eps": "epsilon", "v": "v_prediction", "x0": "sample"}[cfg.prediction],
        timestep_spacing=cfg.timestep_spacing,
        steps_offset=cfg.steps_offset,
        clip_sample=cfg.clip_sample,
        clip_sample_range=cfg.clip_sample_range,
        set_alpha_to_one=cfg.set_alpha_to_one,
    )
    if float64:
        start, end, n = p.beta_start, p.beta_end, p.num_train_timesteps
        if p.beta_schedule == "linear":
            betas = torch.linspace(start, end, n, dtype=torch.float64)
        else:
            betas = torch.linspace(start**0.5, end**0.5, n, dtype=torch.float64) ** 2
        if p.zero_terminal_snr:
            from diffusers.schedulers.scheduling_ddim import rescale_zero_terminal_snr

            betas = rescale_zero_terminal_snr(betas)
        sched.betas = betas
        sched.alphas = 1.0 - betas
        sched.alphas_cumprod = torch.cumprod(sched.alphas, dim=0)
        sched.final_alpha_cumprod = (
            torch.tensor(1.0, dtype=torch.float64)
            if cfg.set_alpha_to_one
            else sched.alphas_cumprod[0]
        )
    return sched


@pytest.mark.parametrize("name", ["linear", "scaled_linear"])
@pytest.mark.parametrize("zero_snr", [False, True])
def test_betas_match_diffusers(name, zero_snr):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    cfg = samplers.DDIMConfig(process=NoiseProcess(name, zero_terminal_snr=zero_snr))
    ours = cfg.process.schedule()
    f32 = _diffusers_scheduler(torch, diffusers, cfg, float64=False)
    # diffusers builds its tables in float32: alpha_bar agrees to float32 precision; betas too
    # unless rescaled, where 1 - ab[t] / ab[t-1] cancels about four of its digits
    np.testing.assert_allclose(
        ours.alphas_cumprod, f32.alphas_cumprod.numpy(), rtol=2e-5, atol=1e-7
    )
    if not zero_snr:
        np.testing.assert_allclose(ours.betas, f32.betas.numpy(), rtol=2e-6)
    f64 = _diffusers_scheduler(torch, diffusers, cfg, float64=True)
    np.testing.assert_allclose(ours.betas, f64.betas.numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        ours.alphas_cumprod, f64.alphas_cumprod.numpy(), rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("spacing", schedules.SPACINGS)
@pytest.mark.parametrize("offset", [0, 1])
def test_set_timesteps_matches_diffusers(spacing, offset):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    cfg = samplers.DDIMConfig(timestep_spacing=spacing, steps_offset=offset)
    sched = _diffusers_scheduler(torch, diffusers, cfg, float64=False)
    for n in STEP_COUNTS:
        if spacing == "leading" and offset and n == 1:
            continue
        sched.set_timesteps(n)
        got = schedules.inference_timesteps(1000, n, spacing, offset)
        np.testing.assert_array_equal(got, sched.timesteps.numpy(), err_msg=f"{spacing} {n}")


STEP_CASES = [
    # (prediction, spacing, offset, zero_snr, clip, eta, set_alpha_to_one, beta schedule)
    ("eps", "leading", 1, False, False, 0.0, True, "scaled_linear"),
    ("eps", "leading", 0, False, True, 0.0, True, "linear"),
    ("v", "trailing", 1, True, False, 0.0, True, "linear"),
    ("v", "trailing", 0, True, True, 0.7, True, "scaled_linear"),
    ("eps", "linspace", 0, False, True, 1.0, False, "linear"),
    ("x0", "leading", 1, False, True, 0.3, False, "scaled_linear"),
    ("v", "linspace", 0, False, False, 0.0, False, "scaled_linear"),
]


@pytest.mark.parametrize("case", STEP_CASES, ids=lambda c: "-".join(map(str, c)))
def test_every_ddim_step_matches_diffusers_in_float64(case):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    pred, spacing, offset, zero_snr, clip, eta, one, betas = case
    cfg = samplers.DDIMConfig(
        process=NoiseProcess(betas, zero_terminal_snr=zero_snr),
        prediction=pred,
        timestep_spacing=spacing,
        steps_offset=offset,
        clip_sample=clip,
        clip_sample_range=1.5,
        set_alpha_to_one=one,
        num_steps=30,
        eta=eta,
    )
    sched = _diffusers_scheduler(torch, diffusers, cfg, float64=True)
    sched.set_timesteps(cfg.num_steps)
    table = samplers.ddim_table(cfg)
    np.testing.assert_array_equal(table.timesteps, sched.timesteps.numpy())
    rng = np.random.RandomState(0)
    with jax.enable_x64(True):
        worst = 0.0
        for i, t in enumerate(sched.timesteps):
            x, out, noise = (rng.randn(2, 3, 4, 4, 4) for _ in range(3))
            ref = sched.step(
                torch.from_numpy(out),
                t,
                torch.from_numpy(x),
                eta=eta,
                variance_noise=torch.from_numpy(noise) if eta > 0 else None,
            )
            got, x0 = samplers.ddim_update(
                cfg,
                jnp.asarray(x),
                jnp.asarray(out),
                table.alpha[i],
                table.alpha_prev[i],
                jnp.asarray(noise),
            )
            assert got.dtype == jnp.float64
            if zero_snr and pred == "eps" and i == 0:
                continue  # x0 = x / sqrt(0): both infinite
            for a, b in ((got, ref.prev_sample), (x0, ref.pred_original_sample)):
                err = float(np.max(np.abs(np.asarray(a) - b.numpy())))
                worst = max(worst, err)
        assert worst < 1e-12, worst
    print(f"\nDDIM step {case}: max |diff| vs diffusers (float64) {worst:.2e}")


# ----------------------------------------------------------------------------- objectives


def test_noising_and_velocity_match_diffusers_and_convert_back():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    cfg = samplers.DDIMConfig(process=NoiseProcess("scaled_linear", zero_terminal_snr=True))
    sched = _diffusers_scheduler(torch, diffusers, cfg, float64=True)
    s = cfg.process.schedule()
    rng = np.random.RandomState(7)
    x0, noise = rng.randn(4, 2, 3, 3, 4), rng.randn(4, 2, 3, 3, 4)
    t = np.array([0, 311, 998, 999])
    tt = torch.from_numpy(t)
    with jax.enable_x64(True):
        x_t = objectives.q_sample(s, jnp.asarray(x0), t, jnp.asarray(noise))
        v = objectives.prediction_target("v", s, jnp.asarray(x0), jnp.asarray(noise), t)
        x0_back, eps_back = objectives.x0_and_eps("v", s, x_t, t, v)
    want_xt = sched.add_noise(torch.from_numpy(x0), torch.from_numpy(noise), tt).numpy()
    want_v = sched.get_velocity(torch.from_numpy(x0), torch.from_numpy(noise), tt).numpy()
    np.testing.assert_allclose(x_t, want_xt, atol=1e-12)
    np.testing.assert_allclose(v, want_v, atol=1e-12)
    np.testing.assert_allclose(x0_back, x0, atol=1e-12)  # v-prediction inverts at every t,
    np.testing.assert_allclose(eps_back, noise, atol=1e-12)  # the zero-SNR one included


def test_offset_noise_is_per_sample_and_channel():
    rng = jax.random.PRNGKey(3)
    shape = (3, 5, 4, 6, 8)  # B, F, H, W, C
    plain = objectives.offset_noise(rng, shape, 0.0)
    noisy = objectives.offset_noise(rng, shape, 0.1)
    delta = np.asarray(noisy - plain)
    np.testing.assert_allclose(delta, np.broadcast_to(delta[:, :1, :1, :1, :], shape), atol=1e-6)
    per = delta[:, 0, 0, 0, :]
    assert np.all(np.abs(per) > 0) and np.std(per) > 0.02 and np.abs(per).max() < 0.6
    assert len(np.unique(np.round(per, 6))) == per.size  # differs per sample and channel
    image = objectives.offset_noise(rng, (2, 4, 4, 3), 0.05)
    assert image.shape == (2, 4, 4, 3)


def _release_min_snr(alphas_cumprod, t, gamma, v_pred):
    """AniPortrait's train_stage_1.py, transcribed: snr = (sqrt(ab) / sqrt(1 - ab))^2,
    plus one for v-prediction, then min(snr, gamma) / snr."""
    snr = (np.sqrt(alphas_cumprod[t]) / np.sqrt(1 - alphas_cumprod[t])) ** 2
    if v_pred:
        snr = snr + 1
    return np.minimum(snr, gamma) / snr


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weights(prediction):
    s = NoiseProcess("scaled_linear", zero_terminal_snr=True).schedule()
    t = np.array([0, 10, 100, 400, 700, 998])
    with jax.enable_x64(True):
        got = objectives.min_snr_weights(objectives.snr(s, t, jnp.float64), 5.0, prediction)
    want = _release_min_snr(s.alphas_cumprod, t, 5.0, prediction == "v")
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(got[0]) < 0.01 and float(got[-1]) == pytest.approx(1.0)
    last = objectives.min_snr_weights(objectives.snr(s, np.array([999])), 5.0, prediction)
    assert float(last[0]) == 1.0  # zero SNR: v gives 1 / 1, eps its limit 1
    with pytest.raises(ValueError):
        objectives.min_snr_weights(jnp.ones(2), 5.0, "x0")


def test_latent_diffusion_loss_weights_and_oracle():
    obj = recipes.aniportrait().train
    s = obj.process.schedule()
    x0 = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 4, 4, 4))
    sa = jnp.asarray(s.sqrt_alphas_cumprod, jnp.float32)
    sb = jnp.asarray(s.sqrt_one_minus_alphas_cumprod, jnp.float32)
    bc = lambda v: v[:, None, None, None, None]

    def oracle_v(x_t, t):  # knows x0, so recovers eps and v exactly
        eps = (x_t - bc(sa[t]) * x0) / jnp.maximum(bc(sb[t]), 1e-6)
        return bc(sa[t]) * eps - bc(sb[t]) * x0

    loss, aux = objectives.latent_diffusion_loss(obj, s, oracle_v, x0, jax.random.PRNGKey(1))
    assert loss.shape == (4,) and float(loss.max()) < 1e-6
    want = _release_min_snr(s.alphas_cumprod, np.asarray(aux["t"]), 5.0, True)
    np.testing.assert_allclose(aux["weights"], want, rtol=1e-5)
    zero, aux0 = objectives.latent_diffusion_loss(
        obj, s, lambda x, t: 0 * x, x0, jax.random.PRNGKey(1)
    )
    raw = objectives.mse_loss(
        0 * x0, objectives.prediction_target("v", s, x0, aux0["noise"], aux0["t"])
    )
    np.testing.assert_allclose(zero, raw * aux0["weights"], rtol=1e-6)
    plain = dataclasses.replace(obj, snr_gamma=0.0)
    _, aux1 = objectives.latent_diffusion_loss(plain, s, oracle_v, x0, jax.random.PRNGKey(1))
    np.testing.assert_array_equal(aux1["weights"], np.ones(4))
    with pytest.raises(ValueError):
        objectives.TrainObjective(prediction="x0")


# ----------------------------------------------------------------------------- pairings


def test_release_pairings():
    ap, ma = recipes.release_diffusion("aniportrait"), recipes.release_diffusion("megactor")
    assert ap.train.process == NoiseProcess("scaled_linear", 0.00085, 0.012, 1000, True)
    assert (ap.train.prediction, ap.train.noise_offset, ap.train.snr_gamma) == ("v", 0.05, 5.0)
    assert ap.train.uncond_ratio == 0.1 and ap.train_spacing == "trailing"
    s = ap.sample
    assert s.process == NoiseProcess("linear", 0.00085, 0.012, 1000, True)
    assert (s.prediction, s.timestep_spacing, s.steps_offset) == ("v", "trailing", 1)
    assert (s.clip_sample, s.set_alpha_to_one, s.num_steps, s.eta) == (False, True, 25, 0.0)
    assert ap.guidance_scale == 3.5 and ap.context == context.ContextWindows(16, 4, 1, True)

    assert ma.train.process == NoiseProcess("scaled_linear", 0.00085, 0.012, 1000, True)
    assert (ma.train.prediction, ma.train.noise_offset, ma.train.snr_gamma) == ("eps", 0.1, 0.0)
    assert ma.train.uncond_ratio == 0.0
    s = ma.sample
    assert s.process == NoiseProcess("linear", 0.00085, 0.012, 1000, False)
    assert (s.prediction, s.timestep_spacing, s.steps_offset, s.clip_sample) == (
        "eps",
        "leading",
        0,
        True,
    )
    assert ma.guidance_scale == 4.5 and ma.context == context.ContextWindows(16, 8, 1, True)
    # the train and inference processes differ (beta schedule), as released
    for r in (ap, ma):
        assert r.train.process.beta_schedule == "scaled_linear"
        assert r.sample.process.beta_schedule == "linear"
        assert recipes.from_dict(recipes.to_dict(r)) == r
        carried = ml_collections.ConfigDict(recipes.to_dict(r))  # as a paper config holds it
        assert recipes.from_dict(carried.to_dict()) == r
        carried.sample.num_steps = 50  # a command-line override
        assert recipes.from_dict(carried.to_dict()).sample.num_steps == 50
    with pytest.raises(ValueError):
        recipes.release_diffusion("animateanyone")


# ----------------------------------------------------------------------------- context windows


def test_uniform_windows_by_hand():
    w = context.uniform_windows
    assert w(12, 16) == [list(range(12))]
    assert w(24, 16, overlap=4) == [list(range(16)), list(range(12, 24)) + [0, 1, 2, 3]]
    assert len(w(28, 16, overlap=4)) == 3 and w(28, 16, overlap=4)[-1][4] == 0  # wraps
    assert w(28, 16, overlap=4, closed_loop=False) == w(28, 16, overlap=4)[:2]
    assert len(w(100, 16, overlap=4)) == 9  # starts 0, 12, ..., 96
    assert w(20, 8, overlap=4, stride=2)[-1] == [(e % 20) for e in range(12, 28, 2)]
    idx, weights, counts = context.window_arrays(w(24, 16, overlap=4), 24)
    assert idx.shape == (2, 16) and weights.min() == 1.0
    np.testing.assert_array_equal(counts, [2] * 4 + [1] * 8 + [2] * 4 + [1] * 8)
    # a dilated window that wraps lists frames twice: only the last copy counts
    idx, weights, counts = context.window_arrays([[0, 2, 4, 0, 2]], 5)
    np.testing.assert_array_equal(weights, [[0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(counts, [1, 0, 1, 0, 1])
    with pytest.raises(ValueError):
        context.ContextWindows(size=8, overlap=8)
    with pytest.raises(ValueError):
        context.window_arrays([[0, 1], [2]], 3)


@pytest.mark.skipif(not CODE, reason="ANIPORTRAIT_CODE (a Zejun-Yang/AniPortrait checkout) not set")
def test_uniform_windows_match_the_release():
    sys.path.insert(0, CODE)
    from src.pipelines.context import uniform

    n = 0
    for frames in (1, 8, 16, 17, 24, 33, 64, 100):
        for size in (4, 8, 16):
            for overlap in range(0, size, 3):
                for stride in (1, 2, 3):
                    for closed in (True, False):
                        for step in (0, 1, 5):
                            want = list(uniform(step, 25, frames, size, stride, overlap, closed))
                            got = context.uniform_windows(
                                frames, size, stride, overlap, closed, step
                            )
                            assert got == want, (frames, size, overlap, stride, closed, step)
                            n += 1
    print(f"\nuniform windows identical to AniPortrait's context.py in {n} settings")


# ----------------------------------------------------------------------------- sampling


def _linear_model(xp, mix, pose, bias_t):
    """The same deterministic "UNet" for both frameworks, channels-last: a channel mix, a
    temporal mean over the window (so windows matter), the condition, a per-frame pose
    term gathered by the window's frame indices, and a timestep term."""

    def model(x, t, cond, frames):
        y = xp.einsum("nkhwc,cd->nkhwd", x, mix) + 0.2 * x.mean(axis=1, keepdims=True)
        y = y + cond[:, None, None, None, :] + pose[frames][None, :, None, None, :]
        return y + bias_t * (0 * x[..., :1] + t[:, None, None, None, None])  # t in x's dtype

    return model


def _release_loop_torch(torch, model, latents, sched, steps, scale, windows, cond):
    """AniPortrait's pipeline_pose2vid_long denoising loop, transcribed (NCFHW latents, one
    window per batch, cond = [uncond (zeros), cond]); `model` takes channels-last."""
    sched.set_timesteps(steps)
    both = torch.cat([torch.zeros_like(cond), cond])
    for t in sched.timesteps:
        noise_pred = torch.zeros((2 * latents.shape[0], *latents.shape[1:]), dtype=latents.dtype)
        counter = torch.zeros((1, 1, latents.shape[2], 1, 1), dtype=latents.dtype)
        for context_ in [[w] for w in windows]:
            x_in = torch.cat([latents[:, :, c] for c in context_]).repeat(2, 1, 1, 1, 1)
            t_in = torch.full((x_in.shape[0],), int(t), dtype=torch.int64)
            pred = model(x_in.permute(0, 2, 3, 4, 1), t_in, both, torch.as_tensor(context_[0]))
            pred = pred.permute(0, 4, 1, 2, 3)
            for c in context_:
                noise_pred[:, :, c] = noise_pred[:, :, c] + pred
                counter[:, :, c] = counter[:, :, c] + 1
        uncond, text = (noise_pred / counter).chunk(2)
        noise_pred = uncond + scale * (text - uncond)
        latents = sched.step(noise_pred, t, latents).prev_sample
    return latents


@pytest.mark.parametrize("release", ["aniportrait", "megactor"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_guided_windowed_sampling_matches_the_release_loop(release, dtype):
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    recipe = recipes.release_diffusion(release)
    ctx = dataclasses.replace(recipe.context, size=6, overlap=recipe.context.overlap // 2)
    frames, steps = 15, 8
    rng = np.random.RandomState(5)
    x_T = rng.randn(1, frames, 3, 2, 4)
    mix = 0.3 * rng.randn(4, 4)
    pose = 0.1 * rng.randn(frames, 4)
    cond = 0.2 * rng.randn(1, 4)
    tdtype = {"float32": torch.float32, "float64": torch.float64}[dtype]
    if CODE:
        sys.path.insert(0, CODE)
        from src.pipelines.context import uniform

        windows = list(
            uniform(0, steps, frames, ctx.size, ctx.stride, ctx.overlap, ctx.closed_loop)
        )
    else:
        windows = ctx.windows(frames)
    assert len(windows) == {"aniportrait": 4, "megactor": 8}[release]

    sched = _diffusers_scheduler(torch, diffusers, recipe.sample, float64=dtype == "float64")
    tmodel = _linear_model(torch, *(torch.as_tensor(a, dtype=tdtype) for a in (mix, pose)), 1e-4)
    want = (
        _release_loop_torch(
            torch,
            tmodel,
            torch.as_tensor(x_T, dtype=tdtype).permute(0, 4, 1, 2, 3),
            sched,
            steps,
            recipe.guidance_scale,
            windows,
            torch.as_tensor(cond, dtype=tdtype),
        )
        .permute(0, 2, 3, 4, 1)
        .numpy()
    )

    with jax.enable_x64(dtype == "float64"):
        jmodel = _linear_model(jnp, jnp.asarray(mix, dtype), jnp.asarray(pose, dtype), 1e-4)
        run = jax.jit(
            lambda x, c: samplers.sample_video(
                jmodel,
                x,
                recipe.sample,
                c,
                jnp.zeros_like,
                recipe.guidance_scale,
                ctx,
                num_steps=steps,
            )
        )
        got = np.asarray(run(jnp.asarray(x_T, dtype), jnp.asarray(cond, dtype)))
    err = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    print(
        f"\n{release} {dtype}: {steps} steps, {len(windows)} windows, max |diff| {err:.2e} (|x| {scale:.2f})"
    )
    assert err < (1e-4 if dtype == "float32" else 1e-9), err
    assert np.abs(got - x_T).max() > 0.1  # the run did something


def test_sample_video_traces_the_model_once_and_windows_change_the_result():
    recipe = recipes.aniportrait()
    rng = np.random.RandomState(1)
    mix, cond = jnp.asarray(0.3 * rng.randn(4, 4), jnp.float32), jnp.ones((1, 4)) * 0.1
    traces = []

    def model(x, t, c, frames):
        traces.append(x.shape)
        return _linear_model(jnp, mix, jnp.zeros((64, 4)), 1e-4)(x, t, c, frames)

    def run(frames, ctx):
        x = jax.random.normal(jax.random.PRNGKey(0), (1, frames, 2, 2, 4))
        f = jax.jit(
            lambda x: samplers.sample_video(
                model, x, recipe.sample, cond, jnp.zeros_like, 3.5, ctx, num_steps=3
            )
        )
        return f(x)

    for frames in (20, 60):
        traces.clear()
        run(frames, recipe.context)
        assert traces == [(2, 16, 2, 2, 4)], traces  # one trace, one 16-frame window batch
    whole = run(16, None)
    one_window = run(16, recipe.context)
    np.testing.assert_allclose(whole, one_window, atol=1e-6)
    small = dataclasses.replace(recipe.context, size=8, overlap=4)
    assert float(jnp.abs(run(16, small) - whole).max()) > 1e-3
    unguided = jax.jit(
        lambda x: samplers.sample_video(model, x, recipe.sample, cond, None, 3.5, None, num_steps=3)
    )
    assert (
        float(
            jnp.abs(
                unguided(jax.random.normal(jax.random.PRNGKey(0), (1, 16, 2, 2, 4))) - whole
            ).max()
        )
        > 1e-3
    )
    with pytest.raises(ValueError):
        samplers.sample_video(
            model, jnp.zeros((1, 4, 2, 2, 4)), dataclasses.replace(recipe.sample, eta=0.5), cond
        )


def test_sampling_memory_is_flat_in_the_video_length():
    """Windows run one after another: the compiled temporaries hold one window's activations
    plus accumulators as large as the latents, whatever the video length."""
    recipe = recipes.aniportrait()
    up, down = jnp.full((4, 256), 0.01), jnp.full((256, 4), 0.01)

    def model(x, t, c, frames):  # a 64x wider activation inside every call
        h = jnp.tanh(jnp.einsum("nkhwc,cd->nkhwd", x, up))
        return jnp.einsum("nkhwd,dc->nkhwc", h, down) + c[:, None, None, None, :]

    def temp_bytes(frames):
        x = jax.ShapeDtypeStruct((1, frames, 16, 16, 4), jnp.float32)
        c = jax.ShapeDtypeStruct((1, 4), jnp.float32)
        run = lambda x, c: samplers.sample_video(
            model, x, recipe.sample, c, jnp.zeros_like, 3.5, recipe.context, num_steps=2
        )
        return jax.jit(run).lower(x, c).compile().memory_analysis().temp_size_in_bytes

    window = 2 * 16 * 16 * 16 * 256 * 4  # [uncond, cond] x 16 frames of the wide activation
    short, long = temp_bytes(16), temp_bytes(256)
    latents = 256 * 16 * 16 * 4 * 4
    print(
        f"\nsampling temporaries: 16 frames {short / 2**20:.1f} MiB, 256 frames {long / 2**20:.1f} MiB"
    )
    assert window <= short < 2 * window
    assert long - short < 4 * latents  # accumulators, not 16x the window activations
