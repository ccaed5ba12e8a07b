"""Companion files for real datasets: the format's checks and `prepare --companions_dir`."""

import json

import numpy as np
import pytest
from absl import app, flags

from data_pipelines import clip_store, companions, records
from data_pipelines.clip_spec import ClipSpec, SkipReport
from jaxtalk.commands import prepare
from jaxtalk.errors import InputError
from jaxtalk.media.video import read_video, write_video
from tests.data_pipelines import helpers
from tests.data_pipelines.test_end_to_end import layout_vfhq

W, H = 96, 72  # the marker videos' frame


def _inverted(source, path, size=None):
    frames, fps = read_video(source)
    if size is not None:
        frames = frames[:, : size[1], : size[0]]
    write_video(str(path), 255 - frames, fps)


def _masks(path, n=75, rows=None):
    m = np.zeros((rows or n, H, W), np.uint8)
    m[:, :, : W // 2] = 1  # the left half is background
    np.savez_compressed(path, background_mask=m)


def test_attach_keeps_good_files_and_notes_bad_ones(tmp_path):
    videos, comp = tmp_path / "videos", tmp_path / "companions"
    videos.mkdir()
    comp.mkdir()
    for name, seed in (("v", 1), ("w", 2), ("x", 3)):
        helpers.marker_video(str(videos / f"{name}.mp4"), seed=seed)
    _inverted(videos / "v.mp4", comp / "v.swapped.mp4")
    _inverted(videos / "v.mp4", comp / "v.styled.mp4", size=(48, 36))  # wrong size
    _masks(comp / "v.masks.npz", rows=10)  # too few frames
    (comp / "x.masks.npz").write_bytes(b"junk")
    _inverted(videos / "x.mp4", comp / "x.swapped.mp4")
    (comp / "x.styled.mp4").write_bytes(b"not a video")
    specs = [
        ClipSpec(f"{v}_0", "vfhq", str(videos / f"{v}.mp4"), v, "train") for v in ("v", "w", "x")
    ]
    report = SkipReport()
    kept = companions.attach(specs, str(comp), report)
    assert [s.clip_id for s in kept] == ["v_0", "w_0", "x_0"]  # nobody is dropped
    assert [dict(s.companions) for s in kept] == [
        {"swapped": str(comp / "v.swapped.mp4")},
        {},
        {"swapped": str(comp / "x.swapped.mp4")},
    ]
    assert report.notes == {companions.BAD: 4, companions.NONE: 1} and not report.counts
    text = " | ".join(report.examples[companions.BAD])
    assert "v.styled.mp4: is 48x36, its video 96x72" in text
    assert "v.masks.npz: has 10 frames, its video 75" in text
    assert "x.masks.npz: not a numpy .npz" in text
    assert "x.styled.mp4: unreadable" in text
    assert report.examples[companions.NONE] == ["w_0"]
    with pytest.raises(InputError, match="not a directory"):
        companions.attach(specs, str(tmp_path / "nowhere"), report)


def test_prepare_vfhq_with_companions_dir(tmp_path):
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    layout_vfhq(raw)  # frames 10..50 of a 75-frame video, crop (8, 4, 56, 60)
    comp = tmp_path / "companions"
    comp.mkdir()
    source = raw / "videos" / "_-91nXXjrVo.mp4"
    _inverted(source, comp / "_-91nXXjrVo.swapped.mp4")
    _masks(comp / "_-91nXXjrVo.masks.npz")
    out = tmp_path / "out"
    argv = ["jaxtalk prepare", "vfhq", f"--manual_dir={raw}", f"--out_dir={out}", "--size=24"]
    argv += [f"--companions_dir={comp}", "--min_face_size=16", "--blur_threshold=0"]
    argv += ["--min_frames=25"]
    with pytest.raises(SystemExit) as exit_info:
        app.run(prepare.main, argv=argv)
    flags.FLAGS.unparse_flags()
    assert exit_info.value.code in (None, 0)
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["num_clips"] == 1
    assert info["companions"] == {"swapped": 1, "background_mask": 1}
    clip = clip_store.ClipStore.open(str(out), "train").clip(0)
    assert clip.streams == ("swapped", "background_mask")
    for t in (0, clip.num_frames // 2, clip.num_frames - 1):
        frame = records.decode_jpeg(clip.jpeg(t)).astype(int)
        swapped = records.decode_jpeg(clip.stream("swapped", t)).astype(int)
        assert np.abs(frame + swapped - 255).mean() < 6  # the same frame, inverted
        mask = companions.decode_mask(clip.stream("background_mask", t))
        x, _, side, _ = (int(v) for v in clip.header["crop_box"])
        column_x = x + (np.arange(24) + 0.5) * side / 24  # source x of each column
        np.testing.assert_array_equal(mask[:, column_x < W // 2 - 2].all(0), True)
        assert not mask[:, column_x > W // 2 + 2].any()


def test_masks_png_round_trip():
    mask = np.random.default_rng(0).random((64, 64)) > 0.5
    data = companions.encode_mask(mask)
    np.testing.assert_array_equal(companions.decode_mask(data), mask)
    assert len(data) < 64 * 64 // 8 + 200  # 1 bit per pixel at worst
