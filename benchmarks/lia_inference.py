"""LIA / AniTalker stage-1 inference rate at 256x256 (frames/s and ms/frame).

Times, jitted, in fp32 with random weights (the rate does not depend on their values):
- `full`: the release's forward pass `gen(source, driving)` (encode both, render);
- `cached_source`: video-driven inference as `jaxtalk animate` runs it, the source
  encoded once and each frame costing encode_motion + render;
at batch 1 and batched. `--torch_reference /path/to/LIA` also times the released PyTorch
Generator on the same machine (torch.set_num_threads(--threads)); torch is only imported
then.

  python benchmarks/lia_inference.py [--model lia|anitalker] [--batches 1,8] [--iters 5]
      [--torch_reference /tmp/ref/LIA] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _time(fn, iters):
    fn()  # compile / warm up
    best, total = float("inf"), 0.0
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        dt = time.perf_counter() - t0
        best, total = min(best, dt), total + dt
    return best, total / iters


def _row(label, batch, best, mean, **extra):
    row = {
        "run": label,
        "batch": batch,
        "ms_per_frame": round(1000 * mean / batch, 1),
        "ms_per_frame_best": round(1000 * best / batch, 1),
        "frames_per_s": round(batch / mean, 2),
    }
    row.update(extra)
    print(json.dumps(row), flush=True)
    return row


def bench_jax(model_name, size, batches, iters):
    from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
    from jaxtalk.models.lia.generator import LIAGenerator

    model = (LIAGenerator if model_name == "lia" else AniTalkerMotion)(size=size)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32))
    variables = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), x, x))
    rows = []
    encode = "encode_source" if model_name == "lia" else "encode"
    for b in batches:
        src = jnp.asarray(rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32))
        drv = jnp.asarray(rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32))
        full = jax.jit(lambda v, s, d: model.apply(v, s, d)["image"])
        best, mean = _time(lambda: full(variables, src, drv).block_until_ready(), iters)
        rows.append(_row(f"jax_{model_name}_full", b, best, mean))

        enc = model.apply(variables, src[:1], method=encode)
        wa = enc["wa"] if "wa" in enc else enc["h"]

        def frame(v, d, wa=wa, feats=enc["feats"]):
            if model_name == "lia":
                alpha = model.apply(v, d, method="encode_motion")
            else:
                alpha = model.apply(v, d, method="encode")["alpha"]
            n = d.shape[0]
            tile = lambda a: jnp.broadcast_to(a, (n,) + a.shape[1:])
            return model.apply(v, tile(wa), [tile(f) for f in feats], alpha, method="render")[
                "image"
            ]

        frame = jax.jit(frame)
        best, mean = _time(lambda: frame(variables, drv).block_until_ready(), iters)
        rows.append(_row(f"jax_{model_name}_cached_source", b, best, mean))
    return rows


def bench_torch(path, size, batches, iters, threads):
    import torch

    torch.set_num_threads(threads)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the release hard-codes .cuda()
    if not hasattr(torch, "qr"):
        torch.qr = torch.linalg.qr
    sys.path.insert(0, path)
    from networks.generator import Generator

    gen = Generator(size, 512, 20, 1).eval()
    rows = []
    for b in batches:
        src = torch.rand(b, 3, size, size) * 2 - 1
        drv = torch.rand(b, 3, size, size) * 2 - 1
        with torch.no_grad():
            best, mean = _time(lambda: gen(src, drv), iters)
        rows.append(
            _row("torch_release_full", b, best, mean, torch=torch.__version__, threads=threads)
        )
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lia", choices=["lia", "anitalker"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--torch_reference", default="")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cpus": os.cpu_count(),
                "jax": jax.__version__,
                "backend": jax.default_backend(),
            }
        ),
        flush=True,
    )
    rows = bench_jax(args.model, args.size, batches, args.iters)
    if args.torch_reference:
        rows += bench_torch(args.torch_reference, args.size, batches, args.iters, args.threads)
        jx = {r["batch"]: r for r in rows if r["run"] == f"jax_{args.model}_full"}
        for r in rows:
            if r["run"] == "torch_release_full" and r["batch"] in jx:
                print(
                    json.dumps(
                        {
                            "speedup_full_vs_torch": round(
                                r["ms_per_frame"] / jx[r["batch"]]["ms_per_frame"], 2
                            ),
                            "batch": r["batch"],
                        }
                    )
                )


if __name__ == "__main__":
    main()
