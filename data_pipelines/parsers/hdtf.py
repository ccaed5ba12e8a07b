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

Bad input (see `common`): a BOM is ignored; every line is its own entry, so a line whose
first token is not a video name, that has too few values or a value that is not a number
is one "malformed line", and a value that is not finite or negative is one "non-finite
value" / "negative box coordinate" / "negative box size" / "negative frame size"; a file
cut mid-line loses that line. A range that does not parse is one "malformed time range"
("non-finite value" / "negative time" for such a part). A clip whose resolution line was
rejected is kept with its crop taken as native pixels, as when the line is absent (noted).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable, TypeVar

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common
from jaxtalk.errors import one_line

T = TypeVar("T")

SUBSETS = ("RD", "WDA", "WRA")
NAME = re.compile(r"[A-Za-z0-9_.\-]+")  # video names; a garbage line's first token is not one


def _key(token: str) -> str:
    return token[:-4] if token.lower().endswith(".mp4") else token


def _at_least(values: list[str], n: int) -> list[str]:
    if len(values) < n:
        raise ValueError(f"{len(values)} values, need {n}")
    return values


def _crop(values: list[str]) -> tuple[float, float, float, float]:
    """`x w y h` -> the checked (x, y, w, h)."""
    x, w, y, h = _at_least(values, 4)[:4]
    return (
        common.number(x, "box coordinate"),
        common.number(y, "box coordinate"),
        common.number(w, "box size"),
        common.number(h, "box size"),
    )


def _ratio(values: list[str]) -> str:
    common.number(_at_least(values, 1)[0], "crop ratio")
    return values[0]  # kept as written, in the record's extra metadata


def _resolution(values: list[str]) -> float:
    return common.number(_at_least(values, 1)[0], "frame size")


def _line(tokens: list[str], parse_values: Callable[[list[str]], T]) -> tuple[str, T]:
    if not NAME.fullmatch(tokens[0]):
        raise ValueError(f"{one_line(tokens[0], 40)!r} is not a video name")
    return _key(tokens[0]), parse_values(tokens[1:])


def _table(path: str, report: SkipReport, parse_values: Callable[[list[str]], T]) -> dict[str, T]:
    """name -> parsed values for every line of one metadata file; each bad line is counted."""
    if not os.path.exists(path):
        return {}
    out = {}
    for lineno, tokens in common.read_lines(path):
        where = f"{path}:{lineno}"
        entry = common.guarded(report, where, "malformed line", _line, tokens, parse_values)
        if entry is not None:
            out[entry[0]] = entry[1]
    return out


def identity_of(name: str) -> str:
    return re.sub(r"_\d+$", "", name)


@dataclasses.dataclass(frozen=True)
class _Subset:
    name: str
    crops: dict[str, tuple[float, float, float, float]]
    ratios: dict[str, str]
    resolutions: dict[str, float]


def _clip_spec(
    sub: _Subset, name: str, k: int, rng_text: str, video: str, split: str, dataset: str
) -> ClipSpec:
    """Annotated range k of video `name` as a clip; `common.Rejected` / ValueError if unusable."""
    clip = f"{name}_{k}"
    a, b = (common.parse_timestamp(t) for t in rng_text.split("-"))
    if b <= a:
        raise common.Rejected("empty time range", rng_text)
    if clip not in sub.crops:
        raise common.Rejected("no crop box")
    x, y, w, h = sub.crops[clip]
    extra = [("subset", sub.name)] + (
        [("crop_ratio", sub.ratios[clip])] if clip in sub.ratios else []
    )
    return ClipSpec(
        clip_id=clip,
        dataset=dataset,
        video_path=video,
        identity=identity_of(name),
        split=split,
        start_sec=a,
        end_sec=b,
        boxes=np.array([[x, y, x + w, y + h]], np.float32),
        box_ref_height=sub.resolutions.get(name, 0.0),
        extra=tuple(extra),
    )


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
        raise common.MissingMetadataError(
            f"{manual_dir}: no <RD|WDA|WRA>_annotion_time.txt (HDTF metadata)"
        )
    for subset in found:
        path = lambda kind: os.path.join(manual_dir, f"{subset}_{kind}.txt")  # noqa: E731
        urls = _table(path("video_url"), report, lambda v: _at_least(v, 1))
        times = _table(path("annotion_time"), report, lambda v: _at_least(v, 1))
        sub = _Subset(
            subset,
            _table(path("crop_wh"), report, _crop),
            _table(path("crop_ratio"), report, _ratio),
            _table(path("resolution"), report, _resolution),
        )
        for name in sorted(set(urls) - set(times)):
            report.skip("url without annotation", f"{subset}:{name}")
        for name in sorted(times):
            video = common.find_video(manual_dir, name, ("videos", subset, ""))
            if video is None:
                report.skip("missing video", f"{subset}:{name}")
                continue
            # A test list names videos (the DINet split); a hash hold-out keeps identities whole.
            split = common.split_for(
                name if test_ids is not None else identity_of(name), test_ids, test_fraction
            )
            for k, rng_text in enumerate(times[name]):
                where = f"{subset}:{name}_{k} {rng_text!r}"
                spec = common.guarded(
                    report,
                    where,
                    "malformed time range",
                    _clip_spec,
                    sub,
                    name,
                    k,
                    rng_text,
                    video,
                    split,
                    dataset,
                )
                if spec is None:
                    continue
                if name not in sub.resolutions:
                    report.note("no resolution: crop taken as native pixels", f"{subset}:{name}")
                specs.append(spec)
    return specs, report
