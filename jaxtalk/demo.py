"""The main job on the embedded data: `make demo` / `python -m jaxtalk.demo --out=demo_out`.

Runs the commands a user would type, in order, on a CPU:
  1. jaxtalk prepare synthetic      generate talking heads, run the real preparation path
  2. jaxtalk train (anitalker_stage1:tiny)   train AniTalker stage 1 on them
  3. held-out self-reenactment PSNR/SSIM, next to the copy-the-source baseline and the
     model's own score without the driving motion
  4. jaxtalk animate --mode=video   a reenactment mp4 (source: a held-out face)
With --stage2 (about ten more minutes), then:
  5. jaxtalk train (anitalker_stage2:tiny)   speech -> motion on the stage-1 run
  6. the lip-sync probe: held-out mouth correlation with the real vs shuffled audio
  7. jaxtalk animate --mode=audio   the held-out face driven by held-out speech
Every step is resumable: rerunning skips finished preparation and resumes training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import zipfile


def _run(*args: str) -> None:
    print("+ jaxtalk " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "jaxtalk.cli", *args], check=True)


def held_out_videos(data_dir: str) -> list[str]:
    """Raw videos of the synthetic test identities (named in its VoxCeleb2-style test zip)."""
    raw = os.path.join(data_dir, "raw")
    with zipfile.ZipFile(os.path.join(raw, "vox2_test_txt.zip")) as z:
        ids = sorted({name.split("/")[2] for name in z.namelist() if name.count("/") >= 3})
    return [
        os.path.join(raw, "videos", f"{i}.mp4")
        for i in ids
        if os.path.exists(os.path.join(raw, "videos", f"{i}.mp4"))
    ]


def first_frame(video: str, out_png: str) -> str:
    from PIL import Image

    from jaxtalk.media.video import read_video

    frames, _ = read_video(video, max_frames=1)
    Image.fromarray(frames[0]).save(out_png)
    return out_png


def last_eval(workdir: str) -> dict:
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return next(r for r in reversed(rows) if "eval/psnr" in r)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_out")
    parser.add_argument(
        "--steps", type=int, default=None, help="stage-1 training steps (tiny default)"
    )
    parser.add_argument(
        "--stage2",
        action="store_true",
        help="also train stage 2 (speech -> motion) and animate from speech",
    )
    args = parser.parse_args(argv)
    data, run = os.path.join(args.out, "data"), os.path.join(args.out, "stage1")

    # AniTalker needs no MegActor companion streams: skip them (half the prepare time)
    _run("prepare", "synthetic", f"--out_dir={data}", "--size=64", "--nosynthetic_companions")
    overrides = [f"--config.data.data_dir={data}", "--config.log.progress_bar=False"]
    if args.steps:
        overrides += [
            f"--config.total_steps={args.steps}",
            f"--config.eval.every_steps={args.steps}",
        ]
    _run("train", "--config=configs/anitalker_stage1.py:tiny", f"--workdir={run}", *overrides)

    videos = held_out_videos(data)
    source = first_frame(videos[0], os.path.join(args.out, "source.png"))
    driving = videos[1] if len(videos) > 1 else videos[0]
    movie = os.path.join(args.out, "reenactment.mp4")
    _run(
        "animate",
        "--mode=video",
        f"--workdir={run}",
        f"--source={source}",
        f"--driving={driving}",
        f"--out={movie}",
        "--max_seconds=4",
        "--nocrop_face",
    )

    lipsync = ""
    if args.stage2:
        run2, talk = os.path.join(args.out, "stage2"), os.path.join(args.out, "speech_driven.mp4")
        _run(
            "train",
            "--config=configs/anitalker_stage2.py:tiny",
            f"--workdir={run2}",
            f"--config.stage1.workdir={run}",
            f"--config.data.data_dir={data}",
            "--config.log.progress_bar=False",
        )
        print(
            f"+ python -m jaxtalk.evaluate.lipsync_probe --workdir={run2} --data_dir={data}",
            flush=True,
        )
        lipsync = subprocess.run(
            [
                sys.executable,
                "-m",
                "jaxtalk.evaluate.lipsync_probe",
                f"--workdir={run2}",
                f"--data_dir={data}",
            ],
            check=True,
            stdout=subprocess.PIPE,
            text=True,
        ).stdout.strip()
        _run(
            "animate",
            "--mode=audio",
            f"--stage2={run2}",
            f"--source={source}",
            f"--audio={driving}",
            f"--out={talk}",
            "--max_seconds=4",
            "--nocrop_face",
        )

    e = last_eval(run)
    own = e.get("eval/psnr_own_motion")  # absent from runs made before it existed
    own = f"; the model without the driving motion {own:.2f} dB" if own is not None else ""
    print(
        f"\nheld-out self-reenactment at step {e['step']}: PSNR {e['eval/psnr']:.2f} dB "
        f"(copy-the-source baseline {e['eval/psnr_copy_source']:.2f} dB{own}), SSIM "
        f"{e['eval/ssim']:.3f} (baseline {e['eval/ssim_copy_source']:.3f})"
    )
    print(f"checkpoints: {run}/checkpoints   TensorBoard: {run}/tensorboard   video: {movie}")
    if lipsync:
        print(f"stage 2, {lipsync}\nstage-2 run: {run2}   video: {talk}")


if __name__ == "__main__":
    main()
