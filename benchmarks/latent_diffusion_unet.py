"""Times the latent video diffusion denoising stack: UNet forward, a training step, DDIM.

    python benchmarks/latent_diffusion_unet.py            # paper shapes (an accelerator)
    python benchmarks/latent_diffusion_unet.py --quick    # tiny widths and shapes (a CPU)

Paper shapes (AniPortrait): the SD1.5 UNet inflated over 16 frames of 64x64 latents with
AnimateDiff v2 motion modules (mid block included), reading the reference bank of an SD1.5
ReferenceNet run on one 64x64 reference latent, a 768-d context, batch 1. `--quick`: the
family's TINY widths, 4 frames of 16x16. Per compute dtype (float32, bfloat16; params stay
float32) one JSON row each for: `forward` (the denoising UNet on a given bank), `train_step`
(ReferenceNet + denoising UNet, v-loss with AniPortrait's recipe, AdamW; both trained as in
stage 1 of the release) and `ddim` (a 16-frame window, or the quick frame count, sampled
with the recipe's DDIM and CFG 3.5: 2B per model call). Each row: the median ms of N calls, examples/s,
XLA's flop count of the compiled function, and MFU against the best large-matmul rate
measured in the same run at that dtype.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from _timing import alternate, flops, matmul_peak

from jaxtalk.diffusion import objectives, recipes
from jaxtalk.diffusion.samplers import sample_video
from jaxtalk.models.latent_diffusion import unet as unet_lib
from jaxtalk.models.latent_diffusion.motion_module import MotionModule


@dataclasses.dataclass(frozen=True)
class Shapes:
    unet: unet_lib.UNetConfig
    frames: int
    size: int
    motion_heads: int
    motion_groups: int
    ddim_steps: int


PAPER = Shapes(unet_lib.SD15, frames=16, size=64, motion_heads=8, motion_groups=32, ddim_steps=25)
QUICK = Shapes(unet_lib.TINY, frames=4, size=16, motion_heads=2, motion_groups=8, ddim_steps=3)


def build(shapes: Shapes, dtype):
    motion = functools.partial(
        MotionModule, heads=shapes.motion_heads, norm_groups=shapes.motion_groups, dtype=dtype
    )
    reference = unet_lib.UNet2DConditionModel(
        dataclasses.replace(shapes.unet, conv_out=False), return_bank=True, dtype=dtype
    )
    denoiser = unet_lib.UNet3DConditionModel(
        shapes.unet, motion_module=motion, motion_mid=True, dtype=dtype
    )
    return reference, denoiser


def run(shapes: Shapes, dtype_name: str, iters: int, peak: float, log):
    dtype = jnp.dtype(dtype_name)
    reference, denoiser = build(shapes, dtype)
    cfg = shapes.unet
    rng = jax.random.PRNGKey(0)
    ref = jax.random.normal(rng, (1, shapes.size, shapes.size, cfg.in_channels))
    x0 = jax.random.normal(rng, (1, shapes.frames, shapes.size, shapes.size, cfg.in_channels))
    ctx = jnp.zeros((1, 1, cfg.cross_attention_dim))
    t0 = jnp.zeros((1,), jnp.int32)
    ref_params = nn.meta.unbox(reference.init(rng, ref, t0, ctx)["params"])
    bank = jax.eval_shape(lambda p: reference.apply({"params": p}, ref, t0, ctx)[1], ref_params)
    bank = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), bank)
    mask = jnp.ones((1,), bool)
    den_params = nn.meta.unbox(denoiser.init(rng, x0, t0, ctx, bank, mask)["params"])
    params = {"reference": ref_params, "denoiser": den_params}
    count = sum(x.size for x in jax.tree.leaves(params))
    recipe = recipes.aniportrait()
    schedule = recipe.train.process.schedule()

    def denoise(p, x, t, bank, on):
        context = jnp.broadcast_to(ctx, (x.shape[0],) + ctx.shape[1:])  # CFG doubles the batch
        return denoiser.apply({"params": p["denoiser"]}, x, t, context, bank, on)

    def ref_bank(p):
        return reference.apply({"params": p["reference"]}, ref, t0, ctx)[1]

    def row(name, fn, args, examples):
        jitted = jax.jit(fn)
        call = lambda: jax.block_until_ready(jitted(*args))
        seconds = alternate({"call": call}, iters)["call"]["median_s"]
        n_flops = flops(jitted, *args)
        log({
            "bench": name, "dtype": dtype_name, "frames": shapes.frames, "size": shapes.size,
            "params": count, "ms": round(1e3 * seconds, 2),
            "examples_per_s": round(examples / seconds, 3), "gflop": round(n_flops / 1e9, 2),
            "gflop_per_s": round(n_flops / seconds / 1e9, 1),
            "mfu": round(n_flops / seconds / peak, 4),
        })  # fmt: skip

    t_mid = jnp.full((1,), 500, jnp.int32)
    row("forward", lambda p, x: denoise(p, x, t_mid, bank, mask), (params, x0), 1)

    tx = optax.adamw(1e-5, weight_decay=1e-2)
    opt_state = tx.init(params)

    def step(p, s, key):
        def loss_fn(p):
            b = ref_bank(p)
            loss, _ = objectives.latent_diffusion_loss(
                recipe.train, schedule, lambda x, t: denoise(p, x, t, b, mask), x0, key
            )
            return jnp.mean(loss)

        loss, grads = jax.value_and_grad(loss_fn)(p)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    row("train_step", step, (params, opt_state, rng), 1)

    sample_cfg = dataclasses.replace(recipe.sample, num_steps=shapes.ddim_steps)

    def sample(p, key):
        b = ref_bank(p)
        cond = {"on": mask}

        def fn(x, t, c, frames):
            full = jax.tree.map(lambda v: jnp.repeat(v, x.shape[0], axis=0), b)
            return denoise(p, x, t, full, c["on"]).astype(jnp.float32)

        x_T = jax.random.normal(key, x0.shape)
        return sample_video(
            fn, x_T, sample_cfg, cond=cond,
            make_uncond=lambda c: {"on": jnp.zeros_like(c["on"])},
            guidance_scale=recipe.guidance_scale,
        )  # fmt: skip

    row(f"ddim_{shapes.ddim_steps}_steps_cfg", sample, (params, rng), 1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (a CPU)")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--iters", type=int, default=0, help="timed repeats (0: 3 / 10)")
    args = parser.parse_args()
    shapes = QUICK if args.quick else PAPER
    iters = args.iters or (3 if args.quick else 10)

    def log(r):
        print(json.dumps(r), flush=True)

    log({"backend": jax.default_backend(), "device": str(jax.devices()[0]),
         "loadavg": os.getloadavg(), "cpus": os.cpu_count()})  # fmt: skip
    for name in args.dtypes.split(","):
        peak = matmul_peak(jnp.dtype(name), 1024 if args.quick else 8192, iters)
        log({"bench": "matmul_peak", "dtype": name, "gflops": round(peak / 1e9, 1)})
        run(shapes, name, iters, peak, log)


if __name__ == "__main__":
    main()
