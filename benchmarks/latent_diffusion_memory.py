"""FSDP memory per device of AniPortrait's full denoising stack on 8 simulated devices.

UNet3DConditionModel(SD15, MotionModule in every slot, mid-block module): 1,312,730,244
parameters. On an fsdp=8 mesh and a hybrid data=2 x fsdp=4 mesh, compiled (never executed)
on abstract inputs:
  (a) parameters + AdamW state placed by the config's logical_axis_rules: bytes per device
      (memory_analysis of an identity program on the placed state, and the bytes the
      shardings imply) against total / fsdp, and every kernel with a dimension >= 320 that
      stays replicated;
  (b) one training step (epsilon MSE, gradient, AdamW update, state donated) at small
      activation shapes, remat off and on (every resnet, spatial transformer and motion
      module block): temp / argument / output bytes per device, the bytes each kind of
      collective moves per device (jaxtalk/train/communication.py), and the compile time.
Prints one JSON row per measurement, then a table.

  python benchmarks/latent_diffusion_memory.py [--frames 2] [--side 32] [--per_device 1]
      [--meshes fsdp8,data2_fsdp4] [--remat off,on] [--dtype float32] [--skip_placement]
      [--fast_compile]

Measured (2-core CPU shared with other jobs, load average 10-21, jax 0.10.2), float32:
  state fsdp8: 1,976,840,212 B/device = 1.0039 x total/8 (total 15,752,762,932 B: params +
      AdamW mu, nu); data2_fsdp4: 3,944,725,492 B = 1.0017 x total/4; no kernel with a dim
      >= 320 replicated; identity-program compile 6-12 s; eval_shape 6 s.
  step fsdp8, batch 8 x 2 frames x 32x32, remat off: argument 1,977,142,296 B, output
      1,976,869,800 B (1,976,840,212 aliased: the donated state), temp 6,916,543,808 B;
      compile 1,690 s (28 min under that load).
  remat on (--fast_compile): argument and output bytes the same, temp 9,324,713,536 B;
      compile 314 s. remat off again with --fast_compile: temp 6,916,543,808 B, identical to
      the -O2 build (compile 191 s), so -O0 leaves buffer sizes unchanged. XLA's CPU scheduler shows no activation saving from remat at this size
      (temp rises by 2.4 GB): the temp is dominated by all-gathered float32 weights and
      full-size gradients (1.3B x 4 B = 5.25 GB) rather than 2-frame 32x32 activations. On
      a GPU at 16 frames x 64x64 the activations dominate and per-block remat should cut
      the peak; measure there (same script, --frames 16 --side 64 --dtype bfloat16).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time

if "jax" not in sys.modules:  # 8 simulated CPU devices unless the caller chose otherwise
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
        os.environ["XLA_FLAGS"] = flags.strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import linen as nn  # noqa: E402

from configs.common import LOGICAL_AXIS_RULES  # noqa: E402
from jaxtalk.models.latent_diffusion import unet as ld  # noqa: E402
from jaxtalk.models.latent_diffusion.motion_module import MotionModule  # noqa: E402
from jaxtalk.train import communication, memory, sharding  # noqa: E402

MESHES = {
    "fsdp8": {"data": 1, "fsdp": 8, "tensor": 1},
    "data2_fsdp4": {"data": 2, "fsdp": 4, "tensor": 1},
}
TOKENS, CONTEXT_DIM = 77, 768
GIB = 2**30


def denoising_stack(remat: bool, dtype):
    config = dataclasses.replace(ld.SD15, remat=remat)
    motion = functools.partial(MotionModule, remat=remat, dtype=dtype)
    return ld.UNet3DConditionModel(config, motion_module=motion, motion_mid=True, dtype=dtype)


def inputs(batch, frames, side, dtype=jnp.float32):
    """Abstract training inputs: noisy latents, per-sample timesteps and context, noise."""
    latent = jax.ShapeDtypeStruct((batch, frames, side, side, 4), dtype)
    return {
        "noisy": latent,
        "t": jax.ShapeDtypeStruct((batch,), jnp.float32),
        "context": jax.ShapeDtypeStruct((batch, TOKENS, CONTEXT_DIM), dtype),
        "noise": jax.ShapeDtypeStruct(latent.shape, jnp.float32),
    }


def row(**fields):
    print(json.dumps(fields), flush=True)
    return fields


def measure_placement(mesh_name, boxed, params_count):
    mesh = sharding.make_mesh(MESHES[mesh_name])
    shardings = sharding.shardings_for(boxed, mesh, LOGICAL_AXIS_RULES)
    implied = memory.state_bytes(nn.unbox(boxed), shardings)
    compiled, seconds = memory.compile_placement(boxed, mesh, LOGICAL_AXIS_RULES)
    fsdp = mesh.shape["fsdp"]
    measured = memory.analysis(compiled)["argument_bytes"]
    return row(
        kind="placement",
        mesh=mesh_name,
        params=params_count,
        total_bytes=implied["total_bytes"],
        per_device_bytes=measured,
        implied_per_device_bytes=implied["per_device_bytes"],
        ratio_to_total_over_fsdp=round(measured / (implied["total_bytes"] / fsdp), 4),
        replicated_kernels_ge_320=memory.replicated_kernels(boxed["params"], shardings["params"]),
        compile_s=round(seconds, 1),
    )


def measure_step(mesh_name, remat, args, dtype):
    mesh = sharding.make_mesh(MESHES[mesh_name])
    batch = args.per_device * mesh.shape["data"] * mesh.shape["fsdp"]
    model = denoising_stack(remat, dtype)
    tx = optax.adamw(1e-5, weight_decay=1e-2)
    batch_inputs = inputs(batch, args.frames, args.side, dtype)
    boxed = memory.abstract_state(
        model,
        tx,
        jax.random.PRNGKey(0),
        *(batch_inputs[k] for k in ("noisy", "t", "context")),
    )
    options = {"xla_backend_optimization_level": 0} if args.fast_compile else None
    compiled, seconds = memory.compile_train_step(
        memory.diffusion_loss(model), tx, boxed, batch_inputs, mesh, LOGICAL_AXIS_RULES, options
    )
    return row(
        kind="train_step",
        mesh=mesh_name,
        remat=remat,
        batch=batch,
        frames=args.frames,
        side=args.side,
        dtype=args.dtype,
        **memory.analysis(compiled),
        # bytes of the tensors each kind of collective moves per device, per step
        collective_bytes={k: v["bytes"] for k, v in communication.collectives(compiled).items()},
        compile_s=round(seconds, 1),
        fast_compile=args.fast_compile,
    )


def table(rows):
    print()
    print(f"{'measurement':34s} {'arg GiB':>8s} {'out GiB':>8s} {'temp GiB':>9s} {'compile s':>9s}")
    for r in rows:
        if r["kind"] == "placement":
            name = f"state {r['mesh']} (x{r['ratio_to_total_over_fsdp']} of total/fsdp)"
            temp, out = 0, r["per_device_bytes"]
        else:
            name = f"step {r['mesh']} remat={'on' if r['remat'] else 'off'}"
            temp, out = r["temp_bytes"], r["output_bytes"]
        arg = r["per_device_bytes"] if r["kind"] == "placement" else r["argument_bytes"]
        print(
            f"{name:34s} {arg / GIB:8.3f} {out / GIB:8.3f} {temp / GIB:9.3f} {r['compile_s']:9.1f}"
        )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--side", type=int, default=32, help="latent side (8x the image side)")
    p.add_argument("--per_device", type=int, default=1, help="samples per data-carrying device")
    p.add_argument("--meshes", default="fsdp8,data2_fsdp4")
    p.add_argument("--remat", default="off,on")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--skip_placement", action="store_true")
    p.add_argument(
        "--fast_compile",
        action="store_true",
        help="LLVM at -O0: buffer sizes are unchanged, the CPU compile is quicker",
    )
    args = p.parse_args(argv)
    dtype = jnp.dtype(args.dtype)
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "devices": len(jax.devices()),
                "platform": jax.devices()[0].platform,
                "load_avg": os.getloadavg(),
                "jax": jax.__version__,
            }
        ),
        flush=True,
    )
    rows = []
    meshes = args.meshes.split(",")
    if not args.skip_placement:
        start = time.perf_counter()
        model = denoising_stack(False, jnp.float32)
        tx = optax.adamw(1e-5, weight_decay=1e-2)
        small = inputs(1, args.frames, args.side)
        boxed = memory.abstract_state(
            model, tx, jax.random.PRNGKey(0), *(small[k] for k in ("noisy", "t", "context"))
        )
        count = sum(x.size for x in jax.tree.leaves(nn.unbox(boxed["params"])))
        print(json.dumps({"eval_shape_s": round(time.perf_counter() - start, 1)}), flush=True)
        for mesh_name in meshes:
            rows.append(measure_placement(mesh_name, boxed, count))
    for mesh_name in meshes:
        for remat in filter(None, args.remat.split(",")):
            rows.append(measure_step(mesh_name, remat == "on", args, dtype))
    table(rows)


if __name__ == "__main__":
    main()
