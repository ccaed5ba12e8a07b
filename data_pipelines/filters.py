"""Quality filters: minimum face size and length, blur, extreme head pose.

Each check returns the rejection reason (a short stable string, counted in the dataset
info) or None when the clip passes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage


@dataclasses.dataclass(frozen=True)
class FilterConfig:
    min_frames: int = 64  # the video-preprocessing recipe rejects tubes shorter than 64 frames
    min_face_size: int = 256  # crop side in source pixels; below it the face gets upscaled
    blur_threshold: float = 20.0  # variance of the Laplacian of the 128-px grey crop
    max_abs_yaw: float = 60.0  # degrees; only where a pose estimate is in the attributes
    max_abs_pitch: float = 45.0


def laplacian_variance(frames: np.ndarray, num_samples: int = 8, side: int = 128) -> float:
    """Median over a few frames of the variance of the Laplacian of the grey image.

    Larger frames are downscaled to `side` first so the threshold does not depend on the
    record size; smaller ones are left alone (upscaling would blur them itself).
    """
    idx = np.linspace(0, len(frames) - 1, min(num_samples, len(frames))).round().astype(int)
    scores = []
    for frame in frames[idx]:
        grey = frame.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        if grey.shape[0] > side:
            grey = ndimage.zoom(grey, side / grey.shape[0], order=1)
        scores.append(ndimage.laplace(grey).var())
    return float(np.median(scores))


def check_crop(crop_side: int, cfg: FilterConfig) -> str | None:
    return "face too small" if crop_side < cfg.min_face_size else None


def check_length(num_frames: int, cfg: FilterConfig) -> str | None:
    return "too short" if num_frames < cfg.min_frames else None


def check_frames(frames: np.ndarray, cfg: FilterConfig) -> str | None:
    return "blurry" if laplacian_variance(frames) < cfg.blur_threshold else None


def check_pose(attributes: dict[str, np.ndarray], cfg: FilterConfig) -> str | None:
    """Rejects clips whose head pose (yaw, pitch, roll in degrees) goes beyond the limits."""
    pose = attributes.get("pose")
    if pose is None:
        return None
    if np.abs(pose[:, 0]).max() > cfg.max_abs_yaw or np.abs(pose[:, 1]).max() > cfg.max_abs_pitch:
        return "extreme pose"
    return None
