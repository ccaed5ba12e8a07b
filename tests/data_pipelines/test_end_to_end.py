"""Raw mp4 + official metadata -> records -> loader batch, for every dataset format.

The source videos are marker videos (brightness and tone level follow the same steps),
so a batch's frames and audio must agree frame by frame after cutting, cropping and
resampling.
"""

import json
import zipfile

import pytest

from data_pipelines import datasets, loaders
from data_pipelines import info as info_lib
from tests.data_pipelines import helpers
from tests.data_pipelines.test_parsers import celebv_entry, write_vfhq

RELAXED = {"min_frames": 10, "min_face_size": 16, "blur_threshold": 0.0}
W, H = 96, 72


def layout_voxceleb2(root):
    helpers.marker_video(str(root / "videos" / "yt_A-1.mp4"), seed=1)
    boxes = [(0.25, 0.2, 0.4, 0.5)] * 40
    with zipfile.ZipFile(root / "vox2_dev_txt.zip", "w") as z:
        z.writestr(
            "txt/id00001/yt_A-1/00001.txt",
            helpers.vox_txt("id00001", "yt_A-1", range(10, 50), boxes),
        )
    return 1, 40


def layout_voxceleb1(root):
    helpers.marker_video(str(root / "videos" / "yt_B.mp4"), seed=2)
    txt = helpers.vox_txt(
        "id10270", "yt_B", range(5, 45), [(100, 60, 150, 180)] * 40, normalized=False
    )
    (root / "txt" / "id10270" / "yt_B").mkdir(parents=True)
    (root / "txt" / "id10270" / "yt_B" / "00001.txt").write_text(txt)
    return 1, 40


def layout_hdtf(root):
    helpers.marker_video(str(root / "videos" / "Radio11.mp4"), seconds=3.0, fps=30.0, seed=3)
    (root / "videos" / "Radio12.mp4").write_bytes(b"corrupt" * 100)  # reported, not fatal
    helpers.marker_video(str(root / "videos" / "Radio13.mp4"), seconds=2.0, audio=False)
    (root / "RD_video_url.txt").write_text(
        "Radio11 https://youtu.be/x\nRadio12 https://youtu.be/y\n"
    )
    (root / "RD_annotion_time.txt").write_text(
        "Radio11.mp4 00:00-00:01 00:01-00:02\nRadio12.mp4 00:00-00:01\nRadio13.mp4 00:00-00:01\n"
    )
    (root / "RD_crop_wh.txt").write_text(
        "Radio11_0.mp4 300 400 100 400\nRadio11_1.mp4 0 500 0 500\n"
        "Radio12_0.mp4 0 300 0 300\nRadio13_0.mp4 0 300 0 300\n"
    )
    (root / "RD_resolution.txt").write_text("Radio11.mp4 720\nRadio12.mp4 720\nRadio13.mp4 720\n")
    return 2, 25


def layout_vfhq(root):
    helpers.marker_video(str(root / "videos" / "_-91nXXjrVo.mp4"), seed=4)
    write_vfhq(root, start=9, end=51, crop=(8, 4, 56, 60))
    return 1, 41


def layout_celebvhq(root):
    helpers.marker_video(str(root / "raw" / "_0tf2n3rlJU.mp4"), seed=5)
    helpers.marker_video(str(root / "35666" / "x_y_0.mp4"), seconds=1.2, seed=6)
    clips = {"_0tf2n3rlJU_0": celebv_entry("_0tf2n3rlJU", 0.4, 2.0), "x_y_0": celebv_entry("x_y")}
    (root / "celebvhq_info.json").write_text(json.dumps({"meta_info": {}, "clips": clips}))
    return 2, 40


LAYOUTS = {
    "voxceleb2": layout_voxceleb2,
    "voxceleb1": layout_voxceleb1,
    "hdtf": layout_hdtf,
    "vfhq": layout_vfhq,
    "celebvhq": layout_celebvhq,
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_full_path(tmp_path, name):
    raw = tmp_path / "raw_download"
    (raw / "videos").mkdir(parents=True)
    num_clips, min_len = LAYOUTS[name](raw)
    out = str(tmp_path / "records")
    info = datasets.prepare_dataset(
        name, str(raw), out, size=24, filter_overrides=RELAXED, log=lambda *_: None
    )
    assert info["num_clips"] == num_clips
    if name == "hdtf":
        assert info["rejected"] == {"unreadable video": 1, "missing audio": 1}
    assert info["config"]["size"] == 24 and info["splits"]["train"]["num_frames"] >= min_len

    cfg = loaders.default_data_config()
    cfg.update(data_dir=out, kind="windows", num_frames=20, attributes=())
    batch = next(
        iter(
            loaders.make_loader(
                cfg, split="train", global_batch_size=num_clips, seed=0, shuffle=False
            )
        )
    )
    assert batch["frames"].shape == (num_clips, 20, 24, 24, 3)
    assert batch["audio"].shape == (num_clips, 20 * 640)
    assert batch["frames"].min() >= -1 and batch["frames"].max() <= 1
    for frames, audio in zip(batch["frames"], batch["audio"]):
        helpers.assert_aligned(frames, audio)


def test_records_hold_crop_and_metadata(tmp_path):
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    layout_hdtf(raw)
    out = str(tmp_path / "out")
    datasets.prepare_dataset(
        "hdtf", str(raw), out, size=24, filter_overrides=RELAXED, log=lambda *_: None
    )
    _, entries = info_lib.shard_records(out, "train")
    from data_pipelines import clip_store  # pylint: disable=import-outside-toplevel

    store = clip_store.ClipStore.open(out, "train")
    recs = [store.clip(i).header for i in range(len(store))]
    assert (
        [r["clip_id"] for r in recs]
        == [e["clip_id"] for e in entries]
        == ["Radio11_0", "Radio11_1"]
    )
    # 720-high coordinates on a 72-high video: x 300, w 400, y 100 -> 30, 40, 10; side 40.
    assert list(recs[0]["crop_box"]) == [30, 10, 40, 40] and list(recs[0]["source_size"]) == [W, H]
    assert (
        recs[0]["fps"] == 25.0 and recs[0]["num_frames"] == 25 and len(recs[0]["audio"]) == 25 * 640
    )
    assert recs[1]["crop_box"][2] == 50  # the 500-px box clamps to the 72-px frame: square 50
    assert recs[0]["dataset"] == "hdtf" and recs[0]["extra"]["subset"] == "RD"


def test_video_only_dataset_keeps_its_clips_silent(tmp_path):
    """TalkingHead-1KH's downloads have no audio track: its clips are kept with empty audio
    (HDTF's above are rejected for it), frame loaders read them, audio loaders refuse them
    by name rather than feed silence."""
    raw = tmp_path / "raw"
    helpers.marker_video(str(raw / "train" / "1min_clips" / "abcdefghijk_0000.mp4"), audio=False)
    (raw / "data_list").mkdir(parents=True)
    tube = f"abcdefghijk_0000, {H}, {W}, 0, 59, 10, 0, 82, 72\n"
    (raw / "data_list" / "train_video_tubes.txt").write_text(tube)
    out = str(tmp_path / "out")
    info = datasets.prepare_dataset(
        "talkinghead1kh", str(raw), out, size=24, filter_overrides=RELAXED, log=lambda *_: None
    )
    assert info["num_clips"] == 1 and not info.get("rejected")
    cfg = loaders.default_data_config()
    cfg.update(data_dir=out, kind="windows", num_frames=20, attributes=(), audio="none")
    loader = loaders.make_loader(cfg, split="train", global_batch_size=1, seed=0, shuffle=False)
    assert next(iter(loader))["frames"].shape == (1, 20, 24, 24, 3)
    cfg.update(audio="raw")
    loader = loaders.make_loader(cfg, split="train", global_batch_size=1, seed=0, shuffle=False)
    with pytest.raises(Exception, match="abcdefghijk_0000.* has no audio"):
        next(iter(loader))
