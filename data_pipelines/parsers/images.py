"""A folder of portrait images (nested) -> one clip spec per image: a one-frame, silent clip.

LivePortrait trains on images and videos together, an image being a one-frame video: its
pairs are the image with itself (data_pipelines/examples.py `pair`). `jaxtalk prepare
images` writes such clips in the records the video sets use, so an image set joins a
`data.mixture` beside them.

Each image is decoded here (EXIF orientation applied) and, by default, its largest face
found with OpenCV's Haar detector (jaxtalk/media/face_detect.py, as `prepare videos` and
`jaxtalk animate` find faces) and cropped as a video clip is: the box enlarged by
`face_detect.CROP_SCALE`, made square and kept in the image. `detect_faces=False` takes
images that already are portrait crops: the centred square of each. Processing
(`process.process_image`) then applies the quality filters (face size, blur) and the
landmark files of `--landmarks_dir` (one row each, data_pipelines/landmarks.py).

Splits are by file, as for `prepare videos`: a stable hash of the path relative to
`manual_dir` (`test_fraction`) or a `test_list` of such paths; identity is the file or, with
`identity="folder"`, the folder holding it. Each image is one guarded entry: a file that
cannot be decoded or has no face is one counted skip, and one logged line naming it.
"""

from __future__ import annotations

import os

import numpy as np
from absl import logging
from PIL import Image, ImageOps

from data_pipelines import landmarks
from data_pipelines.clip_spec import ClipSpec, SkipReport
from data_pipelines.parsers import common
from jaxtalk.errors import one_line
from jaxtalk.media import face_detect
from jaxtalk.media.ffmpeg_run import MediaError

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
UNREADABLE = "unreadable image"


def find_images(manual_dir: str) -> list[str]:
    """Every image file under `manual_dir` (hidden folders and files skipped), sorted."""
    return common.find_files(manual_dir, IMAGE_EXTS)


def read_image(path: str) -> np.ndarray:
    """An image file -> (H, W, 3) uint8 RGB, upright (EXIF orientation applied);
    `MediaError` naming the file and the reason when it cannot be decoded."""
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # OSError covers missing, unidentified and truncated files
        raise MediaError(f"{path}: not a readable image ({one_line(e, 100)})") from None


def _image_spec(
    path: str, manual_dir: str, split: str, identity: str, detect_faces: bool, dataset: str
) -> ClipSpec:
    try:
        image = read_image(path)
    except MediaError as e:
        raise common.Rejected(UNREADABLE, str(e).removeprefix(f"{path}: ")) from None
    boxes = None  # the whole image: the centred square
    if detect_faces:
        try:
            boxes = face_detect.face_box(image, path)[None].astype(np.float32)  # the largest
        except face_detect.NoFaceError:
            raise common.Rejected("no face", f"{image.shape[1]}x{image.shape[0]} image") from None
    rel = os.path.relpath(path, manual_dir).replace(os.sep, "/")
    return ClipSpec(
        clip_id=os.path.splitext(rel)[0],
        dataset=dataset,
        video_path=path,
        identity=identity,
        split=split,
        boxes=boxes,
        box_ref_height=0,  # pixels of the (upright) image
        crop_scale=face_detect.CROP_SCALE if detect_faces else 1.0,
        extra=(("source_file", rel), (landmarks.NAME_KEY, os.path.splitext(rel)[0])),
    )


def _guarded_spec(args) -> tuple[ClipSpec | None, SkipReport]:
    """One image as one guarded entry (runs in a worker process when parallel)."""
    path = args[0]
    report = SkipReport()
    return common.guarded(report, path, UNREADABLE, _image_spec, *args), report


def parse(
    manual_dir: str,
    *,
    test_fraction: float = 0.1,
    test_list: str | None = None,
    identity: str = "file",
    detect_faces: bool = True,
    num_workers: int = 0,
    dataset: str = "images",
) -> tuple[list[ClipSpec], SkipReport]:
    """Every image under `manual_dir` as a one-frame clip spec (see the module doc)."""
    kind = f"image files ({', '.join(IMAGE_EXTS)})"
    entries = common.folder_entries(
        find_images(manual_dir), manual_dir, test_list, test_fraction, identity, kind
    )
    jobs = [(path, manual_dir, split, who, detect_faces, dataset) for path, split, who in entries]
    results = common.map_jobs(_guarded_spec, jobs, num_workers, chunksize=16)
    report, specs = SkipReport(), []
    for spec, part in results:
        if spec is not None:
            specs.append(spec)
        for reason, (where,) in part.examples.items():  # one entry: one skip at most
            logging.warning("images: skipped (%s) %s", reason, where)
        report.merge(part)
    return specs, report
