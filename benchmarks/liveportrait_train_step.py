"""LivePortrait stage-1 training step (F, M, W, G, L1 loss, Adam), jaxtalk against the
released PyTorch modules (s/step, examples/s, GFLOP/s).

The step, the same on both sides: source and driving images (B, S, S, 3) in [0, 1] (S = 256
as released); F(source) -> the 3-D appearance volume; M on [source, driving] (one call)
-> keypoint info -> transformed keypoints x_s, x_d as released (no stitching); W warps
the volume; G decodes to 2S x 2S; loss = L1 between G's image and the driving image
upsampled (nearest, x2) to that size; gradients w.r.t. every parameter of F, M, W, G; one
Adam step (lr 2e-4, betas (0.5, 0.999): configs/liveportrait.py's, face-vid2vid's).
Both sides run in training mode, as jaxtalk's liveportrait task trains: BatchNorm (F, W)
normalises with the batch's statistics and updates its running statistics, and every
spectral-norm conv of G runs one power iteration per forward (torch.nn.utils.spectral_norm
in train mode; jaxtalk's SpectralNormConv with train=True); M has neither.

jaxtalk: one jitted step, its state (params, BatchNorm and spectral-norm statistics, optax
Adam state) donated, in --dtype compute (params fp32). `--torch_reference
/path/to/LivePortrait` also runs the official modules (src/modules: appearance feature
extractor, motion extractor, warping network, SPADE generator), the keypoints through
LivePortraitWrapper.transform_keypoint, torch.optim.Adam, eager fp32 as released, on
--torch_device (auto: cuda when torch sees a GPU, each step ending with
torch.cuda.synchronize(); torch.set_num_threads(--threads) on the CPU). Both hold the same
weights (liveportrait_frame.py's
random_variables, written into the official modules through the converter's rules) and
see the same images. Before timing, one step each from that common start is checked: the
two losses and the largest difference of G's last conv kernel after the update. (Adam's
first step moves a weight by lr * g / (|g| + eps), about lr * sign(g): in float32 the
gradients deeper in the chain differ by up to a few % of a tensor's largest entry -- the
batch-1 BatchNorms and instance norms amplify rounding; in float64 all of them agree to
1e-12 -- so there small entries can flip and differ by 2 lr; G's last conv does not.)
Then the sides alternate step by step over --rounds rounds after a warm-up step each
(benchmarks/_timing.alternate). GFLOP is XLA's count of jaxtalk's step, used for both
sides (the release computes the convs of G's upsampled maps at the high resolution,
jaxtalk at the low one, so the release does more work than that count gives it);
peak_fraction is against this process's matmul peak: jnp.dot's in --dtype for jaxtalk,
torch.mm's fp32 on the torch device for the release. The compilation is reported on its own
row as soon as it is done.

  python benchmarks/liveportrait_train_step.py [--batch 1] [--rounds 3] [--size 256]
      [--dtype float32|bfloat16] [--torch_reference /path/to/LivePortrait]
      [--torch_device auto|cpu|cuda] [--threads 2]

--size 128 is a quick smoke run (a multiple of 128: the volume must stay a multiple of 32
wide for W's hourglass).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import (
    JAX_SPEEDUP,
    alternate,
    blocking,
    emit,
    machine_row,
    peak_key,
    speedup,
    torch_device,
    torch_fields,
)
from liveportrait_frame import matmul_peaks, official_modules, random_variables

from jaxtalk import lapack_threads
from jaxtalk.convert import liveportrait as lp_convert
from jaxtalk.convert.mapping import export_state_dict
from jaxtalk.models.liveportrait import keypoints as kp_lib

GROUPS = ("appearance", "motion", "warping", "spade")
LR, BETAS = 2e-4, (0.5, 0.999)
CHECKED = ("spade", "conv_img.0.weight")  # G's last conv


def jax_step(variables, src, drv, dtype):
    """(one blocking step returning its loss, GFLOP, compile seconds, the state)."""
    from jaxtalk.inference.liveportrait import NETWORKS

    nets = {g: NETWORKS[g](dtype=dtype) for g in GROUPS}
    tx = optax.adam(LR, *BETAS)

    def loss_fn(params, stats, src, drv):
        new = {}

        def apply(g, *args):
            v = {"params": params[g], **({"batch_stats": stats[g]} if g in stats else {})}
            out, updated = nets[g].apply(v, *args, train=True, mutable=["batch_stats"])
            new.update({g: updated["batch_stats"]} if g in stats else {})
            return out

        b = src.shape[0]
        feature = apply("appearance", src)
        x = kp_lib.transform_keypoints(apply("motion", jnp.concatenate([src, drv])))
        image = apply("spade", apply("warping", feature, x[b:], x[:b])["out"])
        r = image.shape[1] // drv.shape[1]
        target = jnp.repeat(jnp.repeat(drv, r, 1), r, 2)  # nearest
        return jnp.mean(jnp.abs(image.astype(target.dtype) - target)), new

    def step(state, src, drv):
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (loss, stats), grads = grad_fn(state["params"], state["stats"], src, drv)
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"params": params, "stats": stats, "opt": opt}, loss

    params = {g: variables["params"][g] for g in GROUPS}
    stats = {g: variables["batch_stats"][g] for g in GROUPS if g in variables["batch_stats"]}
    state = jax.device_put({"params": params, "stats": stats, "opt": tx.init(params)})
    src, drv = jax.device_put((src, drv))
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, src, drv).compile()
    compile_s = time.perf_counter() - t0
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    gflop = float((analysis or {}).get("flops", float("nan"))) / 1e9
    box = [state]

    def call():
        box[0], loss = compiled(box[0], src, drv)
        return float(loss)

    return call, gflop, compile_s, box


def torch_step(torch, code, variables, src, drv, device):
    """(one step of the official modules on `device` returning its loss, the modules)."""
    modules = official_modules(torch, code, variables, device)  # puts `code` on sys.path
    from src.live_portrait_wrapper import LivePortraitWrapper

    f, m, w, g = (modules[name].train() for name in GROUPS)
    params = [p for net in (f, m, w, g) for p in net.parameters()]
    opt = torch.optim.Adam(params, lr=LR, betas=BETAS)
    src, drv = (
        torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(device)
        for a in (src, drv)
    )
    b = src.shape[0]

    def call():
        opt.zero_grad(set_to_none=True)
        feature = f(src)
        x = LivePortraitWrapper.transform_keypoint(None, m(torch.cat([src, drv])))
        image = g(feature=w(feature, kp_driving=x[b:], kp_source=x[:b])["out"])
        target = torch.nn.functional.interpolate(drv, size=image.shape[-2:], mode="nearest")
        loss = (image - target).abs().mean()
        loss.backward()
        opt.step()
        return loss.item()

    return blocking(torch, device, call), modules


def check(jax_call, box, torch_call, modules) -> dict:
    """The first step's losses and the largest difference of the CHECKED updated tensor."""
    loss_jax, loss_torch = jax_call(), torch_call()
    group, key = CHECKED
    state = jax.device_get(box[0])
    tree = {"params": state["params"][group], "batch_stats": state["stats"][group]}
    rules = next(net.rules() for net in lp_convert.BASE_NETWORKS if net.group == group)
    mine = export_state_dict(tree, rules)[key]
    diff = np.abs(mine - modules[group].state_dict()[key].cpu().numpy()).max()
    return {"check": "first_step", "loss_jax": loss_jax, "loss_torch": loss_torch,
            "loss_rel_diff": abs(loss_jax - loss_torch) / abs(loss_torch), "lr": LR,
            "updated": f"{group}.{key}", "updated_max_abs_diff": float(diff)}  # fmt: skip


def row(label, batch, size, timing, gflop, peak, **extra) -> dict:
    median = timing["median_s"]
    out = {"run": label, "batch": batch, "size": size, "s_per_step": round(median, 4),
           "s_per_step_min": round(timing["min_s"], 4),
           "s_per_step_max": round(timing["max_s"], 4), "rounds": timing["rounds"],
           "examples_per_s": round(batch / median, 3), "gflop": round(gflop, 1),
           "gflop_per_s": round(gflop / median, 1),
           "peak_fraction": round(gflop / median / peak, 3)}  # fmt: skip
    return emit({**out, **extra})


def main():
    lapack_threads.single_thread()  # as the CLI and train() do (jaxtalk/lapack_threads.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--torch_reference", default="", help="the official checkout (holding src/)")
    ap.add_argument("--torch_device", default="auto", help="auto|cpu|cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch's CPU threads")
    args = ap.parse_args()
    if args.size % 128:
        ap.error("--size must be a multiple of 128 (W's 5-level hourglass on size/4)")
    torch, release = None, {}
    if args.torch_reference:
        import torch

        torch.set_num_threads(args.threads)
        device = torch_device(torch, args.torch_device)  # before jax takes the GPU
        release = torch_fields(torch, device, threads=args.threads)
    emit({**machine_row(), "torch": torch.__version__ if torch else None,
          "torch_threads": args.threads if torch else None})  # fmt: skip
    keys = [("jax", args.dtype)] + ([peak_key(release)] if torch else [])
    peaks = matmul_peaks(keys, torch)
    emit({"matmul_peak_gflops": {" ".join(k): round(v, 1) for k, v in peaks.items()}})
    rng = np.random.default_rng(0)
    shape = (args.batch, args.size, args.size, 3)
    src, drv = (rng.integers(0, 256, shape).astype(np.float32) / 255 for _ in range(2))
    variables = random_variables()
    call, gflop, compile_s, box = jax_step(variables, src, drv, jnp.dtype(args.dtype))
    extra = {"compile_s": round(compile_s, 1)}
    emit({"compiled": "jax_liveportrait_step_l1", "gflop": round(gflop, 1), **extra})
    sides = {"jax": call}
    if torch:
        sides["torch"], modules = torch_step(
            torch, args.torch_reference, variables, src, drv, device
        )
        emit(check(call, box, sides["torch"], modules))
    t = alternate(sides, args.rounds)
    if torch:
        extra.update(speedup(t["ratio"]))
    common = (args.batch, args.size)
    row("jax_liveportrait_step_l1", *common, t["jax"], gflop, peaks[("jax", args.dtype)],
        dtype=args.dtype, **extra)  # fmt: skip
    if torch:
        row("torch_release_step_l1", *common, t["torch"], gflop, peaks[peak_key(release)],
            **release, **speedup(t["ratio"], *JAX_SPEEDUP))  # fmt: skip


if __name__ == "__main__":
    main()
