"""AniTalker stage 1 end to end on the small synthetic set: train, export/import, animate."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from jaxtalk.convert import torch_pickle
from jaxtalk.media.ffmpeg_run import ffmpeg_exe
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video
from tests.tasks.helpers import shared_synthetic
from tests.test_cli import jaxtalk
from tests.train.helpers import REPO, checkpoint_steps, run_cli, saved_state


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """The run's shared synthetic set (64x64 records, read at 32: `data.image_size`)."""
    return pathlib.Path(shared_synthetic(tmp_path_factory))


@pytest.fixture(scope="module")
def run(synthetic, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run") / "stage1"
    run_cli(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "train",
            f"--config={REPO}/configs/anitalker_stage1.py:tiny",
            f"--workdir={workdir}",
            f"--config.data.data_dir={synthetic}",
            "--config.model.size=32",
            "--config.data.image_size=32",
            "--config.batch_size=8",
            "--config.mesh.data=4",
            "--config.mesh.fsdp=2",
            "--config.total_steps=4",
            "--config.log.every_steps=2",
            "--config.eval.every_steps=4",
            "--config.eval.num_batches=1",
            "--config.samples.every_steps=4",
            "--config.samples.num=2",
            "--config.checkpoint.every_steps=2",
            "--config.loss.adversarial=0.05",
            "--config.loss.mutual_information=0.1",
            "--config.log.progress_bar=False",
        ]
    )
    return workdir


def test_three_groups_train_and_the_eval_reports_the_baseline(run):
    assert checkpoint_steps(run) == [2, 4]
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    train = [r for r in rows if "generator/loss" in r]
    for key in (
        "generator/l1",
        "generator/adversarial",
        "generator/metric_learning",
        "generator/mutual_information",
        "discriminator/loss",
        "club/loss",
    ):
        assert all(np.isfinite(r[key]) for r in train), key
    assert all(0.0 < r["generator/motion_units_alive"] <= 1.0 for r in train)
    evals = [r for r in rows if "eval/psnr" in r]
    assert evals and {
        "eval/psnr",
        "eval/ssim",
        "eval/psnr_copy_source",
        "eval/psnr_own_motion",
    } <= set(evals[-1])
    first, last = saved_state(run, 2), saved_state(run, 4)
    for group in ("generator", "discriminator", "club"):
        moved = [
            k
            for k in first
            if k.startswith(f"params/{group}/") and not np.array_equal(first[k], last[k])
        ]
        assert moved, group
    assert any(k.startswith("ema_params/generator/model/") for k in last)
    events = os.listdir(run / "tensorboard")
    assert events and os.path.getsize(run / "tensorboard" / events[0]) > 10_000  # images in


def test_export_to_the_release_layout_import_and_animate(run, synthetic, tmp_path):
    ckpt = tmp_path / "stage1.ckpt"
    out = jaxtalk(
        "export",
        f"--workdir={run}",
        "--group=generator/model",
        "--release=anitalker_stage1",
        f"--out={ckpt}",
    )
    assert out.returncode == 0, out.stderr
    sd = torch_pickle.load_state_dict(ckpt)  # flat, as the official loader reads it
    assert sd and all(k.startswith("lia.") for k in sd)
    assert "lia.enc.net_app.ws.weights" in sd
    imported = tmp_path / "imported.safetensors"
    out = jaxtalk(
        "import", "--release=anitalker_stage1", f"--checkpoint={ckpt}", f"--out={imported}"
    )
    assert out.returncode == 0, out.stderr
    videos = sorted((synthetic / "raw" / "videos").glob("*.mp4"))
    source = tmp_path / "source.png"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-i", str(videos[0]), "-frames:v", "1", str(source)],
        check=True,
    )
    movies = {}
    for name, model in (("run", f"--workdir={run}"), ("imported", f"--weights={imported}")):
        movies[name] = tmp_path / f"{name}.mp4"
        out = jaxtalk(
            "animate",
            "--mode=video",
            model,
            f"--source={source}",
            f"--driving={videos[1]}",
            "--max_seconds=1",
            f"--out={movies[name]}",
            "--motion=absolute",
            "--nocrop_face",
        )
        assert out.returncode == 0, out.stderr
    info = probe(movies["run"])
    assert (info.width, info.height) == (32, 32) and info.audio_sample_rate
    a, _ = read_video(movies["run"])
    b, _ = read_video(movies["imported"])
    assert len(a) == len(b) == 25
    # The round trip through the released layout renders the same video (codec noise only).
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


def test_export_a_standalone_animation_function(run, tmp_path):
    from jaxtalk.export import jax_function

    out = jaxtalk(
        "export", f"--workdir={run}", "--group=generator/model", f"--out={tmp_path / 's1.jaxfn'}"
    )
    assert out.returncode == 0, out.stderr
    fn, manifest = jax_function.load_function(tmp_path / "s1.jaxfn")
    assert manifest["inputs"][1]["shape"] == ["T", 20]
    source = np.zeros((1, 32, 32, 3), np.float32)
    (frames,) = fn(source, np.zeros((3, 20), np.float32))
    assert frames.shape == (3, 32, 32, 3) and np.isfinite(np.asarray(frames)).all()


def test_animate_errors_name_the_file(run, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    out = jaxtalk(
        "animate",
        f"--workdir={run}",
        f"--source={tmp_path / 'bad.png'}",
        f"--driving={tmp_path / 'x.mp4'}",
        f"--out={tmp_path / 'o.mp4'}",
    )
    assert out.returncode == 2 and "bad.png: not a readable image" in out.stderr
    out = jaxtalk(
        "animate",
        f"--workdir={tmp_path}",
        f"--source={tmp_path / 'bad.png'}",
        f"--driving={tmp_path / 'x.mp4'}",
        f"--out={tmp_path / 'o.mp4'}",
    )
    assert out.returncode == 2 and "no checkpoints" in out.stderr


def test_motion_units_alive_counts_hidden_units_that_fire_for_some_image():
    from jaxtalk.tasks.anitalker_stage1 import motion_units_alive

    h = np.array([[1.0, -1.0, 0.0, -2.0], [-1.0, -1.0, 0.0, -3.0]], np.float32)
    fc_in = {"kernel": np.eye(4, dtype=np.float32), "bias": np.zeros(4, np.float32)}
    params = {"enc": {"net_decouping": {"identity_excluded_net": {"fc_in": fc_in}}}}
    assert float(motion_units_alive(params, h)) == 0.25  # only unit 0 fires (image 0)
    fc_in["bias"] = np.full(4, 5.0, np.float32)
    assert float(motion_units_alive(params, h)) == 1.0
