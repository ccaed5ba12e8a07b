"""AnimateDiff's context windows: which frames each denoiser call sees when a video is longer
than the motion module's window, and how overlapping predictions are averaged per frame.

The "uniform" scheduler (AnimateDiff-cli, as AniPortrait's and MegActor's long-video
pipelines use it): windows of `size` frames starting every `size - overlap` frames, frame
indices taken modulo the video length, so with `closed_loop` the last windows wrap around to
the first frames and the video loops seamlessly. `stride` > 1 adds dilated windows (every
2nd, 4th, ... frame) and `step` shifts the windows by a bit-reversed fraction of the video;
the releases call it with step 0 and stride 1. Windows are static: they depend only on the
video length and the settings, so a jit-compiled sampler stacks them into one (W, size)
index array.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class ContextWindows:
    """How a long video is cut into overlapping windows (`uniform_windows` settings)."""

    size: int = 16
    overlap: int = 4
    stride: int = 1
    closed_loop: bool = True

    def __post_init__(self):
        if self.size < 1 or not 0 <= self.overlap < self.size or self.stride < 1:
            raise ValueError(
                f"context windows need size >= 1, 0 <= overlap < size and stride >= 1; got "
                f"size={self.size}, overlap={self.overlap}, stride={self.stride}"
            )

    def windows(self, num_frames: int, step: int = 0) -> list[list[int]]:
        return uniform_windows(
            num_frames, self.size, self.stride, self.overlap, self.closed_loop, step
        )


def ordered_halving(step: int) -> float:
    """The 64-bit bit reversal of `step` as a fraction in [0, 1): 0, 1/2, 1/4, 3/4, ..."""
    return int(f"{step:064b}"[::-1], 2) / (1 << 64)


def uniform_windows(
    num_frames: int,
    size: int,
    stride: int = 1,
    overlap: int = 4,
    closed_loop: bool = True,
    step: int = 0,
) -> list[list[int]]:
    """Frame indices of every window, in the order the release visits them.

    A video no longer than `size` is one window of all its frames. Otherwise, for each
    dilation d in 1, 2, 4, ... (at most `stride` of them, fewer when the video is short),
    windows start every `size * d - overlap` frames from a shift given by `step`; a window
    holds `size` frames spaced d apart, modulo `num_frames`. Without `closed_loop` the
    starts stop `overlap` frames earlier (the last window may still wrap).
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one frame, got {num_frames}")
    if num_frames <= size:
        return [list(range(num_frames))]
    stride = min(stride, int(np.ceil(np.log2(num_frames / size))) + 1)
    shift = ordered_halving(step)
    pad = int(round(num_frames * shift))
    out = []
    for dilation in (1 << np.arange(stride)).tolist():
        first = int(shift * dilation) + pad
        stop = num_frames + pad + (0 if closed_loop else -overlap)
        for start in range(first, stop, size * dilation - overlap):
            out.append([e % num_frames for e in range(start, start + size * dilation, dilation)])
    return out


def window_arrays(windows: list[list[int]], num_frames: int):
    """(indices (W, K) int32, weights (W, K), counts (num_frames,)) for equal-size windows.

    The release adds a window's prediction with `acc[:, :, c] = acc[:, :, c] + pred`, an
    indexed assignment: a frame listed twice in one window (possible only for dilated
    windows that wrap) receives one of its predictions, the last, and counts once. The
    weights reproduce that (1 at a frame's last position in its window, else 0) for an
    accumulate-by-scatter-add. A frame no window covers has count 0 (the release divides
    by zero there); callers check `counts.min() > 0`.
    """
    sizes = {len(w) for w in windows}
    if len(sizes) != 1:
        raise ValueError(f"context windows must have one size, got sizes {sorted(sizes)}")
    idx = np.asarray(windows, np.int32)
    weights = np.zeros(idx.shape, np.float64)
    for w, row in enumerate(idx):
        last = {int(f): k for k, f in enumerate(row)}
        weights[w, list(last.values())] = 1.0
    counts = np.zeros(num_frames, np.float64)
    np.add.at(counts, idx.reshape(-1), weights.reshape(-1))
    return idx, weights, counts
