"""LIA / AniTalker stage-1 inference rate at 256x256 (ms/frame, frames/s, GFLOP/s).

Times, jitted, in fp32 with random weights (the rate does not depend on their values):
- `full`: the release's forward pass `gen(source, driving)` (encode both, render);
- `cached_source`: video-driven inference as `jaxtalk animate` runs it, the source
  encoded once and each frame costing encode_motion + render;
both, as `jaxtalk animate` does, with the model's weight cache (its weight-only arrays,
computed once per model: jaxtalk/models/layers/weight_cache.py),
at batch 1 and batched, over --rounds rounds (median, min, max). `--torch_reference
/path/to/LIA` also times the released PyTorch Generator's forward pass on --torch_device
(auto: cuda when torch sees a GPU; torch.set_num_threads(--threads) on the CPU) in each of
--torch_modes: `eager_fp32` (the release as published), `compile_fp16` (the Generator
torch.compile'd with --torch_compile_mode, max-autotune by default, under autocast fp16,
each call marking a new CUDA-graph step: LivePortrait's release applies its
flag_do_torch_compile and flag_use_half_precision options so, and LIA's has none), or any
other of benchmarks/_timing.TorchMode's; every mode is one more side alternating with
jaxtalk's `full` round by round in this process (benchmarks/_timing.alternate), a torch
call ending with torch.cuda.synchronize() on the GPU. fp16 modes are refused on the CPU
(one line: its fp16 convs take a slow path, many times fp32's). The jax
row's speedup is against the first mode, each torch row's `jax_speedup` against itself (per
round: median and range); a compiled mode's row gives its first call (the compilation) as
compile_s. torch is only imported with --torch_reference.

  python benchmarks/lia_inference.py [--model lia|anitalker] [--batches 1,8] [--rounds 5]
      [--torch_reference /tmp/ref/LIA] [--torch_device auto|cpu|cuda]
      [--torch_modes eager_fp32,compile_fp16] [--torch_compile_mode max-autotune] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _timing import (
    JAX_SPEEDUP,
    alternate,
    blocking,
    emit,
    flops,
    machine_row,
    seconds,
    speedup,
    torch_device,
    torch_fields,
    torch_modes,
)

from jaxtalk import lapack_threads
from jaxtalk.models.layers.weight_cache import WEIGHT_CACHE, weight_cache


def _row(label, batch, timing, gflop=None, **extra):
    median = timing["median_s"]
    row = {
        "run": label,
        "batch": batch,
        "ms_per_frame": round(1000 * median / batch, 2),
        "ms_per_frame_min": round(1000 * timing["min_s"] / batch, 2),
        "ms_per_frame_max": round(1000 * timing["max_s"] / batch, 2),
        "frames_per_s": round(batch / median, 2),
        "rounds": timing["rounds"],
    }
    if gflop is not None:
        row["gflop"] = round(gflop, 2)
        row["gflop_per_s"] = round(gflop / median, 1)
    return emit({**row, **extra})


def jax_calls(model_name, size, batch):
    """{name: (blocking call, GFLOP per call)}: jaxtalk's full forward and the
    cached-source frame at `batch`."""
    from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
    from jaxtalk.models.lia.generator import LIAGenerator

    model = (LIAGenerator if model_name == "lia" else AniTalkerMotion)(size=size)
    rng = np.random.default_rng(0)
    src = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    drv = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    variables = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), src[:1], drv[:1]))
    variables = {**variables, WEIGHT_CACHE: weight_cache(model, variables, src[:1], drv[:1])}
    full = jax.jit(lambda v, s, d: model.apply(v, s, d)["image"])
    encode = "encode_source" if model_name == "lia" else "encode"
    enc = model.apply(variables, src[:1], method=encode)
    wa = enc["wa"] if "wa" in enc else enc["h"]

    def frame(v, d):
        if model_name == "lia":
            alpha = model.apply(v, d, method="encode_motion")
        else:
            alpha = model.apply(v, d, method="encode")["alpha"]
        tile = lambda a: jnp.broadcast_to(a, (d.shape[0],) + a.shape[1:])
        feats = [tile(f) for f in enc["feats"]]
        return model.apply(v, tile(wa), feats, alpha, method="render")["image"]

    frame = jax.jit(frame)
    return {
        "full": (
            lambda: full(variables, src, drv).block_until_ready(),
            flops(full, variables, src, drv) / 1e9,
        ),
        "cached_source": (
            lambda: frame(variables, drv).block_until_ready(),
            flops(frame, variables, drv) / 1e9,
        ),
    }


def release_generator(torch, path, size, batch, device, threads):
    """(the released Generator from the checkout `path` on `device`, seeded, and a batch of
    random source and driving images there)."""
    torch.set_num_threads(threads)
    if device == "cpu":
        torch.Tensor.cuda = lambda self, *a, **k: self  # the release hard-codes .cuda()
    if not hasattr(torch, "qr"):
        torch.qr = torch.linalg.qr
    if path not in sys.path:
        sys.path.insert(0, path)
    from networks.generator import Generator

    torch.manual_seed(0)
    gen = Generator(size, 512, 20, 1).to(device)
    src, drv = ((torch.rand(batch, 3, size, size) * 2 - 1).to(device) for _ in range(2))
    return gen, src, drv


def torch_sides(torch, args, batch, device, modes) -> tuple[dict, dict]:
    """({"torch_<mode>": blocking call}, {"torch_<mode>": extra row fields}): the released
    Generator's forward pass at `batch` on `device` in each mode, compiled ones warmed up."""
    gen, src, drv = release_generator(
        torch, args.torch_reference, args.size, batch, device, args.threads
    )
    gen.eval()
    torch._dynamo.reset()  # each batch compiles for its own shapes
    sides, extra = {}, {}
    for mode in modes:
        module = mode.module(torch, gen, args.torch_compile_mode)

        def call(module=module, mode=mode):
            with torch.no_grad(), mode.autocast(torch, device):
                if mode.compiled:  # as the release's warp_decode does
                    torch.compiler.cudagraph_mark_step_begin()
                return module(src, drv)

        name = f"torch_{mode.name}"
        sides[name] = blocking(torch, device, call)
        extra[name] = torch_fields(torch, device, mode, args.threads)
        if mode.compiled:
            extra[name]["compile_s"] = round(seconds(sides[name]), 1)
            sides[name]()  # CUDA graphs are recorded in the calls after the compilation
    return sides, extra


def main():
    lapack_threads.single_thread()  # as the CLI and train() do (jaxtalk/lapack_threads.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lia", choices=["lia", "anitalker"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--torch_reference", default="")
    ap.add_argument("--torch_device", default="auto", help="auto|cpu|cuda")
    ap.add_argument("--torch_modes", default="eager_fp32", help="comma list, e.g. compile_fp16")
    ap.add_argument("--torch_compile_mode", default="max-autotune", help="torch.compile's mode")
    ap.add_argument("--threads", type=int, default=2, help="torch's CPU threads")
    args = ap.parse_args()
    torch = device = None
    if args.torch_reference:
        import torch

        device = torch_device(torch, args.torch_device)  # before jax takes the GPU
        modes = torch_modes(args.torch_modes, device)
    emit({**machine_row(), **({"torch": torch.__version__} if torch else {})})
    for batch in [int(b) for b in args.batches.split(",")]:
        calls = jax_calls(args.model, args.size, batch)
        (full, full_gflop), (cached, cached_gflop) = calls["full"], calls["cached_source"]
        name = f"jax_{args.model}"
        if torch is not None:
            sides, extra = torch_sides(torch, args, batch, device, modes)
            t = alternate({"jax": full, **sides}, args.rounds)
            first = next(iter(sides))
            _row(f"{name}_full", batch, t["jax"], full_gflop, speedup_vs=first,
                 **speedup(t["ratios"][first]))  # fmt: skip
            for side in sides:
                vs = speedup(t["ratios"][side], *JAX_SPEEDUP)
                _row("torch_release_full", batch, t[side], full_gflop, **extra[side], **vs)
            del sides
        else:
            _row(f"{name}_full", batch, alternate({"jax": full}, args.rounds)["jax"], full_gflop)
        timing = alternate({"jax": cached}, args.rounds)["jax"]
        _row(f"{name}_cached_source", batch, timing, cached_gflop)


if __name__ == "__main__":
    main()
