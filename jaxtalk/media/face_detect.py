"""Face crops for user portraits: find the face with a bundled detector, cut a square around it.

Training data needs no detector (every dataset ships boxes); a user's photo at inference
does. The detector is OpenCV's Haar cascade for frontal faces, with the profile cascade
(both directions) as a fallback; its XML files ship inside the opencv-python-headless
wheel (`cv2.data.haarcascades`), so nothing is downloaded at run time. OpenCV 5 wheels no
longer carry the cascades, hence opencv-python-headless>=4.10,<5.

The largest face's box becomes the same kind of square crop as a prepared clip's
(jaxtalk.media.crop.clip_box: enlarged about its centre, made square, shifted into the
frame, shrunk to the frame when too big), then is resized to the model's size.
Haar cascades find upright, roughly frontal photographic faces; they miss strong profiles,
tilted heads and drawn or cartoon faces. For those, or for images that already are crops,
skip detection (`jaxtalk animate --nocrop_face`).
"""

from __future__ import annotations

import functools
import os

import numpy as np
from PIL import Image

from jaxtalk.errors import InputError
from jaxtalk.media import crop

FRONTAL = "haarcascade_frontalface_default.xml"
PROFILE = "haarcascade_profileface.xml"
# A Haar box spans brows to below the mouth; x1.8 about its centre takes in the hair, chin
# and neck, close to the framing of the VoxCeleb/HDTF crops the models were trained on.
CROP_SCALE = 1.8
DETECT_SIDE = 1024  # larger images are downscaled to this longest side for detection
MIN_FACE = 0.1  # faces smaller than this fraction of the shorter side are ignored


class NoFaceError(InputError):
    """No face in an image; the message names the file and how to skip detection."""


@functools.lru_cache(maxsize=None)
def _cascade(name: str):
    """The cascade `name` from the installed OpenCV wheel, loaded once per process."""
    import cv2

    path = os.path.join(cv2.data.haarcascades, name)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise RuntimeError(
            f"{path}: OpenCV could not load the face detector "
            "(install opencv-python-headless>=4.10,<5; OpenCV 5 wheels lack it)"
        )
    return classifier


def _detect(name: str, gray: np.ndarray, min_side: int) -> np.ndarray:
    found = _cascade(name).detectMultiScale(
        gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
    )
    return np.asarray(found, np.float64).reshape(-1, 4)


def detect_faces(image: np.ndarray) -> np.ndarray:
    """(N, 4) face boxes (x0, y0, x1, y1) in pixels of an (H, W, 3) uint8 RGB image.

    Frontal faces; when there are none, profile faces turned either way."""
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
    height, width = image.shape[:2]
    factor = min(1.0, DETECT_SIDE / max(height, width))
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if factor < 1.0:
        gray = cv2.resize(
            gray,
            (max(1, round(width * factor)), max(1, round(height * factor))),
            interpolation=cv2.INTER_AREA,
        )
    min_side = max(20, int(MIN_FACE * min(gray.shape)))
    boxes = _detect(FRONTAL, gray, min_side)
    if not len(boxes):
        mirrored = _detect(PROFILE, gray[:, ::-1].copy(), min_side)
        mirrored[:, 0] = gray.shape[1] - mirrored[:, 0] - mirrored[:, 2]
        boxes = np.concatenate([_detect(PROFILE, gray, min_side), mirrored])
    boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x0, y0, x1, y1)
    return boxes / factor


def face_box(image: np.ndarray, what: str = "image") -> np.ndarray:
    """The largest face's (x0, y0, x1, y1); NoFaceError naming `what` when there is none."""
    boxes = detect_faces(image)
    if not len(boxes):
        raise NoFaceError(
            f"{what}: no face found by the OpenCV face detector (it finds upright, "
            "roughly frontal photographs); pass --nocrop_face to skip detection "
            "and use the image as it is (centre-cropped to a square)"
        )
    return boxes[np.argmax((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))]


def crop_box(
    image: np.ndarray, what: str = "image", scale: float = CROP_SCALE
) -> tuple[int, int, int, int]:
    """The square (x, y, side, side) around the largest face, as a prepared clip's crop."""
    height, width = np.asarray(image).shape[:2]
    box = crop.clip_box(face_box(image, what)[None], width, height, scale)
    if box is None:
        raise NoFaceError(
            f"{what}: the face is too small to crop; pass --nocrop_face to use the image as it is"
        )
    return box


def crop_face(
    image: np.ndarray, size: int | None, what: str = "image", scale: float = CROP_SCALE
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """(x, y, side, side) crop box and the crop resized to (size, size, 3) uint8 (bicubic,
    as jaxtalk.inference.animator.load_image; size None keeps the crop's own size)."""
    x, y, w, h = crop_box(image, what, scale)
    img = Image.fromarray(np.asarray(image)).crop((x, y, x + w, y + h))
    if size is not None:
        img = img.resize((size, size), Image.BICUBIC)
    return (x, y, w, h), np.asarray(img)
