"""Interrupted preparation resumes without redoing or duplicating shards."""

import os

import pytest

from data_pipelines import clip_store, datasets, process, shard_writer
from data_pipelines import info as info_lib
from tests.data_pipelines import helpers
from tests.data_pipelines.test_end_to_end import RELAXED


def _vox_layout(root, num_videos=3, utterances=2):
    import zipfile  # pylint: disable=import-outside-toplevel

    with zipfile.ZipFile(root / "vox2_dev_txt.zip", "w") as z:
        for v in range(num_videos):
            yt = f"video{v:06d}"
            helpers.marker_video(
                str(root / "videos" / f"{yt}.mp4"), seconds=1.6, width=48, height=48, seed=v
            )
            for u in range(utterances):
                frames = range(u * 18, u * 18 + 16)
                z.writestr(
                    f"txt/id{v:05d}/{yt}/{u + 1:05d}.txt",
                    helpers.vox_txt(f"id{v:05d}", yt, frames, [(0.1, 0.1, 0.6, 0.6)] * 16),
                )


class Killed(BaseException):
    """Stands in for the process dying (not an Exception: nothing may swallow it)."""


def test_interrupted_run_resumes_without_duplicates(tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    _vox_layout(raw)
    out = str(tmp_path / "out")
    calls, killed = [], []
    real = process.process_clip

    def flaky(spec, cfg):
        calls.append(spec.clip_id)
        if len(calls) == 4 and not killed:  # dies in the middle of the second shard
            killed.append(True)
            raise Killed
        return real(spec, cfg)

    monkeypatch.setattr(datasets.pipeline, "process_clip", flaky)
    kwargs = dict(size=16, filter_overrides=RELAXED, clips_per_shard=2, log=lambda *_: None)
    with pytest.raises(Killed):
        datasets.prepare_dataset("voxceleb2", str(raw), out, **kwargs)
    assert os.path.exists(os.path.join(out, "train.array_record-00000-of-00003.json"))
    assert not os.path.exists(os.path.join(out, "train.array_record-00001-of-00003.json"))

    calls.clear()
    info = datasets.prepare_dataset("voxceleb2", str(raw), out, **kwargs)
    assert len(calls) == 4  # shard 0 kept; shards 1 and 2 (2 clips each) processed
    assert info["num_clips"] == 6 and info["splits"]["train"]["num_clips"] == 6
    _, entries = info_lib.shard_records(out, "train")
    store = clip_store.ClipStore.open(out, "train")
    ids = [store.clip(i).header["clip_id"] for i in range(len(store))]
    assert len(ids) == len(set(ids)) == 6 and ids == [e["clip_id"] for e in entries]
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]

    calls.clear()
    datasets.prepare_dataset("voxceleb2", str(raw), out, **kwargs)
    assert calls == []  # everything finished: idempotent

    # A different configuration in the same directory is refused, not mixed in.
    with pytest.raises(RuntimeError, match="different clip list or config"):
        datasets.prepare_dataset("voxceleb2", str(raw), out, **{**kwargs, "size": 24})


def test_corrupt_and_missing_inputs_are_counted(tmp_path):
    raw = tmp_path / "raw"
    (raw / "videos").mkdir(parents=True)
    _vox_layout(raw, num_videos=2, utterances=1)
    (raw / "videos" / "video000001.mp4").write_bytes(b"\x00\x01 truncated" * 20)
    info = datasets.prepare_dataset(
        "voxceleb2",
        str(raw),
        str(tmp_path / "out"),
        size=16,
        filter_overrides={**RELAXED, "min_frames": 20},
        log=lambda *_: None,
    )
    # video 0: 16 frames < 20 -> too short; video 1: corrupt.
    assert info["rejected"] == {"too short": 1, "unreadable video": 1}
    assert info["num_clips"] == 0


def test_shard_plan_is_stable():
    spec = lambda i: datasets.pipeline.ClipSpec(f"c{i}", "d", "v.mp4", "p", "train")  # noqa: E731
    cfg = process.ProcessConfig()
    a = shard_writer.plan_shards([spec(i) for i in range(5)], 2, cfg)
    b = shard_writer.plan_shards([spec(i) for i in reversed(range(5))], 2, cfg)
    assert [s.fingerprint for s in a] == [s.fingerprint for s in b] and len(a) == 3
    assert [x.clip_id for x in a[0].specs] == ["c0", "c1"]
