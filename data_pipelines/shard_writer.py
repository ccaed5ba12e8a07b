"""Resumable sharded writing: clip specs -> ArrayRecord shards, one finished marker per shard.

Clips are sorted by id and cut into fixed shards, so the plan is the same on every run.
A shard is written to a temporary file, renamed, and only then gets its `.json` marker
(its record list and rejections: a clip that fails, by an expected rejection or by any
other exception, is counted by reason and the shard's other clips are still written); a
rerun skips shards whose marker matches the plan and redoes the rest, so an interrupted
preparation never duplicates or loses a clip. Shards are independent units of work:
processes (or Beam workers) can each take some.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Callable, Iterable

from absl import logging
from array_record.python import array_record_module

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.process import ClipRejected, ProcessConfig, process_clip, unexpected
from data_pipelines.records import FORMAT_VERSION, ClipRecord

ProcessFn = Callable[[ClipSpec, ProcessConfig], "ClipRecord"]


@dataclasses.dataclass(frozen=True)
class Shard:
    split: str
    index: int
    count: int
    specs: tuple[ClipSpec, ...]
    fingerprint: str  # hash of the clip ids and the processing config

    def path(self, out_dir: str) -> str:
        return os.path.join(
            out_dir, f"{self.split}.array_record-{self.index:05d}-of-{self.count:05d}"
        )


def marker_path(shard_path: str) -> str:
    return shard_path + ".json"


def plan_shards(specs: Iterable[ClipSpec], clips_per_shard: int, cfg: ProcessConfig) -> list[Shard]:
    by_split: dict[str, list[ClipSpec]] = {}
    for spec in specs:
        by_split.setdefault(spec.split, []).append(spec)
    shards = []
    for split in sorted(by_split):
        ordered = sorted(by_split[split], key=lambda s: s.clip_id)
        count = max(1, -(-len(ordered) // clips_per_shard))
        for i in range(count):
            chunk = tuple(ordered[i * clips_per_shard : (i + 1) * clips_per_shard])
            h = hashlib.sha1(repr(cfg).encode())
            for spec in chunk:
                h.update(
                    f"{spec.clip_id}|{spec.video_path}|{spec.start_sec}|{spec.end_sec}\n".encode()
                )
                if spec.companions:  # only then: earlier directories keep their fingerprints
                    h.update(repr(spec.companions).encode())
            shards.append(Shard(split, i, count, chunk, h.hexdigest()[:16]))
    return shards


def read_marker(path: str) -> dict | None:
    try:
        with open(marker_path(path)) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def is_done(shard: Shard, out_dir: str) -> bool:
    marker = read_marker(shard.path(out_dir))
    if marker is None:
        return False
    if marker.get("fingerprint") != shard.fingerprint:
        raise RuntimeError(
            f"{marker_path(shard.path(out_dir))}: written for a different clip list or config; "
            "use a fresh --out_dir (or delete the old shards) to rebuild"
        )
    return os.path.exists(shard.path(out_dir))


def pending(shards: list[Shard], out_dir: str) -> list[Shard]:
    """The shards a run still has to write (a rerun skips the finished ones)."""
    return [s for s in shards if not is_done(s, out_dir)]


def _atomic_write_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


def _clip_records(
    spec: ClipSpec, cfg: ProcessConfig, identity_index: dict[str, int], process_fn: ProcessFn
) -> tuple[object, list[bytes]]:
    """The clip's record and its encoded records, all made before any is written (a clip that
    fails half way leaves nothing in the shard); any failure is a `ClipRejected`."""
    try:
        record = process_fn(spec, cfg)
        record.identity_index = identity_index[spec.identity]
        return record, list(record.to_records(cfg.jpeg_quality))
    except ClipRejected:
        raise
    except Exception as e:  # one clip's bug or odd file must not cost the shard its other clips
        logging.warning("clip %s failed unexpectedly", spec.clip_id, exc_info=True)
        raise unexpected(e, spec.clip_id) from e


def write_shard(
    shard: Shard,
    out_dir: str,
    cfg: ProcessConfig,
    identity_index: dict[str, int],
    process_fn: ProcessFn = process_clip,
    on_clips: Callable[[int], None] | None = None,
) -> dict:
    """Processes every clip of `shard`, writes the records, then the marker; returns the marker.
    `on_clips(1)` is called as each clip is done (written or rejected)."""
    path = shard.path(out_dir)
    tmp = path + ".tmp"
    skips = SkipReport()
    records = []
    # group_size 1: every record (a single frame) is read on its own; uncompressed: JPEG and
    # PCM do not compress, and decompressing cost the loader more than the reads.
    writer = array_record_module.ArrayRecordWriter(tmp, "group_size:1,uncompressed")
    try:
        for spec in shard.specs:
            try:
                record, data = _clip_records(spec, cfg, identity_index, process_fn)
            except ClipRejected as e:
                skips.skip(e.reason, e.detail or spec.clip_id)
                logging.info("skipped %s: %s", spec.clip_id, e)
                if on_clips:
                    on_clips(1)
                continue
            for item in data:
                writer.write(item)
            if on_clips:
                on_clips(1)
            for reason, detail in record.notes:
                skips.note(reason, detail)
            records.append(
                {
                    "clip_id": spec.clip_id,
                    "identity": spec.identity,
                    "identity_index": record.identity_index,
                    "num_frames": record.num_frames,
                    "streams": record.stream_names(),
                }
            )
    finally:
        writer.close()
    os.replace(tmp, path)
    marker = {
        "fingerprint": shard.fingerprint,
        "format": FORMAT_VERSION,
        "split": shard.split,
        "records": records,
        "rejected": dict(skips.counts),
        "rejected_examples": dict(skips.examples),
        "notes": dict(skips.notes),  # companion files processing could not use
    }
    _atomic_write_json(marker_path(path), marker)
    return marker


def write_shards(
    shards: list[Shard],
    out_dir: str,
    cfg: ProcessConfig,
    identity_index: dict[str, int],
    *,
    num_workers: int = 0,
    process_fn: ProcessFn = process_clip,
    progress: Callable[[Shard, dict], None] | None = None,
    on_clips: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Writes the shards that are not done yet; returns (shards written, shards already done).

    `progress(shard, marker)` follows each finished shard; `on_clips(n)` counts finished
    clips: one by one in this process, a shard's worth at a time from worker processes.
    """
    os.makedirs(out_dir, exist_ok=True)
    todo = pending(shards, out_dir)
    done_before = len(shards) - len(todo)
    if num_workers <= 0:
        for shard in todo:
            marker = write_shard(shard, out_dir, cfg, identity_index, process_fn, on_clips)
            if progress:
                progress(shard, marker)
    else:
        with concurrent.futures.ProcessPoolExecutor(num_workers) as pool:
            futures = {
                pool.submit(write_shard, s, out_dir, cfg, identity_index, process_fn): s
                for s in todo
            }
            for future in concurrent.futures.as_completed(futures):
                marker = future.result()
                if on_clips:
                    on_clips(len(futures[future].specs))
                if progress:
                    progress(futures[future], marker)
    return len(todo), done_before
