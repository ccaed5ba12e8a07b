"""The whole LivePortrait frame against the official code: the official F, M, W, G and
stitching / retargeting modules get random weights, their state_dicts are written in the
released directory layout and imported with `jaxtalk import`'s converter, then one source
image and two driving frames (the first and the current) go through the official pipeline
(the wrapper's extract_feature_3d, get_kp_info, transform_keypoint, the pipeline's relative
motion in its 'pose-friendly' form, stitching, warp_decode) and through jaxtalk's
LivePortrait animator (prepare, start, drive: the keypoint functions of
jaxtalk/models/liveportrait/keypoints.py, then W and G); the 512x512 image must agree.

Weights are randomised as the per-module parity tests do (tests/convert/
test_liveportrait_parity_{volume,motion}.py): every tensor perturbed, BatchNorm statistics
measured on the very inputs each network sees in the pipeline and perturbed, spectral-norm
u, v near their fixed point; M's heads are scaled so that keypoints, expressions,
translations and scales have the magnitudes of a trained model (keypoints within the
volume, scales near 1.5), so the warp moves the volume as in the release.

- float32 at the released config and size (256 input, 512 output), bound 1e-4;
- float32 and float64 at reduced widths (64 input, 16x16x8 volume, 3-level hourglass,
  4 keypoints, 32-channel decoder -> 128x128 image; M at its released widths), bound 1e-9
  in float64: torch's float64 Conv3d on CPU unfolds its input (the released 7x7x7 mask
  conv alone would ask for 25 GB). The official extract_feature_3d returns `.float()`, so
  float64 calls F directly.

    LIVEPORTRAIT_CODE=/path/to/LivePortrait pytest -n 0 -s tests/convert/test_liveportrait_official_pipeline.py
"""

import os
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxtalk.convert import releases, weights
from jaxtalk.inference.liveportrait import LivePortraitAnimator
from jaxtalk.models.liveportrait.appearance import AppearanceFeatureExtractor
from jaxtalk.models.liveportrait.retargeting import RELEASED
from jaxtalk.models.liveportrait.warping import WarpingNetwork
from tests.convert.test_liveportrait_parity_motion import randomized
from tests.convert.test_liveportrait_parity_volume import official_f, official_w, randomize
from tests.convert.test_liveportrait_release import write_release
from tests.models.liveportrait.test_appearance_warping import TINY_F, TINY_W

CODE = os.environ.get("LIVEPORTRAIT_CODE")
pytestmark = pytest.mark.skipif(not CODE, reason="LIVEPORTRAIT_CODE (official checkout) not set")

TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
COLLECTIONS = ("params", "batch_stats")
# (F options, W options, G options of the official SPADEDecoder, input size)
CONFIGS = {
    "released": ({}, {}, dict(block_expansion=64, max_features=512, num_down_blocks=2), 256),
    "reduced": (TINY_F, TINY_W, dict(block_expansion=8, max_features=64, num_down_blocks=2), 64),
}
# Target std of M's head outputs (and bias means) as a trained model gives them.
HEADS = {"kp": (0.3, 0.0), "exp": (0.02, 0.0), "t": (0.03, 0.0), "scale": (0.05, 1.5)}


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    sys.path.insert(0, CODE)
    return torch


def smooth_image(rng, size):
    """(1, size, size, 3) in [0, 1]: an 8x8 random image resized bilinearly, plus a little
    noise (a face crop is smooth, not white noise)."""
    coarse = rng.uniform(0, 1, (1, 8, 8, 3))
    image = np.asarray(jax.image.resize(coarse, (1, size, size, 3), "linear"))
    return np.clip(image + 0.02 * rng.standard_normal(image.shape), 0, 1)


def scale_heads(torch, motion, seed):
    """M's fc_kp / fc_exp / fc_t / fc_scale rescaled to outputs of trained magnitude."""
    gen = torch.Generator().manual_seed(seed)
    state = motion.state_dict()
    for head, (std, mean) in HEADS.items():
        w = state[f"detector.fc_{head}.weight"]
        state[f"detector.fc_{head}.weight"] = (
            std / w.shape[1] ** 0.5 * torch.randn(w.shape, generator=gen, dtype=w.dtype)
        )
        b = state[f"detector.fc_{head}.bias"]
        state[f"detector.fc_{head}.bias"] = mean + std * torch.randn(
            b.shape, generator=gen, dtype=b.dtype
        )
    motion.load_state_dict(state)
    return motion


def calm_spade(decoder, factor=0.2):
    """The SPADE modulation convs (mlp_shared, mlp_gamma, mlp_beta) scaled down by `factor`.

    `randomized` adds noise of std 0.05 to every weight, about 6x the init's std at these
    fan-ins; the unnormalised modulation convs then give norm * (1 + gamma) gains of ~4 in
    each of G's 8 blocks, and float32 rounding alone moves the image by ~1e-4 (measured at
    the released size: the official float32 frame 9.9e-5 from jaxtalk's float64 one,
    jaxtalk's float32 1.2e-4; the two float32 frames 1.8e-4 apart). Scaled, the gains are
    of a trained decoder's order and the two float32 frames agree to about 2e-5 (the
    release's own float32 vs float64 difference is about 1.5e-5)."""
    state = decoder.state_dict()
    for key, value in state.items():
        if ".mlp_" in key:
            state[key] = value * factor
    decoder.load_state_dict(state)
    return decoder


def official_wrapper(torch, nets, dtype):
    """The official LivePortraitWrapper's methods over `nets` (no files, CPU, fp16 off)."""
    from src.live_portrait_wrapper import LivePortraitWrapper

    wrapper = object.__new__(LivePortraitWrapper)
    wrapper.device, wrapper.compile = "cpu", False
    wrapper.inference_cfg = types.SimpleNamespace(flag_use_half_precision=False)
    wrapper.appearance_feature_extractor = nets["F"].to(dtype)
    wrapper.motion_extractor = nets["M"].to(dtype)
    wrapper.warping_module = nets["W"].to(dtype)
    wrapper.spade_generator = nets["G"].to(dtype)
    wrapper.stitching_retargeting_module = {k: nets[k].to(dtype) for k in RELEASED}
    return wrapper


def official_keypoints(torch, wrapper, source, first, driving, dtype):
    """The official pipeline up to the warp: dict(f_s, x_s, x_d after stitching)."""
    from src.utils.camera import get_rotation_matrix

    def tensor(a):
        return torch.from_numpy(a.transpose(0, 3, 1, 2)).to(dtype)

    source, first, driving = tensor(source), tensor(first), tensor(driving)
    if dtype == torch.float32:
        f_s = wrapper.extract_feature_3d(source)
    else:
        f_s = wrapper.appearance_feature_extractor(source)
    infos = [wrapper.get_kp_info(x) for x in (source, first, driving)]
    s_info, d0_info, d_info = infos
    r_s, r_d0, r_d = (get_rotation_matrix(i["pitch"], i["yaw"], i["roll"]) for i in infos)
    x_s = wrapper.transform_keypoint(s_info)
    # live_portrait_pipeline.py, relative motion, animation_region "all", pose-friendly:
    r_new = (r_d @ r_d0.permute(0, 2, 1)) @ r_s
    exp_new = s_info["exp"] + (d_info["exp"] - d0_info["exp"])
    scale_new = s_info["scale"] * (d_info["scale"] / d0_info["scale"])
    t_new = s_info["t"] + (d_info["t"] - d0_info["t"])
    t_new[..., 2] = 0
    x_d = scale_new * (s_info["kp"] @ r_new + exp_new) + t_new
    return dict(f_s=f_s, x_s=x_s, x_d=wrapper.stitching(x_s, x_d))


def official_frame(torch, wrapper, source, first, driving, dtype):
    """The official pipeline's frame: dict(image NCHW, f_s, x_s, x_d)."""
    with torch.no_grad():
        out = official_keypoints(torch, wrapper, source, first, driving, dtype)
        out["image"] = wrapper.warp_decode(out["f_s"], out["x_s"], out["x_d"])["out"]
    return out


def official_networks(torch, config, source, first, driving):
    """Official F, M, W, G and S with random weights; BatchNorm statistics of F measured on
    the source and of W on the features and keypoints the pipeline gives it."""
    from src.modules.motion_extractor import MotionExtractor
    from src.modules.spade_generator import SPADEDecoder
    from src.modules.stitching_retargeting_network import StitchingRetargetingNetwork

    f_config, w_config, g_config, _ = config
    w_model = WarpingNetwork(**w_config)
    k = w_model.num_kp
    torch.manual_seed(0)
    nets = {}
    nets["F"], _ = randomize(
        torch, official_f(AppearanceFeatureExtractor(**f_config)), 0, source.transpose(0, 3, 1, 2)
    )
    nets["M"] = scale_heads(
        torch, randomized(torch, MotionExtractor(num_kp=k, backbone="convnextv2_tiny"), 1), 2
    )
    sizes = {"stitching": (6 * k, 3 * k + 2), "lip": (3 * k + 2, 3 * k), "eye": (3 * k + 3, 3 * k)}
    for role, (n_in, n_out) in sizes.items():
        hidden = list(RELEASED[role]["hidden_sizes"])
        nets[role] = randomized(torch, StitchingRetargetingNetwork(n_in, hidden, n_out), 3)
    nets["W"] = official_w(w_model)
    nets["G"] = calm_spade(randomized(torch, SPADEDecoder(upscale=2, **g_config), 4))
    wrapper = official_wrapper(torch, nets, torch.float32)
    with torch.no_grad():
        got = official_keypoints(torch, wrapper, source, first, driving, torch.float32)
    inputs = [got[k].numpy() for k in ("f_s", "x_d", "x_s")]
    nets["W"], _ = randomize(torch, nets["W"], 5, *inputs)
    return nets


def states(nets):
    """{group: state_dict as numpy} in the variables' group names."""
    names = dict(F="appearance", M="motion", W="warping", G="spade")
    names.update({k: k for k in RELEASED})
    return {
        names[n]: {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
        for n, net in nets.items()
    }


def jaxtalk_frame(stored, path, source, first, driving, dtype):
    """(outputs, seconds with compile, seconds of a second run) of jaxtalk's animator:
    prepare, start (relative motion, stitching) and drive over the frames [first, driving]."""
    tree = {c: jax.tree.map(lambda a: jnp.asarray(a, dtype), stored[c]) for c in COLLECTIONS}
    config = dict(stored["model_config"], input_size=source.shape[1])  # not in the files
    animator = LivePortraitAnimator(tree, config, 2, path, jnp.dtype(dtype))

    def run():
        state = animator.prepare(source[0])
        state, steps = animator.start(state, np.concatenate([first, driving]), stitching=True)
        frames = jax.block_until_ready(animator.drive(state, steps))
        image = (np.asarray(frames[1:], np.float64) + 1) / 2
        return dict(image=image, x_s=state["kp"], x_d=steps[1:], f_s=state["feature"])

    times = [time.perf_counter()]
    for _ in range(2):
        out = run()
        times.append(time.perf_counter())
    return out, times[1] - times[0], times[2] - times[1]


@pytest.mark.parametrize(
    "config_name, dtype",
    [("released", "float32"), ("reduced", "float32"), ("reduced", "float64")],
)
def test_frame_matches_official_pipeline(torch, tmp_path, config_name, dtype):
    config = CONFIGS[config_name]
    rng = np.random.default_rng(0)
    size = config[3]
    source, first = smooth_image(rng, size), smooth_image(rng, size)
    driving = np.clip(first + 0.1 * (smooth_image(rng, size) - 0.5), 0, 1)
    # uint8 frames, as the animator takes them; the official side gets their /255
    source, first, driving = (np.round(255 * a).astype(np.uint8) for a in (source, first, driving))
    pixels = [a / 255.0 for a in (source, first, driving)]
    nets = official_networks(torch, config, *pixels)
    write_release(tmp_path / "release", states(nets))
    stored = releases.import_release(
        "liveportrait", tmp_path / "release", output=str(tmp_path / "lp.safetensors")
    )
    variables = weights.load(stored)
    torch_dtype = getattr(torch, dtype)
    start = time.perf_counter()
    wrapper = official_wrapper(torch, nets, torch_dtype)
    want = official_frame(torch, wrapper, *pixels, torch_dtype)
    t_torch = time.perf_counter() - start
    with jax.enable_x64(dtype == "float64"):
        got, t_compile, t_run = jaxtalk_frame(variables, stored, source, first, driving, dtype)
        got = jax.tree.map(lambda a: np.asarray(a, np.float64), got)
    want = {k: v.double().numpy() for k, v in want.items()}
    want["image"] = want["image"].transpose(0, 2, 3, 1)
    want["f_s"] = want["f_s"].transpose(0, 2, 3, 4, 1)
    image = want["image"]
    assert got["image"].shape == image.shape == (1, 2 * size, 2 * size, 3)
    # Not saturated, and the driving frame moved the keypoints: the comparison sees it all.
    assert image.std() > 0.05 and np.abs(want["x_d"] - want["x_s"]).max() > 0.01
    errors = {k: float(np.abs(got[k] - want[k]).max()) for k in ("image", "x_s", "x_d", "f_s")}
    print(
        f"\nframe {config_name} {dtype} ({size} -> {2 * size}): max abs error "
        + ", ".join(f"{k} {v:.2e}" for k, v in errors.items())
        + f"; keypoints moved by {np.abs(want['x_d'] - want['x_s']).max():.2f}, image std "
        f"{image.std():.3f}; torch {t_torch:.1f} s, jax {t_compile:.1f} s with compile, "
        f"{t_run:.1f} s run"
    )
    assert max(errors.values()) <= TOLERANCE[dtype], errors
