"""VFHQ per-clip meta files -> clip specs.

`Clip+<youtube_id>+P<person>+C<clip>+F<start>-<end>.txt` anywhere under `manual_dir`
(split the name on '+': YouTube ids may hold '_' and '-'). Header lines `H <int>`,
`W <int>`, `FPS <float>`, `CROP <x0> <y0> <x1> <y1>` (the values are the last tokens;
pixels of the original H x W frame), then rows `<frame> x1 y1 ... x5 y5` (5 landmarks).
No authoritative full sample exists, so parsing is tolerant: unknown header lines are
ignored, bad rows counted. One frame is trimmed at each end of F<start>-<end> (as the
public code does). Without CROP the box is the landmarks' union enlarged 2.5x. Videos:
`<manual_dir>/videos/<youtube_id>.<ext>`. A meta file under a path holding "test" goes
to the test split (VFHQ-Test). Identity: `<youtube_id>+P<person>`.

Bad input (see `common`): a BOM is ignored; each meta file is one guarded entry and each
landmark row one inside it. A row that is malformed ("malformed row"), not finite
("non-finite value") or negative ("negative frame number", "negative box coordinate":
landmarks are the box's coordinates) is counted and skipped, as is a garbage line; a file
cut mid-row loses that row. An H / W / FPS / CROP value that is not a finite non-negative
number rejects the file with that reason (the clip's timing and crop depend on it).
"""

from __future__ import annotations

import glob
import os
import re

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common

NAME = re.compile(
    r"^Clip\+(?P<yt>.+)\+P(?P<person>\d+)\+C(?P<clip>\d+)\+F(?P<start>\d+)-(?P<end>\d+)$"
)
HEADER_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]*:?")  # an unknown header line's first token
LANDMARK_CROP_SCALE = 2.5  # 5 points span eyes to mouth, about 40% of the face
# Header key -> (number of values, what they are); a bad value rejects the whole file.
HEADER = {
    "H": (1, "frame size"),
    "W": (1, "frame size"),
    "FPS": (1, "frame rate"),
    "CROP": (4, "box coordinate"),
}


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _row(tokens: list[str]) -> list[float]:
    """`<frame> x1 y1 ... x5 y5` -> 11 checked numbers."""
    if len(tokens) != 11:
        raise ValueError(f"{len(tokens)} columns")
    frame = common.integer(tokens[0], "frame number")
    return [frame] + [common.number(t, "box coordinate") for t in tokens[1:]]


def _header(key: str, tokens: list[str]) -> list[float]:
    """The checked values of a header line (the last tokens: `CROP box: x0 y0 x1 y1`)."""
    want, what = HEADER[key]
    if len(tokens) < want + 1:
        raise ValueError(f"{key} has {len(tokens) - 1} values, needs {want}")
    return [common.number(t, what) for t in tokens[-want:]]


def parse_meta(path: str, report: SkipReport) -> tuple[dict[str, list[float]], np.ndarray]:
    """Header values and landmark rows [N, 11] (frame, x1, y1, ..., x5, y5).

    A row (first token a number) that is malformed, not finite or negative is counted and
    skipped, as is a line that is neither a row nor a header word (garbage); unknown header
    words are ignored. A bad H / W / FPS / CROP value rejects the file (raises).
    """
    header, rows = {}, []
    for lineno, tokens in common.read_lines(path):
        key = tokens[0].upper()
        if key in HEADER:
            header[key] = _header(key, tokens)
        elif _is_number(tokens[0]):
            row = common.guarded(report, f"{path}:{lineno}", "malformed row", _row, tokens)
            if row is not None:
                rows.append(row)
        elif not HEADER_WORD.fullmatch(tokens[0]):
            report.skip("malformed row", f"{path}:{lineno}")
    return header, np.array(rows, np.float32).reshape(-1, 11)


def _file_spec(path: str, manual_dir: str, dataset: str, report: SkipReport) -> ClipSpec:
    """The clip of one meta file; `common.Rejected` when it is unusable."""
    stem = os.path.basename(path)[:-4]
    m = NAME.match(stem)
    if m is None:
        raise common.Rejected("malformed file name")
    header, rows = parse_meta(path, report)
    if "FPS" not in header or "H" not in header:
        raise common.Rejected("malformed file", "no FPS or H header")
    fps, height = header["FPS"][0], header["H"][0]
    start, last = int(m["start"]) + 1, int(m["end"]) - 1  # F<a>-<b> is inclusive; trim each end
    if last < start or fps <= 0:
        raise common.Rejected("empty time range")
    if "CROP" in header:
        boxes, scale = np.array([header["CROP"]], np.float32), 1.0
    elif len(rows):
        pts = rows[:, 1:].reshape(-1, 5, 2)
        boxes, scale = np.concatenate([pts.min(1), pts.max(1)], 1), LANDMARK_CROP_SCALE
    else:
        raise common.Rejected("no crop box")
    video = common.find_video(manual_dir, m["yt"])
    if video is None:
        raise common.Rejected("missing video", f"no videos/{m['yt']}.mp4")
    rel = os.path.relpath(path, manual_dir).lower()
    return ClipSpec(
        clip_id=stem,
        dataset=dataset,
        video_path=video,
        identity=f"{m['yt']}+P{m['person']}",
        split="test" if "test" in os.path.dirname(rel) else "train",
        start_sec=start / fps,
        end_sec=(last + 1) / fps,
        boxes=boxes,
        box_ref_height=height,
        crop_scale=scale,
        extra=(("youtube_id", m["yt"]),),
    )


def parse(manual_dir: str, *, dataset: str = "vfhq") -> tuple[list[ClipSpec], SkipReport]:
    """Every meta file under `manual_dir` as a clip spec; each file is one guarded entry."""
    report, specs = SkipReport(), []
    paths = sorted(glob.glob(os.path.join(manual_dir, "**", "Clip+*.txt"), recursive=True))
    if not paths:
        raise common.MissingMetadataError(
            f"{manual_dir}: no Clip+<id>+P<n>+C<n>+F<a>-<b>.txt meta files (VFHQ)"
        )
    for path in paths:
        spec = common.guarded(
            report, path, "malformed file", _file_spec, path, manual_dir, dataset, report
        )
        if spec is not None:
            specs.append(spec)
    return specs, report
