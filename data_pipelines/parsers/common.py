"""Helpers the dataset parsers share: finding source videos, time stamps, split assignment."""

from __future__ import annotations

import os

from data_pipelines.clip_spec import holdout_split

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def find_video(manual_dir: str, name: str, subdirs: tuple[str, ...] = ("videos", "")) -> str | None:
    """`<manual_dir>/<subdir>/<name>.<ext>` for the first subdir and extension that exists."""
    for sub in subdirs:
        for ext in VIDEO_EXTS:
            path = os.path.join(manual_dir, sub, name + ext)
            if os.path.isfile(path):
                return path
    return None


def parse_timestamp(text: str) -> float:
    """'MM:SS', 'H:MM:SS' or 'SS(.s)' -> seconds; ValueError if malformed."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(not p for p in parts):
        raise ValueError(f"bad time {text!r}")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + float(p)
    return seconds


def read_lines(path: str) -> list[tuple[int, list[str]]]:
    """(line number, whitespace tokens) of every non-blank line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        return [(i, line.split()) for i, line in enumerate(f, 1) if line.strip()]


def split_for(identity: str, test_ids: set[str] | None, test_fraction: float) -> str:
    """'test' for listed identities/videos, else a stable hash hold-out of `test_fraction`."""
    if test_ids is not None:
        return "test" if identity in test_ids else "train"
    return holdout_split(identity, test_fraction)


def load_id_list(path: str | None) -> set[str] | None:
    if not path:
        return None
    with open(path) as f:
        return {os.path.splitext(line.strip())[0] for line in f if line.strip()}
