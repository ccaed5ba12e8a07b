"""LivePortrait per-frame rate: M + W + G with stitching, the source prepared once (F, M and
its keypoints), at batch 1 and batched, jaxtalk against the released PyTorch modules.

Both sides hold the same random weights (drawn once in jaxtalk's layout, written into the
official modules through the converter's rules; M's heads scaled so the keypoints lie in
the volume as a trained model's do, spectral-norm vectors at their fixed point) and run the
same frames: each driving frame's motion relative to the batch's first frame, stitching,
W, G. jaxtalk runs its animator's `start` and `drive` (jaxtalk/inference/liveportrait.py,
as `jaxtalk animate` does, `chunk` = the batch; a call ends when the frames are ready on the
device); the official side LivePortraitWrapper's get_kp_info / transform_keypoint /
stitching / warp_decode on --torch_device (auto: cuda when torch sees a GPU, each call
ending with torch.cuda.synchronize(); torch.set_num_threads(--threads) on the CPU), in each
of --torch_modes as the release applies its options: `eager_fp32` (fp16 autocast off),
`eager_fp16` (flag_use_half_precision, the release's default), `compile_fp16` (also
flag_do_torch_compile: W and G torch.compile'd with --torch_compile_mode, max-autotune as
released); fp16 modes are refused on the CPU (benchmarks/_timing.torch_modes). Every side
(each jaxtalk variant, each torch mode) alternates call by call over --rounds rounds after
a warm-up (benchmarks/_timing.alternate); each row gives the median, min and max per frame,
and the GFLOP/s achieved (XLA's cost analysis of jaxtalk's M, W and G) as a fraction of
this run's matmul peak of the row's own framework, device and dtype (jnp.dot's; torch.mm's
for the torch rows). A jaxtalk row's speedup is against the first torch mode, each torch
row's `jax_speedup` is the first jaxtalk side against it, both medians of the per-round
ratios. Each torch mode's images are compared once with jaxtalk's (max abs difference) so a
faster side computing something else shows. A stage-1 training step is not timed here.

  python benchmarks/liveportrait_frame.py [--batches 1,4] [--rounds 5] [--size 256]
      [--torch_reference /path/to/LivePortrait] [--torch_device auto|cpu|cuda]
      [--torch_modes eager_fp32,eager_fp16,compile_fp16] [--threads N]
      [--dtype float32|bfloat16]

--size 128 is a quicker smoke run (the volume must stay a multiple of 32 wide).
--conv3d native,slices times jaxtalk once per way of computing its 3-D convs
(jaxtalk/models/layers/conv3d.py; the default "auto" is slices on CPU, patches for maps
smaller than the kernel), alternating too; --upsampled_conv phases,plain likewise for the
convs of nearest-upsampled maps (jaxtalk/models/layers/upsampled_conv.py: "phases", the
default, at the low resolution; "plain" upsamples first, as the release does). Each side's
GFLOP/s is from its own count: the release's is jaxtalk's with "plain" upsampled convs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
from _timing import (
    JAX_SPEEDUP,
    alternate,
    blocking,
    peak_key,
    peak_row,
    ratio,
    speedup,
    torch_fields,
    torch_modes,
)
from _timing import seconds as _seconds
from _timing import torch_device as resolve_torch_device

from jaxtalk.convert import liveportrait as lp_convert
from jaxtalk.convert.mapping import export_state_dict, flatten_params
from jaxtalk.models.liveportrait.retargeting import RELEASED

# Std and mean of M's head outputs in a trained model's range (as the parity test sets them).
HEADS = {"kp": (0.3, 0.0), "exp": (0.02, 0.0), "t": (0.03, 0.0), "scale": (0.05, 1.5)}


def log(row):
    print(json.dumps(row), flush=True)


def random_variables(seed=0) -> dict:
    """The released networks' variables: He-scaled kernels, zero biases, BatchNorm at the
    identity, unit spectral-norm vectors, M's heads scaled to HEADS."""
    rng = np.random.default_rng(seed)
    out = {"params": {}, "batch_stats": {}}
    shapes = {n.group: n.shapes({}) for n in lp_convert.BASE_NETWORKS}
    for group, model in RELEASED.items():
        size = lp_convert._retargeting_sizes(21)[group][0]
        shapes[group] = lp_convert._retargeting_shapes(dict(model, input_size=size))
    for group, tree in shapes.items():
        for path, s in flatten_params(tree).items():
            collection, *rest = path.split("/")
            name = rest[-1]
            if name == "kernel":
                fan_in = int(np.prod(s.shape[:-1]))
                value = rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)
                head = rest[0][3:] if rest[0].startswith("fc_") else None
                if group == "motion" and head in HEADS:
                    value = rng.standard_normal(s.shape) * HEADS[head][0] / np.sqrt(fan_in)
                if group == "spade" and "mlp_" in path:  # SPADE's modulation at a trained
                    value *= 0.2  # decoder's gain (8 blocks of norm * (1 + gamma) otherwise
                    # amplify float32 rounding until the two sides' images differ visibly)
            elif name in ("scale", "var"):
                value = np.ones(s.shape)
            elif name in ("u", "v"):
                value = np.zeros(s.shape)  # set below, from the kernel
            elif group == "motion" and name == "bias" and rest[0] == "fc_scale":
                value = np.full(s.shape, HEADS["scale"][1])
            else:
                value = np.zeros(s.shape)
            node = out[collection].setdefault(group, {})
            for part in rest[:-1]:
                node = node.setdefault(part, {})
            node[name] = value.astype(np.float32)
    _spectral_vectors(out, rng)
    return out


def _spectral_vectors(variables, rng, iters=20):
    """Each spectral-norm conv's u, v: the top singular vectors of its kernel in PyTorch's
    (out, in * kh * kw) layout, by power iteration, as a trained model holds them (random
    vectors would make sigma = u^T W v arbitrarily small and the decoder blow up)."""
    params = variables["params"]

    def walk(stats, path):
        if not isinstance(stats, dict):  # a BatchNorm statistic
            return
        if "u" in stats:
            node = params
            for part in path:
                node = node[part]
            kernel = node["kernel"]
            mat = kernel.transpose(3, 2, 0, 1).reshape(kernel.shape[3], -1).astype(np.float64)
            u = rng.standard_normal(mat.shape[0])
            for _ in range(iters):
                v = mat.T @ u
                v /= np.linalg.norm(v)
                u = mat @ v
                u /= np.linalg.norm(u)
            stats["u"], stats["v"] = u.astype(np.float32), v.astype(np.float32)
            return
        for key, child in stats.items():
            walk(child, path + [key])

    walk(variables["batch_stats"], [])


def matmul_peaks(keys, torch=None, iters=5) -> dict:
    """{peak_key: GFLOP/s}: the best n x n matmul (n 8192 on a GPU, else 4096) for each
    (framework, [device,] dtype) key of `keys`: jnp.dot's, torch.mm's (with `torch`)."""
    out = {}
    for key in dict.fromkeys(keys):
        device = key[1] if key[0] == "torch" else jax.default_backend()
        n = 4096 if device == "cpu" else 8192
        row = peak_row(key[-1], n, iters, *((torch, device) if key[0] == "torch" else ()))
        out[key] = row["gflop_per_s"]
    return out


class JaxFrame:
    """jaxtalk's animator (jaxtalk/inference/liveportrait.py) on B driving frames against
    one prepared source: `start` (M, relative motion against the batch's first frame,
    stitching) and `drive` (W, G), as `jaxtalk animate` runs them chunk by chunk."""

    def __init__(self, variables, source, batch, dtype, conv3d="auto", upsampled="phases"):
        from jaxtalk.inference.liveportrait import LivePortraitAnimator

        self.conv3d, self.upsampled = conv3d, upsampled
        self._ways()
        config = {"kind": "liveportrait", "input_size": source.shape[1]}
        self.animator = LivePortraitAnimator(variables, config, batch, dtype=jnp.dtype(dtype))
        self.state = self.animator.prepare(source[0])

    def _ways(self):
        """This frame's ways of computing the 3-D and the upsampled convs, read when its
        functions are traced (jaxtalk/models/layers/{conv3d,upsampled_conv}.py)."""
        os.environ["JAXTALK_CONV3D"] = "" if self.conv3d == "auto" else self.conv3d
        os.environ["JAXTALK_UPSAMPLED_CONV"] = self.upsampled

    def flops(self, driving) -> float:
        """XLA's count for M on the batch plus W and G on its keypoints."""
        self._ways()
        a = self.animator
        _, steps = a.start(self.state, driving)
        lowered = [
            a._motion.lower(a.variables, driving),
            a._render.lower(a._render_variables(), self.state["feature"], self.state["kp"], steps),
        ]
        total = 0.0
        for low in lowered:
            analysis = low.compile().cost_analysis()
            analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
            total += float(analysis.get("flops", float("nan")))
        return total

    def __call__(self, driving):
        """The frames, on the device: the call ends when they are ready there."""
        self._ways()
        state, steps = self.animator.start(self.state, driving)
        return jax.block_until_ready(self.animator.drive(state, steps))


def official_modules(torch, code, variables, device="cpu") -> dict:
    """{group: the official module (from the checkout `code`) holding `variables`' weights,
    written through the converter's rules, in eval mode, on `device`}: F, M, W, G and the
    MLPs."""
    sys.path.insert(0, code)
    from src.modules.appearance_feature_extractor import AppearanceFeatureExtractor
    from src.modules.motion_extractor import MotionExtractor
    from src.modules.spade_generator import SPADEDecoder
    from src.modules.stitching_retargeting_network import StitchingRetargetingNetwork
    from src.modules.warping_network import WarpingNetwork

    dense = dict(block_expansion=32, max_features=1024, num_blocks=5, reshape_depth=16)
    modules = {
        "appearance": AppearanceFeatureExtractor(3, 64, 2, 512, 32, 16, 6),
        "motion": MotionExtractor(num_kp=21, backbone="convnextv2_tiny"),
        "warping": WarpingNetwork(
            num_kp=21,
            block_expansion=64,
            max_features=512,
            num_down_blocks=2,
            reshape_channel=32,
            estimate_occlusion_map=True,
            dense_motion_params=dict(dense, compress=4),
        ),
        "spade": SPADEDecoder(upscale=2, block_expansion=64, max_features=512),
    }
    for group, model in RELEASED.items():
        size = lp_convert._retargeting_sizes(21)[group][0]
        hidden = list(model["hidden_sizes"])
        modules[group] = StitchingRetargetingNetwork(size, hidden, model["output_size"])
    for net in lp_convert.BASE_NETWORKS:
        tree = {c: variables[c][net.group] for c in variables if net.group in variables[c]}
        _load(torch, modules[net.group], export_state_dict(tree, net.rules()), device)
    for group, model in RELEASED.items():
        rules = lp_convert.retargeting_rules(model["hidden_sizes"])
        state = export_state_dict({"params": variables["params"][group]}, rules)
        _load(torch, modules[group], state, device)
    return modules


def _load(torch, module, state, device):
    module.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    module.to(device).eval()


class TorchFrame:
    """The official modules with the same weights, through LivePortraitWrapper's methods, in
    one torch mode (benchmarks/_timing.TorchMode) on `device`, as the release's wrapper runs
    with that mode's options: W and G torch.compile'd when compiled (flag_do_torch_compile),
    autocast fp16 (flag_use_half_precision) when the mode's dtype is float16."""

    def __init__(self, torch, modules, source, first, device, mode, compile_mode):
        from src.live_portrait_wrapper import LivePortraitWrapper  # official_modules' checkout

        self.torch, self.device = torch, device
        if mode.dtype not in ("float32", "float16"):
            raise SystemExit(f"--torch_modes {mode.name}: the release's autocast is fp16 only")
        wrapper = object.__new__(LivePortraitWrapper)
        wrapper.device, wrapper.compile = device, mode.compiled
        half = mode.dtype == "float16"
        wrapper.inference_cfg = types.SimpleNamespace(flag_use_half_precision=half)
        wrapper.appearance_feature_extractor = modules["appearance"]
        wrapper.motion_extractor = modules["motion"]
        wrapper.warping_module = mode.module(torch, modules["warping"], compile_mode)
        wrapper.spade_generator = mode.module(torch, modules["spade"], compile_mode)
        wrapper.stitching_retargeting_module = {g: modules[g] for g in RELEASED}
        self.wrapper = wrapper
        with torch.no_grad():
            source = self._tensor(source)
            self.f_s = wrapper.extract_feature_3d(source)
            self.s_info = wrapper.get_kp_info(source)
            self.x_s = wrapper.transform_keypoint(self.s_info)
            self.d0_info = wrapper.get_kp_info(self._tensor(first))
        self._batched = {}

    def _tensor(self, images):
        """Float NHWC numpy in [0, 1] -> float32 NCHW on the device."""
        nchw = np.asarray(images, np.float32).transpose(0, 3, 1, 2)
        return self.torch.from_numpy(np.ascontiguousarray(nchw)).to(self.device)

    def _source(self, b):
        """The source's volume, info and keypoints repeated to batch b (prepared once)."""
        if b not in self._batched:
            rep = lambda t: t.expand(b, *t.shape[1:]).contiguous()  # noqa: E731
            info = {k: rep(v) for k, v in self.s_info.items()}
            first = {k: rep(v) for k, v in self.d0_info.items()}
            self._batched[b] = (rep(self.f_s), info, rep(self.x_s), first)
        return self._batched[b]

    def __call__(self, driving):
        from src.utils.camera import get_rotation_matrix

        w = self.wrapper
        f_s, s_info, x_s, d0_info = self._source(driving.shape[0])
        with self.torch.no_grad():
            d_info = w.get_kp_info(driving)
            rot = [
                get_rotation_matrix(i["pitch"], i["yaw"], i["roll"])
                for i in (s_info, d0_info, d_info)
            ]
            r_new = (rot[2] @ rot[1].permute(0, 2, 1)) @ rot[0]
            exp = s_info["exp"] + (d_info["exp"] - d0_info["exp"])
            scale = s_info["scale"] * (d_info["scale"] / d0_info["scale"])
            t = s_info["t"] + (d_info["t"] - d0_info["t"])
            t[..., 2] = 0
            # (B, 1, 1) and (B, 1, 3): the release runs one frame at a time, where its
            # (1, 1) and (1, 3) broadcast alike
            scale, t = scale.reshape(-1, 1, 1), t[:, None, :]
            x_d = w.stitching(x_s, scale * (s_info["kp"] @ r_new + exp) + t)
            return w.warp_decode(f_s, x_s, x_d)["out"]


def summary(timing, batch, flops, peak) -> dict:
    """Per frame: median, min and max ms of an alternate() summary, frames/s, GFLOP/s and
    its fraction of `peak` (GFLOP/s)."""
    median = timing["median_s"] / batch
    out = {
        "ms_per_frame_median": round(1000 * median, 1),
        "ms_per_frame_min": round(1000 * timing["min_s"] / batch, 1),
        "ms_per_frame_max": round(1000 * timing["max_s"] / batch, 1),
        "frames_per_s": round(1 / median, 3),
    }
    if np.isfinite(flops) and flops > 0:
        gflops = flops / batch / median / 1e9
        out["gflop_per_s"] = round(gflops, 1)
        out["fraction_of_matmul_peak"] = round(gflops / peak, 3)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--torch_reference", default="", help="the official checkout (holding src/)")
    ap.add_argument("--torch_device", default="auto", help="auto|cpu|cuda")
    ap.add_argument("--torch_modes", default="eager_fp32", help="comma list, e.g. eager_fp16")
    ap.add_argument("--torch_compile_mode", default="max-autotune", help="torch.compile's mode")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch's CPU threads")
    ap.add_argument(
        "--conv3d", default="auto", help="comma list of auto|native|slices|concat|patches"
    )
    ap.add_argument("--upsampled_conv", default="phases", help="comma list of phases|plain")
    args = ap.parse_args()
    if args.size % 128:
        ap.error("--size must be a multiple of 128 (W's 5-level hourglass on size/4)")
    batches = [int(b) for b in args.batches.split(",")]
    torch, device, modes = None, "", []
    if args.torch_reference:
        import torch

        torch.set_num_threads(args.threads)
        device = resolve_torch_device(torch, args.torch_device)  # before jax takes the GPU
        modes = torch_modes(args.torch_modes, device)
    log(
        {
            "machine": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "backend": jax.default_backend(),
            "device": str(jax.devices()[0]),
            "torch": torch.__version__ if torch else None,
            "torch_device": device or None,
            "torch_threads": args.threads if torch else None,
            "size": args.size,
            "dtype": args.dtype,
        }
    )
    fields = {m.name: torch_fields(torch, device, m, args.threads) for m in modes}
    peaks = matmul_peaks([("jax", args.dtype)] + [peak_key(f) for f in fields.values()], torch)
    log({"matmul_peak_gflops": {" ".join(k): round(v, 1) for k, v in peaks.items()}})
    rng = np.random.default_rng(0)
    shape = (1 + max(batches), args.size, args.size, 3)
    images = rng.integers(0, 256, shape, dtype=np.uint8)
    # The batch's first frame is the first driving frame on both sides.
    source, frames = images[:1], images[1:]
    variables = random_variables()
    ways = [(m, u) for m in args.conv3d.split(",") for u in args.upsampled_conv.split(",")]
    tx = {}
    if torch:
        modules = official_modules(torch, args.torch_reference, variables, device)
        first = frames[:1] / 255.0
        for mode in modes:
            tx[mode.name] = TorchFrame(
                torch, modules, source / 255.0, first, device, mode, args.torch_compile_mode
            )

    for b in batches:
        driving = frames[:b]
        extra, sides, flops = {}, {}, {}
        for m, u in ways:
            name = "jax" if len(ways) == 1 else "_".join(["jax", m, u])
            frame = JaxFrame(variables, source, b, args.dtype, m, u)
            extra[name] = {"first_call_s": round(_seconds(lambda f=frame: f(driving)), 1)}
            sides[name] = lambda f=frame: f(driving)
            flops[name] = frame.flops(driving)
        first_jax = next(iter(sides))
        if tx:
            # the release computes its upsampled convs at the high resolution
            plain = [n for (m, u), n in zip(ways, flops) if u == "plain"]
            release_flops = (
                flops[plain[0]]
                if plain
                else JaxFrame(variables, source, b, args.dtype, upsampled="plain").flops(driving)
            )
            t_driving = next(iter(tx.values()))._tensor(driving / 255.0)
            got = (np.asarray(sides[first_jax](), np.float32) + 1) / 2
            for mode in modes:
                name = f"torch_{mode.name}"
                call = blocking(torch, device, lambda f=tx[mode.name]: f(t_driving))
                extra[name] = dict(fields[mode.name])
                if mode.compiled:
                    extra[name]["compile_s"] = round(_seconds(call), 1)
                    call()  # CUDA graphs are recorded in the calls after the compilation
                want = call().float().cpu().numpy().transpose(0, 2, 3, 1)
                extra[name]["max_abs_difference"] = float(np.abs(got - want).max())
                sides[name], flops[name] = call, release_flops
        times = {}
        t = alternate(sides, args.rounds, times)
        for name in sides:
            torch_side = name.startswith("torch_")
            key = peak_key(extra[name]) if torch_side else ("jax", args.dtype)
            out = {"run": "torch" if torch_side else name, "batch": b, "dtype": args.dtype,
                   "size": args.size, "gflop_per_frame": round(flops[name] / b / 1e9, 1),
                   **summary(t[name], b, flops[name], peaks[key]), **extra[name]}  # fmt: skip
            if torch_side:  # the first jaxtalk side against this one
                out.update(speedup(t["ratios"][name], *JAX_SPEEDUP))
            elif tx:  # this jaxtalk side against the first torch mode
                first_torch = f"torch_{modes[0].name}"
                out.update(speedup(ratio(times[name], times[first_torch])))
                out["max_abs_difference"] = extra[first_torch]["max_abs_difference"]
            log(out)


if __name__ == "__main__":
    main()
