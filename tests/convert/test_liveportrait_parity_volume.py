"""Parity of LivePortrait's F (appearance feature extractor) and W (warping module) with
the official PyTorch modules, on CPU torch: the official networks get random weights
(every tensor perturbed; BatchNorm statistics measured on the test input, then perturbed,
so activations stay O(1) as in a trained net), their state_dicts go through
`appearance_rules` / `warping_rules` (and back, key for key), and both sides run the same
inputs.

- float32 at the released config and size (256 image, 64x64x16 volume);
- float64 at the tiny config of the model tests (64 image, 16x16x8 volume, 3-level
  hourglass): torch's float64 Conv3d on CPU unfolds its input (the 7x7x7 mask conv alone
  would ask for 25 GB at the released size), so float64 runs every structure at small
  widths.

Needs the official code (KwaiVGI/LivePortrait, the directory holding `src/`):

    LIVEPORTRAIT_CODE=/path/to/LivePortrait pytest -n 0 -s tests/convert/test_liveportrait_parity_volume.py
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import liveportrait, mapping
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.warping import WarpingNetwork
from tests.models.liveportrait.test_appearance_warping import TINY_F, TINY_W

CODE = os.environ.get("LIVEPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="LIVEPORTRAIT_CODE (official checkout) not set")

TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
F_FIELDS = (
    "block_expansion",
    "num_down_blocks",
    "max_features",
    "reshape_channel",
    "reshape_depth",
    "num_resblocks",
)
W_FIELDS = ("num_kp", "block_expansion", "max_features", "num_down_blocks", "reshape_channel")


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, CODE)
    return torch


def official_f(model):
    """The official F with `model`'s config."""
    from src.modules.appearance_feature_extractor import AppearanceFeatureExtractor as Official

    return Official(image_channel=3, **{f: getattr(model, f) for f in F_FIELDS})


def official_w(model):
    """The official W with `model`'s config."""
    from src.modules.warping_network import WarpingNetwork as Official

    dense = dict(
        block_expansion=model.dense_block_expansion,
        max_features=model.dense_max_features,
        num_blocks=model.dense_num_blocks,
        reshape_depth=model.reshape_depth,
        compress=model.compress,
    )
    return Official(
        **{f: getattr(model, f) for f in W_FIELDS},
        estimate_occlusion_map=model.estimate_occlusion_map,
        dense_motion_params=dense,
    )


def randomize(torch, module, seed, *inputs):
    """Every tensor perturbed, then BatchNorm statistics measured on `inputs` (one
    train-mode pass) and perturbed, so activations stay O(1) through the deep hourglass
    as in a trained net (unnormalised random weights grow them to ~1e5 at the mask conv,
    where float32 rounding alone flips the softmax); counters random."""
    gen = torch.Generator().manual_seed(seed)

    def noise(value, scale):
        return scale * torch.randn(value.shape, generator=gen, dtype=value.dtype)

    state = module.state_dict()
    for key, value in state.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        spread = float(value.std()) if value.numel() > 1 else 0.0
        state[key] = value + noise(value, 0.5 * spread if spread > 0 else 0.1)
    module.load_state_dict(state, strict=True)
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: one batch gives its statistics
    with torch.no_grad():
        module.train()(*(torch.from_numpy(a).float() for a in inputs))
    state = module.eval().state_dict()
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.randint(0, 1000, (), generator=gen)
        elif key.endswith("running_var"):
            state[key] = value * (0.8 + 0.4 * torch.rand(value.shape, generator=gen))
        elif key.endswith("running_mean"):
            state[key] = value + noise(value, 0.1) * state[key[: -len("mean")] + "var"].sqrt()
    module.load_state_dict(state, strict=True)
    return module, {k: v.numpy() for k, v in state.items()}


def imported(state, rules, model, *example):
    shapes = mapping.variable_shapes(model, *example)
    variables = mapping.import_variables(state, rules, shapes, source="official")
    # Export gives back the file: same keys in the same order, same values.
    kept = {k: v for k, v in state.items() if mapping.is_batch_counter(k)}
    back = mapping.overlay(mapping.export_state_dict(variables, rules), kept)
    assert list(back) == list(state)
    assert all(np.array_equal(back[k], state[k]) for k in state)
    return variables


def run(torch, official, state, rules, model, torch_args, jax_args, dtype, to_jax):
    """(max abs error per output, seconds: torch, jax first call (compile + run), jax
    second call) in `dtype`."""
    torch_dtype = getattr(torch, dtype)
    with jax.enable_x64(dtype == "float64"):
        variables = imported(state, rules, model, *jax_args)
        variables = jax.tree.map(lambda a: jnp.asarray(a, dtype), variables)
        official = official.to(torch_dtype)
        start = time.perf_counter()
        with torch.no_grad():
            want = official(*(torch.from_numpy(a).to(torch_dtype) for a in torch_args))
        t_torch = time.perf_counter() - start
        fn = jax.jit(lambda v, *a: model.clone(dtype=dtype, param_dtype=dtype).apply(v, *a))
        args = [jnp.asarray(a, dtype) for a in jax_args]
        times = [time.perf_counter()]
        for _ in range(2):
            got = jax.block_until_ready(fn(variables, *args))
            times.append(time.perf_counter())
        t_jax = (times[1] - times[0], times[2] - times[1])
        errors = {}
        for name, (g, w) in to_jax(got, want).items():
            assert g.dtype == np.dtype(dtype) and g.shape == w.shape, name
            errors[name] = float(np.max(np.abs(g - w)))
    return errors, t_torch, t_jax


def check(label, dtype, errors, t_torch, t_jax):
    print(
        f"\n{label} {dtype}: max abs error "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        + f"; torch {t_torch:.1f} s, jax {t_jax[0]:.1f} s with compile, {t_jax[1]:.1f} s run"
    )
    assert max(errors.values()) <= TOLERANCE[dtype], errors


# (F config, W config, image size, dtype): the released config (module defaults) at 256;
# the tiny one of the model tests at 64 (16x16x8 volume, 3-level hourglass).
CASES = [
    ({}, {}, 256, "float32"),
    (TINY_F, TINY_W, 64, "float32"),
    (TINY_F, TINY_W, 64, "float64"),
]
IDS = ["released-float32", "tiny-float32", "tiny-float64"]


@pytest.mark.parametrize("f_config, w_config, size, dtype", CASES, ids=IDS)
def test_appearance_matches_official(torch, f_config, w_config, size, dtype):
    image = np.random.default_rng(0).random((1, size, size, 3))
    torch_image = image.transpose(0, 3, 1, 2)
    model = AppearanceFeatureExtractor(**f_config)
    official, state = randomize(torch, official_f(model), 0, torch_image)
    errors, t_torch, t_jax = run(
        torch,
        official,
        state,
        liveportrait.appearance_rules(**f_config),
        model,
        [torch_image],
        [image],
        dtype,
        lambda got, want: {"f_s": (np.asarray(got), want.numpy().transpose(0, 2, 3, 4, 1))},
    )
    check(f"F {size}", dtype, errors, t_torch, t_jax)


@pytest.mark.parametrize("f_config, w_config, size, dtype", CASES, ids=IDS)
def test_warping_matches_official(torch, f_config, w_config, size, dtype):
    model = WarpingNetwork(**w_config)
    rng = np.random.default_rng(1)
    side = size // 4
    volume = rng.standard_normal((1, model.reshape_depth, side, side, model.reshape_channel))
    kp_source = rng.uniform(-0.8, 0.8, (1, model.num_kp, 3))
    kp_driving = kp_source + rng.normal(0.0, 0.1, kp_source.shape)
    torch_args = [volume.transpose(0, 4, 1, 2, 3), kp_driving, kp_source]
    official, state = randomize(torch, official_w(model), 1, *torch_args)

    def outputs(got, want):
        return {
            "out": (np.asarray(got["out"]), want["out"].numpy().transpose(0, 2, 3, 1)),
            "occlusion": (
                np.asarray(got["occlusion_map"]),
                want["occlusion_map"].numpy().transpose(0, 2, 3, 1),
            ),
            "deformation": (np.asarray(got["deformation"]), want["deformation"].numpy()),
        }

    errors, t_torch, t_jax = run(
        torch,
        official,
        state,
        liveportrait.warping_rules(**w_config),
        model,
        torch_args,
        [volume, kp_driving, kp_source],
        dtype,
        outputs,
    )
    check(f"W {side}x{side}", dtype, errors, t_torch, t_jax)
