"""Crafted metadata for every parser: non-finite and negative numbers, a byte-order mark,
wrong JSON types, files cut short, random garbage lines. Each bad entry must be one counted
rejection and the good entries beside it must still be accepted. Also: a clip whose
processing raises must not cost its shard the other clips."""

import json
import math
import zipfile

import numpy as np
import pytest

from data_pipelines import pipeline, shard_writer
from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import celebvhq, common, hdtf, talkinghead1kh, vfhq, voxceleb
from data_pipelines.process import ProcessConfig
from data_pipelines.records import ClipRecord
from jaxtalk.errors import InputError
from tests.data_pipelines import helpers
from tests.data_pipelines.test_parsers import (
    _touch,
    celebv_entry,
    write_hdtf,
    write_th1kh,
    write_vfhq,
)

BOM = "\ufeff"
STEADY = [(0.3, 0.1, 0.4, 0.7)] * 10


def garbage_lines(seed, n=3):
    """Seeded random bytes, one line each: no line breaks inside, never blank, not a name."""
    rng = np.random.default_rng(seed)
    alphabet = np.array([b for b in range(0x21, 0x100) if b not in (0x0A, 0x0D)], np.uint8)
    return [b"\xff" + rng.choice(alphabet, 24).tobytes() for _ in range(n)]


def with_bom(path):
    path.write_bytes(BOM.encode() + path.read_bytes())


def cut(path, marker):
    """`path` cut short in the middle of the line holding `marker` (an interrupted copy)."""
    text = path.read_text()
    path.write_text(text[: text.index(marker) + len(marker) // 2])


def insert_lines(path, after_line, lines):
    rows = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(rows[:after_line] + lines + rows[after_line:]))


def outcome(parse, root, **kwargs):
    specs, report = parse(str(root), **kwargs)
    return sorted(s.clip_id for s in specs), dict(report.counts)


# VoxCeleb ---------------------------------------------------------------------------------


def vox_file(root, utt, frames=range(349, 359), boxes=STEADY, yt="_raOc3-IRsw"):
    path = root / "txt" / "id00012" / yt / f"{utt:05d}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(helpers.vox_txt("id00012", yt, frames, boxes))
    return path


def test_voxceleb_fuzz_non_finite_and_negative_rows(tmp_path):
    _touch(tmp_path / "videos" / "_raOc3-IRsw.mp4")
    bad = [
        (0.3, math.nan, 0.4, 0.7),
        (math.inf, 0.1, 0.4, 0.7),
        (0.3, 0.1, -math.inf, 0.7),
        (-0.3, 0.1, 0.4, 0.7),
        (0.3, 0.1, 0.4, -0.7),
    ]
    vox_file(tmp_path, 1, boxes=STEADY[:5] + bad)
    path = vox_file(tmp_path, 2, frames=[-1, 350, 351], boxes=STEADY[:3])
    path.write_text(path.read_text().replace("000350", "3.5e2").replace("000351", "1e999"))
    specs, report = voxceleb.parse(str(tmp_path))
    assert dict(report.counts) == {
        "non-finite value": 4,
        "negative box coordinate": 1,
        "negative box size": 1,
        "negative frame number": 1,
    }
    by_id = {s.clip_id: s for s in specs}
    assert len(by_id["id00012/_raOc3-IRsw/00001"].boxes) == 5  # the good rows are kept
    assert by_id["id00012/_raOc3-IRsw/00002"].start_sec == 350 / 25  # 3.5e2 is a number
    assert all(np.isfinite(s.boxes).all() and (s.boxes >= 0).all() for s in specs)


def test_voxceleb_fuzz_bom_changes_nothing(tmp_path):
    plain, marked = tmp_path / "plain", tmp_path / "bom"
    for root in (plain, marked):
        _touch(root / "videos" / "_raOc3-IRsw.mp4")
        vox_file(root, 1)
        with zipfile.ZipFile(root / "vox2_test_txt.zip", "w") as z:
            text = helpers.vox_txt("id00020", "_raOc3-IRsw", range(5), STEADY[:5])
            z.writestr("txt/id00020/_raOc3-IRsw/00001.txt", (BOM if root == marked else "") + text)
    with_bom(marked / "txt" / "id00012" / "_raOc3-IRsw" / "00001.txt")
    assert outcome(voxceleb.parse, marked) == outcome(voxceleb.parse, plain)
    ids, counts = outcome(voxceleb.parse, marked)
    assert counts == {} and len(ids) == 2


def test_voxceleb_fuzz_truncated_and_garbage(tmp_path):
    _touch(tmp_path / "videos" / "_raOc3-IRsw.mp4")
    cut(vox_file(tmp_path, 1), "000358")  # cut mid-row: that row is lost, the rest kept
    cut(vox_file(tmp_path, 2), "Offset")  # cut in the header: no table, the file is lost
    insert_lines(vox_file(tmp_path, 3), 8, garbage_lines(0))  # inside the table
    insert_lines(vox_file(tmp_path, 4), 1, garbage_lines(1, 1))  # inside the header
    with zipfile.ZipFile(tmp_path / "vox2_dev_txt.zip", "w") as z:
        z.writestr("txt/id00012/_raOc3-IRsw/00005.txt", b"\n".join(garbage_lines(2)))
    specs, report = voxceleb.parse(str(tmp_path))
    assert dict(report.counts) == {
        "malformed row": 4,
        "malformed file": 2,
        "malformed header line": 1,
    }
    by_id = {s.clip_id: s for s in specs}
    assert sorted(by_id) == [f"id00012/_raOc3-IRsw/{u:05d}" for u in (1, 3, 4)]
    assert len(by_id["id00012/_raOc3-IRsw/00001"].boxes) == 9
    assert len(by_id["id00012/_raOc3-IRsw/00003"].boxes) == 10


def test_voxceleb_fuzz_unreadable_zip_is_one_line_error(tmp_path):
    (tmp_path / "vox2_dev_txt.zip").write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(common.MetadataError, match="vox2_dev_txt.zip: not a readable zip") as e:
        voxceleb.parse(str(tmp_path))
    assert isinstance(e.value, InputError) and "\n" not in str(e.value)


# HDTF -------------------------------------------------------------------------------------


def hdtf_root(root):
    root.mkdir(parents=True, exist_ok=True)
    write_hdtf(root)
    for name in ("Radio11", "WDA_BarackObama_000"):
        _touch(root / "videos" / f"{name}.mp4")
    return root


def test_hdtf_fuzz_non_finite_and_negative(tmp_path):
    hdtf_root(tmp_path)
    (tmp_path / "WRA_annotion_time.txt").write_text(
        "WRA_A_000.mp4 00:01-00:02 00:02-00:03 00:03-00:04 00:inf-00:05 00:05-00:06 00:-1-00:07\n"
    )
    (tmp_path / "WRA_crop_wh.txt").write_text(
        "WRA_A_000_0.mp4 1 40 5 40\n"
        "WRA_A_000_1.mp4 nan 40 5 40\n"
        "WRA_A_000_2.mp4 -1 40 5 40\n"
        "WRA_A_000_3.mp4 1 40 5 40\n"
        "WRA_A_000_4.mp4 1 40 5 -4e1\n"
        "WRA_A_000_5.mp4 1 40 5 40\n"
    )
    (tmp_path / "WRA_resolution.txt").write_text("WRA_A_000.mp4 -Infinity\n")
    _touch(tmp_path / "videos" / "WRA_A_000.mp4")
    ids, counts = outcome(hdtf.parse, tmp_path)
    before_ids, before = outcome(hdtf.parse, hdtf_root(tmp_path / "clean"))
    added = {k: counts.get(k, 0) - before.get(k, 0) for k in counts}
    assert {k: v for k, v in added.items() if v} == {
        "non-finite value": 3,  # crop 1, range 3, the resolution line
        "negative box coordinate": 1,
        "negative box size": 1,
        "no crop box": 3,  # the clips of the three rejected crop lines
        "malformed time range": 1,  # '00:-1-00:07' is three times, not a range
    }
    assert sorted(set(ids) - set(before_ids)) == ["WRA_A_000_0"]


def test_hdtf_fuzz_bom_changes_nothing(tmp_path):
    plain, marked = hdtf_root(tmp_path / "plain"), hdtf_root(tmp_path / "bom")
    for path in marked.glob("*.txt"):
        with_bom(path)
    test_list = tmp_path / "test.txt"
    test_list.write_text(BOM + "Radio11.mp4\n")
    assert outcome(hdtf.parse, marked) == outcome(hdtf.parse, plain)
    specs, _ = hdtf.parse(str(marked), test_list=str(test_list))
    assert [s.split for s in specs] == ["test", "train"]


def test_hdtf_fuzz_truncated_and_garbage(tmp_path):
    clean_ids, clean = outcome(hdtf.parse, hdtf_root(tmp_path / "clean"))
    root = hdtf_root(tmp_path / "fuzz")
    (root / "WDA_crop_wh.txt").write_text(
        "WDA_BarackObama_000_0.mp4 20 48 10 48\nWDA_Other_000_0.mp4 20 48 10 48\n"
    )
    cut(root / "WDA_crop_wh.txt", "WDA_Other_000_0.mp4 20 48")  # a 3-token last line
    for i, name in enumerate(("RD_annotion_time", "RD_crop_wh", "RD_video_url", "RD_resolution")):
        insert_lines(root / f"{name}.txt", 1, garbage_lines(i))
    ids, counts = outcome(hdtf.parse, root)
    assert ids == clean_ids
    assert counts == {**clean, "malformed line": clean["malformed line"] + 13}


# VFHQ -------------------------------------------------------------------------------------


def vfhq_root(root):
    root.mkdir(parents=True, exist_ok=True)
    write_vfhq(root)
    write_vfhq(root, yt="other")
    for yt in ("_-91nXXjrVo", "other"):
        _touch(root / "videos" / f"{yt}.mp4")
    return root


def test_vfhq_fuzz_non_finite_and_negative(tmp_path):
    vfhq_root(tmp_path)
    meta = write_vfhq(tmp_path, yt="rows", crop=())  # no CROP: the box is the landmarks'
    _touch(tmp_path / "videos" / "rows.mp4")
    text = meta.read_text().replace("CROP box: \n", "")
    text = text.replace("\n3 30 30", "\n3 nan 30").replace("\n4 30 30", "\n4 30 1E400")
    text = text.replace("\n5 30 30", "\n-5 30 30").replace("\n6 30 30", "\n6 -30 30")
    meta.write_text(text)
    fps_nan = write_vfhq(tmp_path, yt="fps")
    fps_nan.write_text(fps_nan.read_text().replace("FPS 25.0", "FPS NaN"))
    neg_h = write_vfhq(tmp_path, yt="height")
    neg_h.write_text(neg_h.read_text().replace("H 72", "H -72"))
    neg_crop = write_vfhq(tmp_path, yt="crop", crop=(8, -4, 56, 60))
    for yt in ("fps", "height", "crop"):
        _touch(tmp_path / "videos" / f"{yt}.mp4")
    specs, report = vfhq.parse(str(tmp_path))
    assert dict(report.counts) == {
        "non-finite value": 3,  # rows 3 and 4, the FPS file
        "negative frame number": 1,
        "negative box coordinate": 2,  # row 6, the CROP file
        "negative frame size": 1,
    }
    by_id = {s.clip_id: s for s in specs}
    assert sorted(by_id) == sorted(
        f"Clip+{yt}+P0+C0+F1-41" for yt in ("_-91nXXjrVo", "other", "rows")
    )
    np.testing.assert_allclose(by_id["Clip+rows+P0+C0+F1-41"].boxes[0], [30, 30, 50, 50])
    assert neg_crop.name not in by_id


def test_vfhq_fuzz_bom_changes_nothing(tmp_path):
    plain, marked = vfhq_root(tmp_path / "plain"), vfhq_root(tmp_path / "bom")
    for path in marked.glob("Clip+*.txt"):
        with_bom(path)
    assert outcome(vfhq.parse, marked) == outcome(vfhq.parse, plain)
    assert outcome(vfhq.parse, marked)[1] == {}


def test_vfhq_fuzz_truncated_and_garbage(tmp_path):
    root = vfhq_root(tmp_path)
    cut(root / "Clip+other+P0+C0+F1-41.txt", "41 30 30 50")  # mid last row: that row is lost
    insert_lines(root / "Clip+_-91nXXjrVo+P0+C0+F1-41.txt", 7, garbage_lines(0))
    short = write_vfhq(root, yt="short")
    cut(short, "FPS 25.0")  # cut in the header: no FPS, the file is lost
    _touch(root / "videos" / "short.mp4")
    ids, counts = outcome(vfhq.parse, root)
    assert counts == {"malformed row": 4, "malformed file": 1}
    assert ids == ["Clip+_-91nXXjrVo+P0+C0+F1-41", "Clip+other+P0+C0+F1-41"]


# CelebV-HQ --------------------------------------------------------------------------------


def celebv_root(root, clips, text=None):
    _touch(root / "raw" / "good.mp4")
    data = {"meta_info": {}, "clips": {"good_0": celebv_entry("good"), **clips}}
    (root / "celebvhq_info.json").write_text(text if text is not None else json.dumps(data))
    return root


def with_values(**changes):
    """A valid entry (of the video 'good') with `changes` at dotted paths."""
    entry = celebv_entry("good")
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = entry
        for p in parents:
            node = node[p]
        node[leaf] = value
    return entry


def test_celebvhq_fuzz_non_finite_and_negative(tmp_path):
    clips = {
        "good_1": with_values(duration__start_sec=math.nan),
        "good_2": with_values(duration__end_sec=math.inf),
        "good_3": with_values(bbox__left=-math.inf),
        "good_4": with_values(duration__start_sec=-1.0),
        "good_5": with_values(bbox__top=-0.1),
        "good_6": with_values(bbox__right="1e999"),  # becomes the literal 1e999 below
    }
    text = json.dumps({"clips": {"good_0": celebv_entry("good"), **clips}})
    root = celebv_root(tmp_path, {}, text.replace('"1e999"', "1e999"))
    ids, counts = outcome(celebvhq.parse, root)
    assert counts == {
        "non-finite value": 4,
        "negative time": 1,
        "negative box coordinate": 1,
    }
    assert ids == ["good_0"]


def test_celebvhq_fuzz_wrong_json_types(tmp_path):
    clips = {
        "good_1": [celebv_entry("good")],
        "good_2": "good",
        "good_3": None,
        "good_4": 7,
        "good_5": with_values(duration=[0.5, 2.0]),
        "good_6": with_values(duration__start_sec="0.5"),
        "good_7": with_values(bbox=None),
        "good_8": with_values(bbox__left=True),
        "good_9": with_values(ytb_id=5),
        "good_10": with_values(attributes=[1, 2]),
        "good_11": with_values(attributes__appearance=3),
        "good_12": with_values(attributes__emotion=["happy"]),
        "good_13": with_values(duration__end_sec={"sec": 2}),
    }
    missing = {"good_14": {"ytb_id": "good"}, "good_15": with_values(bbox={"top": 0.1})}
    ids, counts = outcome(celebvhq.parse, celebv_root(tmp_path, {**clips, **missing}))
    assert counts == {"wrong JSON type": len(clips), "malformed entry": len(missing)}
    assert ids == ["good_0"]


def test_celebvhq_fuzz_bom_changes_nothing(tmp_path):
    clips = {"good_1": celebv_entry("good"), "gone_0": celebv_entry("gone")}
    plain, marked = celebv_root(tmp_path / "plain", clips), celebv_root(tmp_path / "bom", clips)
    with_bom(marked / "celebvhq_info.json")
    assert outcome(celebvhq.parse, marked) == outcome(celebvhq.parse, plain)
    assert outcome(celebvhq.parse, marked) == (["good_0", "good_1"], {"missing video": 1})


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not an object", "no clips"])
def test_celebvhq_fuzz_unreadable_json_is_one_line_error(tmp_path, damage):
    text = json.dumps({"meta_info": {}, "clips": {"good_0": celebv_entry("good")}})
    data = {
        "truncated": text[: len(text) // 2].encode(),
        "garbage": text[:40].encode() + garbage_lines(0, 1)[0] + text[40:].encode(),
        "not an object": b"[1, 2]",
        "no clips": b'{"meta_info": {}}',
    }[damage]
    path = celebv_root(tmp_path, {}) / "celebvhq_info.json"
    path.write_bytes(data)
    with pytest.raises(common.MetadataError, match="celebvhq_info.json: ") as e:
        celebvhq.parse(str(tmp_path))
    assert isinstance(e.value, InputError) and "\n" not in str(e.value)


# TalkingHead-1KH --------------------------------------------------------------------------


def th1kh_root(root):
    """Two good tubes, each with the release's cropped clip (no video decoding needed)."""
    write_th1kh(root)
    for name in ("train/cropped_clips/--Y9imYnfBw_0000_S10_E34_L24_T8_R72_B56",
                 "val/cropped_clips/v4lId_x-9_0003_S0_E24_L0_T0_R48_B48"):  # fmt: skip
        _touch(root / f"{name}.mp4")
    return root


def test_talkinghead1kh_fuzz_non_finite_and_negative(tmp_path):
    root = th1kh_root(tmp_path)
    good = "abcdefghijk_0000, 72, 96, 0, 9, 0, 0, 48, 48"
    bad = [
        "abcdefghijk_0000, nan, 96, 0, 9, 0, 0, 48, 48",
        "abcdefghijk_0000, 72, 96, 0, inf, 0, 0, 48, 48",
        "abcdefghijk_0000, 72, 96, 0, 9, 0, 0, 1e999, 48",
        "abcdefghijk_0000, -72, 96, 0, 9, 0, 0, 48, 48",
        "abcdefghijk_0000, 72, 96, -3, 9, 0, 0, 48, 48",
        "abcdefghijk_0000, 72, 96, 0, 9, -1, 0, 48, 48",
        "abcdefghijk_0000, 72, 96, 0, 9, 0.5, 0, 48, 48",  # not a whole pixel
        "abcdefghijk_0000, 0, 96, 0, 9, 0, 0, 48, 48",  # zero frame size
    ]
    (root / "data_list" / "small_video_tubes.txt").write_text("\n".join([good] + bad) + "\n")
    _touch(root / "cropped_clips" / "abcdefghijk_0000_S0_E9_L0_T0_R48_B48.mp4")
    ids, counts = outcome(talkinghead1kh.parse, root)
    assert counts == {
        "non-finite value": 3,
        "negative frame size": 1,
        "negative frame number": 1,
        "negative box coordinate": 1,
        "malformed line": 1,
        "empty box": 1,
    }
    assert "abcdefghijk_0000_S0_E9_L0_T0_R48_B48" in ids and len(ids) == 3


def test_talkinghead1kh_fuzz_bom_changes_nothing(tmp_path):
    plain, marked = th1kh_root(tmp_path / "plain"), th1kh_root(tmp_path / "bom")
    for path in (marked / "data_list").glob("*.txt"):
        with_bom(path)
    assert outcome(talkinghead1kh.parse, marked) == outcome(talkinghead1kh.parse, plain)
    assert outcome(talkinghead1kh.parse, marked)[1] == {}


def test_talkinghead1kh_fuzz_truncated_garbage_and_unreadable_piece(tmp_path):
    clean_ids, _ = outcome(talkinghead1kh.parse, th1kh_root(tmp_path / "clean"))
    root = th1kh_root(tmp_path / "fuzz")
    train = root / "data_list" / "train_video_tubes.txt"
    train.write_text(train.read_text() + "--Y9imYnfBw_0000, 72, 96, 40, 64, 0, 0, 48, 48\n")
    cut(train, "--Y9imYnfBw_0000, 72, 96, 40, 64")  # the last line cut after its 5th field
    insert_lines(train, 1, garbage_lines(0))
    # two tubes of a piece that is not a video: its header is read once, both rejected
    (root / "1min_clips").mkdir()
    (root / "1min_clips" / "brokenpiece_0002.mp4").write_bytes(b"\x00\x01 not a video")
    (root / "data_list" / "small_video_tubes.txt").write_text(
        "brokenpiece_0002, 72, 96, 0, 9, 0, 0, 48, 48\n"
        "brokenpiece_0002, 72, 96, 10, 19, 0, 0, 48, 48\n"
    )
    ids, counts = outcome(talkinghead1kh.parse, root)
    assert ids == clean_ids
    assert counts == {"malformed line": 4, "unreadable video": 2}


# Preparation ------------------------------------------------------------------------------


def test_prepare_fuzz_unexpected_clip_failure_is_counted_and_the_shard_written(tmp_path):
    specs = [ClipSpec(f"clip{i}", "fuzz", f"/videos/{i}.mp4", f"id{i}", "train") for i in range(3)]

    def process(spec, cfg):
        if spec.clip_id == "clip1":
            raise ZeroDivisionError("float division by zero\nin a very odd clip")
        frames = np.full((2, 8, 8, 3), 100, np.uint8)
        return ClipRecord(
            spec.clip_id, "fuzz", spec.identity, "train", 25.0, 16000, frames,
            np.zeros(1280, np.int16), (0, 0, 8, 8), (8, 8),
        )  # fmt: skip

    logged = []
    info = pipeline.prepare(
        specs,
        SkipReport(),
        str(tmp_path),
        name="fuzz",
        cfg=ProcessConfig(size=8),
        clips_per_shard=3,
        process_fn=process,
        log=logged.append,
    )
    reason = "ZeroDivisionError: float division by zero in a very odd clip"
    marker = shard_writer.read_marker(str(tmp_path / "train.array_record-00000-of-00001"))
    assert [r["clip_id"] for r in marker["records"]] == ["clip0", "clip2"]
    assert marker["rejected"] == {reason: 1} and marker["rejected_examples"][reason] == ["clip1"]
    assert info["rejected"] == {reason: 1} and info["num_clips"] == 2
    assert reason in logged[-1]  # the count report names it
