"""AniTalker stage-2 training step rate (steps/s, windows/s) for the tiny and paper variants.

One jit-compiled train step of the real task (frozen stage-1 encoder on the window frames,
audio features, DiffusionPredictor forward + backward, Adam) on random weights and a
synthetic batch of the variant's shapes; HuBERT runs inside the step for hubert variants.
The optimizer is plain optax Adam with clipping, as the loop builds it.

    python benchmarks/anitalker_stage2_train.py [--variant tiny|paper|<infer_type>] [--batch N]
        [--frames N] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from configs import anitalker_stage2 as cfg_lib
from jaxtalk.tasks import anitalker_stage2 as task_lib


def synthetic_batch(config, batch: int, rng: np.random.RandomState) -> dict:
    t1, s = config.data.num_frames, config.stage1.size
    pad = config.data.audio_pad_frames
    out = {
        "frames": rng.randint(0, 255, (batch, t1, s, s, 3)).astype(np.uint8),
        "pose": rng.randn(batch, t1, 3).astype(np.float32) * 10,
        "pose_valid": np.ones(batch, bool),
        "landmarks_xy": rng.rand(batch, t1, 10).astype(np.float32),
        "landmarks_xy_valid": np.ones(batch, bool),
    }
    audio = rng.randn(batch, (t1 + 2 * pad) * 640).astype(np.float32) * 0.1
    if config.model.infer_type.startswith("mfcc"):
        out["mfcc"] = np.stack([task_lib.window_mfcc(a, t1 - 1, pad) for a in audio])
    else:
        out["audio"] = audio
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--batch", type=int, default=None, help="default: the variant's")
    parser.add_argument("--frames", type=int, default=None, help="window length (+1 hint)")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    config = cfg_lib.get_config(args.variant)
    if args.frames:
        config.data.num_frames = args.frames + 1
    batch_size = args.batch or config.batch_size
    task = task_lib.build(config)
    batch = jax.tree.map(jnp.asarray, synthetic_batch(config, batch_size, np.random.RandomState(0)))
    params, model_state = jax.jit(lambda r, b: nn.unbox(task.init(r, b)))(
        jax.random.PRNGKey(0), batch
    )
    opt = optax.chain(
        optax.clip_by_global_norm(config.optimizers.model.clip_norm),
        optax.adam(config.optimizers.model.lr),
    )
    opt_state = opt.init(params["model"])
    ((_, loss_fn),) = task.losses()

    @jax.jit
    def step(params, model_state, opt_state, rng):
        def f(p):
            out = loss_fn({**params, "model": p}, model_state, batch, rng)
            return out.loss, out.model_state

        (loss, new_state), grads = jax.value_and_grad(f, has_aux=True)(params["model"])
        updates, opt_state = opt.update(grads, opt_state, params["model"])
        return (
            {**params, "model": optax.apply_updates(params["model"], updates)},
            new_state,
            opt_state,
            loss,
        )

    print(
        f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), variant "
        f"{args.variant} ({config.model.infer_type}), batch {batch_size}, window "
        f"{config.data.num_frames - 1}+1 frames at {config.stage1.size}px"
    )
    t0 = time.perf_counter()
    params, model_state, opt_state, loss = step(
        params, model_state, opt_state, jax.random.PRNGKey(0)
    )
    jax.block_until_ready(loss)
    print(f"compile + first step {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    for i in range(args.steps):
        params, model_state, opt_state, loss = step(
            params, model_state, opt_state, jax.random.PRNGKey(i + 1)
        )
    jax.block_until_ready(loss)
    rate = args.steps / (time.perf_counter() - t0)
    print(
        f"{rate:.3f} steps/s, {rate * batch_size:.2f} windows/s "
        f"({rate * batch_size * (config.data.num_frames - 1) / 25:.2f} s of video/s), loss {float(loss):.3f}"
    )


if __name__ == "__main__":
    main()
