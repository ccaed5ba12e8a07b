"""grain loaders on the prepared synthetic set: kinds, sharding, resumable state, workers."""

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest

from data_pipelines import info as info_lib
from data_pipelines import loaders
from jaxtalk.errors import InputError


def _cfg(data_dir, **kw):
    cfg = loaders.default_data_config()
    cfg.update({"data_dir": data_dir, "samples_per_clip": 4, "num_frames": 8, **kw})
    return cfg


def _take(it, n):
    return [next(it) for _ in range(n)]


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def test_pairs_batch(synthetic_dir):
    batch = next(
        iter(
            loaders.make_loader(
                _cfg(synthetic_dir, num_negatives=2), split="train", global_batch_size=4, seed=0
            )
        )
    )
    assert batch["source"].shape == batch["driving"].shape == (4, 32, 32, 3)
    assert (
        batch["source"].dtype == np.float32
        and -1 <= batch["source"].min()
        and batch["source"].max() <= 1
    )
    assert batch["negatives"].shape == (4, 2, 32, 32, 3)
    assert (batch["negative_identity"] != batch["identity"][:, None]).all()
    assert batch["identity"].dtype == np.int32


def test_windows_audio_drives_the_mouth(synthetic_dir):
    cfg = _cfg(
        synthetic_dir,
        kind="reference_window",
        num_frames=24,
        image_dtype="uint8",
        attributes=("pose", "mouth", "blink", "landmarks_xy"),
    )
    batch = next(iter(loaders.make_loader(cfg, split="train", global_batch_size=6, seed=1)))
    assert batch["frames"].shape == (6, 24, 32, 32, 3) and batch["frames"].dtype == np.uint8
    assert batch["reference"].shape == (6, 32, 32, 3) and batch["audio"].shape == (6, 24 * 640)
    assert batch["pose"].shape == (6, 24, 3) and batch["landmarks_xy"].shape == (6, 24, 10)
    assert batch["pose_valid"].all() and batch["frame_valid"].all()
    # Landmarks were mapped into the crop: inside 0..1.
    assert 0 < batch["landmarks_xy"].min() and batch["landmarks_xy"].max() < 1
    # Loudness explains most of the mouth opening (the vowel's openness the rest), at lag 0.
    rms = np.sqrt((batch["audio"].reshape(6, 24, 640) ** 2).mean(-1))
    mouth = batch["mouth"][..., 0]
    aligned = np.corrcoef(rms.ravel(), mouth.ravel())[0, 1]
    shifted = np.corrcoef(rms[:, 4:].ravel(), mouth[:, :-4].ravel())[0, 1]
    assert aligned > 0.55 and aligned > shifted + 0.2, (aligned, shifted)
    assert batch["pose"][..., 0].std() > 1.0  # the head turns


def test_resumed_iterator_yields_the_same_batches(synthetic_dir, tmp_path):
    cfg = _cfg(synthetic_dir, kind="windows")
    make = lambda: loaders.make_loader(cfg, split="train", global_batch_size=4, seed=7)  # noqa: E731
    it = iter(make())
    _take(it, 2)
    state = it.get_state()
    expected = _take(it, 5)  # crosses an epoch (24 examples = 6 batches)
    resumed = iter(make())
    resumed.set_state(state)
    _same(_take(resumed, 5), expected)

    # The same through an orbax checkpoint with grain's handler, as the training loop does.
    it = iter(make())
    _take(it, 3)
    with ocp.CheckpointManager(tmp_path / "ckpt", item_names=("data",)) as mngr:
        mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
        mngr.wait_until_finished()
        expected = _take(it, 2)
        fresh = iter(make())
        mngr.restore(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
    _same(_take(fresh, 2), expected)


def test_processes_see_disjoint_records(synthetic_dir):
    seen = []
    for p in range(2):
        loader = loaders.make_loader(
            _cfg(synthetic_dir, samples_per_clip=1, num_negatives=0),
            split="train",
            global_batch_size=2,
            seed=0,
            process_index=p,
            process_count=2,
            num_epochs=1,
        )
        seen.append({int(i) for b in loader for i in b["index"]})
    assert seen[0] and seen[1] and not seen[0] & seen[1]
    _, entries = info_lib.shard_records(synthetic_dir, "train")
    assert seen[0] | seen[1] == set(range(len(entries)))


def test_worker_processes_match_in_process(synthetic_dir):
    cfg = _cfg(synthetic_dir, num_negatives=1)
    ref = _take(iter(loaders.make_loader(cfg, split="train", global_batch_size=2, seed=3)), 3)
    got = _take(
        iter(loaders.make_loader(cfg, split="train", global_batch_size=2, seed=3, worker_count=1)),
        3,
    )
    _same(got, ref)


def test_config_errors_are_clear(synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match="data.kind"):
        loaders.make_loader(
            _cfg(synthetic_dir, kind="bogus"), split="train", global_batch_size=2, seed=0
        )
    with pytest.raises(ValueError, match="no split 'validation'"):
        loaders.make_loader(_cfg(synthetic_dir), split="validation", global_batch_size=2, seed=0)
    with pytest.raises(InputError, match=f"{tmp_path}: not a prepared dataset.*jaxtalk prepare"):
        loaders.make_loader(_cfg(str(tmp_path)), split="train", global_batch_size=2, seed=0)
    (tmp_path / "dataset_info.json").write_text("{not json")
    with pytest.raises(InputError, match="dataset_info.json: not a jaxtalk dataset info file"):
        loaders.make_loader(_cfg(str(tmp_path)), split="train", global_batch_size=2, seed=0)
    (tmp_path / "dataset_info.json").write_text('{"splits": {}}')
    with pytest.raises(InputError, match="no \\['identities', 'config'\\]"):
        loaders.make_loader(_cfg(str(tmp_path)), split="train", global_batch_size=2, seed=0)


def test_pairs_carry_the_frames_attributes(synthetic_dir):
    from data_pipelines.clip_store import ClipStore

    names = ("pose", "landmarks_xy", "mouth")
    cfg = _cfg(synthetic_dir, num_negatives=0, pair_attributes=names)
    batch = next(iter(loaders.make_loader(cfg, split="train", global_batch_size=4, seed=2)))
    assert batch["pose"].shape == (4, 2, 3) and batch["landmarks_xy"].shape == (4, 2, 10)
    assert batch["pose_valid"].all() and "negatives" not in batch
    store = ClipStore.open(synthetic_dir, "train")
    for i in range(4):
        have = store.clip(int(batch["index"][i])).header["attributes"]
        frames = [int(batch["source_frame"][i]), int(batch["driving_frame"][i])]
        for name in names:
            np.testing.assert_array_equal(batch[name][i], have[name][frames], err_msg=name)
    # landmarks are in the crop, 0..1 (the face fills the middle of it)
    assert 0.0 < batch["landmarks_xy"].min() and batch["landmarks_xy"].max() < 1.0
    # without pair_attributes the batch is the one AniTalker has always had
    plain = next(
        iter(loaders.make_loader(_cfg(synthetic_dir), split="train", global_batch_size=4, seed=2))
    )
    assert "pose" not in plain


def test_a_one_frame_clip_is_a_pair_of_the_same_image():
    from data_pipelines import examples, records

    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), np.uint8)

    class OneFrame:  # the Clip interface examples.pair reads: an image as a one-frame video
        num_frames = 1
        header = {"clip_id": "still", "attributes": {"pose": np.array([[5.0, -2.0, 1.0]])}}

        def jpeg(self, frame):
            assert frame == 0
            return records.encode_jpeg(image)

    out = examples.pair(OneFrame(), np.random.default_rng(1), 16, "uint8", 0, ("pose", "blink"))
    np.testing.assert_array_equal(out["source"], out["driving"])
    assert out["source_frame"] == out["driving_frame"] == 0
    np.testing.assert_array_equal(out["pose"], [[5.0, -2.0, 1.0]] * 2)
    assert out["pose_valid"] and not out["blink_valid"] and out["blink"].shape == (2, 1)
    with pytest.raises(KeyError, match="still has no attribute 'gaze'"):
        examples.pair(OneFrame(), np.random.default_rng(1), 16, "uint8", 0, ("gaze",))


def test_a_worker_keeps_its_freed_heap_pages(synthetic_dir, monkeypatch):
    """The example map tunes glibc's heap where it is unpickled (a worker process), not in
    the process that builds the loader."""
    import pickle

    calls = []
    monkeypatch.setattr(loaders.heap, "keep_freed_pages", calls.append)
    loader = loaders.make_loader(
        _cfg(synthetic_dir, kind="pairs"), split="train", global_batch_size=2, seed=0
    )
    make_example = next(op for op in loader._operations if isinstance(op, loaders._MakeExample))
    assert calls == []
    copy = pickle.loads(pickle.dumps(make_example))
    assert calls == [256 << 20] and copy.size == make_example.size and copy.cfg == make_example.cfg
