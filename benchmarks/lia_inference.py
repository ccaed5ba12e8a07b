"""LIA / AniTalker stage-1 inference rate at 256x256 (ms/frame, frames/s, GFLOP/s).

Times, jitted, in fp32 with random weights (the rate does not depend on their values):
- `full`: the release's forward pass `gen(source, driving)` (encode both, render);
- `cached_source`: video-driven inference as `jaxtalk animate` runs it, the source
  encoded once and each frame costing encode_motion + render;
at batch 1 and batched, over --rounds rounds (median, min, max). `--torch_reference
/path/to/LIA` also times the released PyTorch Generator's forward pass
(torch.set_num_threads(--threads)), alternating with jaxtalk's `full` round by round in this
process (benchmarks/_timing.alternate); torch is only imported then.

  python benchmarks/lia_inference.py [--model lia|anitalker] [--batches 1,8] [--rounds 5]
      [--torch_reference /tmp/ref/LIA] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from _timing import alternate, emit, flops, machine_row

from jaxtalk import lapack_threads


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


def torch_call(path, size, batch, threads):
    import torch

    torch.set_num_threads(threads)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the release hard-codes .cuda()
    if not hasattr(torch, "qr"):
        torch.qr = torch.linalg.qr
    sys.path.insert(0, path)
    from networks.generator import Generator

    gen = Generator(size, 512, 20, 1).eval()
    src = torch.rand(batch, 3, size, size) * 2 - 1
    drv = torch.rand(batch, 3, size, size) * 2 - 1

    def call():
        with torch.no_grad():
            gen(src, drv)

    return call, torch.__version__


def main():
    lapack_threads.single_thread()  # as the CLI and train() do (jaxtalk/lapack_threads.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lia", choices=["lia", "anitalker"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--torch_reference", default="")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    emit(machine_row())
    for batch in [int(b) for b in args.batches.split(",")]:
        calls = jax_calls(args.model, args.size, batch)
        (full, full_gflop), (cached, cached_gflop) = calls["full"], calls["cached_source"]
        name = f"jax_{args.model}"
        if args.torch_reference:
            release, version = torch_call(args.torch_reference, args.size, batch, args.threads)
            t = alternate({"jax": full, "torch": release}, args.rounds)
            speedup = round(1 / t["ratio"]["median"], 2)
            _row(f"{name}_full", batch, t["jax"], full_gflop, speedup_vs_release=speedup,
                 speedup_min=round(1 / t["ratio"]["max"], 2),
                 speedup_max=round(1 / t["ratio"]["min"], 2))  # fmt: skip
            _row("torch_release_full", batch, t["torch"], full_gflop, torch=version,
                 threads=args.threads)  # fmt: skip
        else:
            _row(f"{name}_full", batch, alternate({"jax": full}, args.rounds)["jax"], full_gflop)
        timing = alternate({"jax": cached}, args.rounds)["jax"]
        _row(f"{name}_cached_source", batch, timing, cached_gflop)


if __name__ == "__main__":
    main()
