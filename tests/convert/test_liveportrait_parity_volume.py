"""Parity of LivePortrait's F (appearance feature extractor) and W (warping module) with
the official PyTorch modules, on CPU torch: the official networks get random weights
(every tensor perturbed, BatchNorm running statistics randomised), their state_dicts go
through `appearance_rules` / `warping_rules`, and both sides run the same inputs.

- float32 at the released config and size (256 image, 64x64x16 volume);
- float64 at a reduced-width config (64 image, 16x16x8 volume, 3-level hourglass):
  torch's float64 Conv3d on CPU unfolds its input (the 7x7x7 mask conv alone would ask for
  25 GB at the released size), so float64 runs every structure at small widths.

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

CODE = os.environ.get("LIVEPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="LIVEPORTRAIT_CODE (official checkout) not set")

TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
RELEASED = dict(
    image=256,
    F=dict(
        block_expansion=64,
        num_down_blocks=2,
        max_features=512,
        reshape_channel=32,
        reshape_depth=16,
        num_resblocks=6,
    ),
    W=dict(
        num_kp=21,
        block_expansion=64,
        max_features=512,
        num_down_blocks=2,
        reshape_channel=32,
        reshape_depth=16,
        dense_block_expansion=32,
        dense_max_features=1024,
        dense_num_blocks=5,
        compress=4,
    ),
)
REDUCED = dict(
    image=64,
    F=dict(
        block_expansion=8,
        num_down_blocks=2,
        max_features=64,
        reshape_channel=8,
        reshape_depth=8,
        num_resblocks=2,
    ),
    W=dict(
        num_kp=5,
        block_expansion=8,
        max_features=64,
        num_down_blocks=2,
        reshape_channel=8,
        reshape_depth=8,
        dense_block_expansion=4,
        dense_max_features=32,
        dense_num_blocks=3,
        compress=2,
    ),
)


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, CODE)
    return torch


def official_f(cfg):
    from src.modules.appearance_feature_extractor import AppearanceFeatureExtractor as Official

    return Official(image_channel=3, **cfg)


def official_w(cfg):
    from src.modules.warping_network import WarpingNetwork as Official

    dense = dict(
        block_expansion=cfg["dense_block_expansion"],
        max_features=cfg["dense_max_features"],
        num_blocks=cfg["dense_num_blocks"],
        reshape_depth=cfg["reshape_depth"],
        compress=cfg["compress"],
    )
    keep = ("num_kp", "block_expansion", "max_features", "num_down_blocks", "reshape_channel")
    return Official(
        **{k: cfg[k] for k in keep}, estimate_occlusion_map=True, dense_motion_params=dense
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
    """(max abs error per output, torch seconds, jax seconds) in `dtype`."""
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
        start = time.perf_counter()
        got = jax.block_until_ready(fn(variables, *args))
        t_jax = time.perf_counter() - start  # includes compilation
        errors = {}
        for name, (g, w) in to_jax(got, want).items():
            assert g.dtype == np.dtype(dtype) and g.shape == w.shape, name
            errors[name] = float(np.max(np.abs(g - w)))
    return errors, t_torch, t_jax


def check(label, dtype, errors, t_torch, t_jax):
    print(
        f"\n{label} {dtype}: max abs error "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        + f"; torch {t_torch:.1f} s, jax (with compile) {t_jax:.1f} s"
    )
    assert max(errors.values()) <= TOLERANCE[dtype], errors


CASES = [(RELEASED, "float32"), (REDUCED, "float32"), (REDUCED, "float64")]
IDS = ["released-float32", "reduced-float32", "reduced-float64"]


@pytest.mark.parametrize("config, dtype", CASES, ids=IDS)
def test_appearance_matches_official(torch, config, dtype):
    size = config["image"]
    image = np.random.default_rng(0).random((1, size, size, 3))
    torch_image = image.transpose(0, 3, 1, 2)
    official, state = randomize(torch, official_f(config["F"]), 0, torch_image)
    model = AppearanceFeatureExtractor(**config["F"])
    errors, t_torch, t_jax = run(
        torch,
        official,
        state,
        liveportrait.appearance_rules(**config["F"]),
        model,
        [torch_image],
        [image],
        dtype,
        lambda got, want: {"f_s": (np.asarray(got), want.numpy().transpose(0, 2, 3, 4, 1))},
    )
    check(f"F {size}", dtype, errors, t_torch, t_jax)


@pytest.mark.parametrize("config, dtype", CASES, ids=IDS)
def test_warping_matches_official(torch, config, dtype):
    cfg = config["W"]
    rng = np.random.default_rng(1)
    side = config["image"] // 4
    volume = rng.standard_normal((1, cfg["reshape_depth"], side, side, cfg["reshape_channel"]))
    kp_source = rng.uniform(-0.8, 0.8, (1, cfg["num_kp"], 3))
    kp_driving = kp_source + rng.normal(0.0, 0.1, kp_source.shape)
    torch_args = [volume.transpose(0, 4, 1, 2, 3), kp_driving, kp_source]
    official, state = randomize(torch, official_w(cfg), 1, *torch_args)
    model = WarpingNetwork(**cfg)

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
        liveportrait.warping_rules(**cfg),
        model,
        torch_args,
        [volume, kp_driving, kp_source],
        dtype,
        outputs,
    )
    check(f"W {side}x{side}", dtype, errors, t_torch, t_jax)
