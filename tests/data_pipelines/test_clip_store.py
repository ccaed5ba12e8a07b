"""Stored clip layout: per-frame records (formats 2 and 3), old per-clip shards (format 1)
still load."""

import json
import os
import shutil

import numpy as np
import pytest
from array_record.python import array_record_module

from data_pipelines import clip_store, examples, loaders, records, shard_writer
from data_pipelines import info as info_lib


def _rewrite_as_format1(src_dir, dst_dir):
    """A copy of `src_dir` in the layout prepared before format 2: one clip blob per record."""
    shutil.copytree(src_dir, dst_dir)
    for split in ("train", "test"):
        store = clip_store.ClipStore.open(src_dir, split)
        for path in store.paths:
            dst = os.path.join(dst_dir, os.path.basename(path))
            clips = [store.clip(i) for i, e in enumerate(store.entries) if e["shard"] == path]
            writer = array_record_module.ArrayRecordWriter(dst, "group_size:1")
            for clip in clips:
                header = {k: v for k, v in clip.header.items() if k != "format"}
                writer.write(
                    records.pack(
                        {**header, "frames": [clip.jpeg(f) for f in range(clip.num_frames)]}
                    )
                )
            writer.close()
            marker = shard_writer.read_marker(dst)
            del marker["format"]
            with open(shard_writer.marker_path(dst), "w") as f:
                json.dump(marker, f)


def test_frames_are_records_of_their_own(synthetic_dir):
    store = clip_store.ClipStore.open(synthetic_dir, "train")
    # the frames, then the synthetic set's three companion streams (format 3)
    assert store.streams == [("swapped", "styled", "background_mask")] * len(store)
    assert len(store.source) == store.num_records == len(store) + 4 * store.num_frames.sum()
    clip = store.clip(len(store) - 1)
    assert clip.header["format"] == records.FORMAT_VERSION and "frames" not in clip.header
    assert (
        clip.header["num_frames"] == clip.num_frames
        and clip.header["identity_index"] == clip.identity_index
    )
    assert records.decode_jpeg(clip.jpeg(clip.num_frames - 1)).shape == (32, 32, 3)
    with pytest.raises(IndexError, match="frame 99"):
        clip.jpeg(99)


def test_format1_shards_give_the_same_batches(synthetic_dir, tmp_path):
    old = str(tmp_path / "format1")
    _rewrite_as_format1(synthetic_dir, old)
    assert clip_store.ClipStore.open(old, "train").format.tolist() == [1] * len(
        clip_store.ClipStore.open(synthetic_dir, "train")
    )
    for kind in ("pairs", "reference_window"):
        cfg = loaders.default_data_config()
        cfg.update({"data_dir": synthetic_dir, "kind": kind, "num_frames": 8, "num_negatives": 2})
        new_batch = next(iter(loaders.make_loader(cfg, split="train", global_batch_size=4, seed=5)))
        cfg.data_dir = old
        old_batch = next(iter(loaders.make_loader(cfg, split="train", global_batch_size=4, seed=5)))
        assert new_batch.keys() == old_batch.keys()
        for k in new_batch:
            np.testing.assert_array_equal(new_batch[k], old_batch[k], err_msg=k)


def test_newer_format_and_damaged_shards_are_refused(synthetic_dir, tmp_path):
    _, entries = info_lib.shard_records(synthetic_dir, "train")
    paths = sorted({e["shard"] for e in entries})
    newer = records.FORMAT_VERSION + 1
    with pytest.raises(ValueError, match=f"format {newer} is newer"):
        clip_store.ClipStore(paths, [{**e, "format": newer} for e in entries])
    store = clip_store.ClipStore(paths, [{**e, "num_frames": e["num_frames"] + 1} for e in entries])
    with pytest.raises(ValueError, match="damaged"):
        store.clip(0).header  # pylint: disable=expression-not-assigned


def test_uint8_and_float32_images_agree_and_downscale(synthetic_dir):
    clip = clip_store.ClipStore.open(synthetic_dir, "train").clip(0)
    u8 = examples.to_image(clip.jpeg(3), 32, "uint8")
    f32 = examples.to_image(clip.jpeg(3), 32, "float32")
    assert u8.dtype == np.uint8 and f32.dtype == np.float32
    np.testing.assert_allclose(f32, u8 / 127.5 - 1, atol=1e-6)
    # Decoded straight into a caller's buffer (a window's frame), and at half size in the DCT.
    buf = np.zeros((2, 32, 32, 3), np.uint8)
    examples.to_image(clip.jpeg(3), 32, "uint8", out=buf[1])
    np.testing.assert_array_equal(buf[1], u8)
    assert examples.to_image(clip.jpeg(3), 16, "uint8").shape == (16, 16, 3)
    assert examples.to_image(clip.jpeg(3), 20, "float32").shape == (20, 20, 3)
