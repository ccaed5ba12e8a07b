"""Parity with the official AniTalker stage-2 code, run on CPU torch: a released-layout file
with random weights (different online and EMA copies) goes through jaxtalk's importer and
through the official model's strict `load_state_dict`; both denoisers then run the same
inputs in float32 and in float64. ESPnet builds its positional table in float32 whatever the
model's dtype, and its float32 sin/cos differ from numpy's by a few ulps, which bounds the
float64 agreement near 1e-7; the float64 check therefore also runs jaxtalk with the
official table, which isolates everything else.

The 50-step DDIM run goes through the official sampler (`SpacedDiffusionBeatGans` with the
release's settings: linear betas, T 1000, "ddim50", eps prediction, x0 clipped; fp16 off,
which is what its autocast does on a CPU) and jaxtalk's `ddim_sample`. The official sampler
gathers its coefficients with `.float()`, so its float64 run is also measured with them kept
in float64. Needs the official code (X-LANCE/AniTalker's `code/` directory, with ESPnet
importable), so it only runs when told where it is:

    ANITALKER_CODE=/path/to/AniTalker/code pytest -n 0 -s tests/convert/test_anitalker_official_parity.py
"""

import contextlib
import os
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import anitalker
from jaxtalk.diffusion import samplers, schedules
from jaxtalk.models.anitalker.stage2 import INFER_TYPES, DiffusionPredictor
from jaxtalk.models.layers import conformer

CODE = os.environ.get("ANITALKER_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="ANITALKER_CODE (official code/) not set")
FRAMES = 10
# Bounds on the max abs difference of the denoiser output: float32, float64 with jaxtalk's
# positional table, float64 with the official one.
TOLERANCE = {"float32": 2e-5, "float64": 1e-6, "float64, official table": 1e-10}
# The same for the x0 of a 50-step DDIM run, against the official sampler with float64
# coefficients (with the release's float32 ones float64 agrees to about 1e-6). Rounding in
# float32 grows over the steps: x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab) multiplies the
# denoiser's by up to 1 / sqrt(ab) = 160 at t = 980 before the clamp.
SAMPLER_TOLERANCE = {"float32": 1e-3, "float64": 1e-6, "float64, official table": 1e-12}


def official_predictor(torch, infer_type):
    pytest.importorskip("espnet")
    sys.path.insert(0, CODE)
    from model.seq2seq import DiffusionPredictor as Official

    conf = types.SimpleNamespace(infer_type=infer_type, decoder_layers=2, motion_dim=20)
    return Official(conf).eval()


def randomized(torch, state, seed):
    """The official init, perturbed everywhere (so zero-init tensors matter too)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            out[key] = torch.randint(0, 1000, (), generator=gen)
        elif key.endswith("running_var"):
            out[key] = 0.5 + torch.rand(value.shape, generator=gen)
        else:
            out[key] = value + 0.05 * torch.randn(value.shape, generator=gen)
    return out


def inputs(infer_type, rng):
    audio = (
        rng.standard_normal((2, 25, 2 * FRAMES, 1024))  # release: (B, layers, 2T, dim)
        if infer_type.startswith("hubert")
        else rng.standard_normal((2, 4 * FRAMES, 39))
    )
    return dict(
        initial_code=rng.standard_normal((2, 512)),
        direction_code=rng.standard_normal((2, 20)),
        audio=audio,
        noisy_x=rng.standard_normal((2, FRAMES, 20)),
        t=np.array([980.0, 20.0]),
    )


@contextlib.contextmanager
def official_in(torch, model, dtype):
    """`model` in `dtype`; the release casts t with .float(), a float64 run needs it in
    float64."""
    model = model.to(dtype)
    hook = model.t_encoder.register_forward_pre_hook(lambda m, a: (a[0].to(dtype),))
    try:
        yield model
    finally:
        hook.remove()


def official_output(torch, model, x, dtype):
    with official_in(torch, model, dtype) as model:
        return _official_forward(torch, model, x, dtype)


def _official_forward(torch, model, x, dtype):
    t = {k: torch.from_numpy(v).to(dtype) for k, v in x.items()}
    with torch.no_grad():
        out = model(
            t["initial_code"],
            t["direction_code"],
            t["audio"],
            None,
            None,
            None,
            t["noisy_x"],
            t["t"],
        )[0]
    return out.numpy()


def jaxtalk_output(variables, config, x, dtype):
    dtype = jnp.dtype(dtype)
    model = DiffusionPredictor(**config, dtype=dtype, param_dtype=dtype)
    cast = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
    audio = x["audio"]
    if audio.ndim == 4:
        audio = audio.transpose(0, 2, 1, 3)  # jaxtalk: (B, 2T, layers, dim)
    args = (x["initial_code"], x["direction_code"], audio, x["noisy_x"], x["t"])
    eps, _ = model.apply(cast, *(jnp.asarray(a, dtype) for a in args))
    return np.asarray(eps)


def official_table(torch, length, d_model):
    """ESPnet's relative positional table (float32 values), as jaxtalk's layout."""
    from espnet.nets.pytorch_backend.transformer.embedding import RelPositionalEncoding

    _, table = RelPositionalEncoding(d_model, 0.0)(torch.zeros(1, length, d_model))
    return table[0].numpy()


@pytest.mark.parametrize("infer_type", INFER_TYPES)
def test_denoiser_matches_the_official_model(tmp_path, monkeypatch, infer_type):
    torch = pytest.importorskip("torch")
    model = official_predictor(torch, infer_type)
    copies = {p: randomized(torch, model.state_dict(), s) for s, p in enumerate(("model", "ema"))}
    released = {"x_T": torch.randn(*anitalker.X_T_SHAPE)}
    for prefix, name in (("model.", "model"), ("ema_model.", "ema")):
        released.update({prefix + k: v for k, v in copies[name].items()})
    path = tmp_path / "stage2.ckpt"
    torch.save(released, path)
    x = inputs(infer_type, np.random.default_rng(0))
    for weights in ("ema", "model"):
        imported = anitalker.import_checkpoint(path, weights=weights)
        model.load_state_dict(copies[weights], strict=True)
        variables = {k: imported[k] for k in ("params", "batch_stats")}
        for name, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
            with jax.enable_x64(name == "float64"):
                want = official_output(torch, model, x, torch_dtype)
                got = {name: jaxtalk_output(variables, imported["model_config"], x, name)}
                if name == "float64":
                    with monkeypatch.context() as m:
                        m.setattr(
                            conformer,
                            "relative_positional_encoding",
                            lambda t, d: official_table(torch, t, d),
                        )
                        got[name + ", official table"] = jaxtalk_output(
                            variables, imported["model_config"], x, name
                        )
            for label, out in got.items():
                err = float(np.max(np.abs(out - want)))
                print(f"{infer_type} {weights} {label}: max abs error {err:.2e}")
                assert out.dtype == np.dtype(name) and err < TOLERANCE[label]


def official_sampler():
    """The release's eval sampler at 50 steps (ffhq256_autoenc's diffusion settings)."""
    from diffusion.base import (
        GenerativeType,
        LossType,
        ModelMeanType,
        ModelVarType,
        get_named_beta_schedule,
    )
    from diffusion.diffusion import SpacedDiffusionBeatGansConfig, space_timesteps

    return SpacedDiffusionBeatGansConfig(
        gen_type=GenerativeType.ddim,
        betas=get_named_beta_schedule("linear", 1000),
        model_type=None,
        model_mean_type=ModelMeanType.eps,
        model_var_type=ModelVarType.fixed_large,
        loss_type=LossType.mse,
        rescale_timesteps=False,
        fp16=False,
        use_timesteps=space_timesteps(1000, "ddim50"),
    ).make_sampler()


def official_sample(torch, model, x, x_T, dtype):
    t = {k: torch.from_numpy(v).to(dtype) for k, v in x.items()}
    with official_in(torch, model, dtype) as model, torch.no_grad():
        out = official_sampler().sample(
            model=model,
            noise=torch.from_numpy(x_T).to(dtype),
            model_kwargs={
                "start": t["initial_code"],
                "motion_direction_start": t["direction_code"],
                "audio_driven": t["audio"],
                "face_location": None,
                "face_scale": None,
                "yaw_pitch_roll": None,
                "control_flag": False,
            },
        )
    return out.numpy()


def jaxtalk_sample(variables, config, x, x_T, dtype):
    dtype = jnp.dtype(dtype)
    model = DiffusionPredictor(**config, dtype=dtype, param_dtype=dtype)
    cast = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
    audio = x["audio"].transpose(0, 2, 1, 3) if x["audio"].ndim == 4 else x["audio"]
    start, direction = (jnp.asarray(x[k], dtype) for k in ("initial_code", "direction_code"))
    cond, _ = model.apply(cast, jnp.asarray(audio, dtype), method=DiffusionPredictor.condition)

    def denoise(noisy, t):
        return model.apply(
            cast, cond, start, direction, noisy, t, method=DiffusionPredictor.denoise
        )

    schedule = schedules.make_schedule("linear", 1000)
    return np.asarray(samplers.ddim_sample(denoise, jnp.asarray(x_T, dtype), schedule, 50))


def keeping_dtype(torch, dtype):
    """The official `_extract_into_tensor` without its `.float()`: coefficients in `dtype`."""

    def extract(arr, timesteps, broadcast_shape):
        out = torch.from_numpy(arr)[timesteps].to(dtype)
        return out.reshape(out.shape + (1,) * (len(broadcast_shape) - out.ndim)).expand(
            broadcast_shape
        )

    return extract


@pytest.mark.parametrize("infer_type", INFER_TYPES)
def test_ddim_sampling_matches_the_official_sampler(tmp_path, monkeypatch, infer_type):
    """50 DDIM steps from the same x_T with the EMA weights, as the demo samples."""
    torch = pytest.importorskip("torch")
    model = official_predictor(torch, infer_type)
    weights = randomized(torch, model.state_dict(), 0)
    model.load_state_dict(weights, strict=True)
    released = {"x_T": torch.randn(*anitalker.X_T_SHAPE)}
    released.update({p + k: v for p in ("model.", "ema_model.") for k, v in weights.items()})
    torch.save(released, tmp_path / "stage2.ckpt")
    imported = anitalker.import_checkpoint(tmp_path / "stage2.ckpt")
    variables, config = (
        {k: imported[k] for k in ("params", "batch_stats")},
        imported["model_config"],
    )
    rng = np.random.default_rng(1)
    x = inputs(infer_type, rng)
    x_T = rng.standard_normal((2, FRAMES, 20))
    import diffusion.base as official_base

    errors = {}
    for name, torch_dtype in (("float32", torch.float32), ("float64", torch.float64)):
        as_released = official_sample(torch, model, x, x_T, torch_dtype)
        with monkeypatch.context() as m:
            m.setattr(official_base, "_extract_into_tensor", keeping_dtype(torch, torch_dtype))
            want = official_sample(torch, model, x, x_T, torch_dtype)
        with jax.enable_x64(name == "float64"), monkeypatch.context() as m:
            got = {name: jaxtalk_sample(variables, config, x, x_T, name)}
            if name == "float64":
                m.setattr(
                    conformer,
                    "relative_positional_encoding",
                    lambda t, d: official_table(torch, t, d),
                )
                got[name + ", official table"] = jaxtalk_sample(variables, config, x, x_T, name)
        for label, out in got.items():
            err = float(np.max(np.abs(out - want)))
            released_err = float(np.max(np.abs(out - as_released)))
            print(
                f"{infer_type} ddim50 {label}: max abs error {err:.2e} "
                f"({released_err:.2e} against the release's float32 coefficients)"
            )
            assert out.dtype == np.dtype(name)
            errors[label] = err
    assert all(err < SAMPLER_TOLERANCE[label] for label, err in errors.items()), errors
