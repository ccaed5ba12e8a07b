"""VoxCeleb1 / VoxCeleb2 per-utterance txt files -> clip specs.

Metadata: the official zips (vox{1,2}_{dev,test}_txt.zip, read without extracting) or
extracted folders, laid out as `.../txt/<identity>/<youtube_id>/<00001>.txt`; a path
(zip name or folder) containing "test" makes the test split. Videos: the full YouTube
video `<manual_dir>/videos/<youtube_id>.<ext>` (frame numbers are absolute at 25 fps),
or else the released utterance clip `.../mp4/<identity>/<youtube_id>/<00001>.mp4`
(already a face crop, used whole). Boxes: VoxCeleb2 normalized 0..1, VoxCeleb1 pixels
of a 360-pixel-high frame. Utterances are split into tubes (IoU with the tube's first
box < 0.25, or > 1024 frames), each one clip with the union box enlarged by 10%.
"""

from __future__ import annotations

import glob
import os
import zipfile
from typing import Iterator

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from jaxtalk.media import crop

FPS = 25.0
VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


class ParseError(ValueError):
    pass


def parse_txt(
    text: str, where: str, report: SkipReport
) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    """Header fields, frame numbers [N] and XYWH boxes [N, 4] of one utterance file.

    Separators mix spaces and tabs and lines carry trailing blanks, so everything is split
    on whitespace. A malformed table row is counted and skipped; no usable row raises.
    """
    header: dict[str, str] = {}
    frames, boxes = [], []
    in_table = False
    for lineno, line in enumerate(text.splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if not in_table:
            if tokens[0].upper() == "FRAME":
                in_table = True
            elif ":" in line:
                key, value = line.split(":", 1)
                header[key.strip()] = value.split()[0] if value.split() else ""
            continue
        try:
            if len(tokens) != 5:
                raise ValueError(f"{len(tokens)} columns")
            frame, values = int(tokens[0]), [float(t) for t in tokens[1:]]
            if values[2] <= 0 or values[3] <= 0:
                raise ValueError("non-positive box size")
        except ValueError as e:
            report.skip("malformed row", f"{where}:{lineno} ({e})")
            continue
        frames.append(frame)
        boxes.append(values)
    if not in_table:
        raise ParseError("no FRAME table")
    if not frames:
        raise ParseError("no valid rows")
    return header, np.array(frames, np.int64), np.array(boxes, np.float32)


def _txt_sources(manual_dir: str, version: int) -> Iterator[tuple[str, str, str]]:
    """(split, relative path 'txt/<id>/<yt>/<n>.txt', text) for every utterance file."""
    for zpath in sorted(glob.glob(os.path.join(manual_dir, f"vox{version}_*txt*.zip"))):
        split = "test" if "test" in os.path.basename(zpath) else "train"
        with zipfile.ZipFile(zpath) as zf:
            for name in sorted(zf.namelist()):
                if name.endswith(".txt"):
                    yield split, f"{zpath}:{name}", zf.read(name).decode("utf-8", "replace")
    for path in sorted(
        glob.glob(os.path.join(manual_dir, "**", "txt", "*", "*", "*.txt"), recursive=True)
    ):
        rel = os.path.relpath(path, manual_dir)
        split = "test" if "test" in rel.split(os.sep)[:-4] else "train"
        with open(path, encoding="utf-8", errors="replace") as f:
            yield split, path, f.read()


def _find_video(manual_dir: str, ytid: str) -> str | None:
    for ext in VIDEO_EXTS:
        path = os.path.join(manual_dir, "videos", ytid + ext)
        if os.path.exists(path):
            return path
    return None


def _released_clip(manual_dir: str, identity: str, ytid: str, utt: str) -> str | None:
    hits = glob.glob(
        os.path.join(manual_dir, "**", "mp4", identity, ytid, utt + ".mp4"), recursive=True
    )
    return sorted(hits)[0] if hits else None


def parse(
    manual_dir: str,
    *,
    version: int = 2,
    dataset: str | None = None,
    crop_scale: float = 1.1,
    min_iou: float = 0.25,
    max_tube: int = 1024,
) -> tuple[list[ClipSpec], SkipReport]:
    """All utterances under `manual_dir` as clip specs (one per tube), and what was skipped."""
    dataset = dataset or f"voxceleb{version}"
    ref_height = 360.0 if version == 1 else None
    report, specs = SkipReport(), []
    found_any = False
    for split, where, text in _txt_sources(manual_dir, version):
        found_any = True
        parts = where.replace(os.sep, "/").split("/")
        identity, ytid, utt = parts[-3], parts[-2], os.path.splitext(parts[-1])[0]
        try:
            header, frames, xywh = parse_txt(text, where, report)
        except ParseError as e:
            report.skip("malformed file", f"{where} ({e})")
            continue
        identity = header.get("Identity") or identity
        ytid = header.get("Reference") or ytid
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
        attributes = os.path.join(manual_dir, "attributes", ytid + ".npz")
        attributes = attributes if os.path.exists(attributes) else None
        video = _find_video(manual_dir, ytid)
        if video is None:
            clip = _released_clip(manual_dir, identity, ytid, utt)
            if clip is None:
                report.skip(
                    "missing video",
                    f"{where} (no videos/{ytid}.mp4 nor mp4/{identity}/{ytid}/{utt}.mp4)",
                )
                continue
            specs.append(ClipSpec(f"{identity}/{ytid}/{utt}", dataset, clip, identity, split))
            continue
        tubes = crop.split_tubes(boxes, min_iou, max_tube)  # IoU does not change with axis scaling
        for k, (a, b) in enumerate(tubes):
            suffix = f"#{k}" if len(tubes) > 1 else ""
            specs.append(
                ClipSpec(
                    clip_id=f"{identity}/{ytid}/{utt}{suffix}",
                    dataset=dataset,
                    video_path=video,
                    identity=identity,
                    split=split,
                    start_sec=frames[a] / FPS,
                    end_sec=(frames[b - 1] + 1) / FPS,
                    boxes=boxes[a:b],
                    box_ref_height=ref_height,
                    crop_scale=crop_scale,
                    attributes_path=attributes,
                    extra=(("youtube_id", ytid), ("utterance", utt)),
                )
            )
    if not found_any:
        raise FileNotFoundError(
            f"{manual_dir}: no vox{version}_*_txt.zip nor txt/<id>/<yt>/<n>.txt files"
        )
    return specs, report
