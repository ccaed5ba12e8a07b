"""One clip spec -> one `ClipRecord`: cut, 25 fps, one fixed square crop, resize, 16 kHz audio.

Raises `ClipRejected(reason)` for anything that makes the clip unusable (unreadable or
missing video, no audio where the dataset has speech, empty range, failed filter); the caller counts the reasons. Any
other exception while processing one clip is that clip's failure too: `unexpected` turns it
into a `ClipRejected` whose reason names the exception, so one odd clip never stops a run.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np
from PIL import Image

from data_pipelines import companions, filters, landmarks
from data_pipelines.clip_spec import ClipSpec
from data_pipelines.parsers import images
from data_pipelines.records import ClipRecord
from jaxtalk.errors import one_line
from jaxtalk.media import crop
from jaxtalk.media.audio import read_audio, to_int16
from jaxtalk.media.ffmpeg_run import MediaError
from jaxtalk.media.probe import MediaInfo, probe
from jaxtalk.media.video import read_video


class ClipRejected(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def unexpected(error: Exception, clip_id: str) -> ClipRejected:
    """An unexpected failure of one clip as a rejection: reason "<Type>: <message>"."""
    return ClipRejected(one_line(f"{type(error).__name__}: {error}", 100), clip_id)


@dataclasses.dataclass(frozen=True)
class ProcessConfig:
    size: int = 256  # output side in pixels (256 AniTalker/LivePortrait, 512 AniPortrait/MegActor)
    fps: float = 25.0
    sample_rate: int = 16000
    jpeg_quality: int = 95
    filters: filters.FilterConfig = filters.FilterConfig()
    # False for video-only datasets (TalkingHead-1KH): a clip without an audio stream is
    # kept with empty audio (loaders asking for audio refuse it by name), not rejected.
    require_audio: bool = True

    def __post_init__(self):
        # Frame k covers audio samples [k * spf, (k + 1) * spf): spf must be whole. Checked
        # here, as a config error, not per clip (where it would reject every clip).
        if self.sample_rate % self.fps:
            raise ValueError(
                f"sample_rate / fps must be an integer, got {self.sample_rate} / {self.fps}"
            )


def _time_range(spec: ClipSpec, info: MediaInfo, fps: float) -> tuple[float, int]:
    """Start second and whole number of output frames for the clip, clamped to the video."""
    end = spec.end_sec if spec.end_sec is not None else info.duration
    if info.duration is not None and end is not None:
        end = min(end, info.duration)
    if end is None:
        raise ClipRejected("unknown duration", spec.video_path)
    num_frames = int(np.floor((end - spec.start_sec) * fps + 1e-6))
    if num_frames <= 0:
        raise ClipRejected(
            "empty time range",
            f"{spec.clip_id} {spec.start_sec:.2f}-{end:.2f}s in {spec.video_path}",
        )
    return spec.start_sec, num_frames


def _load_attributes(
    spec: ClipSpec,
    start: float,
    num_frames: int,
    fps: float,
    box: tuple[int, int, int, int],
    frame_size: tuple[int, int],
) -> dict[str, np.ndarray]:
    """Per-output-frame attributes sampled from the source-frame arrays of `attributes_path`.

    Arrays named `*_xy` hold source-pixel (x, y) pairs; they are mapped into the crop, 0..1.
    `head_pose` holds 3 angles, then the head's centre x, y and its scale in source pixels
    (weak perspective: landmark = rotated mesh vertex * scale + centre); the last three are
    mapped into the crop too. The landmark arrays (data_pipelines/landmarks.py) are checked
    on the rows the clip uses: a fault rejects the clip, naming the file.
    """
    if not spec.attributes_path:
        return {}
    try:
        return _sample_attributes(spec.attributes_path, start, num_frames, fps, box, frame_size)
    except landmarks.BadLandmarks as e:
        raise ClipRejected(landmarks.BAD, f"{spec.attributes_path}: {e}") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as e:
        raise ClipRejected(landmarks.BAD, f"{spec.attributes_path}: {one_line(e, 80)}") from None


def _sample_attributes(path, start, num_frames, fps, box, frame_size) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        src_fps = float(data["fps"])
        idx = np.round((start + np.arange(num_frames) / fps) * src_fps).astype(int)
        out = {}
        for name in data.files:
            if name == "fps":
                continue
            values = data[name].astype(np.float32)
            if values.ndim == 0 or not len(values):
                raise landmarks.BadLandmarks(f"{name} has shape {values.shape}")
            landmarks.check_coverage(name, len(values), int(idx[-1]))
            values = values[np.clip(idx, 0, len(values) - 1)].reshape(num_frames, -1)
            if name in landmarks.WIDTHS or name.endswith("_xy"):
                landmarks.check_rows(name, values, frame_size)
            if name.endswith("_xy"):
                values = (values.reshape(num_frames, -1, 2) - np.array(box[:2])) / box[2]
                values = values.reshape(num_frames, -1).astype(np.float32)
            elif name == "head_pose":
                values[:, 3:5] = (values[:, 3:5] - np.array(box[:2], np.float32)) / box[2]
                values[:, 5] /= box[2]
            out[name] = values
        return out


def process_clip(spec: ClipSpec, cfg: ProcessConfig) -> ClipRecord:
    try:
        info = probe(spec.video_path)
    except MediaError as e:
        reason = "missing video" if not os.path.exists(spec.video_path) else "unreadable video"
        raise ClipRejected(reason, str(e)) from None
    if not info.has_video:
        raise ClipRejected("unreadable video", f"{spec.video_path}: no video stream")
    if not info.has_audio and cfg.require_audio:
        raise ClipRejected("missing audio", f"{spec.video_path}: no audio stream")
    start, num_frames = _time_range(spec, info, cfg.fps)
    if reason := filters.check_length(num_frames, cfg.filters):
        raise ClipRejected(reason, f"{spec.clip_id}: {num_frames} frames")

    box = _crop_box(spec, info.width, info.height, cfg)
    duration = num_frames / cfg.fps
    try:
        frames, _ = read_video(
            spec.video_path,
            fps=cfg.fps,
            start=start,
            duration=duration,
            crop=box,
            size=cfg.size,
            max_frames=num_frames,
        )
        audio = np.zeros(0, np.float32)
        if info.has_audio:
            audio = read_audio(spec.video_path, cfg.sample_rate, start=start, duration=duration)
    except MediaError as e:
        raise ClipRejected("unreadable video", str(e)) from None
    num_frames = len(frames)  # the stream may end early (container duration is approximate)
    if reason := filters.check_length(num_frames, cfg.filters):
        raise ClipRejected(reason, f"{spec.clip_id}: {num_frames} frames decoded")

    # Frame k covers samples [k * spf, (k + 1) * spf): pad/trim the tail so it always holds.
    if info.has_audio:
        want = num_frames * int(cfg.sample_rate / cfg.fps)
        audio = np.pad(audio[:want], (0, max(0, want - len(audio))))

    return _record(spec, cfg, frames, audio, box, (info.width, info.height), start, info.fps)


def _crop_box(spec: ClipSpec, width: int, height: int, cfg: ProcessConfig):
    """The clip's square crop (x, y, side, side) in source pixels, checked for size."""
    if spec.boxes is None:
        boxes = np.array([[0, 0, width, height]], np.float64)
    else:
        boxes = crop.to_pixels(spec.boxes, width, height, spec.box_ref_height)
    box = crop.clip_box(boxes, width, height, spec.crop_scale)
    if box is None:
        raise ClipRejected("invalid box", spec.clip_id)
    if reason := filters.check_crop(box[2], cfg.filters):
        raise ClipRejected(reason, f"{spec.clip_id}: {box[2]} px")
    return box


def _record(spec, cfg, frames, audio, box, source_size, start, source_fps) -> ClipRecord:
    """The cropped frames (and audio) as a record: the frame filters, the clip's
    attributes and companion streams."""
    if reason := filters.check_frames(frames, cfg.filters):
        raise ClipRejected(reason, spec.clip_id)
    attributes = _load_attributes(spec, start, len(frames), cfg.fps, box, source_size)
    if reason := filters.check_pose(attributes, cfg.filters):
        raise ClipRejected(reason, spec.clip_id)
    streams, notes = companions.read_streams(
        spec, frames, fps=cfg.fps, start=start, box=box, source_fps=source_fps or cfg.fps
    )
    return ClipRecord(
        clip_id=spec.clip_id,
        dataset=spec.dataset,
        identity=spec.identity,
        split=spec.split,
        fps=cfg.fps,
        sample_rate=cfg.sample_rate,
        frames=frames,
        audio=to_int16(audio),
        crop_box=box,
        source_size=source_size,
        attributes=attributes,
        extra=dict(spec.extra),
        streams=streams,
        notes=notes,
    )


def process_image(spec: ClipSpec, cfg: ProcessConfig) -> ClipRecord:
    """One image (data_pipelines/parsers/images.py) -> a one-frame clip without audio,
    cropped and resized as a video's frames are (area averaging when shrinking, as
    `read_video`'s ffmpeg scaler)."""
    try:
        image = images.read_image(spec.video_path)
    except MediaError as e:
        raise ClipRejected(images.UNREADABLE, str(e)) from None
    height, width = image.shape[:2]
    x, y, side, _ = _crop_box(spec, width, height, cfg)
    face = Image.fromarray(image).crop((x, y, x + side, y + side))
    resample = Image.BOX if side >= cfg.size else Image.BILINEAR
    frames = np.asarray(face.resize((cfg.size, cfg.size), resample))[None]
    audio = np.zeros(0, np.float32)
    return _record(spec, cfg, frames, audio, (x, y, side, side), (width, height), 0.0, None)
