"""The `landmark_video` loader kind: AniPortrait's Lmk2Video examples from prepared clips."""

import types

import numpy as np
import pytest

from data_pipelines import clip_store, examples, loaders
from jaxtalk.media import face_mesh


def _cfg(data_dir, **kw):
    cfg = loaders.default_data_config()
    cfg.update(
        {
            "data_dir": data_dir,
            "kind": "landmark_video",
            "samples_per_clip": 4,
            "attributes": ("face_mesh", "head_pose"),
            **kw,
        }
    )
    return cfg


def _batch(cfg, batch=8, seed=0):
    return next(iter(loaders.make_loader(cfg, split="train", global_batch_size=batch, seed=seed)))


def test_stage1_examples_are_frames_with_their_drawings(synthetic_dir):
    cfg = _cfg(synthetic_dir, num_frames=1, image_dtype="uint8")
    batch = _batch(cfg)
    assert batch["frames"].shape == batch["landmark_images"].shape == (8, 1, 32, 32, 3)
    assert batch["reference"].shape == batch["reference_landmark_image"].shape == (8, 32, 32, 3)
    assert batch["face_mesh"].shape == (8, 1, 1404) and batch["head_pose"].shape == (8, 1, 6)
    assert batch["reference_face_mesh"].shape == (8, 1404) and batch["face_mesh_valid"].all()
    store = clip_store.ClipStore.open(synthetic_dir, "train")
    for b in range(8):
        att = store.clip(int(batch["index"][b])).header["attributes"]
        i, r = int(batch["frame_index"][b, 0]), int(batch["reference_frame"][b])
        xy = att["face_mesh_xy"].reshape(-1, 478, 2)
        np.testing.assert_array_equal(
            batch["landmark_images"][b, 0], face_mesh.draw_face_mesh(xy[i], 32)
        )
        np.testing.assert_array_equal(
            batch["reference_landmark_image"][b], face_mesh.draw_face_mesh(xy[r], 32)
        )
        np.testing.assert_array_equal(batch["face_mesh"][b, 0], att["face_mesh"][i])
        np.testing.assert_array_equal(batch["reference_head_pose"][b], att["head_pose"][r])
    # The drawings are not all the same: the mouth and the head move between frames.
    assert len({p.tobytes() for p in batch["landmark_images"][:, 0]}) > 4
    # The drawing sits on the face: most lit pose pixels are not background in the frame's
    # crop centre, i.e. inside the middle of the crop where the synthetic face is.
    lit = batch["landmark_images"].any(-1)
    assert lit.mean() > 0.01
    ys, xs = np.nonzero(lit.reshape(-1, 32, 32).any(0))
    assert 4 <= xs.min() and xs.max() <= 28 and 2 <= ys.min() and ys.max() <= 30


def test_stage2_strides_as_released(synthetic_dir):
    cfg = _cfg(synthetic_dir, num_frames=16, frame_stride=1, frame_stride_alt=4)
    seen = set()
    for seed in range(3):
        batch = _batch(cfg, seed=seed)
        assert batch["frames"].shape == batch["landmark_images"].shape == (8, 16, 32, 32, 3)
        assert batch["landmark_images"].dtype == np.float32
        assert (
            batch["landmark_images"].min() == -1.0 and batch["landmark_images"].max() <= 1.0
        )  # black is -1
        for idx, stride in zip(batch["frame_index"], batch["stride"]):
            seen.add(int(stride))
            diffs = np.diff(idx)
            if stride == 1:
                assert (diffs == 1).all()
            else:  # 61 frames wanted from 40-frame clips: spread over the whole clip
                assert idx[0] == 0 and idx[-1] == 39 and set(diffs) <= {2, 3}
    assert seen == {1, 4}
    again = _batch(cfg, seed=2)
    np.testing.assert_array_equal(again["frame_index"], batch["frame_index"])
    np.testing.assert_array_equal(again["landmark_images"], batch["landmark_images"])


def test_landmark_indices():
    rng = np.random.default_rng(0)
    idx, stride = examples.landmark_indices(100, rng, 16, 4, 0)
    assert stride == 4 and (np.diff(idx) == 4).all() and 0 <= idx[0] and idx[-1] < 100
    idx, _ = examples.landmark_indices(10, rng, 16, 1, 0)  # shorter than the window
    assert idx[0] == 0 and idx[-1] == 9 and len(idx) == 16 and (np.diff(idx) >= 0).all()
    picks = [examples.landmark_indices(50, rng, 1, 1, 4) for _ in range(200)]
    assert all(len(i) == 1 and 0 <= i[0] < 50 for i, _ in picks)
    assert 60 < sum(s == 4 for _, s in picks) < 140  # the alternative stride half the time


def test_clip_without_landmarks_is_named():
    clip = types.SimpleNamespace(header={"clip_id": "vox/abc/00001", "attributes": {}})
    with pytest.raises(KeyError, match="vox/abc/00001 has no face_mesh_xy"):
        examples.pose_images(clip, np.array([0]), 32, "uint8", False)
