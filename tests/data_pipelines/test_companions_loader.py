"""The `driving_video` loader kind: MegActor's examples from clips with companion streams."""

import numpy as np
import pytest

from data_pipelines import clip_store, examples, loaders, records

T = 3


def _cfg(synthetic_dir, **kw):
    cfg = loaders.default_data_config()
    cfg.update({"data_dir": synthetic_dir, "kind": "driving_video", "num_frames": T})
    cfg.update({"frame_stride": 2, "warp_rate": 0.0, "driving_grayscale": False, **kw})
    return cfg


def _batch(cfg, batch=4, seed=0):
    loader = loaders.make_loader(cfg, split="train", global_batch_size=batch, seed=seed)
    return next(iter(loader))


def test_keys_shapes_dtypes(synthetic_dir):
    b = _batch(_cfg(synthetic_dir, driving_grayscale=True, warp_rate=0.5))
    s = 32
    for key in ("reference", "reference_background"):
        assert b[key].shape == (4, s, s, 3) and b[key].dtype == np.float32
    assert b["reference_background_mask"].shape == (4, s, s, 1)
    for key in ("frames", "driving"):
        assert b[key].shape == (4, T, s, s, 3) and b[key].dtype == np.float32
        assert -1.0 <= b[key].min() and b[key].max() <= 1.0
    assert b["background_masks"].shape == (4, T, s, s, 1)
    assert set(np.unique(b["background_masks"])) <= {0.0, 1.0}
    assert b["frame_index"].shape == (4, T) and b["frame_index"].dtype == np.int32
    assert np.all(np.diff(b["frame_index"], axis=1) == 2)  # the stride
    assert b["background_masks_valid"].all()
    # grey: three equal channels
    np.testing.assert_array_equal(b["driving"][..., 0], b["driving"][..., 1])
    np.testing.assert_array_equal(b["driving"][..., 0], b["driving"][..., 2])
    u8 = _batch(_cfg(synthetic_dir, image_dtype="uint8"))
    assert u8["driving"].dtype == u8["background_masks"].dtype == np.uint8


def test_reference_background_is_the_reference_without_the_person(synthetic_dir):
    b = _batch(_cfg(synthetic_dir))
    mask = b["reference_background_mask"]
    assert 0.1 < mask.mean() < 0.9
    keep = np.broadcast_to(mask > 0, b["reference"].shape)
    np.testing.assert_allclose(b["reference_background"][keep], b["reference"][keep], atol=1e-6)
    assert np.all(b["reference_background"][~keep] == -1.0)  # black


def test_rates_pick_the_stream(synthetic_dir):
    own = _batch(_cfg(synthetic_dir, swap_rate=0.0, style_rate=0.0))
    assert np.all(own["driving_stream"] == 0)
    np.testing.assert_array_equal(own["driving"], own["frames"])
    swapped = _batch(_cfg(synthetic_dir, swap_rate=1.0, style_rate=0.0))
    styled = _batch(_cfg(synthetic_dir, swap_rate=0.0, style_rate=1.0))
    assert np.all(swapped["driving_stream"] == 1) and np.all(styled["driving_stream"] == 2)
    # same clips and frames (the stream draw comes after them): another face, same background
    np.testing.assert_array_equal(swapped["frames"], own["frames"])
    person = np.broadcast_to(swapped["background_masks"] == 0, own["frames"].shape)
    diff = np.abs(swapped["driving"] - own["frames"])
    assert diff[person].mean() > 4 * diff[~person].mean()
    assert np.abs(styled["driving"] - own["frames"]).mean() > 0.15
    mixed = _batch(_cfg(synthetic_dir, swap_rate=0.3, style_rate=0.3), batch=6)
    assert len(set(mixed["driving_stream"].tolist())) >= 2


def test_pick_driving_stream_frequencies_and_fallbacks():
    rng = np.random.default_rng(0)
    both = ("swapped", "styled", "background_mask")
    draws = [examples.pick_driving_stream(rng, both, 0.25, 0.25) for _ in range(4000)]
    freq = {k: draws.count(k) / len(draws) for k in ("original", "swapped", "styled")}
    assert abs(freq["swapped"] - 0.25) < 0.03 and abs(freq["styled"] - 0.25) < 0.03
    only_swapped = {examples.pick_driving_stream(rng, ("swapped",), 0.0, 1.0) for _ in range(20)}
    assert only_swapped == {"swapped"}  # the release picks among the companions that exist
    assert {examples.pick_driving_stream(rng, (), 0.5, 0.5) for _ in range(20)} == {"original"}


def test_masks_match_the_renderers_head_region(synthetic_dir):
    b = _batch(_cfg(synthetic_dir), batch=6)
    store = clip_store.ClipStore.open(synthetic_dir, "train")
    for k in range(6):
        clip = store.clip(b["index"][k])
        xy = clip.header["attributes"]["landmarks_xy"][b["frame_index"][k]].reshape(T, 5, 2)
        px = np.clip((xy * 32).astype(int), 0, 31)
        for t in range(T):
            assert not b["background_masks"][k, t, px[t, :, 1], px[t, :, 0], 0].any()
        assert b["background_masks"][k, :, 0, 0].all()  # top corners: background


def test_warp_moves_pixels_and_keeps_the_centre():
    rng = np.random.default_rng(1)
    inverse = examples.warp_matrix(rng, 33)
    centre = inverse @ np.array([16.0, 16.0, 1.0])
    np.testing.assert_allclose(centre[:2] / centre[2], [16.0, 16.0], atol=1e-9)
    frames = rng.uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    np.testing.assert_allclose(examples.warp(frames, np.eye(3)), frames, atol=1e-4)
    warped = examples.warp(frames, inverse)
    assert np.abs(warped - frames).mean() > 10
    zoom_in = np.diag([0.5, 0.5, 1.0])  # output (x, y) reads input (x / 2, y / 2)
    np.testing.assert_allclose(examples.warp(frames, zoom_in)[:, 10, 6], frames[:, 5, 3], atol=1e-4)


def test_warp_rate_one_warps_every_example(synthetic_dir):
    plain = _batch(_cfg(synthetic_dir, swap_rate=0.0, style_rate=0.0))
    warped = _batch(_cfg(synthetic_dir, swap_rate=0.0, style_rate=0.0, warp_rate=1.0))
    assert warped["warped"].all() and not plain["warped"].any()
    np.testing.assert_array_equal(warped["frames"], plain["frames"])
    assert np.abs(warped["driving"] - plain["driving"]).mean() > 0.02


def test_a_clip_without_companions_drives_itself():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (9, 16, 16, 3), dtype=np.uint8)
    record = records.ClipRecord(
        "c", "d", "i", "train", 25.0, 16000, frames, np.zeros(0, np.int16), (0, 0, 16, 16), (16, 16)
    )
    clip = clip_store.BlobClip(0, records.unpack(record.to_bytes()))
    out = examples.driving_video(
        clip, rng, size=16, dtype="float32", num_frames=12, stride=2, swap_rate=0.5,
        style_rate=0.5, warp_rate=0.0, grayscale=False,
    )  # fmt: skip
    assert out["driving_stream"] == 0 and not out["background_masks_valid"]
    np.testing.assert_array_equal(out["driving"], out["frames"])
    np.testing.assert_array_equal(out["reference_background"], out["reference"])
    # 9 frames for 12 at stride 2: the release's fallback stride 9 // 12 -> 1, then repeats
    assert out["frame_index"].tolist() == list(range(9)) + [8, 8, 8]


@pytest.mark.parametrize(("n", "step"), [(40, 2), (20, 1)])
def test_driving_indices_follow_the_release(n, step):
    """12 frames at stride 2 from the frames 0, 2, 4, ...; too few of those (20 frames):
    the release's stride n // 12."""
    for seed in range(5):
        idx = examples.driving_indices(n, np.random.default_rng(seed), 12, 2)
        assert len(idx) == 12 and idx[0] % step == 0 and idx[-1] < n
        assert np.all(np.diff(idx) == step)
