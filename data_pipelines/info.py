"""The dataset info file (`dataset_info.json`): counts, identities, hours, splits, rejections.

Built from the shard markers, so it is exact after a resumed run too. Loaders read it to
find the shards and the per-record identity and length without opening the records.

`load_info` also reads a tfds dataset directory (the version folder that
`data_pipelines/tfds_builders.py` writes: its own dataset_info.json beside features.json)
and returns the same fields, so every reader of a data directory goes through it.
"""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Any

from data_pipelines import shard_writer
from jaxtalk import fs, optional
from jaxtalk.errors import InputError

INFO_FILE = "dataset_info.json"
TFDS_FEATURES_FILE = "features.json"  # only tfds dataset directories have it


class DataDirError(InputError):
    """A data directory (or one of its splits) that is missing or not a prepared dataset."""


def build_info(
    out_dir: str,
    *,
    name: str,
    config: dict[str, Any],
    identities: list[str],
    parse_skips: dict[str, int],
) -> dict[str, Any]:
    """Aggregates every shard marker under `out_dir` and writes `dataset_info.json`."""
    fps = float(config["fps"])
    splits: dict[str, Any] = {}
    rejected: collections.Counter[str] = collections.Counter()
    streams: collections.Counter[str] = collections.Counter()  # clips per companion stream
    notes: collections.Counter[str] = collections.Counter()
    for marker_file in sorted(glob.glob(os.path.join(out_dir, "*.array_record-*-of-*.json"))):
        shard_file = os.path.basename(marker_file)[: -len(".json")]
        marker = shard_writer.read_marker(os.path.join(out_dir, shard_file))
        if marker is None:
            continue
        rejected.update(marker["rejected"])
        notes.update(marker.get("notes", {}))
        for r in marker["records"]:
            streams.update(r.get("streams") or ["none"])
        s = splits.setdefault(
            marker["split"], {"shards": [], "num_clips": 0, "num_frames": 0, "identities": set()}
        )
        s["shards"].append({"file": shard_file, "num_records": len(marker["records"])})
        s["num_clips"] += len(marker["records"])
        s["num_frames"] += sum(r["num_frames"] for r in marker["records"])
        s["identities"].update(r["identity"] for r in marker["records"])
    for s in splits.values():
        s["num_identities"] = len(s.pop("identities"))
        s["hours"] = round(s["num_frames"] / fps / 3600, 4)
    info = {
        "name": name,
        "config": config,
        "splits": splits,
        "identities": identities,
        "num_clips": sum(s["num_clips"] for s in splits.values()),
        "hours": round(sum(s["hours"] for s in splits.values()), 4),
        "rejected": dict(rejected),
        "parse_skipped": dict(parse_skips),
    }
    if set(streams) - {"none"}:  # MegActor's companions (data_pipelines/companions.py)
        info["companions"] = dict(streams)
        info["companion_notes"] = dict(notes)
    with open(os.path.join(out_dir, INFO_FILE + ".tmp"), "w") as f:
        json.dump(info, f, indent=1)
    os.replace(os.path.join(out_dir, INFO_FILE + ".tmp"), os.path.join(out_dir, INFO_FILE))
    return info


def is_tfds_dir(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, TFDS_FEATURES_FILE))


def local_data_dir(data_dir: str) -> str:
    """`data_dir` itself when local; a remote one (gs://...) copied once to this host's cache
    (`jaxtalk.fs.local_dir`): the ArrayRecord reader reads only local files."""
    return fs.local_dir(data_dir) if fs.is_remote(data_dir) else data_dir


def load_info(data_dir: str) -> dict[str, Any]:
    """The info of a `jaxtalk prepare` directory or of a tfds one (see the module doc)."""
    data_dir = local_data_dir(data_dir)
    if is_tfds_dir(data_dir):
        return _tfds_info(data_dir)
    path = os.path.join(data_dir, INFO_FILE)
    if not os.path.exists(path):
        raise DataDirError(
            f"{data_dir}: not a prepared dataset (no {INFO_FILE}); build it with "
            "`jaxtalk prepare ...` (or name a tfds dataset's version folder)"
        )
    try:
        with open(path) as f:
            info = json.load(f)
        missing = [k for k in ("splits", "identities", "config") if k not in info]
    except (ValueError, TypeError) as e:  # not JSON, or JSON that is not an object
        raise DataDirError(f"{path}: not a jaxtalk dataset info file ({e})") from None
    if missing or "size" not in info["config"]:
        raise DataDirError(f"{path}: not a jaxtalk dataset info file (no {missing or 'size'})")
    return info


def check_split(info: dict[str, Any], data_dir: str, split: str) -> None:
    if split not in info["splits"]:
        raise DataDirError(f"{data_dir}: no split {split!r} (has {sorted(info['splits'])})")


def _tfds_info(data_dir: str) -> dict[str, Any]:
    """The fields `load_info` returns, from a tfds build: split sizes from tfds's own info,
    identities and size from the metadata the jaxtalk builders record."""
    tfds = optional.tfds(f"{data_dir}: reading a tfds build")  # a slow import: only here

    try:
        tfds_info = tfds.builder_from_directory(data_dir).info
    except Exception as e:  # pylint: disable=broad-except  (tfds raises many kinds)
        raise DataDirError(f"{data_dir}: unreadable tfds dataset ({e!r})") from None
    meta = dict(tfds_info.metadata or {})
    if "identities" not in meta or "size" not in meta:
        raise DataDirError(
            f"{data_dir}: tfds dataset without the identities / size metadata the loaders "
            "need; rebuild it with this jaxtalk's data_pipelines.tfds_builders"
        )
    return {
        "name": tfds_info.name,
        "format": "tfds",
        "config": {"size": int(meta["size"])},
        "splits": {k: {"num_clips": v.num_examples} for k, v in tfds_info.splits.items()},
        "identities": list(meta["identities"]),
        "rejected": meta.get("rejected"),
        "parse_skipped": meta.get("parse_skipped"),
    }


def shard_records(data_dir: str, split: str) -> tuple[list[str], list[dict]]:
    """The split's shard paths (in order) and the per-clip entries of their markers.

    Each entry gets the marker's "format" (1 where the marker predates formats) and "shard"
    (the shard's path) added; `clip_store` locates the clips' records with them.
    """
    info = load_info(data_dir)
    check_split(info, data_dir, split)
    paths, records = [], []
    for shard in info["splits"][split]["shards"]:
        if not shard["num_records"]:
            continue  # ArrayRecord sources reject empty files' absent index; nothing to read anyway
        path = os.path.join(data_dir, shard["file"])
        paths.append(path)
        marker = shard_writer.read_marker(path)
        if marker is None:
            raise DataDirError(
                f"{path}: its marker is missing or damaged; re-run `jaxtalk prepare`"
            )
        records.extend(
            {**r, "format": marker.get("format", 1), "shard": path} for r in marker["records"]
        )
    return paths, records
