"""Batch animation: a list of (source, driver, output) jobs, spread over processes and devices.

    jobs = batch.jobs_from_csv("jobs.csv", out_dir)           # source,driving[,out] rows
    jobs = batch.jobs_from_globs("faces/*.png", "talks/*.mp4", out_dir)   # every pair
    summary = batch.run(jobs, make_worker, devices=jax.local_devices(), progress=bar)

Resumable: a job whose output exists is done (outputs are written under a temporary name
and renamed, so an existing file is a finished one) and is skipped. Every process of a
multi-process run takes every `process_count`-th pending job; inside a process one worker
thread per local device builds its own animator under `jax.default_device(device)` (so the
model's weights and every call live on that device) and takes jobs from a shared queue.
Frames are batched inside a job: `Animator.animate` renders `chunk` frames per device call.
A job whose input is unusable (an `InputError`: a missing or corrupt file, no face) is
counted and reported at the end; any other error stops the batch.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import io
import os
import queue
import threading
from typing import Any, Callable, Sequence

from jaxtalk import fs
from jaxtalk.errors import InputError, one_line


class BatchListError(InputError):
    """A job list (CSV or globs) that cannot be used; the message names the file or flag."""


@dataclasses.dataclass(frozen=True)
class Job:
    source: str  # portrait image
    driving: str  # what drives it: a video, or speech for audio-driven models
    out: str  # the .mp4 to write


def _stem(path: str) -> str:
    return os.path.splitext(fs.basename(path))[0]


def default_output(source: str, driving: str, out_dir: str) -> str:
    """<out_dir>/<source stem>__<driving stem>.mp4"""
    return fs.join(out_dir, f"{_stem(source)}__{_stem(driving)}.mp4")


def _check_unique(jobs: list[Job], where: Sequence[str]) -> list[Job]:
    seen: dict[str, str] = {}
    for job, w in zip(jobs, where):
        if job.out in seen:
            raise BatchListError(f"{w} and {seen[job.out]} both write {job.out}")
        seen[job.out] = w
    return jobs


def jobs_from_csv(path: str, out_dir: str | None = None) -> list[Job]:
    """Rows `source,driving[,out]` (a first row `source,driving,...` is a header; blank lines
    and lines starting with '#' are skipped). Relative paths are relative to the CSV's
    folder; a row without `out` writes `default_output(...)` in `out_dir`."""
    try:
        text = fs.read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        raise BatchListError(f"{path}: cannot read the job list ({one_line(e, 120)})") from None
    base = fs.dirname(path)

    def resolve(p: str) -> str:
        p = p.strip()
        return p if fs.is_remote(p) or os.path.isabs(p) else fs.join(base, p)

    jobs, where = [], []
    for lineno, row in enumerate(csv.reader(io.StringIO(text)), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if lineno == 1 and row[0].strip().lower() == "source":
            continue
        if len(row) not in (2, 3) or not row[0].strip() or not row[1].strip():
            raise BatchListError(
                f"{path}:{lineno}: expected source,driving[,out], got {one_line(','.join(row), 80)!r}"
            )
        source, driving = resolve(row[0]), resolve(row[1])
        if len(row) == 3 and row[2].strip():
            out = resolve(row[2])
        elif out_dir:
            out = default_output(source, driving, out_dir)
        else:
            raise BatchListError(f"{path}:{lineno}: no output column, and no --out_dir given")
        jobs.append(Job(source, driving, out))
        where.append(f"{path}:{lineno}")
    if not jobs:
        raise BatchListError(f"{path}: no jobs (rows source,driving[,out])")
    return _check_unique(jobs, where)


def _expand(patterns: str, flag: str) -> list[str]:
    """Comma-separated globs (local files; recursive '**' allowed) -> sorted file paths."""
    found = []
    for pattern in (p.strip() for p in patterns.split(",")):
        hits = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        if not hits:
            raise BatchListError(f"--{flag}={pattern}: matches no file")
        found += [h for h in hits if h not in found]
    return found


def jobs_from_globs(sources: str, drivings: str, out_dir: str) -> list[Job]:
    """Every source with every driver, written to `default_output(...)` in `out_dir`."""
    if not out_dir:
        raise BatchListError("--sources/--drivings need --out_dir (where the videos go)")
    pairs = [(s, d) for s in _expand(sources, "sources") for d in _expand(drivings, "drivings")]
    jobs = [Job(s, d, default_output(s, d, out_dir)) for s, d in pairs]
    return _check_unique(jobs, [f"{s} x {d}" for s, d in pairs])


def pending(jobs: list[Job], process_index: int = 0, process_count: int = 1) -> list[Job]:
    """This process's share of the jobs whose output does not exist yet."""
    return [j for j in jobs if not fs.exists(j.out)][process_index::process_count]


def run(
    jobs: list[Job],
    make_worker: Callable[[Any], Callable[[Job], int]],
    devices: Sequence[Any],
    progress: Callable[[Job, int], None] | None = None,
) -> dict[str, Any]:
    """Runs `jobs` on one thread per device: `make_worker(device)` (called in that thread,
    under `jax.default_device(device)`) returns `work(job) -> frames written`.

    Returns {"written", "frames", "failed": {reason: count}, "examples", "per_device"}."""
    import jax

    todo: queue.SimpleQueue = queue.SimpleQueue()
    for job in jobs:
        todo.put(job)
    lock = threading.Lock()
    summary: dict[str, Any] = {
        "written": 0,
        "frames": 0,
        "failed": collections.Counter(),
        "examples": [],
        "per_device": collections.Counter(),
    }
    errors: list[BaseException] = []

    def loop(device) -> None:
        try:
            with jax.default_device(device):
                work = make_worker(device)
                while not errors:
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        frames = work(job)
                    except InputError as e:  # this job's input: counted, the batch goes on
                        with lock:
                            summary["failed"][type(e).__name__] += 1
                            summary["examples"].append(f"{job.out}: {one_line(e, 160)}")
                        frames = None
                    with lock:
                        if frames is not None:
                            summary["written"] += 1
                            summary["frames"] += frames
                            summary["per_device"][str(device)] += 1
                        if progress:
                            progress(job, frames or 0)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(d,), daemon=True) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    summary["failed"] = dict(summary["failed"])
    summary["per_device"] = dict(summary["per_device"])
    return summary


__all__ = [
    "BatchListError",
    "Job",
    "default_output",
    "jobs_from_csv",
    "jobs_from_globs",
    "pending",
    "run",
]
