"""The dataset info file (`dataset_info.json`): counts, identities, hours, splits, rejections.

Built from the shard markers, so it is exact after a resumed run too. Loaders read it to
find the shards and the per-record identity and length without opening the records.
"""

from __future__ import annotations

import collections
import glob
import json
import os
from typing import Any

from data_pipelines import shard_writer

INFO_FILE = "dataset_info.json"


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
    for marker_file in sorted(glob.glob(os.path.join(out_dir, "*.array_record-*-of-*.json"))):
        shard_file = os.path.basename(marker_file)[: -len(".json")]
        marker = shard_writer.read_marker(os.path.join(out_dir, shard_file))
        if marker is None:
            continue
        rejected.update(marker["rejected"])
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
    with open(os.path.join(out_dir, INFO_FILE + ".tmp"), "w") as f:
        json.dump(info, f, indent=1)
    os.replace(os.path.join(out_dir, INFO_FILE + ".tmp"), os.path.join(out_dir, INFO_FILE))
    return info


def load_info(data_dir: str) -> dict[str, Any]:
    path = os.path.join(data_dir, INFO_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{path}: no dataset info; run `jaxtalk prepare ...` to build {data_dir}"
        )
    with open(path) as f:
        return json.load(f)


def shard_records(data_dir: str, split: str) -> tuple[list[str], list[dict]]:
    """The split's shard paths (in order) and the per-clip entries of their markers.

    Each entry gets the marker's "format" (1 where the marker predates formats) and "shard"
    (the shard's path) added; `clip_store` locates the clips' records with them.
    """
    info = load_info(data_dir)
    if split not in info["splits"]:
        raise ValueError(f"{data_dir}: no split {split!r} (has {sorted(info['splits'])})")
    paths, records = [], []
    for shard in info["splits"][split]["shards"]:
        if not shard["num_records"]:
            continue  # ArrayRecord sources reject empty files' absent index; nothing to read anyway
        path = os.path.join(data_dir, shard["file"])
        paths.append(path)
        marker = shard_writer.read_marker(path)
        records.extend(
            {**r, "format": marker.get("format", 1), "shard": path} for r in marker["records"]
        )
    return paths, records
