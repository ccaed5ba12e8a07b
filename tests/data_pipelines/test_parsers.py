"""Each parser on fixtures in the official layouts, quirks included; skip counts asserted."""

import json
import zipfile

import numpy as np
import pytest

from data_pipelines.parsers import celebvhq, hdtf, talkinghead1kh, vfhq, voxceleb
from tests.data_pipelines import helpers


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_voxceleb2_zip_quirks_tubes_and_released_clips(tmp_path):
    frames = np.arange(349, 359)
    steady = [(0.319, 0.067, 0.424, 0.753)] * 10
    jump = steady[:5] + [(0.0, 0.0, 0.2, 0.3)] * 5  # IoU with the first box < 0.25: two tubes
    good = helpers.vox_txt("id00012", "_raOc3-IRsw", frames, steady)
    bad_row = good.replace("000352 \t0.319", "000352 \tnan?")  # one malformed row
    with zipfile.ZipFile(tmp_path / "vox2_dev_txt.zip", "w") as z:
        z.writestr("txt/id00012/_raOc3-IRsw/00001.txt", good)
        z.writestr(
            "txt/id00012/_raOc3-IRsw/00002.txt",
            helpers.vox_txt("id00012", "_raOc3-IRsw", frames, jump),
        )
        z.writestr("txt/id00012/_raOc3-IRsw/00003.txt", bad_row)
        z.writestr("txt/id00012/_raOc3-IRsw/00004.txt", "Identity  : \tid00012\n\nno table here\n")
        z.writestr(
            "txt/id00013/noVideo0000/00001.txt",
            helpers.vox_txt("id00013", "noVideo0000", frames, steady),
        )
        z.writestr(
            "txt/id00014/released000/00001.txt",
            helpers.vox_txt("id00014", "released000", frames, steady),
        )
    with zipfile.ZipFile(tmp_path / "vox2_test_txt.zip", "w") as z:
        z.writestr(
            "txt/id00020/testVideo00/00001.txt",
            helpers.vox_txt("id00020", "testVideo00", frames, steady),
        )
    for yt in ("_raOc3-IRsw", "testVideo00"):
        _touch(tmp_path / "videos" / f"{yt}.mp4")
    _touch(tmp_path / "dev" / "mp4" / "id00014" / "released000" / "00001.mp4")

    specs, report = voxceleb.parse(str(tmp_path), version=2)
    by_id = {s.clip_id: s for s in specs}
    assert sorted(by_id) == [
        "id00012/_raOc3-IRsw/00001",
        "id00012/_raOc3-IRsw/00002#0",
        "id00012/_raOc3-IRsw/00002#1",
        "id00012/_raOc3-IRsw/00003",
        "id00014/released000/00001",
        "id00020/testVideo00/00001",
    ]
    assert dict(report.counts) == {"malformed row": 1, "malformed file": 1, "missing video": 1}
    s = by_id["id00012/_raOc3-IRsw/00001"]
    assert (s.start_sec, s.end_sec, s.split, s.identity) == (349 / 25, 359 / 25, "train", "id00012")
    np.testing.assert_allclose(s.boxes[0], [0.319, 0.067, 0.743, 0.82], atol=1e-6)
    assert s.box_ref_height is None and s.crop_scale == 1.1
    assert by_id["id00012/_raOc3-IRsw/00002#1"].start_sec == 354 / 25
    assert len(by_id["id00012/_raOc3-IRsw/00003"].boxes) == 9
    assert by_id["id00020/testVideo00/00001"].split == "test"
    released = by_id["id00014/released000/00001"]
    assert released.boxes is None and released.end_sec is None


def test_voxceleb1_pixel_boxes_from_extracted_folders(tmp_path):
    txt = helpers.vox_txt(
        "id10270", "5r0dWxy17C8", [2316, 2317], [(223, 80, 130, 130)] * 2, normalized=False
    )
    path = tmp_path / "test" / "txt" / "id10270" / "5r0dWxy17C8" / "00001.txt"
    path.parent.mkdir(parents=True)
    path.write_text(txt)
    _touch(tmp_path / "videos" / "5r0dWxy17C8.mkv")
    specs, report = voxceleb.parse(str(tmp_path), version=1)
    assert report.total == 0 and len(specs) == 1
    assert specs[0].box_ref_height == 360.0 and specs[0].split == "test"
    np.testing.assert_allclose(specs[0].boxes[0], [223, 80, 353, 210])
    assert specs[0].video_path.endswith(".mkv")


def test_voxceleb_without_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="vox2"):
        voxceleb.parse(str(tmp_path))


def write_hdtf(root, names=("Radio11", "WDA_BarackObama_000")):
    (root / "RD_video_url.txt").write_text(
        "Radio11 https://www.youtube.com/watch?v=XtySvTwIOfw\nRadio99 https://www.youtube.com/watch?v=x\n"
    )
    (root / "RD_annotion_time.txt").write_text(
        "Radio11.mp4 00:01-00:02 00:02-00:03 00:04-oops 00:03-00:03\n"
    )
    (root / "RD_crop_wh.txt").write_text("Radio11_0.mp4 10 40 5 40\nRadio11_2.mp4 1 2\n")
    (root / "RD_crop_ratio.txt").write_text("Radio11_0.mp4 1.2\n")
    (root / "RD_resolution.txt").write_text("Radio11.mp4 72\n")
    (root / "WDA_video_url.txt").write_text(
        "WDA_BarackObama_000 https://www.youtube.com/watch?v=y\n"
    )
    (root / "WDA_annotion_time.txt").write_text(
        "WDA_BarackObama_000.mp4 00:00-00:02\nWDA_Missing_000.mp4 00:00-00:01\n"
    )
    (root / "WDA_crop_wh.txt").write_text("WDA_BarackObama_000_0.mp4 20 48 10 48\n")


def test_hdtf_five_files_disagreeing(tmp_path):
    write_hdtf(tmp_path)
    for name in ("Radio11", "WDA_BarackObama_000"):
        _touch(tmp_path / "videos" / f"{name}.mp4")
    specs, report = hdtf.parse(str(tmp_path))
    assert [s.clip_id for s in specs] == ["Radio11_0", "WDA_BarackObama_000_0"]
    assert dict(report.counts) == {
        "url without annotation": 1,
        "no crop box": 1,
        "malformed time range": 1,
        "empty time range": 1,
        "malformed line": 1,
        "missing video": 1,
    }
    assert dict(report.notes) == {
        "no resolution: crop taken as native pixels": 1
    }  # WDA has no resolution file
    radio = specs[0]
    assert (radio.start_sec, radio.end_sec, radio.box_ref_height) == (1.0, 2.0, 72.0)
    np.testing.assert_allclose(radio.boxes[0], [10, 5, 50, 45])
    assert dict(radio.extra)["crop_ratio"] == "1.2"
    assert specs[1].identity == "WDA_BarackObama" and specs[1].box_ref_height == 0.0
    test_list = tmp_path / "test.txt"
    test_list.write_text("Radio11.mp4\n")
    specs, _ = hdtf.parse(str(tmp_path), test_list=str(test_list))
    assert [s.split for s in specs] == ["test", "train"]


def write_vfhq(root, yt="_-91nXXjrVo", start=1, end=41, crop=(8, 4, 56, 60), height=72, width=96):
    lines = [
        f"Video {yt}",
        f"H {height}",
        f"W {width}",
        "FPS 25.0",
        "CROP box: " + " ".join(map(str, crop)),
    ]
    for f in range(start, end + 1):
        lines.append(f"{f} " + " ".join(["30 30 50 30 40 40 32 50 48 50"]))
    path = root / f"Clip+{yt}+P0+C0+F{start}-{end}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_vfhq_meta_files(tmp_path):
    write_vfhq(tmp_path)
    (tmp_path / "test").mkdir()
    test_meta = write_vfhq(tmp_path / "test", yt="ab_c-d", crop=(1, 2, 3, 4))
    test_meta.write_text(
        test_meta.read_text().replace("CROP box: 1 2 3 4\n", "").replace("\n5 30", "\n5 x y")
    )
    (tmp_path / "Clip+broken.txt").write_text("H 10\n")
    write_vfhq(tmp_path, yt="noVideo")
    for yt in ("_-91nXXjrVo", "ab_c-d"):
        _touch(tmp_path / "videos" / f"{yt}.mp4")
    specs, report = vfhq.parse(str(tmp_path))
    assert dict(report.counts) == {"malformed file name": 1, "malformed row": 1, "missing video": 1}
    by_id = {s.clip_id: s for s in specs}
    s = by_id["Clip+_-91nXXjrVo+P0+C0+F1-41"]
    assert (s.start_sec, s.end_sec, s.box_ref_height, s.identity, s.split) == (
        2 / 25,
        41 / 25,
        72.0,
        "_-91nXXjrVo+P0",
        "train",
    )
    np.testing.assert_allclose(s.boxes[0], [8, 4, 56, 60])
    t = by_id["Clip+ab_c-d+P0+C0+F1-41"]  # no CROP: union of the landmarks, enlarged
    assert t.split == "test" and t.crop_scale == vfhq.LANDMARK_CROP_SCALE
    np.testing.assert_allclose(t.boxes[0], [30, 30, 50, 50])


def celebv_entry(ytb, start=0.5, end=2.0, sep_flag=True):
    labels = [{"emotion": "neutral", "start_sec": 0, "end_sec": 0.28}] if sep_flag else "happy"
    return {
        "ytb_id": ytb,
        "duration": {"start_sec": start, "end_sec": end},
        "bbox": {"top": 0.1, "bottom": 0.8407, "left": 0.2, "right": 0.7},
        "attributes": {
            "appearance": [0, 1, 0],
            "action": [1, 0],
            "emotion": {"sep_flag": sep_flag, "labels": labels},
        },
        "version": "v0.1",
    }


def test_celebvhq_json_quirks(tmp_path):
    clips = {
        "_0tf2n3rlJU_0": celebv_entry("_0tf2n3rlJU"),
        "_0tf2n3rlJU_1": celebv_entry("_0tf2n3rlJU", sep_flag=False),
        "a_b_c_0": celebv_entry("a_b_c"),
        "bad_0": {"ytb_id": "bad", "duration": {}},
        "rev_0": celebv_entry("rev", 3.0, 2.0),
        "gone_0": celebv_entry("gone"),
    }
    (tmp_path / "celebvhq_info.json").write_text(
        json.dumps(
            {"mete_info": {"appearance_mapping": ["Blurry", "Male", "Young"]}, "clips": clips}
        )
    )
    _touch(tmp_path / "raw" / "_0tf2n3rlJU.mp4")
    _touch(tmp_path / "35666" / "a_b_c_0.mp4")  # only the processed clip of this one
    specs, report = celebvhq.parse(str(tmp_path))
    assert dict(report.counts) == {"malformed entry": 1, "empty time range": 1, "missing video": 1}
    assert dict(report.notes) == {"old 'mete_info' key": 1}
    by_id = {s.clip_id: s for s in specs}
    assert sorted(by_id) == ["_0tf2n3rlJU_0", "_0tf2n3rlJU_1", "a_b_c_0"]
    raw = by_id["_0tf2n3rlJU_0"]
    assert raw.identity == "_0tf2n3rlJU" and (raw.start_sec, raw.end_sec) == (0.5, 2.0)
    np.testing.assert_allclose(raw.boxes[0], [0.18, 0.08, 0.72, 0.8607], atol=1e-6)
    assert dict(by_id["_0tf2n3rlJU_1"].extra)["emotion"] == "happy"
    assert json.loads(dict(raw.extra)["emotion"])[0]["emotion"] == "neutral"
    processed = by_id["a_b_c_0"]
    assert processed.identity == "a_b_c" and processed.boxes is None and processed.end_sec is None


TUBES = "--Y9imYnfBw_0000, 72, 96, 10, 34, 24, 8, 72, 56\n"


def write_th1kh(root, lists=None):
    """data_list/<list>_video_tubes.txt files in the release's format (comma + space)."""
    lists = lists or {"train": TUBES, "val": "v4lId_x-9_0003, 72, 96, 0, 24, 0, 0, 48, 48\n"}
    (root / "data_list").mkdir(parents=True, exist_ok=True)
    for name, text in lists.items():
        (root / "data_list" / f"{name}_video_tubes.txt").write_text(text)


def test_talkinghead1kh_tubes_pieces_and_cropped_clips(tmp_path):
    write_th1kh(
        tmp_path,
        {
            "train": TUBES
            + "--Y9imYnfBw_0000, 72, 96, 40, 64, 0, 0, 48, 48\n"  # a second tube of the piece
            + "gone0000000_0001, 72, 96, 0, 10, 0, 0, 48, 48\n"  # no video
            + "--Y9imYnfBw_0000, 72, 96, 30, 20, 0, 0, 48, 48\n"  # E < S
            + "--Y9imYnfBw_0000, 72, 96, 0, 20, 48, 0, 48, 48\n"  # R = L
            + "--Y9imYnfBw_0000, 72, 96, 0, 20, 0, 0, 48\n",  # 8 fields
            "small": TUBES,  # the unit-test list repeats train tubes
            "val": "v4lId_x-9_0003, 72, 96, 0, 24, 0, 0, 48, 48\n",
        },
    )
    helpers.marker_video(str(tmp_path / "train" / "1min_clips" / "--Y9imYnfBw_0000.mp4"), 3.0)
    _touch(tmp_path / "val" / "cropped_clips" / "v4lId_x-9_0003_S0_E24_L0_T0_R48_B48.mp4")
    specs, report = talkinghead1kh.parse(str(tmp_path))
    assert dict(report.counts) == {
        "missing video": 1,
        "empty time range": 1,
        "empty box": 1,
        "malformed line": 1,
        "duplicate tube": 1,
    }
    by_id = {s.clip_id: s for s in specs}
    assert sorted(by_id) == [
        "--Y9imYnfBw_0000_S10_E34_L24_T8_R72_B56",
        "--Y9imYnfBw_0000_S40_E64_L0_T0_R48_B48",
        "v4lId_x-9_0003_S0_E24_L0_T0_R48_B48",
    ]
    s = by_id["--Y9imYnfBw_0000_S10_E34_L24_T8_R72_B56"]
    assert (s.identity, s.split, s.box_ref_height) == ("--Y9imYnfBw", "train", None)
    # frames 10..34 inclusive of a 25 fps piece; the box normalised per axis
    assert s.start_sec == pytest.approx(0.4) and s.end_sec == pytest.approx(1.4)
    np.testing.assert_allclose(s.boxes[0], [24 / 96, 8 / 72, 72 / 96, 56 / 72], rtol=1e-6)
    v = by_id["v4lId_x-9_0003_S0_E24_L0_T0_R48_B48"]  # the release's own cut, used whole
    assert v.split == "test" and v.identity == "v4lId_x-9" and v.boxes is None
    assert v.end_sec is None and dict(v.extra)["list"] == "val"


def test_talkinghead1kh_without_metadata_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="video_tubes.txt"):
        talkinghead1kh.parse(str(tmp_path))
