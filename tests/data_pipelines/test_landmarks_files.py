"""Landmark files for real datasets: the format's checks, `prepare --landmarks_dir`, extraction."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from data_pipelines import clip_store, datasets, landmarks, process
from data_pipelines.clip_spec import ClipSpec, SkipReport
from jaxtalk.errors import InputError
from jaxtalk.media.video import read_video
from tests.data_pipelines import helpers
from tests.data_pipelines.test_end_to_end import layout_celebvhq, layout_vfhq
from tests.data_pipelines.test_parsers import celebv_entry

W, H = 96, 72  # the marker videos' frame
RELAXED = {"min_face_size": 16, "blur_threshold": 0.0}  # min_frames: the landmarks' 30


def _points(n, seed=0):
    """[n, 956] source pixels: a face-sized cloud inside the 96x72 frame, moving per frame."""
    rng = np.random.default_rng(seed)
    base = rng.uniform((30, 20), (66, 60), (478, 2))
    drift = np.arange(n)[:, None, None] * np.array([0.1, 0.05])
    return (base[None] + drift).reshape(n, -1).astype(np.float32)


def _write(path, n=75, fps=25.0, **arrays):
    arrays.setdefault("face_mesh_xy", _points(n))
    np.savez(path, fps=np.float32(fps), **arrays)
    return str(path)


def _load(path, num_frames=30, start=0.4, box=(8, 4, 56, 56)):
    spec = ClipSpec("clip", "celebvhq", "v.mp4", "id", "train", attributes_path=str(path))
    return process._load_attributes(spec, start, num_frames, 25.0, box, (W, H))


def test_rows_are_mapped_into_the_crop(tmp_path):
    xy = _points(75)
    pose = np.tile(np.array([5, -3, 1, 40, 30, 2.5], np.float32), (75, 1))
    got = _load(_write(tmp_path / "v.npz", face_mesh_xy=xy, head_pose=pose))
    src = xy[10:40].reshape(30, 478, 2)  # start 0.4 s = frame 10
    np.testing.assert_allclose(got["face_mesh_xy"].reshape(30, 478, 2), (src - (8, 4)) / 56)
    np.testing.assert_allclose(got["head_pose"][0], [5, -3, 1, 32 / 56, 26 / 56, 2.5 / 56])
    # NaN rows the clip does not use are fine (extraction covers only the clips' frames).
    xy[:5] = np.nan
    assert np.isfinite(_load(_write(tmp_path / "w.npz", face_mesh_xy=xy))["face_mesh_xy"]).all()


@pytest.mark.parametrize(
    "arrays,fault",
    [
        ({"face_mesh_xy": _points(75)[:, :10]}, "face_mesh_xy has width"),
        ({"head_pose": np.zeros((75, 3), np.float32)}, "head_pose has width"),
        (
            {"face_mesh_xy": np.where(np.arange(75)[:, None] == 20, np.nan, _points(75))},
            "not finite",
        ),
        ({"face_mesh_xy": _points(75) + 60}, "leaves the 96x72 frame"),
        ({"face_mesh_xy": _points(75) / 100}, "looks normalized"),
        ({"face_mesh_xy": _points(30)}, "has 30 frames, the clip needs frame 39"),
        ({"face_mesh": np.zeros((75, 468, 2), np.float32)}, "face_mesh has width"),
    ],
)
def test_bad_rows_reject_the_clip_naming_the_file(tmp_path, arrays, fault):
    path = _write(tmp_path / "v.npz", **arrays)
    with pytest.raises(process.ClipRejected) as e:
        _load(path)
    assert e.value.reason == "bad landmark file"
    assert e.value.detail.startswith(path) and fault in e.value.detail


def test_unreadable_files_reject_the_clip(tmp_path):
    garbage = tmp_path / "g.npz"
    garbage.write_bytes(b"\x00not a zip" * 10)
    pickled = tmp_path / "p.npz"
    np.savez(pickled, fps=np.float32(25), face_mesh_xy=np.array([{"x": 1}], dtype=object))
    for path in (garbage, pickled):
        with pytest.raises(process.ClipRejected) as e:
            _load(path)
        assert e.value.reason == "bad landmark file" and str(path) in e.value.detail


def test_attach_skips_missing_and_unusable_files(tmp_path):
    lm = tmp_path / "lm"
    lm.mkdir()
    _write(lm / "good.npz")
    np.savez(lm / "nomesh.npz", fps=np.float32(25))
    np.savez(lm / "badfps.npz", fps=np.float32(0), face_mesh_xy=_points(3))
    (lm / "junk.npz").write_bytes(b"junk")
    specs = [
        ClipSpec(f"{v}_0", "vfhq", f"/videos/{v}.mp4", v, "train")
        for v in ("good", "nomesh", "badfps", "junk", "gone")
    ]
    report = SkipReport()
    kept = landmarks.attach(specs, str(lm), report)
    assert [s.clip_id for s in kept] == ["good_0"]
    assert kept[0].attributes_path == str(lm / "good.npz")
    assert report.counts == {"bad landmark file": 3, "missing landmarks": 1}
    text = " ".join(report.examples["bad landmark file"])
    assert "nomesh.npz: has no face_mesh_xy" in text and "badfps.npz: fps 0.0" in text
    assert "junk.npz: not a numpy .npz" in text
    with pytest.raises(InputError, match="not a directory"):
        landmarks.attach(specs, str(tmp_path / "nowhere"), report)


def test_prepare_celebvhq_with_landmarks(tmp_path):
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    layout_celebvhq(raw)  # _0tf2n3rlJU_0: 0.4-2.0 s of a 3 s video; x_y_0: a 1.2 s clip
    info = json.loads((raw / "celebvhq_info.json").read_text())
    info["clips"]["_0tf2n3rlJU_1"] = celebv_entry("_0tf2n3rlJU", 0.4, 1.56)  # 29 frames
    (raw / "celebvhq_info.json").write_text(json.dumps(info))
    lm = tmp_path / "landmarks"
    lm.mkdir()
    xy = _points(75, seed=1)
    _write(lm / "_0tf2n3rlJU.npz", face_mesh_xy=xy)
    _write(lm / "x_y_0.npz", n=30, face_mesh_xy=_points(30) * 3)  # out of its frame
    out = str(tmp_path / "out")
    result = datasets.prepare_dataset(
        "celebvhq",
        str(raw),
        out,
        size=24,
        filter_overrides=RELAXED,
        landmarks_dir=str(lm),
        log=lambda *_: None,
    )
    assert result["num_clips"] == 1
    assert result["rejected"] == {"bad landmark file": 1, "too short": 1}
    assert result["config"]["filters"]["min_frames"] == 30  # the release's rule
    rec = clip_store.ClipStore.open(out, "train").clip(0).header
    assert rec["clip_id"] == "_0tf2n3rlJU_0" and rec["num_frames"] == 40
    x, y, side = (int(v) for v in rec["crop_box"][[0, 1, 2]])
    want = (xy[10:50].reshape(40, 478, 2) - (x, y)) / side
    np.testing.assert_allclose(rec["attributes"]["face_mesh_xy"].reshape(40, 478, 2), want, 1e-5)


def test_prepare_vfhq_with_landmarks_and_flag_errors(tmp_path):
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    layout_vfhq(raw)  # frames 10..50 of a 75-frame video
    lm = tmp_path / "landmarks"
    lm.mkdir()
    _write(lm / "_-91nXXjrVo.npz")
    out = str(tmp_path / "out")
    kwargs = dict(size=24, filter_overrides=RELAXED, log=lambda *_: None)
    result = datasets.prepare_dataset("vfhq", str(raw), out, landmarks_dir=str(lm), **kwargs)
    assert result["num_clips"] == 1
    rec = clip_store.ClipStore.open(out, "train").clip(0).header
    assert rec["attributes"]["face_mesh_xy"].shape == (rec["num_frames"], 956)
    with pytest.raises(InputError, match="needs --landmarks_dir"):
        datasets.prepare_dataset("vfhq", str(raw), out, landmarks_model="m.task", **kwargs)
    with pytest.raises(InputError, match="its own exact landmarks"):
        datasets.prepare_dataset("synthetic", "", out, landmarks_dir=str(lm), **kwargs)


def test_landmarks_model_without_mediapipe_names_the_extra():
    try:
        import mediapipe  # noqa: F401
    except ImportError:
        with pytest.raises(InputError, match=r"pip install 'jaxtalk\[mediapipe\]'") as e:
            landmarks.mediapipe_detector("face_landmarker.task")
        assert "\n" not in str(e.value)
    else:
        with pytest.raises(InputError, match="no such file"):
            landmarks.mediapipe_detector("/nonexistent/face_landmarker.task")


@pytest.mark.parametrize("translation", [(0.0, 0.0, -45.0), (3.0, -2.0, -45.0)])
def test_head_pose_from_mediapipe_matrix_is_the_local_projection(translation):
    """The weak-perspective pose puts the head's origin where the release's perspective
    projection does (pose_util: 63 degrees vertical, y flipped), and on the optical axis
    reproduces it to first order around it (off the axis, depth shifts points sideways,
    which no weak perspective has)."""
    w, h = 640, 480
    rot = Rotation.from_euler("xyz", [10, -25, 5], degrees=True).as_matrix()
    matrix = np.eye(4)
    matrix[:3, :3], matrix[:3, 3] = rot, translation

    def perspective(v):  # the release's projection of MediaPipe-frame points v [N, 3]
        cam = v @ rot.T + matrix[:3, 3]
        f = landmarks.FOCAL
        ndc = np.stack([f / (w / h) * cam[:, 0], -f * cam[:, 1]], 1) / -cam[:, 2:]
        return (ndc + 1) / 2 * (w, h)

    pose = landmarks.head_pose_from_matrix(matrix, w, h)
    np.testing.assert_allclose(perspective(np.zeros((1, 3)))[0], pose[3:5], atol=1e-9)
    if translation[:2] == (0.0, 0.0):
        flip = np.diag([1.0, -1.0, 1.0])
        r = Rotation.from_euler("xyz", pose[:3], degrees=True).as_matrix()
        delta = np.random.default_rng(0).normal(size=(20, 3)) * 1e-4
        weak = (delta @ flip @ r.T)[:, :2] * pose[5] + pose[3:5]
        np.testing.assert_allclose(weak, perspective(delta), atol=1e-7)


def test_extraction_writes_the_clips_frames(tmp_path):
    """Row i is the video's frame i: a detector reading each frame's brightness (the marker
    video's steps) finds it again; frames outside the clips stay NaN; reruns skip."""
    video = tmp_path / "videos" / "vid.mp4"
    helpers.marker_video(str(video), seconds=3.0, seed=7)
    frames, _ = read_video(str(video))

    def detect(frame):
        level = frame.mean() / 255
        return np.full((478, 2), 0.2) + [level * 0.5, 0], None

    specs = [
        ClipSpec("a", "vfhq", str(video), "id", "train", start_sec=0.4, end_sec=1.2),
        ClipSpec("b", "vfhq", str(video), "id", "train", start_sec=1.0, end_sec=2.0),
    ]
    lm = tmp_path / "lm"
    counts = landmarks.extract_missing(specs, str(lm), detect, log=lambda *_: None)
    assert counts == {"videos": 1, "extracted": 1, "no_face": 0, "unreadable": 0}
    with np.load(lm / "vid.npz") as data:
        xy, fps = data["face_mesh_xy"].reshape(-1, 478, 2), float(data["fps"])
        assert "head_pose" not in data.files  # no matrices from this detector
    assert fps == 25.0 and len(xy) >= 50
    assert np.isnan(xy[:10]).all() and np.isfinite(xy[10:50]).all()
    want = W * (0.2 + frames[10:50].mean((1, 2, 3)) / 255 * 0.5)
    np.testing.assert_allclose(xy[10:50, 0, 0], want, atol=1e-3)
    again = landmarks.extract_missing(specs, str(lm), detect, log=lambda *_: None)
    assert again == {"videos": 1, "extracted": 0, "no_face": 0, "unreadable": 0}
    # A video without a face gets no file; its clips then count as missing landmarks.
    lost = landmarks.extract_missing(
        [ClipSpec("c", "vfhq", str(video), "id", "train", 0.0, 0.5)],
        str(tmp_path / "lm2"),
        lambda frame: None,
        log=lambda *_: None,
    )
    assert lost["no_face"] == 1 and not list((tmp_path / "lm2").iterdir())
    # A corrupt video is counted and passed over (processing rejects its clips anyway).
    corrupt = tmp_path / "videos" / "bad.mp4"
    corrupt.write_bytes(b"corrupt" * 100)
    logged = []
    bad = landmarks.extract_missing(
        [ClipSpec("d", "vfhq", str(corrupt), "id", "train", 0.0, 0.5)],
        str(tmp_path / "lm3"),
        detect,
        log=logged.append,
    )
    assert bad["unreadable"] == 1 and "bad.mp4" in logged[0]
