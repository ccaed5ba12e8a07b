"""Helpers the dataset parsers share: reading metadata text, checked numbers, guarded entries,
finding source videos, time stamps, split assignment.

Every parser treats its metadata as untrusted: text is read as UTF-8 with a byte-order mark
tolerated and undecodable bytes replaced, numbers must be finite and non-negative, and each
entry (a line, a file, a JSON item) is parsed under `guarded`, so one bad entry is one counted
rejection in the `SkipReport` and never aborts the parse. Only a metadata source that cannot
be read at all (a missing file, an unreadable zip or JSON document) raises `MetadataError`.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import re
from typing import Callable, TypeVar

from data_pipelines.clip_spec import SkipReport, holdout_split
from jaxtalk.errors import InputError, one_line

VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".avi", ".mov")
ENCODING = "utf-8-sig"  # a byte-order mark (Windows editors) is dropped, not read as text
NON_FINITE = "non-finite value"

T = TypeVar("T")


class MetadataError(InputError):
    """A dataset's metadata cannot be read at all; the message names the file and the reason."""


class MissingMetadataError(MetadataError, FileNotFoundError):
    """The metadata files a parser needs are not there."""


class Rejected(ValueError):
    """One metadata entry is unusable; `reason` is what the `SkipReport` counts."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def guarded(report: SkipReport, where: str, fallback: str, fn: Callable[..., T], *args) -> T | None:
    """`fn(*args)`, or None with one counted rejection when the entry it parses is unusable.

    `Rejected` counts its own reason; any other exception (a missing key, a wrong type, a
    value that does not parse) counts `fallback`, with the exception in the example.
    """
    try:
        return fn(*args)
    except Rejected as e:
        report.skip(e.reason, f"{where} ({one_line(e.detail, 120)})" if e.detail else where)
    except MetadataError as e:  # the entry's own file (`read_text`)
        report.skip("unreadable file", one_line(e, 160))
    except Exception as e:  # whatever one entry holds, it loses only that entry
        report.skip(fallback, f"{where} ({type(e).__name__}: {one_line(e, 120)})")
    return None


def checked(value: float, what: str) -> float:
    """`value` when finite and >= 0; else `Rejected` ("non-finite value" / "negative <what>")."""
    if not math.isfinite(value):
        raise Rejected(NON_FINITE, f"{what} {value}")
    if value < 0:
        raise Rejected(f"negative {what}", str(value))
    return value


def number(token: str, what: str) -> float:
    """A finite, non-negative number from a text token ('nan', 'inf', '1e999' are rejected)."""
    return checked(float(token), what)


def integer(token: str, what: str) -> int:
    """A finite, non-negative whole number from a text token ('0042' -> 42)."""
    value = number(token, what)
    if not value.is_integer():
        raise ValueError(f"{what} {token!r} is not a whole number")
    return int(value)


def json_number(value: object, what: str) -> float:
    """A finite, non-negative JSON number; a string, bool, null or container is rejected."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected("wrong JSON type", f"{what} is {type(value).__name__}, not a number")
    return checked(float(value), what)


def json_object(value: object, what: str) -> dict:
    """`value` when it is a JSON object; else `Rejected("wrong JSON type")`."""
    if not isinstance(value, dict):
        raise Rejected("wrong JSON type", f"{what} is {type(value).__name__}, not an object")
    return value


def read_text(path: str) -> str:
    """A metadata text file, BOM dropped and undecodable bytes replaced (counted where used);
    `MetadataError` if it cannot be read."""
    try:
        with open(path, encoding=ENCODING, errors="replace") as f:
            return f.read()
    except OSError as e:
        raise MetadataError(f"{path}: cannot read ({e.strerror or e})") from None


def decode(data: bytes) -> str:
    """Metadata bytes (a zip member) as text, the same way `read_text` reads a file."""
    return data.decode(ENCODING, "replace")


def split_lines(text: str) -> list[str]:
    """Lines split on \\n, \\r\\n or \\r only (as files are read), not on the other Unicode
    breaks `str.splitlines` knows, so a garbage byte sequence never becomes two lines."""
    return re.split(r"\r\n|\r|\n", text)


def read_lines(path: str) -> list[tuple[int, list[str]]]:
    """(line number, whitespace tokens) of every non-blank line."""
    lines = split_lines(read_text(path))
    return [(i, line.split()) for i, line in enumerate(lines, 1) if line.strip()]


def find_video(manual_dir: str, name: str, subdirs: tuple[str, ...] = ("videos", "")) -> str | None:
    """`<manual_dir>/<subdir>/<name>.<ext>` for the first subdir and extension that exists."""
    for sub in subdirs:
        for ext in VIDEO_EXTS:
            path = os.path.join(manual_dir, sub, name + ext)
            if os.path.isfile(path):
                return path
    return None


def parse_timestamp(text: str) -> float:
    """'MM:SS', 'H:MM:SS' or 'SS(.s)' -> seconds; ValueError if malformed, `Rejected` if a part
    is not finite or negative."""
    parts = text.strip().split(":")
    if not 1 <= len(parts) <= 3 or any(not p for p in parts):
        raise ValueError(f"bad time {text!r}")
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + number(p, "time")
    return seconds


def split_for(identity: str, test_ids: set[str] | None, test_fraction: float) -> str:
    """'test' for listed identities/videos, else a stable hash hold-out of `test_fraction`."""
    if test_ids is not None:
        return "test" if identity in test_ids else "train"
    return holdout_split(identity, test_fraction)


def load_id_list(path: str | None) -> set[str] | None:
    if not path:
        return None
    lines = split_lines(read_text(path))
    return {os.path.splitext(line.strip())[0] for line in lines if line.strip()}


def find_files(manual_dir: str, extensions: tuple[str, ...]) -> list[str]:
    """Every file under `manual_dir` whose name ends in one of `extensions` (any case;
    hidden folders and files skipped), sorted."""
    found = []
    for root, dirs, files in os.walk(manual_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            os.path.join(root, f)
            for f in sorted(files)
            if not f.startswith(".") and f.lower().endswith(extensions)
        ]
    return found


# How a folder of your own files (`prepare videos` / `prepare images`) names identities.
IDENTITIES = ("file", "folder")


def folder_entries(
    paths: list[str],
    manual_dir: str,
    test_list: str | None,
    test_fraction: float,
    identity: str,
    kind: str = "files",
) -> list[tuple[str, str, str]]:
    """(path, split, identity) of the files (`kind`, for the error) found under
    `manual_dir`. A file's key is its path relative to `manual_dir` without the extension;
    its identity the key (`file`) or the key's folder (`folder`); `test_list` names test
    keys / identities, else a stable hash holds out `test_fraction` of them."""
    if not paths:
        raise MissingMetadataError(f"{manual_dir}: no {kind} in it or below")
    if identity not in IDENTITIES:
        raise MetadataError(f"identity={identity!r}: use one of {', '.join(IDENTITIES)}")
    test_ids = load_id_list(test_list)
    out = []
    for path in paths:
        key = os.path.splitext(os.path.relpath(path, manual_dir).replace(os.sep, "/"))[0]
        who = key if identity == "file" else (os.path.dirname(key) or key)
        out.append((path, split_for(key, test_ids, test_fraction), who))
    return out


def map_jobs(fn: Callable, jobs: list, num_workers: int, chunksize: int = 1) -> list:
    """[fn(job) for job in jobs], in `num_workers` processes when that is above 0."""
    if num_workers > 0:
        with concurrent.futures.ProcessPoolExecutor(num_workers) as pool:
            return list(pool.map(fn, jobs, chunksize=chunksize))
    return [fn(job) for job in jobs]
