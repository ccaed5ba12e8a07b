"""Parity with the official LivePortrait code for M (motion extractor), G (SPADE decoder) and
S (stitching / retargeting MLPs), run on CPU torch: the official modules get random weights
(every tensor perturbed, GRN's zero-initialised gamma/beta included, and the spectral-norm
u, v moved off their power-iteration fixed point so that eval's use of the stored vectors
matters), their state_dicts go through jaxtalk's rules, and both sides run the same inputs
in float64 and in float32. G also runs in training mode: one power iteration, the updated
u, v compared with the official buffers. Small inputs keep it quick (M at 64x64, G on a
8x8 feature map -> 64x64 image; both take any size the release's strides allow).
Needs the official source tree (the directory holding `src/modules`):

    LIVEPORTRAIT_CODE=/path/to/LivePortrait pytest -n 0 -s tests/convert/test_liveportrait_parity_motion.py
"""

import functools
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import liveportrait as lp_convert
from jaxtalk.convert import mapping
from jaxtalk.models.liveportrait.generator import SPADEDecoder
from jaxtalk.models.liveportrait.motion_extractor import MotionExtractor
from jaxtalk.models.liveportrait.retargeting import RELEASED, RetargetingMLP

CODE = os.environ.get("LIVEPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="LIVEPORTRAIT_CODE (official source) not set")
# Bounds on the max abs difference (images are in [0, 1]; head outputs and MLP outputs are
# O(1), and checked relative to their largest magnitude).
TOLERANCE = {"float64": 1e-9, "float32": 1e-4}


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, CODE)
    return torch


def randomized(torch, module, seed):
    """The module with every parameter perturbed, and each spectral-norm u, v taken near
    (not at) the top singular vectors of its perturbed weight, as a trained model has them
    (random u, v would make sigma = u^T W v arbitrarily small)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in module.state_dict().items():
        if not key.endswith(("weight_u", "weight_v")):
            state[key] = value + 0.05 * torch.randn(value.shape, generator=gen, dtype=value.dtype)
    for key in [k for k in state if k.endswith(".weight_orig")]:
        prefix = key[: -len("weight_orig")]
        w = state[key].reshape(state[key].shape[0], -1)
        u = torch.randn(w.shape[0], generator=gen)
        for _ in range(30):
            v = torch.nn.functional.normalize(w.T @ u, dim=0)
            u = torch.nn.functional.normalize(w @ v, dim=0)
        for name, vec in (("weight_u", u), ("weight_v", v)):
            moved = vec + 0.05 * torch.randn(vec.shape, generator=gen) / vec.numel() ** 0.5
            state[prefix + name] = moved / moved.norm()
    module.load_state_dict(state)
    return module.eval()


def load(torch_module, rules, flax_module, example):
    """The official module's state_dict -> jaxtalk variables (float64 numpy)."""
    state = {k: v.detach().double().numpy() for k, v in torch_module.state_dict().items()}
    shapes = mapping.variable_shapes(flax_module, example)
    return mapping.to_params(state, rules, shapes, source="official", dtype=np.float64)


def to_jax(tree, dtype):
    return jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype), tree)


def report(name, errors):
    print(f"\n{name}: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))


def run_both(torch, official, flax_module, rules, x_nhwc, dtype_name, **apply_kw):
    """(official outputs, jaxtalk outputs) as float64 numpy, both in `dtype_name`."""
    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    official = official.to(tdtype)
    xt = torch.from_numpy(x_nhwc)
    if xt.ndim == 4:
        xt = xt.permute(0, 3, 1, 2)
    with torch.no_grad():
        ref = official(xt.to(tdtype))
    with jax.enable_x64(dtype_name == "float64"):
        jdtype = jnp.dtype(dtype_name)
        module = flax_module.clone(dtype=jdtype, param_dtype=jdtype)
        example = jnp.asarray(x_nhwc, jdtype)
        variables = to_jax(load(official, rules, module, example), jdtype)
        out = jax.jit(functools.partial(module.apply, **apply_kw))(variables, example)
        out = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), out)
    return ref, out


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_motion_extractor_matches_official(torch, dtype_name):
    from src.modules.motion_extractor import MotionExtractor as Official

    torch.manual_seed(0)
    official = randomized(torch, Official(num_kp=21, backbone="convnextv2_tiny"), seed=1)
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 3))
    ref, out = run_both(
        torch, official, MotionExtractor(), lp_convert.motion_rules(), x, dtype_name
    )
    errors = {}
    for head, value in ref.items():
        value = value.double().numpy()
        assert out[head].shape == value.shape, head
        errors[head] = np.abs(out[head] - value).max() / max(1.0, np.abs(value).max())
    report(f"M {dtype_name} (max abs error / max(1, |ref|))", errors)
    assert max(errors.values()) < TOLERANCE[dtype_name]


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_spade_decoder_matches_official_in_eval_and_train(torch, dtype_name):
    from src.modules.spade_generator import SPADEDecoder as Official

    torch.manual_seed(0)
    official = randomized(
        torch,
        Official(upscale=2, block_expansion=64, max_features=512, num_down_blocks=2),
        seed=2,
    )
    rules = lp_convert.generator_rules()
    x = np.random.default_rng(1).standard_normal((1, 8, 8, 256))
    ref, out = run_both(torch, official, SPADEDecoder(), rules, x, dtype_name)
    ref = ref.double().numpy().transpose(0, 2, 3, 1)
    assert out.shape == ref.shape == (1, 64, 64, 3)
    assert 0.05 < ref.std()  # not saturated: the comparison sees the whole network
    errors = {"eval image": np.abs(out - ref).max()}

    # Training mode: one power iteration per conv, then the same forward.
    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    before = {k: v.clone() for k, v in official.state_dict().items()}
    official.train()
    with torch.no_grad():
        ref_train = official(torch.from_numpy(x).permute(0, 3, 1, 2).to(tdtype))
    after = {k: v.clone() for k, v in official.state_dict().items()}
    official.load_state_dict(before)
    official.eval()
    with jax.enable_x64(dtype_name == "float64"):
        jdtype = jnp.dtype(dtype_name)
        module = SPADEDecoder(dtype=jdtype, param_dtype=jdtype)
        example = jnp.asarray(x, jdtype)
        variables = to_jax(load(official, rules, module, example), jdtype)
        train_apply = functools.partial(module.apply, train=True, mutable=["batch_stats"])
        out_train, updated = jax.jit(train_apply)(variables, example)
        updated = mapping.flatten_params(jax.device_get(updated))
    new_state = {k: v.detach().double().numpy() for k, v in after.items()}
    vectors = [r for r in rules if r.param_path.startswith("batch_stats/")]
    errors["train image"] = np.abs(
        np.asarray(out_train, np.float64) - ref_train.double().numpy().transpose(0, 2, 3, 1)
    ).max()
    errors["train u, v"] = max(
        np.abs(np.asarray(updated[r.param_path]) - new_state[r.torch_key]).max() for r in vectors
    )
    moved = max(
        np.abs(new_state[r.torch_key] - before[r.torch_key].double().numpy()).max() for r in vectors
    )
    report(f"G {dtype_name} (max abs error; the iteration moved u, v by {moved:.1e})", errors)
    assert moved > 1e-3  # the power iteration did change u, v, so the check above means something
    assert max(errors.values()) < TOLERANCE[dtype_name]


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
@pytest.mark.parametrize("role", sorted(RELEASED))
def test_retargeting_mlps_match_official(torch, role, dtype_name):
    from src.modules.stitching_retargeting_network import StitchingRetargetingNetwork as Official

    cfg = RELEASED[role]
    in_size = {"stitching": 126, "lip": 65, "eye": 66}[role]
    torch.manual_seed(0)
    official = randomized(
        torch, Official(in_size, list(cfg["hidden_sizes"]), cfg["output_size"]), 3
    )
    x = np.random.default_rng(2).standard_normal((4, in_size))
    rules = lp_convert.retargeting_rules(cfg["hidden_sizes"])
    ref, out = run_both(torch, official, RetargetingMLP(**cfg), rules, x, dtype_name)
    ref = ref.double().numpy()
    error = np.abs(out - ref).max() / max(1.0, np.abs(ref).max())
    report(f"S {role} {dtype_name}", {"output": error})
    assert error < TOLERANCE[dtype_name]
