"""Generator training step of LIA at 256x256, batch 8, L1 loss only (s/step, examples/s).

The step is the release's `gen_update` reduced to its L1 term: forward gen(source,
driving), L1 to the driving frame, backward, Adam (lr 0.002 * 4/5, betas (0, 0.99^(4/5)))
-- jitted with the state donated, the batch split over every local device, in --dtype
(compute; params stay fp32). `--torch_reference /path/to/LIA` also times the same step with
the released PyTorch Generator, eager fp32 as released, on --torch_device (auto: cuda when
torch sees a GPU, each step ending with torch.cuda.synchronize(); on the CPU torch threads =
--threads), alternating with jaxtalk step by step over --steps rounds in this process
(benchmarks/_timing.alternate): median, min, max.

  python benchmarks/lia_train_step.py [--batch 8] [--steps 3] [--model lia|anitalker]
      [--dtype float32|bfloat16] [--torch_reference /tmp/ref/LIA]
      [--torch_device auto|cpu|cuda] [--threads 2]
"""

from __future__ import annotations

import argparse

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from _timing import (
    JAX_SPEEDUP,
    alternate,
    blocking,
    emit,
    flops,
    machine_row,
    speedup,
    torch_device,
    torch_fields,
)
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from lia_inference import release_generator

from jaxtalk import lapack_threads

RATIO = 4 / 5  # g_reg_every 4 in the release's trainer


def _row(label, batch, timing, gflop=None, **extra):
    median = timing["median_s"]
    row = {
        "run": label,
        "batch": batch,
        "s_per_step": round(median, 4),
        "s_per_step_min": round(timing["min_s"], 4),
        "s_per_step_max": round(timing["max_s"], 4),
        "examples_per_s": round(batch / median, 3),
        "rounds": timing["rounds"],
    }
    if gflop is not None:
        row["gflop"] = round(gflop, 1)
        row["gflop_per_s"] = round(gflop / median, 1)
    return emit({**row, **extra})


def jax_step(model_name, size, batch, dtype):
    """(one blocking training step, its GFLOP): the state lives in a closure, donated."""
    from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
    from jaxtalk.models.lia.generator import LIAGenerator

    model = (LIAGenerator if model_name == "lia" else AniTalkerMotion)(size=size, dtype=dtype)
    rng = np.random.default_rng(0)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    split = NamedSharding(mesh, PartitionSpec("data"))
    shape = (batch, size, size, 3)
    src = jax.device_put(rng.uniform(-1, 1, shape).astype(np.float32), split)
    drv = jax.device_put(rng.uniform(-1, 1, shape).astype(np.float32), split)
    params = nn.unbox(jax.jit(model.init)(jax.random.PRNGKey(0), src[:1], drv[:1]))["params"]
    tx = optax.adam(0.002 * RATIO, b1=0.0, b2=0.99**RATIO)

    def loss_fn(p):
        recon = model.apply({"params": p}, src, drv)["image"].astype(jnp.float32)
        return jnp.mean(jnp.abs(recon - drv))

    def step(p, o):
        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, o = tx.update(grads, o, p)
        return optax.apply_updates(p, updates), o, loss

    state = [params, tx.init(params)]
    step = jax.jit(step, donate_argnums=(0, 1))
    gflop = flops(step, *state) / 1e9  # lowering donates nothing; the calls reuse this compile

    def call():
        state[0], state[1], loss = step(*state)
        loss.block_until_ready()

    return call, gflop


def torch_step(torch, path, size, batch, threads, device):
    gen, src, drv = release_generator(torch, path, size, batch, device, threads)
    gen.train()
    opt = torch.optim.Adam(gen.parameters(), lr=0.002 * RATIO, betas=(0.0, 0.99**RATIO))

    def call():
        gen.zero_grad()
        loss = torch.nn.functional.l1_loss(gen(src, drv), drv)
        loss.backward()
        opt.step()

    return blocking(torch, device, call)


def main():
    lapack_threads.single_thread()  # as the CLI and train() do (jaxtalk/lapack_threads.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lia", choices=["lia", "anitalker"])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3, help="timed rounds")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--torch_reference", default="")
    ap.add_argument("--torch_device", default="auto", help="auto|cpu|cuda")
    ap.add_argument("--threads", type=int, default=2, help="torch's CPU threads")
    args = ap.parse_args()
    torch = None
    if args.torch_reference:
        import torch

        device = torch_device(torch, args.torch_device)  # before jax takes the GPU
    emit({**machine_row(), **({"torch": torch.__version__} if torch else {})})
    step, gflop = jax_step(args.model, args.size, args.batch, jnp.dtype(args.dtype))
    label = f"jax_{args.model}_g_step_l1"
    if torch is not None:
        release = torch_step(torch, args.torch_reference, args.size, args.batch, args.threads,
                             device)  # fmt: skip
        t = alternate({"jax": step, "torch": release}, args.steps)
        _row(label, args.batch, t["jax"], gflop, dtype=args.dtype, **speedup(t["ratio"]))
        vs = speedup(t["ratio"], *JAX_SPEEDUP)
        _row("torch_release_g_step_l1", args.batch, t["torch"], gflop,
             **torch_fields(torch, device, threads=args.threads), **vs)  # fmt: skip
    else:
        _row(label, args.batch, alternate({"jax": step}, args.steps)["jax"], gflop,
             dtype=args.dtype)  # fmt: skip


if __name__ == "__main__":
    main()
