"""A folder of one's own videos (nested, any container ffmpeg reads) -> clip specs.

There is no metadata: each video is analysed here. It is decoded at 25 fps (the record
rate) at most `ANALYSIS_SIDE` pixels on its longer side, in pieces of `PIECE_SECONDS`:

- Scene cuts: a frame whose 32x32 colour thumbnail differs from the previous one by more
  than `scene_threshold` (mean absolute difference, 0..1) and by more than 4x the mean
  change of the 10 frames before starts a new shot; no clip spans a cut.
- Faces: OpenCV's Haar detector (jaxtalk/media/face_detect.py, what `jaxtalk animate`
  crops portraits with) every `DETECT_EVERY` frames. A track follows the largest face,
  then at each detection the face overlapping the track's last box most (IoU >= 0.25);
  it ends at a cut, or when no such face is seen for `MAX_GAP_SECONDS`. Boxes are
  median-smoothed over 5 detections and interpolated to every frame.
- Clip boxes follow the official sets' rules (as the VoxCeleb parser): a track is split
  into tubes where the IoU with the tube's first box drops below 0.25 or at 1024 frames
  (`crop.split_tubes`), and each tube's crop is the union of its boxes, enlarged about
  its centre by `face_detect.CROP_SCALE` (a Haar box is brows-to-mouth; x1.8 frames it as
  the VoxCeleb/HDTF crops are), made square and kept in the frame (`crop.clip_box`).

The quality filters (length, face size, blur) and the audio then apply to every clip in
`process.process_clip`, as for the official sets. Splits are by file: a stable hash of the
video's path relative to `manual_dir` (`test_fraction`), or a `test_list` of such paths.
Identity: the file (default), or with `identity="folder"` the folder holding it (one
person per folder). Each video is one guarded entry: a file that cannot be decoded, has
no audio stream, no face, or no face track long enough is one counted skip.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common
from jaxtalk.media import crop, face_detect
from jaxtalk.media.ffmpeg_run import MediaError
from jaxtalk.media.probe import probe
from jaxtalk.media.video import read_video

FPS = 25.0
ANALYSIS_SIDE = 512
PIECE_SECONDS = 10.0
DETECT_EVERY = 5
MAX_GAP_SECONDS = 1.0
MIN_IOU = 0.25
SMOOTH = 5  # detections in the running median of a track's boxes
MIN_TRACK_FRAMES = 2 * DETECT_EVERY


@dataclasses.dataclass(frozen=True)
class Options:
    scene_threshold: float = 0.06
    min_iou: float = MIN_IOU
    max_tube: int = 1024


def find_videos(manual_dir: str) -> list[str]:
    """Every video file under `manual_dir` (hidden folders and files skipped), sorted."""
    return common.find_files(manual_dir, common.VIDEO_EXTS)


def _thumbnail(frame: np.ndarray) -> np.ndarray:
    """32x32 RGB in 0..1 (block means), what cut detection compares."""
    h, w = frame.shape[:2]
    rows = np.linspace(0, h, 33).astype(int)[:-1]
    cols = np.linspace(0, w, 33).astype(int)[:-1]
    sums = np.add.reduceat(np.add.reduceat(frame.astype(np.float32), rows, 0), cols, 1)
    counts = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
    return sums / counts[..., None] / 255.0


class _CutDetector:
    """A cut: the thumbnail change exceeds `threshold` and `RATIO` x the recent mean change
    (a pan or a gesture changes every frame a little; a cut changes one frame a lot)."""

    RATIO, HISTORY = 4.0, 10

    def __init__(self, threshold: float):
        self.threshold, self.previous, self.recent = threshold, None, []

    def __call__(self, frame: np.ndarray) -> bool:
        thumb = _thumbnail(frame)
        change = None if self.previous is None else float(np.abs(thumb - self.previous).mean())
        self.previous = thumb
        if change is None:
            return False
        typical = np.mean(self.recent) if self.recent else 0.0
        self.recent = (self.recent + [change])[-self.HISTORY :]
        return change > self.threshold and change > self.RATIO * typical


@dataclasses.dataclass
class Analysis:
    """What one pass over a video finds: frame count, cut frames, detections."""

    num_frames: int = 0
    height: int = 0  # of the analysis frames (the boxes' reference height)
    cuts: list[int] = dataclasses.field(default_factory=list)
    detections: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)


def analyse(path: str, options: Options) -> Analysis:
    """Decodes `path` piece by piece: scene cuts at every frame, faces every DETECT_EVERY."""
    info = probe(path)
    if not info.has_video:
        raise common.Rejected("unreadable video", "no video stream")
    if not info.has_audio:
        raise common.Rejected("missing audio", "no audio stream")
    scale = min(1.0, ANALYSIS_SIDE / max(info.width, info.height))
    size = (max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2))
    result, is_cut = Analysis(height=size[1]), _CutDetector(options.scene_threshold)
    while True:
        start = result.num_frames / FPS
        if info.duration is not None and start >= info.duration:
            break
        try:
            frames, _ = read_video(path, fps=FPS, start=start, duration=PIECE_SECONDS, size=size)
        except MediaError:
            if result.num_frames:  # the stream ended before the container said
                break
            raise
        for frame in frames:
            i = result.num_frames
            if is_cut(frame):
                result.cuts.append(i)
            if i % DETECT_EVERY == 0:
                result.detections[i] = face_detect.detect_faces(frame)
            result.num_frames += 1
        if len(frames) < round(PIECE_SECONDS * FPS):
            break
    return result


def _area(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def tracks(analysis: Analysis, options: Options) -> list[tuple[int, int, np.ndarray]]:
    """Face tracks as (first frame, end frame, per-frame boxes [end - first, 4])."""
    max_gap = MAX_GAP_SECONDS * FPS
    cuts = sorted(analysis.cuts) + [analysis.num_frames]
    found, current = [], None  # current: (frames, boxes) of the open track

    def close():
        if current is not None and len(current[0]) > 1:
            frames, boxes = np.array(current[0]), np.array(current[1])
            end = min(frames[-1] + DETECT_EVERY, next(c for c in cuts if c > frames[-1]))
            if end - frames[0] >= MIN_TRACK_FRAMES:
                found.append(_per_frame(frames, boxes, int(frames[0]), int(end)))

    for i in sorted(analysis.detections):
        faces = analysis.detections[i]
        if current is not None:
            last = current[0][-1]
            if any(last < c <= i for c in cuts[:-1]) or i - last > max_gap:
                close()
                current = None
        if not len(faces):
            continue
        if current is None:
            current = ([i], [faces[np.argmax(_area(faces))]])
            continue
        overlaps = [crop.iou(current[1][-1], f) for f in faces]
        if max(overlaps) >= options.min_iou:
            current[0].append(i)
            current[1].append(faces[int(np.argmax(overlaps))])
    close()
    return found


def _per_frame(frames: np.ndarray, boxes: np.ndarray, first: int, end: int):
    """Median-smoothed detections interpolated to every frame of [first, end)."""
    half = SMOOTH // 2
    smooth = np.stack(
        [np.median(boxes[max(0, k - half) : k + half + 1], 0) for k in range(len(boxes))]
    )
    at = np.arange(first, end)
    per_frame = np.stack([np.interp(at, frames, smooth[:, c]) for c in range(4)], 1)
    return first, end, per_frame.astype(np.float32)


def _video_specs(
    path: str, manual_dir: str, split: str, identity: str, options: Options, dataset: str
) -> list[ClipSpec]:
    """The clips of one video; `common.Rejected` when it yields none."""
    try:
        analysis = analyse(path, options)
    except MediaError as e:
        raise common.Rejected("unreadable video", str(e)) from None
    found = tracks(analysis, options)
    if not found:
        if not any(len(f) for f in analysis.detections.values()):
            raise common.Rejected("no face", f"{analysis.num_frames} frames")
        raise common.Rejected("no face track", "faces seen, but never long enough")
    rel = os.path.relpath(path, manual_dir)
    stem = os.path.splitext(rel)[0].replace(os.sep, "/")
    specs = []
    for first, end, boxes in found:
        for a, b in crop.split_tubes(boxes, options.min_iou, options.max_tube):
            specs.append(
                ClipSpec(
                    clip_id=f"{stem}#{len(specs)}",
                    dataset=dataset,
                    video_path=path,
                    identity=identity,
                    split=split,
                    start_sec=(first + a) / FPS,
                    end_sec=(first + b) / FPS,
                    boxes=boxes[a:b],
                    box_ref_height=float(analysis.height),
                    crop_scale=face_detect.CROP_SCALE,
                    extra=(("source_file", rel.replace(os.sep, "/")),),
                )
            )
    return specs


def _guarded_specs(args) -> tuple[list[ClipSpec], SkipReport]:
    """One video as one guarded entry (runs in a worker process when parallel)."""
    path, manual_dir, split, identity, options, dataset = args
    report = SkipReport()
    specs = common.guarded(
        report, path, "unreadable video", _video_specs, path, manual_dir, split, identity,
        options, dataset,
    )  # fmt: skip
    return specs or [], report


def parse(
    manual_dir: str,
    *,
    test_fraction: float = 0.1,
    test_list: str | None = None,
    identity: str = "file",
    scene_threshold: float = Options.scene_threshold,
    num_workers: int = 0,
    dataset: str = "videos",
) -> tuple[list[ClipSpec], SkipReport]:
    """Every video under `manual_dir` as clip specs (see the module doc)."""
    kind = f"video files ({', '.join(common.VIDEO_EXTS)})"
    entries = common.folder_entries(
        find_videos(manual_dir), manual_dir, test_list, test_fraction, identity, kind
    )
    options = Options(scene_threshold=scene_threshold)
    jobs = [(path, manual_dir, split, who, options, dataset) for path, split, who in entries]
    results = common.map_jobs(_guarded_specs, jobs, num_workers)
    report, specs = SkipReport(), []
    for found, part in results:
        specs += found
        report.merge(part)
    return specs, report
