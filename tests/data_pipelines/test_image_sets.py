"""`jaxtalk prepare images`: a folder of portraits (rendered here with the synthetic
generator's renderer, saved as PNG and JPEG, plus files that cannot be used) -> one-frame
silent clips with their landmarks, pairs of the same image, and a LivePortrait mixture of
the image set with a video set."""

import io
import json
import logging
import os

import numpy as np
import pytest
from absl import app
from PIL import Image

from configs import liveportrait as lp_config
from data_pipelines import clip_store, landmarks, loaders
from data_pipelines.parsers import images
from data_pipelines.synthetic import face, generate
from jaxtalk.commands import prepare
from jaxtalk.media import face_detect

RES = 160  # raw image side
SIZE = 32  # the records' side: the conftest's synthetic video set's
# Renderer seeds whose faces OpenCV's Haar detector finds (as tests/data_pipelines/test_videos.py)
SEEDS = {"alice": 0, "bob": 5}
GOOD = ["alice/one.png", "alice/two.jpg", "bob/one.png"]


def _portraits(seed: int, count: int) -> list[np.ndarray]:
    """`count` rendered frames of one identity in which the detector finds a face."""
    rng = np.random.default_rng(seed)
    frames = generate.render_video(face.random_identity(rng, RES, RES), 25, rng)[0]
    found = [f for f in frames if len(face_detect.detect_faces(f))]
    assert len(found) >= count
    return found[:: len(found) // count][:count]


def fake_detector(frame):
    """MediaPipe's output shape (478 points in 0..1, no matrix): a ring round the centre
    whose radius follows the image's brightness, so each image gets its own landmarks."""
    angle = np.linspace(0, 2 * np.pi, 478, endpoint=False)
    radius = 0.1 + 0.2 * frame.mean() / 255
    return np.stack([0.5 + radius * np.cos(angle), 0.5 + radius * np.sin(angle)], 1), None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("portraits")
    (d / "alice").mkdir()
    (d / "bob").mkdir()
    one, two = _portraits(SEEDS["alice"], 2)
    Image.fromarray(one).save(d / "alice" / "one.png")
    Image.fromarray(two).save(d / "alice" / "two.jpg", quality=95)
    Image.fromarray(_portraits(SEEDS["bob"], 1)[0]).save(d / "bob" / "one.png")
    Image.fromarray(np.full((RES, RES, 3), 128, np.uint8)).save(d / "grey.png")  # no face
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 50)
    (d / "half.jpg").write_bytes((d / "alice" / "two.jpg").read_bytes()[:300])  # truncated
    (d / "notes.txt").write_text("not an image: ignored")
    return d


@pytest.fixture(scope="module")
def prepared(folder, tmp_path_factory):
    """The command, in process, as a user runs it; landmarks written by a stand-in detector."""
    out = str(tmp_path_factory.mktemp("images_out") / "images")
    lm_dir = str(tmp_path_factory.mktemp("landmarks"))
    test_list = tmp_path_factory.mktemp("lists") / "test.txt"
    test_list.write_text("bob/one.png\n")
    argv = ["jaxtalk prepare", "images", f"--manual_dir={folder}", f"--out_dir={out}"]
    argv += [f"--size={SIZE}", "--min_face_size=32", "--blur_threshold=0", "--clips_per_shard=2"]
    argv += [f"--test_list={test_list}", "--identity=folder", f"--landmarks_dir={lm_dir}"]
    argv += ["--landmarks_model=face_landmarker.task"]
    mp = pytest.MonkeyPatch()
    mp.setattr(landmarks, "mediapipe_detector", lambda path: fake_detector)
    logger = logging.getLogger("absl")
    records = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        with pytest.raises(SystemExit) as exit_info:
            app.run(prepare.main, argv=argv)
    finally:
        logger.removeHandler(handler)
        mp.undo()
    assert exit_info.value.code in (None, 0)
    return out, lm_dir, [r.getMessage() for r in records]


def test_images_are_found_nested_and_in_order(folder):
    found = [os.path.relpath(p, folder) for p in images.find_images(str(folder))]
    assert found == ["broken.png", "grey.png", "half.jpg", *GOOD]


def test_read_image_applies_exif_orientation_and_names_bad_files(tmp_path, folder):
    tall = np.zeros((20, 10, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: stored rotated, shown turned 90 degrees clockwise
    Image.fromarray(tall).save(tmp_path / "turned.jpg", exif=exif)
    assert images.read_image(str(tmp_path / "turned.jpg")).shape == (10, 20, 3)
    for name in ("broken.png", "half.jpg"):
        with pytest.raises(images.MediaError, match=rf"{name}: not a readable image \("):
            images.read_image(str(folder / name))


def test_prepare_writes_one_frame_silent_clips_and_counts_the_skips(prepared, folder):
    out, lm_dir, warnings = prepared
    with open(os.path.join(out, "dataset_info.json")) as f:
        info = json.load(f)
    assert info["parse_skipped"] == {"unreadable image": 2, "no face": 1}
    assert info["splits"]["train"]["num_clips"] == 2 and info["splits"]["test"]["num_clips"] == 1
    assert sorted(info["identities"]) == ["alice", "bob"]
    # One line per skipped file, naming it and the reason.
    for name, reason in (("broken.png", "unreadable"), ("half.jpg", "unreadable"), ("grey.png", "no face")):  # fmt: skip
        (line,) = [w for w in warnings if name in w]
        assert reason in line and "\n" not in line
    # one file per usable image, nested as the images are (alice/one and bob/one differ)
    written = [
        os.path.relpath(os.path.join(r, f), lm_dir) for r, _, fs in os.walk(lm_dir) for f in fs
    ]
    assert sorted(written) == ["alice/one.npz", "alice/two.npz", "bob/one.npz"]

    train = clip_store.ClipStore.open(out, "train")
    clips = sorted((train.clip(i) for i in range(len(train))), key=lambda c: c.header["clip_id"])
    assert [c.header["clip_id"] for c in clips] == ["alice/one", "alice/two"]
    for clip in clips:
        header = clip.header
        assert clip.num_frames == 1 and len(header["audio"]) == 0
        assert header["dataset"] == "images" and header["identity"] == "alice"
        mesh = header["attributes"]["face_mesh_xy"]
        assert mesh.shape == (1, 478 * 2) and np.all((mesh > 0) & (mesh < 1))
        assert np.asarray(Image.open(io.BytesIO(clip.jpeg(0)))).shape == (SIZE, SIZE, 3)
        # the crop is around the detected face, not the whole image
        assert 0 < header["crop_box"][2] < RES and header["source_size"].tolist() == [RES, RES]
    meshes = [c.header["attributes"]["face_mesh_xy"] for c in clips]
    assert np.abs(meshes[0] - meshes[1]).max() > 1e-3  # each image's own file


def test_pairs_of_an_image_are_the_image_twice(prepared):
    out, _, _ = prepared
    cfg = loaders.default_data_config()
    cfg.update(dict(data_dir=out, kind="pairs", num_negatives=0, samples_per_clip=2))
    cfg.pair_attributes = ("face_mesh_xy", "pose")
    batch = next(iter(loaders.make_loader(cfg, split="train", global_batch_size=4, seed=0)))
    np.testing.assert_array_equal(batch["source"], batch["driving"])
    assert np.all(batch["source_frame"] == 0) and np.all(batch["driving_frame"] == 0)
    np.testing.assert_array_equal(batch["face_mesh_xy"][:, 0], batch["face_mesh_xy"][:, 1])
    assert batch["face_mesh_xy_valid"].all() and not batch["pose_valid"].any()


def test_an_image_set_joins_a_liveportrait_mixture_with_a_video_set(prepared, synthetic_dir):
    """The tiny LivePortrait recipe's data (its pair attributes) on videos + images: both
    kinds in the batches, the images' pairs the same frame twice, the videos' not."""
    from jaxtalk.tasks import liveportrait

    out, _, _ = prepared
    config = lp_config.get_config("tiny")
    config.data.update(dict(data_dir="", data_root="", mixture=f"{synthetic_dir}:1,{out}:1"))
    task = liveportrait.build(config)
    it = task.data("train", global_batch_size=8, seed=0, process_index=0, process_count=1)
    seen = set()
    for _ in range(3):
        batch = next(it)
        for k, src, drv, mesh_ok in zip(
            batch["dataset"], batch["source"], batch["driving"], batch["face_mesh_xy_valid"]
        ):
            seen.add(int(k))
            assert mesh_ok  # the synthetic set's own mesh; the images' from their files
            if k == 1:
                np.testing.assert_array_equal(src, drv)
        videos = batch["dataset"] == 0
        assert not videos.any() or (batch["source_frame"] != batch["driving_frame"])[videos].any()
    assert seen == {0, 1}


def test_without_detection_every_readable_image_is_its_centred_square(folder):
    specs, report = images.parse(str(folder), detect_faces=False, test_fraction=0.0)
    assert sorted(s.clip_id for s in specs) == ["alice/one", "alice/two", "bob/one", "grey"]
    assert all(s.boxes is None and s.crop_scale == 1.0 for s in specs)
    assert dict(report.counts) == {"unreadable image": 2}
    with pytest.raises(images.common.MetadataError, match="identity='person'"):
        images.parse(str(folder), identity="person")
