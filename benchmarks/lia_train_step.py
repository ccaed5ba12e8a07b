"""Generator training step of LIA at 256x256, batch 8, L1 loss only (s/step, examples/s).

The step is the release's `gen_update` reduced to its L1 term: forward gen(source,
driving), L1 to the driving frame, backward, Adam (lr 0.002 * 4/5, betas (0, 0.99^(4/5)))
-- jitted with the state donated. `--torch_reference /path/to/LIA` times the same step
with the released PyTorch Generator on the same machine (torch threads = --threads).

  python benchmarks/lia_train_step.py [--batch 8] [--steps 3] [--model lia|anitalker]
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
import optax

RATIO = 4 / 5  # g_reg_every 4 in the release's trainer


def _report(label, times, batch, **extra):
    mean = float(np.mean(times))
    row = {
        "run": label,
        "batch": batch,
        "s_per_step": round(mean, 3),
        "s_per_step_best": round(min(times), 3),
        "examples_per_s": round(batch / mean, 3),
    }
    row.update(extra)
    print(json.dumps(row), flush=True)
    return row


def bench_jax(model_name, size, batch, steps):
    from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
    from jaxtalk.models.lia.generator import LIAGenerator

    model = (LIAGenerator if model_name == "lia" else AniTalkerMotion)(size=size)
    rng = np.random.default_rng(0)
    src = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    drv = jnp.asarray(rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32))
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), src[:1], drv[:1]))["params"]
    tx = optax.adam(0.002 * RATIO, b1=0.0, b2=0.99**RATIO)
    opt_state = tx.init(params)

    def loss_fn(p):
        recon = model.apply({"params": p}, src, drv)["image"]
        return jnp.mean(jnp.abs(recon - drv))

    @jax.jit
    def step(p, o):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        params, opt_state, loss = step(params, opt_state)
        loss.block_until_ready()
        times.append(time.perf_counter() - t0)
    return _report(
        f"jax_{model_name}_g_step_l1",
        times,
        batch,
        first_step_s=round(compile_s, 1),
        loss=round(float(loss), 4),
    )


def bench_torch(path, size, batch, steps, threads):
    import torch

    torch.set_num_threads(threads)
    torch.Tensor.cuda = lambda self, *a, **k: self
    if not hasattr(torch, "qr"):
        torch.qr = torch.linalg.qr
    sys.path.insert(0, path)
    from networks.generator import Generator

    gen = Generator(size, 512, 20, 1).train()
    opt = torch.optim.Adam(gen.parameters(), lr=0.002 * RATIO, betas=(0.0, 0.99**RATIO))
    src = torch.rand(batch, 3, size, size) * 2 - 1
    drv = torch.rand(batch, 3, size, size) * 2 - 1

    def step():
        gen.zero_grad()
        loss = torch.nn.functional.l1_loss(gen(src, drv), drv)
        loss.backward()
        opt.step()
        return loss

    step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return _report(
        "torch_release_g_step_l1", times, batch, torch=torch.__version__, threads=threads
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lia", choices=["lia", "anitalker"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--torch_reference", default="")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
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
    j = bench_jax(args.model, args.size, args.batch, args.steps)
    if args.torch_reference:
        t = bench_torch(args.torch_reference, args.size, args.batch, args.steps, args.threads)
        print(json.dumps({"speedup_vs_torch": round(t["s_per_step"] / j["s_per_step"], 2)}))


if __name__ == "__main__":
    main()
