"""Does MegActor's tiny recipe learn, and do the swapped streams stop identity leaking?

    python benchmarks/megactor_tiny_learning.py --out=/tmp/ma_tiny [--data=DIR]

1. `jaxtalk train configs/megactor.py:tiny_stage1` twice on the synthetic set: with the
   config's driving streams (own / face-swapped / stylised) and with swap_rate =
   style_rate = 0 (every clip drives itself). Held-out self-reenactment PSNR of each beside
   copying the reference.
2. Identity leak, on held-out clips driven by their swapped stream (another identity making
   the same motion; grey, as the model takes it): the cosine similarity of the output's
   identity embedding to the reference's and to the driver's, for both models.

The identity embedding: the synthetic renderer draws an identity as its colours (skin, hair,
eyes, lips, shirt) on shapes that the motion moves, so the normalised 4x4x4 colour histogram
of the person's pixels (the background mask's zeros) is what identity means there, unchanged
by pose and expression. ArcFace (jaxtalk/evaluate/csim.py, the project's CSIM) needs weights
that are not available here, and reads real faces. Prints one JSON row of the figures.
Extra arguments go to both `jaxtalk train` commands; runs resume when rerun.
"""

from __future__ import annotations

import argparse
import json
import os

import _runs
import numpy as np

BINS = 4


def identity_embedding(images: np.ndarray, person: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) in [0, 1] and (N, H, W) person masks -> (N, BINS**3) unit colour
    histograms of the person's pixels."""
    q = np.clip((images * BINS).astype(int), 0, BINS - 1)
    codes = (q[..., 0] * BINS + q[..., 1]) * BINS + q[..., 2]
    out = np.zeros((len(images), BINS**3))
    for i in range(len(images)):
        out[i] = np.bincount(codes[i][person[i]], minlength=BINS**3)
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-8)


def identity_leak(workdir: str, batches: int = 2, seed: int = 0, step: int | None = None) -> dict:
    """Mean cosine similarity of the outputs' identity embeddings to the reference and to
    the driver, held-out clips driven by their face-swapped stream (at checkpoint `step`;
    default the last)."""
    import jax
    import ml_collections

    from jaxtalk.models.pixels import to_01
    from jaxtalk.tasks import megactor as task_lib
    from jaxtalk.train import checkpoints

    config = ml_collections.ConfigDict(checkpoints.run_config(workdir))
    config.data.swap_rate, config.data.style_rate = 1.0, 0.0
    config.data.warp_rate, config.data.driving_grayscale = 0.0, False  # colour: to embed
    task = task_lib.build(config)
    params = checkpoints.eval_variables(workdir, step=step)["params"]
    it = task.data("test", global_batch_size=config.batch_size, seed=seed, process_index=0,
                   process_count=1)  # fmt: skip
    sample = jax.jit(lambda p, b, d, r: task.sample(p, b, r, driving=d))
    to_ref, to_driver = [], []
    for k in range(batches):
        batch = task.preprocess(next(it))
        colour = to_01(batch["driving"])
        grey = colour @ np.asarray([0.299, 0.587, 0.114], np.float32)
        driving = np.repeat(grey[..., None], 3, -1) * 2.0 - 1.0
        video = np.asarray(sample(params, batch, driving, jax.random.PRNGKey(k)))
        person = np.asarray(batch["background_masks"])[..., 0] < 0.5
        f = video.shape[1]
        flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
        out = identity_embedding(flat(video), flat(person))
        drv = identity_embedding(flat(np.asarray(colour)), flat(person))
        ref_img = np.repeat(np.asarray(to_01(batch["reference"])), f, 0)
        ref_person = np.repeat(np.asarray(batch["reference_background_mask"])[..., 0] < 0.5, f, 0)
        ref = identity_embedding(ref_img, ref_person)
        to_ref.append(np.sum(out * ref, 1))
        to_driver.append(np.sum(out * drv, 1))
    return {
        "id_to_reference": float(np.mean(np.concatenate(to_ref))),
        "id_to_driver": float(np.mean(np.concatenate(to_driver))),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="", help="a prepared synthetic set (default: make one)")
    parser.add_argument("--out", default="/tmp/megactor_tiny")
    args, extra = parser.parse_known_args(argv)
    config = _runs.config_path("megactor", "tiny_stage1")
    data = (
        f"--config.data.data_dir={_runs.synthetic_set(args.data or os.path.join(args.out, 'data'))}"
    )
    row = {}
    arms = {
        "swapped": [],
        "no_swap": ["--config.data.swap_rate=0", "--config.data.style_rate=0"],
    }
    for name, flags in arms.items():
        workdir = os.path.join(args.out, name)
        e = _runs.train(config, workdir, data, *flags, *extra)
        row[f"{name}/psnr"] = e["eval/psnr"]
        row[f"{name}/psnr_copy"] = e["eval/psnr_copy"]
        row[f"{name}/psnr_cross"] = e["eval/psnr_cross"]
        row.update({f"{name}/{k}": v for k, v in identity_leak(workdir).items()})
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
