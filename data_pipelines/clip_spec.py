"""What a parser produces: one `ClipSpec` per clip, plus a `SkipReport` of what it skipped."""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np


@dataclasses.dataclass(frozen=True)
class ClipSpec:
    """One clip to cut out of a source video.

    Boxes are (x0, y0, x1, y1). With `box_ref_height=None` they are normalized to 0..1 of
    the frame; otherwise they are pixels of a frame `box_ref_height` pixels high (VoxCeleb1:
    360, HDTF: the listed resolution, VFHQ: the meta file's H) and get scaled to the real
    video; `box_ref_height=0` means pixels of the video itself. `boxes` holds one box per frame or a single box for the whole clip.
    """

    clip_id: str
    dataset: str
    video_path: str
    identity: str
    split: str
    start_sec: float = 0.0
    end_sec: float | None = None  # None: to the end of the video
    boxes: np.ndarray | None = None  # float32 [K, 4]; None: the whole frame
    box_ref_height: float | None = None
    crop_scale: float = 1.0  # enlarge the union box by this factor (1.1 = +10%)
    # .npz of per-source-frame attributes (synthetic ground truth): arrays [N_src, k] + "fps".
    attributes_path: str | None = None
    # MegActor's companion files (data_pipelines/companions.py): (stream name, path) pairs.
    companions: tuple[tuple[str, str], ...] = ()
    extra: tuple[tuple[str, str], ...] = ()  # dataset-specific string metadata kept in the record

    @property
    def duration(self) -> float | None:
        return None if self.end_sec is None else self.end_sec - self.start_sec


class SkipReport:
    """Counts what a batch job could not use, by reason, keeping a few examples per reason."""

    def __init__(self, max_examples: int = 5):
        self.counts: collections.Counter[str] = collections.Counter()
        self.notes: collections.Counter[str] = collections.Counter()  # quirks tolerated, entry kept
        self.examples: dict[str, list[str]] = collections.defaultdict(list)
        self._max = max_examples

    def skip(self, reason: str, where: str) -> None:
        self.counts[reason] += 1
        if len(self.examples[reason]) < self._max:
            self.examples[reason].append(where)

    def note(self, reason: str, where: str) -> None:
        self.notes[reason] += 1
        if len(self.examples[reason]) < self._max:
            self.examples[reason].append(where)

    def merge(self, other: "SkipReport") -> None:
        """Adds another report's counts and examples (a worker's, for one entry)."""
        self.counts.update(other.counts)
        self.notes.update(other.notes)
        for reason, examples in other.examples.items():
            room = self._max - len(self.examples[reason])
            self.examples[reason].extend(examples[: max(0, room)])

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        def fmt(counter):
            return "; ".join(
                f"{r}: {n} (e.g. {', '.join(self.examples[r][:2])})"
                for r, n in counter.most_common()
            )

        text = f"skipped {self.total}: {fmt(self.counts)}" if self.counts else "nothing skipped"
        return text + (f"; tolerated {fmt(self.notes)}" if self.notes else "")


def stable_fraction(key: str) -> float:
    """A hash of `key` mapped to [0, 1): deterministic across runs and machines."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64


def holdout_split(identity: str, test_fraction: float) -> str:
    """'test' for a stable `test_fraction` of identities (whole identities, no leakage)."""
    return "test" if stable_fraction(identity) < test_fraction else "train"
