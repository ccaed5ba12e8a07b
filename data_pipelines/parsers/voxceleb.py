"""VoxCeleb1 / VoxCeleb2 per-utterance txt files -> clip specs.

Metadata: the official zips (vox{1,2}_{dev,test}_txt.zip, read without extracting) or
extracted folders, laid out as `.../txt/<identity>/<youtube_id>/<00001>.txt`; a path
(zip name or folder) containing "test" makes the test split. Videos: the full YouTube
video `<manual_dir>/videos/<youtube_id>.<ext>` (frame numbers are absolute at 25 fps),
or else the released utterance clip `.../mp4/<identity>/<youtube_id>/<00001>.mp4`
(already a face crop, used whole). Boxes: VoxCeleb2 normalized 0..1, VoxCeleb1 pixels
of a 360-pixel-high frame. Utterances are split into tubes (IoU with the tube's first
box < 0.25, or > 1024 frames), each one clip with the union box enlarged by 10%.

Bad input (see `common`): a BOM is ignored; a row with a frame number or box value that is
not finite ("non-finite value"), negative ("negative frame number", "negative box
coordinate", "negative box size") or not a number ("malformed row") is counted and skipped,
as is a header line that is not `Key : value` ("malformed header line"); a file cut short
loses only its last, partial row. A file left with no usable row is one "malformed file".
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import os
import re
import zipfile
import zlib
from typing import Callable, Iterator

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common
from jaxtalk.media import crop

FPS = 25.0
HEADER = re.compile(r"^(?P<key>[A-Za-z][A-Za-z ]*):(?P<value>.*)$")  # `FV Conf   : \t20.230`


def _row(tokens: list[str]) -> tuple[int, list[float]]:
    """One table row `FRAME X Y W H` -> (frame, [x, y, w, h]), checked."""
    if len(tokens) != 5:
        raise ValueError(f"{len(tokens)} columns")
    frame = common.integer(tokens[0], "frame number")
    x, y = (common.number(t, "box coordinate") for t in tokens[1:3])
    w, h = (common.number(t, "box size") for t in tokens[3:])
    if w == 0 or h == 0:
        raise ValueError("zero box size")
    return frame, [x, y, w, h]


def parse_txt(
    text: str, where: str, report: SkipReport
) -> tuple[dict[str, str], np.ndarray, np.ndarray]:
    """Header fields, frame numbers [N] and XYWH boxes [N, 4] of one utterance file.

    Separators mix spaces and tabs and lines carry trailing blanks, so everything is split
    on whitespace. A header line that is not `Key : value` and a table row that is malformed,
    not finite or negative are counted and skipped; no FRAME table or no usable row rejects
    the file (`common.Rejected`, "malformed file").
    """
    header: dict[str, str] = {}
    frames, boxes, junk = [], [], []
    in_table = False
    for lineno, line in enumerate(common.split_lines(text), 1):
        tokens = line.split()
        if not tokens:
            continue
        if in_table:
            row = common.guarded(report, f"{where}:{lineno}", "malformed row", _row, tokens)
            if row is not None:
                frames.append(row[0])
                boxes.append(row[1])
        elif tokens[0].upper() == "FRAME":
            in_table = True
        elif m := HEADER.match(line.strip()):
            value = m["value"].split()
            header[m["key"].strip()] = value[0] if value else ""
        else:
            junk.append(lineno)
    if not in_table:
        raise common.Rejected("malformed file", "no FRAME table")
    if not frames:
        raise common.Rejected("malformed file", "no valid rows")
    for lineno in junk:  # counted only in a file that is used: a rejected file counts once
        report.skip("malformed header line", f"{where}:{lineno}")
    return header, np.array(frames, np.int64), np.array(boxes, np.float32)


def _zip_member(zf: zipfile.ZipFile, name: str) -> Callable[[], str]:
    def read() -> str:
        try:
            return common.decode(zf.read(name))
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise common.Rejected("unreadable file", f"{type(e).__name__}: {e}") from None

    return read


def _txt_sources(manual_dir: str, version: int) -> Iterator[tuple[str, str, Callable[[], str]]]:
    """(split, where, reader of the text) for every utterance file.

    A member is read only when its entry is parsed, so one corrupt member is one counted
    rejection; a zip that cannot be opened at all (truncated download) is a `MetadataError`.
    """
    for zpath in sorted(glob.glob(os.path.join(manual_dir, f"vox{version}_*txt*.zip"))):
        split = "test" if "test" in os.path.basename(zpath) else "train"
        try:
            zf = zipfile.ZipFile(zpath)
        except (zipfile.BadZipFile, OSError) as e:
            raise common.MetadataError(
                f"{zpath}: not a readable zip ({e}); the download may be truncated"
            ) from None
        with zf:
            for name in sorted(zf.namelist()):
                if name.endswith(".txt"):
                    yield split, f"{zpath}:{name}", _zip_member(zf, name)
    for path in sorted(
        glob.glob(os.path.join(manual_dir, "**", "txt", "*", "*", "*.txt"), recursive=True)
    ):
        rel = os.path.relpath(path, manual_dir)
        split = "test" if "test" in rel.split(os.sep)[:-4] else "train"
        yield split, path, functools.partial(common.read_text, path)


def _released_clip(manual_dir: str, identity: str, ytid: str, utt: str) -> str | None:
    hits = glob.glob(
        os.path.join(manual_dir, "**", "mp4", identity, ytid, utt + ".mp4"), recursive=True
    )
    return sorted(hits)[0] if hits else None


@dataclasses.dataclass(frozen=True)
class _Options:
    manual_dir: str
    dataset: str
    ref_height: float | None
    crop_scale: float
    min_iou: float
    max_tube: int


def _file_specs(
    opts: _Options, split: str, where: str, read: Callable[[], str], report: SkipReport
) -> list[ClipSpec]:
    """The clips of one utterance file (one per tube); `common.Rejected` if it has none."""
    parts = where.replace(os.sep, "/").split("/")
    identity, ytid, utt = parts[-3], parts[-2], os.path.splitext(parts[-1])[0]
    header, frames, xywh = parse_txt(read(), where, report)
    identity = header.get("Identity") or identity
    ytid = header.get("Reference") or ytid
    video = common.find_video(opts.manual_dir, ytid, ("videos",))
    if video is None:
        clip = _released_clip(opts.manual_dir, identity, ytid, utt)
        if clip is None:
            raise common.Rejected(
                "missing video", f"no videos/{ytid}.mp4 nor mp4/{identity}/{ytid}/{utt}.mp4"
            )
        return [ClipSpec(f"{identity}/{ytid}/{utt}", opts.dataset, clip, identity, split)]
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    attributes = os.path.join(opts.manual_dir, "attributes", ytid + ".npz")
    attributes = attributes if os.path.exists(attributes) else None
    tubes = crop.split_tubes(boxes, opts.min_iou, opts.max_tube)  # IoU ignores axis scaling
    return [
        ClipSpec(
            clip_id=f"{identity}/{ytid}/{utt}" + (f"#{k}" if len(tubes) > 1 else ""),
            dataset=opts.dataset,
            video_path=video,
            identity=identity,
            split=split,
            start_sec=frames[a] / FPS,
            end_sec=(frames[b - 1] + 1) / FPS,
            boxes=boxes[a:b],
            box_ref_height=opts.ref_height,
            crop_scale=opts.crop_scale,
            attributes_path=attributes,
            extra=(("youtube_id", ytid), ("utterance", utt)),
        )
        for k, (a, b) in enumerate(tubes)
    ]


def parse(
    manual_dir: str,
    *,
    version: int = 2,
    dataset: str | None = None,
    crop_scale: float = 1.1,
    min_iou: float = 0.25,
    max_tube: int = 1024,
) -> tuple[list[ClipSpec], SkipReport]:
    """All utterances under `manual_dir` as clip specs (one per tube), and what was skipped.

    Each utterance file is one guarded entry: a file that cannot be read, has no table or no
    usable row, or has no video is one counted rejection; bad rows inside a usable file are
    counted one each. A metadata zip that cannot be opened raises `common.MetadataError`.
    """
    opts = _Options(
        manual_dir,
        dataset or f"voxceleb{version}",
        360.0 if version == 1 else None,
        crop_scale,
        min_iou,
        max_tube,
    )
    report, specs = SkipReport(), []
    found_any = False
    for split, where, read in _txt_sources(manual_dir, version):
        found_any = True
        clips = common.guarded(
            report, where, "malformed file", _file_specs, opts, split, where, read, report
        )
        specs.extend(clips or ())
    if not found_any:
        raise common.MissingMetadataError(
            f"{manual_dir}: no vox{version}_*_txt.zip nor txt/<id>/<yt>/<n>.txt files"
        )
    return specs, report
