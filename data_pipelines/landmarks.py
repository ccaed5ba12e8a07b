"""AniPortrait's per-frame face landmarks for real videos: the file format, its checks, MediaPipe.

One file per source video, `<landmarks_dir>/<video file name without extension>.npz`
(`jaxtalk prepare vfhq|celebvhq ... --landmarks_dir=DIR`), row i = the video's frame i:

  fps            scalar: the frame rate the rows follow (the video's)
  face_mesh_xy   float [N, 478 * 2]  MediaPipe's 478 face points (x, y), source pixels
  head_pose      float [N, 6], optional: rotation angles in degrees (scipy's extrinsic
                 "xyz", as the release's pose_util) of the head in a camera frame with x
                 right, y down, z towards the camera; then the head's centre x, y and
                 its scale (pixels per mesh unit), source pixels: weak perspective,
                 point = (R @ vertex)[:2] * scale + centre
  face_mesh      float [N, 468 * 3], optional: pose-free mesh vertices (what Audio2Mesh
                 predicts)

`jaxtalk prepare images` reads one file per image, `<image path relative to --manual_dir,
without extension>.npz` (nested as the images are), in the same format with one row (its
`fps` any positive number).

Rows of frames no clip uses may hold NaN (extraction covers only the clips' frames). The
rows a clip uses must be finite, inside the frame (a margin of `FRAME_MARGIN` for faces at
its edge) and in pixels, not MediaPipe's 0..1; otherwise the clip is rejected as "bad
landmark file" with the file and the fault. A clip whose video has no file, or a file
without `fps` / `face_mesh_xy`, is skipped while parsing ("missing landmarks", "bad
landmark file"). As released, clips shorter than 30 frames are dropped.

`--landmarks_model=face_landmarker.task` writes the missing files first with MediaPipe's
FaceLandmarker (the optional extra: pip install 'jaxtalk[mediapipe]'), one face per frame
as the release; a face lost for up to `MAX_FILL` frames keeps its last landmarks (the
release's vid2pose does the same), longer gaps stay NaN and reject the clips over them.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from typing import Callable

import numpy as np
from scipy.spatial.transform import Rotation

from data_pipelines.clip_spec import ClipSpec, SkipReport
from jaxtalk.errors import InputError, one_line
from jaxtalk.media.ffmpeg_run import MediaError

WIDTHS = {"face_mesh": 468 * 3, "head_pose": 6, "face_mesh_xy": 478 * 2}
REQUIRED = ("fps", "face_mesh_xy")
MIN_FRAMES = 30  # AniPortrait's preprocess_dataset drops shorter clips
FRAME_MARGIN = 0.1  # of the frame's side: MediaPipe extrapolates faces cut by the edge
MAX_FILL = 5  # frames a lost face keeps its last landmarks
IMAGE_FPS = 25.0  # the `fps` of an image's file (one row; any positive number reads row 0)
CHUNK = 256  # frames decoded at a time during extraction
MISSING, BAD = "missing landmarks", "bad landmark file"
NAME_KEY = "landmarks_name"  # a spec's `extra` entry naming its file (images: nested paths)
# MediaPipe's camera (pose_util.create_perspective_matrix): 63 degrees vertical field of view
FOCAL = 1.0 / np.tan(np.radians(63.0) / 2)


class BadLandmarks(ValueError):
    """One landmark file (or the rows a clip uses) is unusable; the message says why."""


def file_for(landmarks_dir: str, video_path: str) -> str:
    return os.path.join(landmarks_dir, os.path.splitext(os.path.basename(video_path))[0] + ".npz")


def spec_file(landmarks_dir: str, spec: ClipSpec) -> str:
    """The clip's landmark file: its `NAME_KEY` extra (`prepare images` sets the image's
    path relative to --manual_dir, without extension: folders of 0001.jpg do not collide),
    else its video's name (`file_for`)."""
    name = dict(spec.extra).get(NAME_KEY)
    return (
        os.path.join(landmarks_dir, name + ".npz")
        if name
        else file_for(landmarks_dir, spec.video_path)
    )


def _open_check(path: str) -> None:
    """The file is a numpy archive (no pickles) holding `fps` and `face_mesh_xy`."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in REQUIRED if k not in data.files]
            fps = float(data["fps"]) if "fps" in data.files else 1.0
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, TypeError) as e:
        raise BadLandmarks(f"not a numpy .npz ({one_line(e, 80)})") from None
    if missing:
        raise BadLandmarks(f"has no {', '.join(missing)}")
    if not (np.isfinite(fps) and fps > 0):
        raise BadLandmarks(f"fps {fps} is not a positive number")


def attach(specs: list[ClipSpec], landmarks_dir: str, report: SkipReport) -> list[ClipSpec]:
    """Each clip with its video's landmark file as its attributes; skips (and counts) the
    clips whose file is missing or unreadable, naming the file."""
    if not os.path.isdir(landmarks_dir):
        raise InputError(f"--landmarks_dir {landmarks_dir!r} is not a directory")
    out, faults = [], {}
    for spec in specs:
        path = spec_file(landmarks_dir, spec)
        if path not in faults:
            faults[path] = None
            if not os.path.exists(path):
                faults[path] = (MISSING, f"no {path}")
            else:
                try:
                    _open_check(path)
                except BadLandmarks as e:
                    faults[path] = (BAD, f"{path}: {e}")
        if faults[path] is None:
            out.append(dataclasses.replace(spec, attributes_path=path))
        else:
            reason, detail = faults[path]
            report.skip(reason, f"{spec.clip_id} ({detail})")
    return out


def check_rows(name: str, values: np.ndarray, frame_size: tuple[int, int]) -> None:
    """The rows one clip uses of one landmark array; `BadLandmarks` naming the fault."""
    if name in WIDTHS and values.shape[1:] != (WIDTHS[name],):
        raise BadLandmarks(f"{name} has width {values.shape[1:]}, want {WIDTHS[name]}")
    bad = ~np.isfinite(values).all(axis=tuple(range(1, values.ndim)))
    if bad.any():
        raise BadLandmarks(f"{name} is not finite at {int(bad.sum())} of the clip's frames")
    if name.endswith("_xy"):
        w, h = frame_size
        xy = values.reshape(len(values), -1, 2)
        if max(w, h) > 16 and np.abs(xy).max() <= 1.5:
            raise BadLandmarks(f"{name} looks normalized (0..1); the format wants source pixels")
        lo, hi = -FRAME_MARGIN * np.array([w, h]), (1 + FRAME_MARGIN) * np.array([w, h])
        if (xy < lo).any() or (xy > hi).any():
            raise BadLandmarks(f"{name} leaves the {w}x{h} frame")


def check_coverage(name: str, num_rows: int, last_frame: int) -> None:
    """The array reaches the clip's last frame (one past it rounds onto the last row)."""
    if last_frame > num_rows:
        raise BadLandmarks(f"{name} has {num_rows} frames, the clip needs frame {last_frame}")


# ---- extraction -----------------------------------------------------------------------------

# A detector maps one RGB uint8 frame to (points [478, 2] in 0..1, 4x4 head-to-camera matrix
# in MediaPipe's metric frame, or None) or to None when it finds no single face.
Detector = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray | None] | None"]


def head_pose_from_matrix(matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """MediaPipe's facial transformation matrix -> this format's `head_pose` [6].

    MediaPipe's metric frame has y up and the camera looking down -z, through the
    release's perspective (63 degrees vertical); flipping y makes it this format's frame,
    and the head's origin projected and its depth give the weak-perspective centre and
    scale (pixels per centimetre).
    """
    flip = np.diag([1.0, -1.0, 1.0])
    rot = flip @ np.asarray(matrix, np.float64)[:3, :3] @ flip
    x, y, z = np.asarray(matrix, np.float64)[:3, 3]
    depth = -z  # in front of the camera
    scale = FOCAL * height / 2 / depth
    centre = (width / 2 + x * scale, height / 2 - y * scale)
    angles = Rotation.from_matrix(rot).as_euler("xyz", degrees=True)
    return np.concatenate([angles, centre, [scale]])


def _ranges(specs: list[ClipSpec], fps: float) -> list[tuple[int, int]]:
    """The merged source-frame ranges [a, b) the clips of one video cover."""
    spans = []
    for s in specs:
        a = int(np.floor(s.start_sec * fps + 1e-6))
        b = int(np.ceil(s.end_sec * fps - 1e-6)) + 1 if s.end_sec is not None else None
        spans.append((a, b))
    spans.sort(key=lambda r: (r[0], r[1] is not None, r[1] or 0))
    merged: list[list] = []
    for a, b in spans:
        if merged and (merged[-1][1] is None or a <= merged[-1][1]):
            merged[-1][1] = None if b is None or merged[-1][1] is None else max(b, merged[-1][1])
        else:
            merged.append([a, b])
    return [tuple(r) for r in merged]


def extract_video(
    video_path: str, specs: list[ClipSpec], detect: Detector
) -> dict[str, np.ndarray]:
    """Landmark arrays (this module's format) for the frames the clips of one video use."""
    from jaxtalk.media.probe import probe  # pylint: disable=import-outside-toplevel
    from jaxtalk.media.video import read_video  # pylint: disable=import-outside-toplevel

    info = probe(video_path)
    fps, (w, h) = float(info.fps or 25.0), (info.width, info.height)
    rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for a, b in _ranges(specs, fps):
        last, gap, i = None, 0, a
        while b is None or i < b:
            count = CHUNK if b is None else min(CHUNK, b - i)
            try:
                frames, _ = read_video(
                    video_path, start=i / fps, duration=count / fps, max_frames=count
                )
            except MediaError:  # past the end of the video
                break
            for frame in frames:
                found = detect(frame)
                if found is not None:
                    last, gap = _row(found, w, h), 0
                else:
                    gap += 1
                if last is not None and gap <= MAX_FILL:
                    rows[i] = last
                i += 1
            if len(frames) < count:
                break
    return _arrays(rows, fps)


def _row(found, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """One detection -> (points [478, 2] in source pixels, `head_pose` [6] or NaN)."""
    pts, matrix = found
    pose = (
        head_pose_from_matrix(matrix, width, height) if matrix is not None else np.full(6, np.nan)
    )
    return np.asarray(pts, np.float64)[:, :2] * (width, height), pose


def _arrays(rows: dict[int, tuple[np.ndarray, np.ndarray]], fps: float) -> dict[str, np.ndarray]:
    """{frame: row} -> this module's file arrays (frames without a row NaN)."""
    n = max(rows, default=-1) + 1
    xy, pose = np.full((n, WIDTHS["face_mesh_xy"]), np.nan), np.full((n, 6), np.nan)
    for i, (p, q) in rows.items():
        xy[i], pose[i] = p.reshape(-1), q
    out = {"fps": np.float32(fps), "face_mesh_xy": xy.astype(np.float32)}
    if np.isfinite(pose).any():
        out["head_pose"] = pose.astype(np.float32)
    return out


def extract_image(
    image_path: str, specs: list[ClipSpec], detect: Detector
) -> dict[str, np.ndarray]:
    """Landmark arrays of one image (`prepare images`): one row, at 25 fps (a one-frame
    clip's rate); none when the detector finds no single face."""
    from data_pipelines.parsers.images import read_image  # pylint: disable=import-outside-toplevel

    image = read_image(image_path)  # MediaError when unreadable, as a video's
    found = detect(image)
    rows = {} if found is None else {0: _row(found, image.shape[1], image.shape[0])}
    return _arrays(rows, IMAGE_FPS)


def extract_missing(
    specs: list[ClipSpec], landmarks_dir: str, detect: Detector, log=print, extract=None
) -> dict[str, int]:
    """Writes the landmark file of every clip video that has none (atomically: an interrupted
    run leaves no partial file, a rerun continues). Returns counts. `extract(path, clips,
    detect)` makes one file's arrays: `extract_video` (default) or `extract_image`."""
    extract = extract or extract_video
    from jaxtalk import progress  # pylint: disable=import-outside-toplevel

    os.makedirs(landmarks_dir, exist_ok=True)
    by_video: dict[str, list[ClipSpec]] = {}
    for spec in specs:
        by_video.setdefault(spec.video_path, []).append(spec)
    todo = {v: s for v, s in by_video.items() if not os.path.exists(spec_file(landmarks_dir, s[0]))}
    counts = {"videos": len(by_video), "extracted": 0, "no_face": 0, "unreadable": 0}
    with progress.bar(len(todo), "landmarks", unit="video") as bar:
        for video, clips in sorted(todo.items()):
            try:
                arrays = extract(video, clips, detect)
            except MediaError as e:  # processing will reject its clips too; go on
                log(f"landmarks: skipping {one_line(e, 160)}")
                counts["unreadable"] += 1
                bar.update(1)
                continue
            path = spec_file(landmarks_dir, clips[0])
            if not len(arrays["face_mesh_xy"]):
                counts["no_face"] += 1  # no file: its clips are counted as missing landmarks
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path + ".tmp", "wb") as f:
                    np.savez(f, **arrays)
                os.replace(path + ".tmp", path)
                counts["extracted"] += 1
            bar.update(1)
    log(
        f"landmarks: {counts['extracted']} videos extracted, {counts['no_face']} without a face, "
        f"{counts['unreadable']} unreadable, "
        f"{counts['videos'] - len(todo)} already done -> {landmarks_dir}"
    )
    return counts


def mediapipe_detector(model_path: str) -> Detector:
    """MediaPipe's FaceLandmarker (478 points + transformation matrix), one face per frame."""
    try:
        import mediapipe as mp  # pylint: disable=import-outside-toplevel
        from mediapipe.tasks.python import BaseOptions, vision  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise InputError(
            "--landmarks_model needs MediaPipe, the optional extra: pip install 'jaxtalk[mediapipe]'"
        ) from None
    if not os.path.isfile(model_path):
        raise InputError(
            f"--landmarks_model {model_path!r}: no such file (MediaPipe's face_landmarker.task)"
        )
    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=model_path),
        running_mode=vision.RunningMode.IMAGE,
        num_faces=1,
        output_facial_transformation_matrixes=True,
    )
    landmarker = vision.FaceLandmarker.create_from_options(options)

    def detect(frame: np.ndarray):
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(frame))
        result = landmarker.detect(image)
        if len(result.face_landmarks) != 1:
            return None
        pts = np.array([(p.x, p.y) for p in result.face_landmarks[0]], np.float64)
        matrices = result.facial_transformation_matrixes
        return pts, (np.asarray(matrices[0]) if matrices else None)

    return detect
