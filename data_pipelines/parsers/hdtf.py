"""HDTF (MRzzm/HDTF) metadata -> clip specs.

Per subset S (RD, WDA, WRA) five space-separated files in `manual_dir`:
  S_video_url.txt       `Radio11 https://...`               key: bare name
  S_annotion_time.txt   `Radio11.mp4 00:30-01:00 01:30-02:30`  key: name.mp4 (sic 'annotion')
  S_crop_wh.txt         `Radio11_0.mp4 x w y h`              key: name_<k>.mp4 for range k
  S_crop_ratio.txt      `Radio11_0.mp4 1.2`
  S_resolution.txt      `Radio11.mp4 1080`  (frame height the crop coordinates refer to)
Videos: `<manual_dir>/videos/<name>.mp4` (or next to the metadata). Each annotated range
is one clip cropped with its crop_wh box at the listed resolution. The files disagree
(URL without annotation, annotation without crop): every such entry is counted.
Identity: the name without a trailing `_<digits>` (WDA_BarackObama_000 -> WDA_BarackObama).
"""

from __future__ import annotations

import os
import re

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common

SUBSETS = ("RD", "WDA", "WRA")


def _key(token: str) -> str:
    return token[:-4] if token.lower().endswith(".mp4") else token


def _table(path: str, report: SkipReport, min_tokens: int) -> dict[str, list[str]]:
    if not os.path.exists(path):
        return {}
    out = {}
    for lineno, tokens in common.read_lines(path):
        if len(tokens) < min_tokens:
            report.skip("malformed line", f"{path}:{lineno}")
            continue
        out[_key(tokens[0])] = tokens[1:]
    return out


def identity_of(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


def parse(
    manual_dir: str,
    *,
    test_list: str | None = None,
    test_fraction: float = 0.0,
    dataset: str = "hdtf",
) -> tuple[list[ClipSpec], SkipReport]:
    report, specs = SkipReport(), []
    test_ids = common.load_id_list(test_list)
    found = [
        s for s in SUBSETS if os.path.exists(os.path.join(manual_dir, f"{s}_annotion_time.txt"))
    ]
    if not found:
        raise FileNotFoundError(f"{manual_dir}: no <RD|WDA|WRA>_annotion_time.txt (HDTF metadata)")
    for subset in found:
        path = lambda kind: os.path.join(manual_dir, f"{subset}_{kind}.txt")  # noqa: E731
        urls = _table(path("video_url"), report, 2)
        times = _table(path("annotion_time"), report, 2)
        crops = _table(path("crop_wh"), report, 5)
        ratios = _table(path("crop_ratio"), report, 2)
        resolutions = _table(path("resolution"), report, 2)
        for name in sorted(set(urls) - set(times)):
            report.skip("url without annotation", f"{subset}:{name}")
        for name in sorted(times):
            video = common.find_video(manual_dir, name, ("videos", subset, ""))
            if video is None:
                report.skip("missing video", f"{subset}:{name}")
                continue
            try:
                ref_height = float(resolutions[name][0]) if name in resolutions else None
            except ValueError:
                report.skip("malformed line", f"{path('resolution')}:{name}")
                ref_height = None
            for k, rng_text in enumerate(times[name]):
                clip = f"{name}_{k}"
                try:
                    a, b = (common.parse_timestamp(t) for t in rng_text.split("-"))
                except ValueError:
                    report.skip("malformed time range", f"{subset}:{clip} {rng_text!r}")
                    continue
                if b <= a:
                    report.skip("empty time range", f"{subset}:{clip} {rng_text!r}")
                    continue
                if clip not in crops:
                    report.skip("no crop box", f"{subset}:{clip}")
                    continue
                try:
                    x, w, y, h = (float(v) for v in crops[clip][:4])
                except ValueError:
                    report.skip("malformed line", f"{path('crop_wh')}:{clip}")
                    continue
                if ref_height is None:
                    report.note("no resolution: crop taken as native pixels", f"{subset}:{name}")
                extra = [("subset", subset)] + (
                    [("crop_ratio", ratios[clip][0])] if clip in ratios else []
                )
                specs.append(
                    ClipSpec(
                        clip_id=clip,
                        dataset=dataset,
                        video_path=video,
                        identity=identity_of(name),
                        # A test list names videos (the DINet split); a hash hold-out keeps identities whole.
                        split=common.split_for(
                            name if test_ids is not None else identity_of(name),
                            test_ids,
                            test_fraction,
                        ),
                        start_sec=a,
                        end_sec=b,
                        boxes=np.array([[x, y, x + w, y + h]], np.float32),
                        box_ref_height=ref_height or 0.0,
                        extra=tuple(extra),
                    )
                )
    return specs, report
