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
LANDMARK_CROP_SCALE = 2.5  # 5 points span eyes to mouth, about 40% of the face


def parse_meta(path: str, report: SkipReport) -> tuple[dict[str, list[float]], np.ndarray]:
    """Header values and landmark rows [N, 11] (frame, x1, y1, ..., x5, y5)."""
    header, rows = {}, []
    for lineno, tokens in common.read_lines(path):
        key = tokens[0].upper()
        if key in ("H", "W", "FPS", "CROP"):
            want = 4 if key == "CROP" else 1
            try:
                header[key] = [float(t) for t in tokens[-want:]]
            except ValueError:
                report.skip("malformed row", f"{path}:{lineno}")
            continue
        if not re.fullmatch(r"\d+", tokens[0]):
            continue  # an unknown header line
        try:
            if len(tokens) != 11:
                raise ValueError
            rows.append([float(t) for t in tokens])
        except ValueError:
            report.skip("malformed row", f"{path}:{lineno}")
    return header, np.array(rows, np.float32).reshape(-1, 11)


def parse(manual_dir: str, *, dataset: str = "vfhq") -> tuple[list[ClipSpec], SkipReport]:
    report, specs = SkipReport(), []
    paths = sorted(glob.glob(os.path.join(manual_dir, "**", "Clip+*.txt"), recursive=True))
    if not paths:
        raise FileNotFoundError(
            f"{manual_dir}: no Clip+<id>+P<n>+C<n>+F<a>-<b>.txt meta files (VFHQ)"
        )
    for path in paths:
        stem = os.path.basename(path)[:-4]
        m = NAME.match(stem)
        if m is None:
            report.skip("malformed file name", path)
            continue
        header, rows = parse_meta(path, report)
        if "FPS" not in header or "H" not in header:
            report.skip("malformed file", f"{path} (no FPS or H header)")
            continue
        fps, height = header["FPS"][0], header["H"][0]
        start, last = (
            int(m["start"]) + 1,
            int(m["end"]) - 1,
        )  # F<a>-<b> is inclusive; trim one frame each end
        if last < start or fps <= 0:
            report.skip("empty time range", path)
            continue
        if "CROP" in header:
            boxes, scale = np.array([header["CROP"]], np.float32), 1.0
        elif len(rows):
            pts = rows[:, 1:].reshape(-1, 5, 2)
            boxes = np.concatenate([pts.min(1), pts.max(1)], 1)
            scale = LANDMARK_CROP_SCALE
        else:
            report.skip("no crop box", path)
            continue
        video = common.find_video(manual_dir, m["yt"])
        if video is None:
            report.skip("missing video", f"{path} (no videos/{m['yt']}.mp4)")
            continue
        rel = os.path.relpath(path, manual_dir).lower()
        specs.append(
            ClipSpec(
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
        )
    return specs, report
