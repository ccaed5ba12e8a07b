"""CelebV-HQ `celebvhq_info.json` -> clip specs.

{"meta_info": {...}, "clips": {"<ytb_id>_<k>": {"ytb_id", "duration": {"start_sec", "end_sec"},
 "bbox": {"top", "bottom", "left", "right"} (0..1), "attributes": {"appearance", "action",
 "emotion": {"sep_flag", "labels"}}}}}. Quirks: an older release spells "mete_info";
`labels` is a plain string when sep_flag is false; clip keys split with rsplit('_', 1)
(YouTube ids hold '_'). Videos: the raw `<manual_dir>/{raw,videos}/<ytb_id>.mp4` is cut
and cropped (bbox expanded by 0.02 per side, made square), or else the already processed
`<clip_id>.mp4` anywhere under manual_dir is used whole. Identity: ytb_id (CelebV-HQ has
no person ids; one video = one identity).

Bad input (see `common`): a BOM is ignored. The file is one JSON document, so a file that
does not parse as JSON (cut short by an interrupted download, or garbage bytes) cannot be
partly trusted: it raises `common.MetadataError` naming the file, and so does a document
without a `clips` object. Each `clips` item is one guarded entry: a value of the wrong JSON
type (a list or string where an object or number belongs, null) is one "wrong JSON type",
a missing key one "malformed entry", a time or box value that is not finite (JSON's NaN,
Infinity, 1e999) one "non-finite value", a negative one "negative time" / "negative box
coordinate".
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Callable

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common
from jaxtalk.errors import one_line

EXPAND = 0.02
SIDES = ("left", "top", "right", "bottom")


def _emotion(attrs: dict) -> str:
    emo = common.json_object(attrs.get("emotion") or {}, "attributes.emotion")
    labels = emo.get("labels", "")
    return labels if isinstance(labels, str) else json.dumps(labels)


def _flags(attrs: dict, name: str) -> str:
    """An attribute vector (a JSON list) as 'a,b,c' text."""
    values = attrs.get(name) or []
    if not isinstance(values, list):
        raise common.Rejected("wrong JSON type", f"attributes.{name} is {type(values).__name__}")
    return ",".join(str(v) for v in values)


def _processed_clips(manual_dir: str) -> dict[str, str]:
    return {
        os.path.basename(p)[:-4]: p
        for p in glob.glob(os.path.join(manual_dir, "**", "*.mp4"), recursive=True)
    }


def load_info(path: str) -> dict:
    """The info JSON's top-level object; `common.MetadataError` naming the file otherwise."""
    try:
        with open(path, encoding=common.ENCODING) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise common.MissingMetadataError(f"{path}: CelebV-HQ info json not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise common.MetadataError(
            f"{path}: not valid JSON ({one_line(e, 120)}); a truncated download? fetch it again"
        ) from None
    except OSError as e:
        raise common.MetadataError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("clips"), dict):
        raise common.MetadataError(f"{path}: no 'clips' object (not a CelebV-HQ info json)")
    return data


@dataclasses.dataclass
class _Videos:
    """Where a clip's video is: the raw YouTube video, else the processed clip."""

    manual_dir: str
    processed: dict[str, str] | None = None  # indexed on first need: a recursive listing

    def raw(self, ytb_id: str) -> str | None:
        return common.find_video(self.manual_dir, ytb_id, ("raw", "videos"))

    def clip(self, key: str) -> str | None:
        if self.processed is None:
            self.processed = _processed_clips(self.manual_dir)
        return self.processed.get(key)


def _clip_spec(
    key: str, entry: object, videos: _Videos, split_of: Callable[[str], str], dataset: str
) -> ClipSpec:
    """One `clips` item as a clip spec; `common.Rejected` (or KeyError, ...) if unusable."""
    entry = common.json_object(entry, "entry")
    ytb_id = entry.get("ytb_id") or key.rsplit("_", 1)[0]
    if not isinstance(ytb_id, str):
        raise common.Rejected("wrong JSON type", f"ytb_id is {type(ytb_id).__name__}")
    duration = common.json_object(entry["duration"], "duration")
    start = common.json_number(duration["start_sec"], "time")
    end = common.json_number(duration["end_sec"], "time")
    bb = common.json_object(entry["bbox"], "bbox")
    left, top, right, bottom = (common.json_number(bb[k], "box coordinate") for k in SIDES)
    if end <= start:
        raise common.Rejected("empty time range", f"{start}-{end}s")
    box = [left - EXPAND, top - EXPAND, right + EXPAND, bottom + EXPAND]
    box = np.clip(np.array([box], np.float32), 0.0, 1.0)
    attrs = common.json_object(entry.get("attributes") or {}, "attributes")
    extra = (
        ("youtube_id", ytb_id),
        ("emotion", _emotion(attrs)),
        ("appearance", _flags(attrs, "appearance")),
        ("action", _flags(attrs, "action")),
    )
    split = split_of(ytb_id)
    if (raw := videos.raw(ytb_id)) is not None:
        return ClipSpec(key, dataset, raw, ytb_id, split, start, end, box, None, 1.0, extra=extra)
    if (clip := videos.clip(key)) is not None:
        return ClipSpec(key, dataset, clip, ytb_id, split, extra=extra)
    raise common.Rejected("missing video", f"no raw/{ytb_id}.mp4 nor {key}.mp4")


def parse(
    manual_dir: str,
    *,
    info_file: str = "celebvhq_info.json",
    test_fraction: float = 0.0,
    test_list: str | None = None,
    dataset: str = "celebvhq",
) -> tuple[list[ClipSpec], SkipReport]:
    """Every item of the info JSON's `clips` as a clip spec; each item is one guarded entry."""
    path = info_file if os.path.isabs(info_file) else os.path.join(manual_dir, info_file)
    data = load_info(path)
    report, specs = SkipReport(), []
    if "meta_info" not in data and "mete_info" in data:
        report.note("old 'mete_info' key", path)
    test_ids = common.load_id_list(test_list)
    videos = _Videos(manual_dir)

    def split_of(ytb_id: str) -> str:
        return common.split_for(ytb_id, test_ids, test_fraction)

    for key in sorted(data["clips"]):
        where = f"{path}:{key}"
        entry = data["clips"][key]
        spec = common.guarded(
            report, where, "malformed entry", _clip_spec, key, entry, videos, split_of, dataset
        )
        if spec is not None:
            specs.append(spec)
    return specs, report
