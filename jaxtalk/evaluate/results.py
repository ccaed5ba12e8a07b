"""Sweep results on disk: JSON lines appended per process, merged when read.

A row is one evaluated cell: {run, run_name, step, test_set, split, data_dir, mode,
metrics: [names], <metric columns>..., n_examples, seconds}. Process p of a distributed
sweep appends to `results.p<p>.jsonl` (a single process to `results.jsonl`), so no two
processes write one file; readers take every `results*.jsonl` in the directory.
"""

from __future__ import annotations

import json

from absl import logging

from jaxtalk import fs

# Row fields that are not metric values.
META = (
    "run",
    "run_name",
    "step",
    "test_set",
    "split",
    "data_dir",
    "mode",
    "metrics",
    "n_examples",
    "batch_size",
    "seconds",
    "process",
)


def results_path(out_dir: str, process_index: int = 0, process_count: int = 1) -> str:
    name = "results.jsonl" if process_count == 1 else f"results.p{process_index}.jsonl"
    return fs.join(out_dir, name)


def append(path: str, row: dict) -> None:
    # One write of one line: a killed sweep leaves at most a partial last line (on an object
    # store, the file is rewritten whole with the new line).
    with fs.open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def read(out_dir: str) -> list[dict]:
    rows = []
    for path in fs.glob(out_dir, "results*.jsonl"):
        with fs.open(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    logging.warning(
                        "%s:%d: skipping an unreadable line (interrupted write?)", path, lineno
                    )
    return rows


def cell_key(run: str, step: int, test_set: str, split: str, mode: str) -> tuple:
    return (fs.absolute(run), int(step), test_set, split, mode)


def row_key(row: dict) -> tuple:
    return cell_key(row["run"], row["step"], row["test_set"], row["split"], row["mode"])


def done_metrics(rows: list[dict]) -> dict[tuple, set[str]]:
    """Metric names already computed, per cell key."""
    done: dict[tuple, set[str]] = {}
    for row in rows:
        done.setdefault(row_key(row), set()).update(row.get("metrics", []))
    return done


def merged(rows: list[dict]) -> list[dict]:
    """One row per cell (later rows add or override columns), sorted for display."""
    cells: dict[tuple, dict] = {}
    for row in rows:
        cell = cells.setdefault(row_key(row), {})
        metrics = sorted(set(cell.get("metrics", [])) | set(row.get("metrics", [])))
        cell.update(row)
        cell["metrics"] = metrics
    return [cells[k] for k in sorted(cells, key=lambda k: (k[2], k[3], k[4], k[0], k[1]))]


def metric_columns(rows: list[dict]) -> list[str]:
    return sorted({k for row in rows for k in row if k not in META})
