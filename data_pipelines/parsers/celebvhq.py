"""CelebV-HQ `celebvhq_info.json` -> clip specs.

{"meta_info": {...}, "clips": {"<ytb_id>_<k>": {"ytb_id", "duration": {"start_sec", "end_sec"},
 "bbox": {"top", "bottom", "left", "right"} (0..1), "attributes": {"appearance", "action",
 "emotion": {"sep_flag", "labels"}}}}}. Quirks: an older release spells "mete_info";
`labels` is a plain string when sep_flag is false; clip keys split with rsplit('_', 1)
(YouTube ids hold '_'). Videos: the raw `<manual_dir>/{raw,videos}/<ytb_id>.mp4` is cut
and cropped (bbox expanded by 0.02 per side, made square), or else the already processed
`<clip_id>.mp4` anywhere under manual_dir is used whole. Identity: ytb_id (CelebV-HQ has
no person ids; one video = one identity).
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common

EXPAND = 0.02


def _emotion(attrs: dict) -> str:
    emo = attrs.get("emotion") or {}
    labels = emo.get("labels", "")
    return labels if isinstance(labels, str) else json.dumps(labels)


def _processed_clips(manual_dir: str) -> dict[str, str]:
    return {
        os.path.basename(p)[:-4]: p
        for p in glob.glob(os.path.join(manual_dir, "**", "*.mp4"), recursive=True)
    }


def parse(
    manual_dir: str,
    *,
    info_file: str = "celebvhq_info.json",
    test_fraction: float = 0.0,
    test_list: str | None = None,
    dataset: str = "celebvhq",
) -> tuple[list[ClipSpec], SkipReport]:
    path = info_file if os.path.isabs(info_file) else os.path.join(manual_dir, info_file)
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: CelebV-HQ info json not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    report, specs = SkipReport(), []
    if "meta_info" not in data and "mete_info" in data:
        report.note("old 'mete_info' key", path)
    clips = data.get("clips")
    if not isinstance(clips, dict):
        raise ValueError(f"{path}: no 'clips' object")
    test_ids = common.load_id_list(test_list)
    processed = None  # indexed on first need: a recursive listing of manual_dir
    for key in sorted(clips):
        entry = clips[key]
        try:
            ytb_id = entry.get("ytb_id") or key.rsplit("_", 1)[0]
            start, end = float(entry["duration"]["start_sec"]), float(entry["duration"]["end_sec"])
            bb = entry["bbox"]
            box = [
                bb["left"] - EXPAND,
                bb["top"] - EXPAND,
                bb["right"] + EXPAND,
                bb["bottom"] + EXPAND,
            ]
            box = np.clip(np.array([box], np.float32), 0.0, 1.0)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            report.skip("malformed entry", f"{path}:{key} ({type(e).__name__}: {e})")
            continue
        if end <= start:
            report.skip("empty time range", f"{path}:{key}")
            continue
        attrs = entry.get("attributes") or {}
        extra = (
            ("youtube_id", ytb_id),
            ("emotion", _emotion(attrs)),
            ("appearance", ",".join(str(v) for v in attrs.get("appearance", []))),
            ("action", ",".join(str(v) for v in attrs.get("action", []))),
        )
        split = common.split_for(ytb_id, test_ids, test_fraction)
        raw = common.find_video(manual_dir, ytb_id, ("raw", "videos"))
        if raw is not None:
            specs.append(
                ClipSpec(key, dataset, raw, ytb_id, split, start, end, box, None, 1.0, extra=extra)
            )
            continue
        processed = _processed_clips(manual_dir) if processed is None else processed
        if key in processed:
            specs.append(ClipSpec(key, dataset, processed[key], ytb_id, split, extra=extra))
        else:
            report.skip("missing video", f"{key} (no raw/{ytb_id}.mp4 nor {key}.mp4)")
    return specs, report
