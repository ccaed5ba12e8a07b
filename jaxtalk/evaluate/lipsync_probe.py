"""Does a speech-to-motion model move the mouth with the speech? A linear-probe check.

"Generated mouth motion" is defined through the stage-1 motion space: a ridge regression
from stage-1 motion codes to the ground-truth `mouth` attribute is fitted on frames of
TRAIN clips encoded by the frozen stage-1 encoder, then applied to DDIM-sampled codes of
held-out TEST windows. We report the Pearson correlation between that probe output and the
test frames' true mouth opening for
  real      the window's own audio;
  shuffled  the audio of another test window (mismatched speech, same model and noise);
  encoded   the probe on the test frames' encoded codes (the ceiling the probe allows).
A model that learnt the audio-mouth relation has real >> shuffled.

    python -m jaxtalk.evaluate.lipsync_probe --workdir=RUN [--step=N] [--data_dir=DIR]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def fit_ridge(x: np.ndarray, y: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """Least squares with an L2 penalty on standardised inputs; returns (w, b) in the
    original input units."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64).reshape(-1)
    mean, std = x.mean(0), x.std(0) + 1e-8
    z = (x - mean) / std
    w = np.linalg.solve(z.T @ z + ridge * len(z) * np.eye(z.shape[1]), z.T @ (y - y.mean()))
    w = w / std
    return w, float(y.mean() - mean @ w)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    a, b = a - a.mean(), b - b.mean()
    return float(a @ b / max(np.sqrt((a @ a) * (b @ b)), 1e-12))


def _windows(task, split: str, count: int, batch_size: int, seed: int):
    it = task.data(
        split,
        global_batch_size=batch_size,
        seed=seed,
        process_index=0,
        process_count=1,
        shuffle=True,
    )
    for _ in range(max(count // batch_size, 1)):
        batch = next(it)
        if not np.all(batch["mouth_valid"]):
            raise ValueError(f"{split} windows lack the ground-truth `mouth` attribute")
        yield batch


def evaluate(
    task,
    params,
    model_state,
    *,
    train_windows: int = 64,
    test_windows: int = 32,
    ridge: float = 1e-2,
    batch_size: int = 8,
    seed: int = 0,
) -> dict:
    """{'real', 'shuffled', 'encoded'} correlations (see the module docstring)."""
    encode = jax.jit(lambda p, b: task.encode_window(p, b)[2])
    codes, mouth = [], []
    for batch in _windows(task, "train", train_windows, batch_size, seed):
        codes.append(np.asarray(encode(params, batch)))
        mouth.append(batch["mouth"][:, 1:, 0])
    dims = codes[0].shape[-1]
    w, b = fit_ridge(np.concatenate(codes).reshape(-1, dims), np.concatenate(mouth), ridge)

    audio_fn = jax.jit(task.audio_input)
    sample = jax.jit(lambda p, s, bt, r, a: task.sample_codes(p, s, bt, r, audio=a))
    probe = {"real": [], "shuffled": [], "encoded": []}
    truth = []
    for i, batch in enumerate(_windows(task, "test", test_windows, batch_size, seed + 1)):
        rng = jax.random.PRNGKey(seed + i)
        audio = audio_fn(params, batch)
        # Another window's speech under the same hint frame and noise.
        mismatched = jnp.roll(audio, 1, axis=0)
        for name, a in (("real", audio), ("shuffled", mismatched)):
            probe[name].append(np.asarray(sample(params, model_state, batch, rng, a)) @ w + b)
        probe["encoded"].append(np.asarray(encode(params, batch)) @ w + b)
        truth.append(batch["mouth"][:, 1:, 0])
    truth = np.concatenate(truth)
    return {name: pearson(np.concatenate(v), truth) for name, v in probe.items()}


def evaluate_run(
    workdir: str, step: int | None = None, data_dir: str | None = None, **kwargs
) -> dict:
    """`evaluate` on the EMA weights of an anitalker_stage2 run."""
    import ml_collections

    from jaxtalk.train import checkpoints
    from jaxtalk.train.task import get_task

    config = ml_collections.ConfigDict(checkpoints.run_config(workdir, step))
    if data_dir:
        config.data.data_dir = data_dir
    task = get_task(config)  # the run's recipe, found by name
    model = checkpoints.group_variables(workdir, "model", step)
    params = {
        "model": model["params"],
        "stage1": checkpoints.group_variables(workdir, "stage1", step)["params"],
    }
    if config.diffusion.get("normalize_motion"):
        params["motion_stats"] = checkpoints.group_variables(workdir, "motion_stats", step)[
            "params"
        ]
    if task.hubert is not None:
        params["hubert"] = checkpoints.group_variables(workdir, "hubert", step)["params"]
    options = dict(
        train_windows=config.lipsync.train_windows,
        test_windows=config.lipsync.test_windows,
        ridge=config.lipsync.ridge,
    )
    options.update(kwargs)
    return evaluate(task, params, {"batch_stats": {"model": model["batch_stats"]}}, **options)


def main():
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--test_windows", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    extra = {"seed": args.seed}
    if args.test_windows:
        extra["test_windows"] = args.test_windows
    result = evaluate_run(args.workdir, args.step, args.data_dir, **extra)
    print(
        f"mouth correlation on held-out clips: real audio {result['real']:.3f}, "
        f"shuffled audio {result['shuffled']:.3f} (probe on encoded frames "
        f"{result['encoded']:.3f})"
    )


if __name__ == "__main__":
    main()
