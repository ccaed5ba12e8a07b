"""AniTalker stage-2 sampling speed: seconds of 25 fps motion generated per wall-clock second
with 50 DDIM steps, for the hubert and mfcc variants (random weights, released sizes).

The audio branch (speech encoder + variance adapter) runs once per clip, the Conformer
decoder once per DDIM step, all inside one jit-compiled function. The HuBERT feature
extraction itself is timed separately (--with-hubert) since the release can precompute it.

    python benchmarks/anitalker_stage2_sampling.py [--seconds 10] [--batch 1] [--repeats 3]
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from _timing import alternate, emit, machine_row
from flax import linen as nn

from jaxtalk.diffusion import samplers, schedules
from jaxtalk.models.anitalker.stage2 import DiffusionPredictor, init_inputs
from jaxtalk.models.audio import hubert as hubert_lib
from jaxtalk.models.param_hook import eval_shape_init

FPS = 25


def random_variables(model, inputs, seed=0):
    shapes = nn.meta.unbox(eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), *inputs)))
    rng = np.random.RandomState(seed)
    return {
        "params": jax.tree.map(
            lambda s: (rng.randn(*s.shape) * 0.02).astype(np.float32), shapes["params"]
        ),
        "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32), shapes["batch_stats"]),
    }


def make_generator(model, steps):
    schedule = schedules.make_schedule("linear", 1000)

    @jax.jit
    def generate(variables, start, direction, audio, x_T):
        cond, _ = model.apply(variables, audio, method=model.condition)
        denoise = lambda x, t: model.apply(
            variables, cond, start, direction, x, t, method=model.denoise
        )
        return samplers.ddim_sample(denoise, x_T, schedule, num_steps=steps)

    return generate


def time_call(fn, *args, repeats):
    """Median, min and max seconds of `fn(*args)` over `repeats` calls after a warm-up."""
    return alternate({"call": lambda: jax.block_until_ready(fn(*args))}, repeats)["call"]


def report(run, timing, seconds, **extra):
    median = timing["median_s"]
    emit({"run": run, "s_per_call": round(median, 4), "s_per_call_min": round(timing["min_s"], 4),
          "s_per_call_max": round(timing["max_s"], 4), "clip_s": seconds,
          "video_s_per_s": round(seconds / median, 2), **extra})  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--with-hubert", action="store_true", help="also time HuBERT-large feature extraction"
    )
    args = parser.parse_args()
    frames = int(args.seconds * FPS)
    emit(machine_row())
    for infer_type in ("hubert_full_control", "mfcc_full_control"):
        model = DiffusionPredictor(infer_type=infer_type)
        inputs = init_inputs(model, args.batch, frames)
        variables = random_variables(model, init_inputs(model, 1, 8))
        start, direction, audio, x_T, _ = inputs
        x_T = jax.random.normal(jax.random.PRNGKey(0), x_T.shape)
        timing = time_call(
            make_generator(model, args.steps),
            variables,
            start,
            direction,
            audio,
            x_T,
            repeats=args.repeats,
        )
        video = args.seconds * args.batch
        report(infer_type, timing, video, batch=args.batch, ddim_steps=args.steps, frames=frames)
    if args.with_hubert:
        hub = hubert_lib.HubertModel(hubert_lib.HUBERT_LARGE)
        wav = (
            np.random.RandomState(0).randn(args.batch, int(args.seconds * 16000)).astype(np.float32)
        )
        hv = random_variables_hubert(hub)
        timing = time_call(jax.jit(lambda v, w: hub.apply(v, w)), hv, wav, repeats=args.repeats)
        report("hubert_large_features", timing, args.seconds * args.batch, batch=args.batch)


def random_variables_hubert(model):
    shapes = nn.meta.unbox(
        eval_shape_init(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 16000), np.float32)))
    )
    rng = np.random.RandomState(0)
    return jax.tree.map(lambda s: (rng.randn(*s.shape) * 0.02).astype(np.float32), shapes)


if __name__ == "__main__":
    main()
