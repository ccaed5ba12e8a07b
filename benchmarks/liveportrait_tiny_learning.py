"""Does LivePortrait's tiny recipe learn? Both stages on the embedded synthetic set, on a CPU.

    python benchmarks/liveportrait_tiny_learning.py --out=/tmp/lp_tiny [--data=DIR]
        [--stage1_steps=2600] [extra `jaxtalk train` flags for both stages]

Prepares the embedded synthetic set at 64 px with 160 identities, 8 held out (unless --data
names a prepared one; with the default 8 the model learns the 7 training identities instead
of reading the driving frame, with 48 it fits the 44 in ~900 steps), then:
1. `jaxtalk train configs/liveportrait.py:tiny` for --stage1_steps, then the held-out
   self-reenactment PSNR of its last evaluation beside the copy-the-source baseline and the
   model rendering the source with the source's own keypoints (what it gains without
   reading the driving frame).
2. `jaxtalk train configs/liveportrait.py:tiny_stitching` on that run: the held-out L1
   outside the source's face with another clip's motion, without and with stitching; with
   its ratio regressor, whether the base renders the driving frame's mouth (the reading of
   the rendered frame against the driver's true opening); and the lip command against the
   rendered mouth opening, next to the same readings against a shuffled command.
Both runs resume when rerun. Extra arguments go to both `jaxtalk train` commands.
"""

from __future__ import annotations

import argparse
import json
import os

import _runs


def _held_out(workdir: str, batches: int, seed: int):
    """(task, params, (batch, source features, x_s, x_d)) for `batches` held-out batches of
    a stitching run (its frozen base and its trained MLPs and ratio regressor)."""
    import ml_collections

    from jaxtalk.tasks import liveportrait as task_lib
    from jaxtalk.train import checkpoints

    config = ml_collections.ConfigDict(checkpoints.run_config(workdir))
    task = task_lib.build(config)
    params = checkpoints.eval_variables(workdir)["params"]
    it = task.data("test", global_batch_size=config.batch_size, seed=seed, process_index=0,
                   process_count=1)  # fmt: skip
    for _ in range(batches):
        yield task, params, task._frozen_base(params, {}, next(it))


def _r(a, b) -> float:
    import numpy as np

    return float(np.corrcoef(np.concatenate(a), np.concatenate(b))[0, 1])


def mouth_transfer(workdir: str, batches: int = 16, seed: int = 0) -> dict:
    """Does the base render the driving frame's expression? Pearson r between the true
    mouth opening of held-out driving frames and the ratio regressor's reading of the frame
    the base renders from them (`rendered_r`), of the real driving frames (`real_r`: the
    regressor's ceiling) and of the source (`source_r`: what no transfer scores)."""
    import numpy as np

    from jaxtalk.tasks import liveportrait as task_lib

    truth, reads = [], {"rendered": [], "real": [], "source": []}
    for task, params, (batch, feature, x_s, x_d) in _held_out(workdir, batches, seed):
        source = task_lib.to_01(batch["source"])
        rendered = task_lib.resize(task.render(params, {}, feature, x_d, x_s), source.shape[1])
        images = {"rendered": rendered, "real": task_lib.to_01(batch["driving"]), "source": source}
        for name, image in images.items():
            reads[name].append(np.asarray(task._ratios(params, image)[:, 0]))
        truth.append(np.asarray(batch["mouth"][:, 1, 0]))
    out = {f"{name}_r": _r(truth, r) for name, r in reads.items()}
    return {"mouth_transfer": out, "pairs": int(sum(t.size for t in truth))}


def lip_command_correlation(workdir: str, batches: int = 16, seed: int = 0) -> dict:
    """Pearson r between sampled lip commands and the ratio regressor's mouth reading of the
    rendered frames, on held-out sources; and with the commands shuffled."""
    import jax.numpy as jnp
    import numpy as np

    from jaxtalk.tasks import liveportrait as task_lib

    commands, readings = [], []
    rng = np.random.default_rng(seed)
    for task, params, (batch, feature, x_s, _) in _held_out(workdir, batches, seed):
        want = jnp.asarray(rng.uniform(0, 1, (x_s.shape[0], 1)), jnp.float32)
        source = task_lib.to_01(batch["source"])
        _, _, got = task._retargeted(params, {}, "lip", feature, x_s, source, want)
        commands.append(np.asarray(want[:, 0]))
        readings.append(np.asarray(got[:, 0]))
    return {
        "lip_command_r": _r(commands, readings),
        "lip_shuffled_r": _r([rng.permutation(np.concatenate(commands))], readings),
        "pairs": int(sum(c.size for c in commands)),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="", help="a prepared synthetic set (default: make one)")
    parser.add_argument("--out", default="/tmp/liveportrait_tiny")
    parser.add_argument("--stage1_steps", type=int, default=2600, help="stage 1's total steps")
    args, extra = parser.parse_known_args(argv)
    stage1 = os.path.join(args.out, "stage1")
    data_dir = _runs.synthetic_set(args.data or os.path.join(args.out, "data"), identities=160,
                                   held_out=8)  # fmt: skip
    data = f"--config.data.data_dir={data_dir}"
    e1 = _runs.train(_runs.config_path("liveportrait", "tiny"), stage1, data,
                     f"--config.total_steps={args.stage1_steps}", *extra)  # fmt: skip
    print(
        f"stage 1, held-out self-reenactment PSNR {e1['eval/psnr']:.2f} dB; copy the source "
        f"{e1['eval/psnr_copy_source']:.2f} dB; source with its own keypoints "
        f"{e1['eval/psnr_own_keypoints']:.2f} dB; SSIM {e1['eval/ssim']:.3f}",
        flush=True,
    )
    stage2 = os.path.join(args.out, "stage2")
    e2 = _runs.train(_runs.config_path("liveportrait", "tiny_stitching"), stage2, data, f"--config.base.workdir={stage1}",
                *extra)  # fmt: skip
    print(
        f"stage 2, held-out L1 outside the face with another clip's motion: "
        f"{e2['eval/outside_l1_unstitched']:.4f} unstitched, "
        f"{e2['eval/outside_l1_stitched']:.4f} stitched; lip ratio error "
        f"{e2['eval/lip_ratio_error']:.3f} (commands shuffled "
        f"{e2['eval/lip_ratio_error_shuffled']:.3f}), eye {e2['eval/eye_ratio_error']:.3f} "
        f"({e2['eval/eye_ratio_error_shuffled']:.3f}); the ratio regressor's held-out error: "
        f"mouth {e2['eval/ratio_mouth_error']:.3f}, blink {e2['eval/ratio_blink_error']:.3f}",
        flush=True,
    )
    print(json.dumps(mouth_transfer(stage2)), flush=True)
    print(json.dumps(lip_command_correlation(stage2)), flush=True)


if __name__ == "__main__":
    main()
