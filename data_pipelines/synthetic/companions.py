"""MegActor's synthetic driving streams for the synthetic set, made by the renderer itself.

Where the release runs external tools over its videos (a face swapper, an image-to-image
model, a human parser), the synthetic set draws the same things exactly and writes them
in the companion-file format every dataset uses (data_pipelines/companions.py), so the
real path (`jaxtalk prepare ... --companions_dir`) is the one that runs here:

  swapped   the video's motion (pose, position, mouth, blink tracks) drawn with another
            identity's face on the same hair, shirt and background (`face.swap_face`, what
            a face swapper produces); the donor is the next identity of the same split
            (train identities never show a test face), or the next one overall when the
            split has a single identity
  styled    a fixed "cartoon" stylisation of the video's own frames (`stylise`): the
            colours turned by a third of the hue circle and posterised to 4 levels per
            channel, with dark ink on strong luminance edges: motion and outlines stay,
            colours, shading and texture change, as an image-to-image model's output does
  masks     the renderer's background mask per frame (True where no part of the person,
            shirt and hair included, is drawn)
"""

from __future__ import annotations

import numpy as np

LEVELS = 4  # posterisation levels per channel
EDGE = 24.0  # luminance gradient (0..255 per pixel) drawn as ink
INK = 20  # the ink's grey level
BW = np.array([0.2989, 0.5870, 0.1140], np.float32)  # MegActor's grey weights


def donors(splits: list[str]) -> list[int]:
    """For identity i (in generation order, `splits[i]` its split), the identity whose face
    its swapped stream wears."""
    out = []
    n = len(splits)
    for i, split in enumerate(splits):
        same = [j for j in range(n) if splits[j] == split and j != i]
        later = [j for j in same if j > i]
        if same:
            out.append(later[0] if later else same[0])
        else:
            out.append((i + 1) % n)
    return out


def grey(x: np.ndarray) -> np.ndarray:
    """[..., 3] -> [...] with the grey weights (`x @ BW` is a slow batched matmul)."""
    return x[..., 0] * BW[0] + x[..., 1] * BW[1] + x[..., 2] * BW[2]


def stylise(frames: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] -> the cartoon version (see the module doc), same shape."""
    return np.stack([_stylise_frame(f) for f in frames])  # frame by frame: cache-sized


def _stylise_frame(frame: np.ndarray) -> np.ndarray:
    turned = frame[..., [1, 2, 0]]  # hue turned by 120 degrees: R <- G, G <- B, B <- R
    out = _POSTER[turned]
    luma = grey(turned.astype(np.float32))
    gx = np.zeros_like(luma)
    gy = np.zeros_like(luma)
    gx[:, 1:-1] = luma[:, 2:] - luma[:, :-2]
    gy[1:-1] = luma[2:] - luma[:-2]
    out[gx * gx + gy * gy > (2 * EDGE) ** 2] = INK  # central differences are 2x the gradient
    return out


_STEP = 256 // LEVELS
_POSTER = (np.arange(256) // _STEP * _STEP + _STEP // 2).astype(np.uint8)
