"""Rendering evaluation rows: a markdown table, a CSV and metric-vs-step plots."""

from __future__ import annotations

import csv
import io
import re

from jaxtalk import fs
from jaxtalk.evaluate import results

_KEYS = ("run_name", "step", "test_set", "mode")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "" if value is None else str(value)


def with_values(rows: list[dict]) -> list[dict]:
    """Rows with at least one metric value (a cross-reenactment cell asked only for PSNR
    has none: recorded so a rerun skips it, not worth a table row)."""
    return [row for row in rows if results.metric_columns([row])]


def markdown_table(rows: list[dict]) -> str:
    rows = with_values(rows)
    columns = list(_KEYS) + results.metric_columns(rows) + ["n_examples"]
    header = ["run" if c == "run_name" else c.replace("_", " ") for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def _write_atomic(path: str, write, binary: bool = False) -> None:
    # Several sweep processes may render at once: each replaces the file whole.
    buffer = io.BytesIO() if binary else io.StringIO(newline="")
    write(buffer)
    data = buffer.getvalue()
    fs.write_bytes(path, data if binary else data.encode("utf-8"))


def write_csv(rows: list[dict], path: str) -> None:
    rows = with_values(rows)
    columns = (
        ["run"]
        + list(_KEYS)
        + ["split", "data_dir"]
        + results.metric_columns(rows)
        + ["n_examples"]
    )

    def write(f):
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    _write_atomic(path, write)


def write_markdown(rows: list[dict], path: str, notes: list[str] = ()) -> None:
    text = markdown_table(rows) + "\n" + "".join(f"\n{n}" for n in notes)
    _write_atomic(path, lambda f: f.write(text + ("\n" if notes else "")))


def plot_metrics(rows: list[dict], out_dir: str) -> list[str]:
    """`<metric>_vs_step.png` per metric column, one line per (run, test set, mode)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    paths = []
    for column in results.metric_columns(rows):
        lines: dict[str, list[tuple[int, float]]] = {}
        for row in rows:
            if isinstance(row.get(column), (int, float)):
                label = f"{row['run_name']} / {row['test_set']} / {row['mode']}"
                lines.setdefault(label, []).append((row["step"], row[column]))
        if not lines:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, points in sorted(lines.items()):
            steps, values = zip(*sorted(points))
            ax.plot(steps, values, marker="o", label=label)
        ax.set_xlabel("step")
        ax.set_ylabel(column)
        ax.set_title(f"{column} vs step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = fs.join(out_dir, f"{re.sub(r'[^A-Za-z0-9_.-]', '_', column)}_vs_step.png")
        _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=100), binary=True)
        plt.close(fig)
        paths.append(path)
    return paths
