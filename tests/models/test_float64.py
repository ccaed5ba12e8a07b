"""float64 stays float64: with x64 enabled and float64 module dtypes, every floating-point
value the LIA generator, the stage-2 denoiser (HuBERT features), the DDIM and DDPM samplers
and the audio-driven animator's code path compute is float64. Precision islands (softmax, BatchNorm, sampler coefficients,
positional tables) may only promote to at least float32, never demote float64."""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.diffusion import samplers, schedules
from jaxtalk.inference.audio_driven import AudioAnimator, batch_controls, parse_controls
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, init_inputs
from jaxtalk.models.audio.hubert import HubertModel
from jaxtalk.models.lia.generator import LIAGenerator
from jaxtalk.models.param_hook import eval_shape_init
from tests.convert.test_anitalker import TINY_KEYS_CONFIG
from tests.convert.test_hubert import TINY as TINY_HUBERT

F64 = dict(dtype=jnp.float64, param_dtype=jnp.float64)


def _jaxprs(jaxpr):
    """`jaxpr` and every jaxpr nested in its equations (scan bodies, pjit, custom_jvp)."""
    yield jaxpr
    for eqn in jaxpr.eqns:
        for param in eqn.params.values():
            for sub in param if isinstance(param, (tuple, list)) else (param,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _jaxprs(inner)


def not_float64(fn, *args):
    """'primitive -> dtype' for every floating-point value `fn` computes (its constants
    included) that is not float64."""
    closed = jax.make_jaxpr(fn)(*args)
    dtypes = [np.dtype(getattr(c, "dtype", type(c))) for c in closed.consts]
    found = {f"const -> {d}" for d in dtypes if jnp.issubdtype(d, jnp.floating) and d != np.float64}
    for jaxpr in _jaxprs(closed.jaxpr):
        for eqn in jaxpr.eqns:
            for var in eqn.outvars:
                dtype = getattr(var.aval, "dtype", None)
                if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                    if dtype != jnp.float64:
                        found.add(f"{eqn.primitive.name} -> {dtype}")
    return sorted(found)


def _zeros(abstract):
    """Zero arrays of the shapes and dtypes of `abstract` (a jax.eval_shape result): values
    to close over, computed without running (and compiling op by op) the model."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), abstract)


@pytest.fixture
def x64():
    with jax.enable_x64(True):  # this test only: the config is a context manager
        yield


def _denoiser():
    """The tiny denoiser, its variables (abstract: only their dtypes matter to a jaxpr) and
    zero inputs."""
    model = DiffusionPredictor(**TINY_KEYS_CONFIG, **F64)
    inputs = init_inputs(model, frames=4)
    assert inputs[2].dtype == jnp.float64 and inputs[2].shape[2] == 3  # (B, 2T, layers, dim)
    return model, eval_shape_init(model.init, jax.random.PRNGKey(0), *inputs), inputs


@pytest.mark.parametrize("generator", [LIAGenerator, AniTalkerMotion])
def test_lia_and_stage1_generators_stay_float64(x64, generator):
    model = generator(size=32, style_dim=32, motion_dim=5, width=1 / 16, **F64)
    x = jnp.zeros((1, 32, 32, 3), jnp.float64)
    variables = eval_shape_init(model.init, jax.random.PRNGKey(0), x, x)
    assert not_float64(model.apply, variables, x, x) == []


def test_hubert_features_stay_float64(x64):
    model = HubertModel(TINY_HUBERT, **F64)
    wav = jnp.zeros((1, 400), jnp.float64)
    variables = eval_shape_init(model.init, jax.random.PRNGKey(0), wav)
    assert not_float64(model.apply, variables, wav) == []


def test_stage2_denoiser_with_hubert_features_stays_float64(x64):
    model, variables, inputs = _denoiser()
    assert not_float64(model.apply, variables, *inputs) == []
    rngs = {"dropout": jax.random.PRNGKey(1)}  # train mode: BatchNorm's batch statistics

    def train(v, *a):
        return model.apply(v, *a, train=True, rngs=rngs, mutable=["batch_stats"])

    assert not_float64(train, variables, *inputs) == []


def _sampling_setup():
    """The denoiser as the samplers call it, closing over concrete variables and conditioning
    of the model's dtypes (the constants' dtypes are checked too)."""
    model, variables, (start, direction, audio, noisy, _) = _denoiser()
    condition = functools.partial(model.apply, method=DiffusionPredictor.condition)
    cond, _ = _zeros(jax.eval_shape(condition, variables, audio))
    variables = _zeros(variables)

    def denoise(x, t):
        return model.apply(
            variables, cond, start, direction, x, t, method=DiffusionPredictor.denoise
        )

    return denoise, noisy


@pytest.mark.parametrize("eta, clip_x0", [(0.0, 1.0), (0.5, None)])
def test_ddim_sampler_stays_float64(x64, eta, clip_x0):
    """The release's DDIM (eta 0, x0 clamped) and the stochastic, unclamped variant: model
    output, x0, re-derived eps, coefficients, noise and every step's x."""
    denoise, noisy = _sampling_setup()
    schedule = schedules.make_schedule("linear", 1000)

    def sample(x_T):
        return samplers.ddim_sample(
            denoise, x_T, schedule, 5, eta=eta, clip_x0=clip_x0, rng=jax.random.PRNGKey(2)
        )

    assert not_float64(sample, noisy) == []
    assert sample(noisy).dtype == jnp.float64


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_ddpm_sampler_stays_float64(x64, variance):
    denoise, noisy = _sampling_setup()
    schedule = schedules.make_schedule("linear", 1000)

    def sample(x_T):
        return samplers.ddpm_sample(
            denoise, x_T, schedule, jax.random.PRNGKey(2), num_steps=5, variance=variance
        )

    assert not_float64(sample, noisy) == []


def test_animator_motion_codes_stay_float64(x64):
    """The audio-driven animator's whole code path: conditioning with the release's float32
    control values, the sampler and the code statistics' inverse normalisation."""
    model, variables, (start, direction, audio, noisy, _) = _denoiser()
    variables = _zeros(variables)
    frames, dim = noisy.shape[1:]
    animator = types.SimpleNamespace(
        model=model,
        schedule=schedules.make_schedule("linear", 1000),
        clip_x0=1.0,
        motion_scale=1.0,
        motion_stats={"mean": jnp.zeros(dim, jnp.float64), "std": jnp.ones(dim, jnp.float64)},
    )
    controls = parse_controls(
        model, pose=np.full((frames - 1, 3), 0.1), location=np.zeros((frames, 1)), scale=0.2
    )
    controls = batch_controls(controls, frames)
    assert set(controls) == {"pose", "location", "scale"} and controls["pose"].shape[1] == frames

    def codes(x_T, controls):  # the float32 controls are inputs, not computed
        return AudioAnimator._generate_codes(
            animator, variables, audio, start, direction, x_T, controls, num_steps=5
        )

    assert not_float64(codes, noisy, controls) == []
    assert codes(noisy, controls).dtype == jnp.float64
