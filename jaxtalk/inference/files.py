"""One animation from files: a portrait image (or video) and a driving file in, an mp4 out.

What `jaxtalk animate` (one job or a batch) and `jaxtalk app` share, written once over the
animator contract: the source is cropped around its face (or centre-cropped), the driver is
read as the animator's `driver` kind takes it (a video's frames, centre- or box-cropped to
the model's size; speech as 16 kHz mono), `Animator.animate` runs with the caller's options
and progress callback, and the mp4 keeps the driver's sound (a driving video's audio track,
or the speech itself). Paths may be local or gs:// (ffmpeg reads and writes local copies).

A source that is a video (not an image PIL reads, but a file ffmpeg probes with a video
stream) goes to an animator that takes one (`Animator.source_video`, LivePortrait): every
frame cropped by one box (the first frame's face, or the centre square), frame i driven by
driving frame i, the output at the source's rate and min(source, driving) frames long, with
the driving video's audio, or the source's when the driver has none or `audio_priority` is
"source" (the release's audio_priority, default "driving").
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxtalk import fs
from jaxtalk.inference.animator import (
    SAMPLE_RATE,
    AnimationError,
    Animator,
    Driver,
    centre_square,
    load_image,
    read_image,
)


@dataclasses.dataclass(frozen=True)
class Driving:
    """A driver read for one animator: what `animate` takes, and what the mp4 needs."""

    steps: np.ndarray  # (T, S, S, 3) uint8 frames, or (N,) 16 kHz speech
    fps: float  # the output rate: the animator's own, else the driving video's
    audio: str | np.ndarray | None  # what `write_video` muxes: a file, samples, or none

    def frames(self) -> int:
        """How many frames the animation will have (for a progress total): one per driving
        frame, or one per 1/fps of speech."""
        if self.steps.ndim == 1:
            return max(1, int(len(self.steps) * self.fps / SAMPLE_RATE))
        return len(self.steps)


@dataclasses.dataclass(frozen=True)
class Written:
    """What `animate_files` wrote: frame count and rate, and the source's face box (None
    when the source was only centre-cropped)."""

    frames: int
    fps: float
    face_box: tuple[int, int, int, int] | None


def load_source(
    path: str, size: int, crop_face: bool = True, what: str | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """A local image -> ((size, size, 3) uint8, face box): the crop around its largest face
    (jaxtalk/media/face_detect.py), or with `crop_face` off the centre square and no box.
    `what` names the file in errors (default: `path`)."""
    from jaxtalk.media import face_detect

    if not crop_face:
        return load_image(path, size), None
    box, source = face_detect.crop_face(read_image(path), size, what=what or path)
    return source, tuple(int(v) for v in box)


def source_video_info(path: str, what: str | None = None):
    """None when `path` is an image (a file PIL reads); a video's probe (MediaInfo) when
    ffmpeg finds a video stream in it; else an AnimationError naming the file (`what`)."""
    from jaxtalk.media import video
    from jaxtalk.media.ffmpeg_run import MediaError

    what = what or path
    try:
        with Image.open(path):
            return None
    except FileNotFoundError:
        raise AnimationError(f"{what}: no such file") from None
    except (UnidentifiedImageError, OSError):
        pass
    try:
        return video.probe_video(path)
    except MediaError:
        raise AnimationError(f"{what}: not a readable image or video") from None


def load_source_video(
    path: str,
    size: int,
    crop_face: bool = True,
    what: str | None = None,
    max_seconds: float | None = None,
) -> tuple[np.ndarray, float, tuple[int, int, int, int] | None]:
    """A local video -> ((T, size, size, 3) uint8 frames, fps, face box): every frame cropped
    by the square around the first frame's largest face (`load_source`'s crop, one box for
    the clip, as a driving video has one), or with `crop_face` off the centre square and no
    box; area-resized as driving frames are."""
    from jaxtalk.media import face_detect, video

    what = what or path
    info = video.probe_video(path)
    box = None
    if crop_face:
        first, _ = video.read_video(path, max_frames=1)
        box = tuple(int(v) for v in face_detect.crop_box(first[0], what=f"{what} frame 0"))
    crop = box or centre_square(info.width, info.height)
    frames, fps = video.read_video(path, crop=crop, size=size, duration=max_seconds)
    return frames, fps, box


def read_driving(
    model: Animator,
    path: str,
    *,
    crop: Sequence[int] | None = None,
    max_seconds: float | None = None,
) -> Driving:
    """A local media file read as `model.driver` takes it: a video's frames (`crop` x,y,w,h,
    default the centre square, resized to the model's size) or speech; the first
    `max_seconds` only when given."""
    from jaxtalk.media import audio, video

    if model.driver is Driver.VIDEO:
        info = video.probe_video(path)
        box = list(crop) if crop else centre_square(info.width, info.height)
        frames, fps = video.read_video(path, crop=box, size=model.size, duration=max_seconds)
        return Driving(frames, model.fps or fps, path if info.has_audio else None)
    if model.driver is Driver.AUDIO:
        wav = audio.read_audio(path, SAMPLE_RATE, duration=max_seconds)
        return Driving(wav, model.fps, wav)
    raise AnimationError(
        f"{path}: {type(model).__name__} is driven by {model.driver.value}, "
        "which no media file holds"
    )


def animate_files(
    model: Animator,
    source: str,
    driving: str,
    out: str,
    *,
    crop_face: bool = True,
    driving_crop: Sequence[int] | None = None,
    max_seconds: float | None = None,
    options: Mapping | None = None,
    extra: Callable[[str], tuple[np.ndarray | None, Callable[[Driving], Mapping]]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    audio_priority: str = "driving",
) -> Written:
    """source image + driving file -> the mp4 `out`, animated by `model` with `options`
    (its `start` keywords). `extra(local source path)`: a caller's own source image (None:
    the crop above) and a function of the driver giving options read from the inputs, over
    `options` (the LivePortrait landmark crop and eye / lip ratios of `jaxtalk animate`).
    `progress(done, total)` is told the frames rendered so far after each chunk, `total`
    being the expected count (exact for video drivers; the last call has done == total).
    A video `source` (see the module docstring) gives `model.animate` its frames; `extra`
    may then return them too."""
    from jaxtalk.media import video

    if audio_priority not in ("driving", "source"):
        raise AnimationError(f"audio_priority must be driving or source, not {audio_priority!r}")

    with (
        fs.local_file(source) as source_path,
        fs.local_file(driving) as driving_path,
        fs.local_output(out) as out_path,
    ):
        # The source is read before the driver: its errors come first.
        image, box, read = None, None, None
        # Only a family that takes source videos probes for one; the others read an image.
        clip = source_video_info(source_path, source) if model.source_video else None
        if extra is not None:
            image, read = extra(source_path)
        if image is None and clip is None:
            image, box = load_source(source_path, model.size, crop_face, what=source)
        elif image is None:
            image, _, box = load_source_video(
                source_path, model.size, crop_face, source, max_seconds
            )
        drive = read_driving(model, driving_path, crop=driving_crop, max_seconds=max_seconds)
        if clip is not None:  # the source's rate and length; its audio as released
            audio = drive.audio
            if clip.has_audio and (audio is None or audio_priority == "source"):
                audio = source_path
            steps = drive.steps[: len(image)]
            drive = Driving(steps, model.fps or clip.fps or 25.0, audio)
        options = {**(options or {}), **(read(drive) if read else {})}
        total, done = drive.frames(), 0

        def told(n: int) -> None:
            nonlocal done
            done += n
            progress(done, max(total, done))

        frames = model.animate(image, drive.steps, progress=told if progress else None, **options)
        if progress and done != total:  # the estimate was off (speech): end at 100%
            progress(done, done)
        video.write_video(
            out_path, frames, drive.fps, audio=drive.audio, audio_sample_rate=SAMPLE_RATE
        )
    return Written(len(frames), drive.fps, box)


__all__ = [
    "Driving",
    "Written",
    "animate_files",
    "load_source",
    "load_source_video",
    "read_driving",
    "source_video_info",
]
