"""Parity with the official LivePortrait code for M (motion extractor), G (SPADE decoder) and
S (stitching / retargeting MLPs), run on CPU torch: the official modules get random weights
(every tensor perturbed, GRN's zero-initialised gamma/beta included, and the spectral-norm
u, v moved off their power-iteration fixed point so that eval's use of the stored vectors
matters), their state_dicts go through jaxtalk's rules, and both sides run the same inputs
in float64 and in float32. G also runs in training mode: one power iteration, the updated
u, v compared with the official buffers. The keypoint functions are checked against the
official camera.py and LivePortraitWrapper methods (transform_keypoint, stitching,
retarget_eye, retarget_lip) with official S networks. Small inputs keep it quick (M at 64x64, G on a
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


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_pose_degrees_and_rotation_match_official(torch, dtype_name):
    from src.utils.camera import get_rotation_matrix, headpose_pred_to_degree

    from jaxtalk.models.liveportrait import keypoints

    bins = np.random.default_rng(3).standard_normal((3, 5, 66)) * 3
    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    ref_deg = [headpose_pred_to_degree(torch.from_numpy(b).to(tdtype)) for b in bins]
    ref_rot = get_rotation_matrix(*ref_deg).double().numpy()
    with jax.enable_x64(dtype_name == "float64"):
        jbins = [jnp.asarray(b, dtype_name) for b in bins]
        deg = [np.asarray(keypoints.headpose_degrees(b), np.float64) for b in jbins]
        rot = np.asarray(keypoints.rotation_matrix(*jbins), np.float64)
    errors = {
        "degrees": max(np.abs(d - r.double().numpy()).max() for d, r in zip(deg, ref_deg)),
        "rotation": np.abs(rot - ref_rot).max(),
    }
    report(f"pose {dtype_name}", errors)
    # Degrees span about +-100: their bound is relative to that.
    assert errors["degrees"] < 100 * TOLERANCE[dtype_name]
    assert errors["rotation"] < TOLERANCE[dtype_name]


@pytest.mark.parametrize("dtype_name", ["float64", "float32"])
def test_keypoint_transform_stitching_and_retargeting_match_official_wrapper(torch, dtype_name):
    """jaxtalk's keypoint functions against the official LivePortraitWrapper methods
    (transform_keypoint, stitching, retarget_eye, retarget_lip) on a batch of 2."""
    pytest.importorskip("cv2")  # the wrapper module imports it
    from src.live_portrait_wrapper import LivePortraitWrapper
    from src.modules.stitching_retargeting_network import StitchingRetargetingNetwork as Official

    from jaxtalk.models.liveportrait import keypoints

    tdtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    rng = np.random.default_rng(4)
    info = dict(
        kp=rng.standard_normal((2, 63)) * 0.3,
        exp=rng.standard_normal((2, 63)) * 0.05,
        pitch=rng.standard_normal((2, 66)) * 2,
        yaw=rng.standard_normal((2, 66)) * 2,
        roll=rng.standard_normal((2, 66)) * 2,
        t=rng.standard_normal((2, 3)) * 0.1,
        scale=1 + rng.uniform(size=(2, 1)),
    )
    wrapper = object.__new__(LivePortraitWrapper)  # no files, no device: just the methods
    torch.manual_seed(0)
    nets = {}
    for role, in_size in (("stitching", 126), ("lip", 65), ("eye", 66)):
        cfg = RELEASED[role]
        nets[role] = randomized(
            torch, Official(in_size, list(cfg["hidden_sizes"]), cfg["output_size"]), 5
        ).to(tdtype)
    wrapper.stitching_retargeting_module = nets
    t_info = {k: torch.from_numpy(v).to(tdtype) for k, v in info.items()}
    x_s = wrapper.transform_keypoint(t_info)
    x_d = x_s + 0.02 * torch.from_numpy(rng.standard_normal((2, 21, 3))).to(tdtype)
    eye_ratio = torch.from_numpy(rng.uniform(size=(2, 3))).to(tdtype)
    lip_ratio = torch.from_numpy(rng.uniform(size=(2, 2))).to(tdtype)
    with torch.no_grad():
        ref = dict(
            transform=x_s,
            stitch=wrapper.stitching(x_s, x_d),
            eye=wrapper.retarget_eye(x_s, eye_ratio),
            lip=wrapper.retarget_lip(x_s, lip_ratio),
        )
    with jax.enable_x64(dtype_name == "float64"):
        dt = jnp.dtype(dtype_name)
        params = {}
        for role, net in nets.items():
            rules = lp_convert.retargeting_rules(RELEASED[role]["hidden_sizes"])
            example = jnp.zeros((1, net.mlp[0].in_features), dt)
            params[role] = to_jax(load(net, rules, RetargetingMLP(**RELEASED[role]), example), dt)
        j = {k: jnp.asarray(v, dt) for k, v in info.items()}
        js, jd = jnp.asarray(x_s.numpy(), dt), jnp.asarray(x_d.numpy(), dt)
        out = dict(
            transform=keypoints.transform_keypoints(j),
            stitch=keypoints.stitch(params["stitching"], js, jd),
            eye=keypoints.retarget_eye(params["eye"], js, jnp.asarray(eye_ratio.numpy(), dt)),
            lip=keypoints.retarget_lip(params["lip"], js, jnp.asarray(lip_ratio.numpy(), dt)),
        )
    errors = {
        k: np.abs(np.asarray(out[k], np.float64) - ref[k].double().numpy()).max() for k in ref
    }
    report(f"keypoints {dtype_name}", errors)
    assert max(errors.values()) < TOLERANCE[dtype_name]
