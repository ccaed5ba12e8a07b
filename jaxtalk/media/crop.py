"""One fixed crop box per clip: union of the per-frame boxes, enlarged, made square, clamped.

Natural head motion stays inside the crop (no per-frame alignment), as AniTalker did.
Boxes are (x0, y0, x1, y1) floats in pixels unless a function says otherwise.
"""

from __future__ import annotations

import numpy as np


def to_pixels(boxes: np.ndarray, width: int, height: int, ref_height: float | None) -> np.ndarray:
    """Normalized boxes (ref_height None), boxes of a `ref_height`-high frame, or native
    pixels (ref_height 0) -> pixels of this video."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if ref_height is None:
        return boxes * np.array([width, height, width, height])
    return boxes * (height / float(ref_height)) if ref_height else boxes


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def split_tubes(
    boxes: np.ndarray, min_iou: float = 0.25, max_len: int = 1024
) -> list[tuple[int, int]]:
    """Splits a box track into tubes [start, end): a new tube when the IoU with the tube's
    first box drops below `min_iou` or the tube reaches `max_len` frames (the
    video-preprocessing recipe)."""
    tubes, start = [], 0
    for i in range(1, len(boxes)):
        if i - start >= max_len or iou(boxes[start], boxes[i]) < min_iou:
            tubes.append((start, i))
            start = i
    if len(boxes):
        tubes.append((start, len(boxes)))
    return tubes


def clip_box(
    boxes: np.ndarray, width: int, height: int, scale: float = 1.0
) -> tuple[int, int, int, int] | None:
    """The clip's square crop (x, y, side, side) in pixels, or None when it cannot fit the frame.

    Union of `boxes`, enlarged by `scale` about its centre, made square with the longer side,
    shifted (not shrunk) to stay inside the frame; when the square is larger than the frame
    it is shrunk to the frame's shorter side, centred on the face.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = boxes[:, 0].min(), boxes[:, 1].min()
    x1, y1 = boxes[:, 2].max(), boxes[:, 3].max()
    if not (x1 > x0 and y1 > y0):
        return None
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = min(max(x1 - x0, y1 - y0) * scale, width, height)
    side = int(round(side))
    if side < 2:
        return None
    x = int(round(min(max(cx - side / 2, 0), width - side)))
    y = int(round(min(max(cy - side / 2, 0), height - side)))
    return x, y, side, side
