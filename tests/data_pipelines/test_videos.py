"""`jaxtalk prepare videos`: a nested folder of one's own mp4 files (rendered here with the
synthetic generator's renderer and ffmpeg, none of the synthetic set's metadata) -> face
tracks, crops, scene cuts, skips, splits by file -> records a stage-1 run fine-tunes on."""

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from data_pipelines.clip_spec import holdout_split
from data_pipelines.clip_store import ClipStore
from data_pipelines.parsers import videos
from data_pipelines.synthetic import face, generate
from jaxtalk.convert import weights
from jaxtalk.media import crop, face_detect
from jaxtalk.media.video import write_video
from jaxtalk.models.anitalker.stage1 import AniTalkerMotion
from tests.random_weights import random_variables
from tests.tasks.helpers import TINY_WIDTH
from tests.train.helpers import REPO, checkpoint_steps, run_cli

RES = 160  # raw video side
# Renderer seeds whose faces OpenCV's Haar detector finds in most frames (it misses some
# flat-shaded synthetic identities altogether; seed 1 is one: the "no face" video).
FOUND, FOUND2, MISSED = 0, 5, 1
FILTERS = ("--min_frames=25", "--min_face_size=32", "--blur_threshold=2")


def _render(seed: int, frames: int = 75):
    rng = np.random.default_rng(seed)
    ident = face.random_identity(rng, RES, RES)
    return generate.render_video(ident, frames, rng)  # frames, audio, head boxes, truth


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("my_videos")
    (d / "alice").mkdir()
    (d / "bob" / "2024").mkdir(parents=True)
    clips = {}
    for name, seed in (("alice/take1.mp4", FOUND), ("bob/2024/take1.mp4", FOUND2)):
        frames, audio, boxes, _ = _render(seed)
        write_video(d / name, frames, 25, audio=audio)
        clips[name] = boxes
    # One shot of alice, then a hard cut to bob: two clips, neither across the cut.
    a, audio_a, _, _ = _render(FOUND, 50)
    b, audio_b, _, _ = _render(FOUND2, 50)
    write_video(
        d / "alice" / "cut.MP4",
        np.concatenate([a, b]),
        25,
        audio=np.concatenate([audio_a, audio_b]),
    )
    frames, audio, _, _ = _render(MISSED)
    write_video(d / "noface.mp4", frames, 25, audio=audio)
    write_video(d / "silent.mov", _render(FOUND)[0], 25)
    (d / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    (d / "notes.txt").write_text("not a video file: ignored")
    return d, clips


def test_videos_are_found_nested_and_in_order(folder):
    d, _ = folder
    found = [os.path.relpath(p, d) for p in videos.find_videos(str(d))]
    assert found == [
        "broken.mp4",
        "noface.mp4",
        "silent.mov",
        "alice/cut.MP4",
        "alice/take1.mp4",
        "bob/2024/take1.mp4",
    ]


def test_tracks_crops_cuts_skips_and_splits(folder):
    d, truth = folder
    specs, report = videos.parse(str(d), test_fraction=0.5, identity="folder")
    assert dict(report.counts) == {"unreadable video": 1, "missing audio": 1, "no face": 1}
    assert any("broken.mp4" in e for e in report.examples["unreadable video"])
    by_file = {}
    for s in specs:
        by_file.setdefault(dict(s.extra)["source_file"], []).append(s)
    assert sorted(by_file) == ["alice/cut.MP4", "alice/take1.mp4", "bob/2024/take1.mp4"]
    # The cut at frame 50 (2.0 s) splits the tracks: one clip of alice before, one of bob after.
    cut = by_file["alice/cut.MP4"]
    assert len(cut) == 2 and cut[0].end_sec <= 2.0 <= cut[1].start_sec
    assert cut[0].end_sec - cut[0].start_sec >= 1.4 and cut[1].end_sec - cut[1].start_sec >= 1.4
    for name, boxes in truth.items():
        (spec,) = by_file[name]
        assert spec.end_sec - spec.start_sec >= 2.6  # the whole 3 s but the last detections
        # The crop (official-set rules, the Haar box x1.8) holds the rendered head's centre
        # in every frame and is about the head's size.
        pixels = crop.to_pixels(spec.boxes, RES, RES, spec.box_ref_height)
        x, y, side, _ = crop.clip_box(pixels, RES, RES, spec.crop_scale)
        assert spec.crop_scale == face_detect.CROP_SCALE and spec.box_ref_height == RES
        first, last = round(spec.start_sec * 25), round(spec.end_sec * 25)
        head = boxes[first:last]
        centres = (head[:, :2] + head[:, 2:]) / 2
        assert (centres >= [x, y]).all() and (centres <= [x + side, y + side]).all()
        height = (head[:, 3] - head[:, 1]).mean()
        assert 0.8 * height < side < 2.0 * height, (side, height)
        # Splits by file: a stable hash of the path relative to the folder.
        assert spec.split == holdout_split(os.path.splitext(name)[0], 0.5)
        assert spec.identity == os.path.dirname(name)
    assert {s.split for s in specs} == {"train", "test"}  # this fraction and these names


def test_a_folder_without_videos_is_one_line_naming_it(tmp_path):
    from data_pipelines.parsers.common import MissingMetadataError

    with pytest.raises(MissingMetadataError, match=f"{tmp_path}: no video files"):
        videos.parse(str(tmp_path))


def _save_stage1(path, size):
    """Weights in the tiny stage 1's shapes to fine-tune from (any will do: not compiled)."""
    config = dict(size=size, style_dim=512, motion_dim=20, width=TINY_WIDTH)
    model = AniTalkerMotion(**config)
    x = jnp.zeros((1, size, size, 3))
    params = random_variables(model.init, jax.random.PRNGKey(1), x, x)["params"]
    weights.save(
        {"params": params, "model_config": dict(config, kind="anitalker_stage1")},
        path,
        release="anitalker_stage1",
    )


def test_prepare_videos_then_fine_tune_a_stage1_run_on_them(folder, tmp_path):
    d, _ = folder
    (tmp_path / "test_list.txt").write_text("bob/2024/take1.mp4\n")
    out = tmp_path / "mine"
    proc = run_cli(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "prepare",
            "videos",
            f"--manual_dir={d}",
            f"--out_dir={out}",
            "--size=32",
            f"--test_list={tmp_path / 'test_list.txt'}",
            "--identity=file",
            *FILTERS,
        ]
    )
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["name"] == "videos"
    assert info["parse_skipped"] == {"unreadable video": 1, "missing audio": 1, "no face": 1}
    assert info["splits"]["train"]["num_clips"] == 3 and info["splits"]["test"]["num_clips"] == 1
    assert info["identities"] == ["alice/cut", "alice/take1", "bob/2024/take1"]
    store = ClipStore.open(str(out), "train")
    headers = [store.clip(i).header for i in range(len(store))]
    assert sorted(h["clip_id"] for h in headers) == ["alice/cut#0", "alice/cut#1", "alice/take1#0"]
    for h in headers:  # the same records the official sets produce
        assert h["fps"] == 25.0 and h["sample_rate"] == 16000 and h["num_frames"] >= 25
        assert len(h["audio"]) == h["num_frames"] * 640 and np.abs(h["audio"]).max() > 0
        assert h["source_size"].tolist() == [RES, RES] and h["extra"]["source_file"]
    assert "skipped 3" in proc.stdout, proc.stdout

    init = tmp_path / "s1.safetensors"
    _save_stage1(str(init), 32)
    workdir = tmp_path / "run"
    proc = run_cli(
        [
            sys.executable,
            "-m",
            "jaxtalk.cli",
            "train",
            f"--config={REPO}/configs/anitalker_stage1.py:tiny",
            f"--workdir={workdir}",
            f"--config.data.data_dir={out}",
            f"--config.init_from={init}",
            "--config.model.size=32",
            "--config.batch_size=8",
            "--config.total_steps=2",
            "--config.log.every_steps=1",
            "--config.eval.every_steps=2",
            "--config.eval.num_batches=1",
            "--config.samples.every_steps=100",
            "--config.checkpoint.every_steps=2",
            "--config.log.progress_bar=False",
        ]
    )
    assert checkpoint_steps(workdir) == [2]
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert any("generator/loss" in r and np.isfinite(r["generator/loss"]) for r in rows)
    assert any("eval/psnr" in r for r in rows), rows[-1]
