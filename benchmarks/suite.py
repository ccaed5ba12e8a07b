"""Every family's speed benchmarks in one command: one table and one JSON file.

    python benchmarks/suite.py --quick --out=bench.json    # CPU shapes (minutes on 2 cores)
    python benchmarks/suite.py --out=bench.json            # accelerator shapes (< 8 min, 1 GPU)
    python benchmarks/suite.py --table=bench.json          # the README's markdown table

Each benchmark script runs in its own process, one after the other (nothing else loads the
machine, and each starts with the whole accelerator's memory), and prints JSON rows
(benchmarks/_timing.emit); the suite collects them, adds each row's fraction of the
machine's matmul peak (benchmarks/peak.py, run first) where the row carries XLA's FLOP
count, and writes them all. With --lia_reference / --liveportrait_reference (the official
checkouts) the LIA and LivePortrait benchmarks also time the released PyTorch modules in the
same process, alternating with jaxtalk (benchmarks/_timing.alternate). A benchmark that
fails or runs out of its time is reported as such, and the rest still run; the suite stops
starting new ones when --budget_s is spent.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    full: tuple[str, ...]  # arguments on an accelerator
    quick: tuple[str, ...]  # arguments on a CPU (--quick)
    reference: str = ""  # which --*_reference flag it takes as --torch_reference
    script: str = ""  # default: <name>.py

    def command(self, quick: bool, references: dict) -> list[str]:
        args = list(self.quick if quick else self.full)
        if references.get(self.reference):
            args.append(f"--torch_reference={references[self.reference]}")
        return [sys.executable, os.path.join(HERE, self.script or f"{self.name}.py"), *args]


BENCHES = (
    Bench("peak", (), ()),  # first: its machine row decides the mode
    Bench(
        "lia_inference",
        ("--batches=1,8", "--rounds=20"),
        ("--size=128", "--batches=1,4", "--rounds=3"),
        reference="lia",
    ),
    Bench(
        "lia_train_step",
        ("--batch=64", "--steps=10", "--dtype=bfloat16"),
        ("--size=128", "--batch=2", "--steps=2"),
        reference="lia",
    ),
    Bench(
        "liveportrait_frame",
        ("--batches=1,8", "--rounds=10"),
        ("--size=128", "--batches=1", "--rounds=3"),
        reference="liveportrait",
    ),
    Bench(
        "liveportrait_train_step",
        ("--batch=8", "--rounds=5"),
        ("--size=128", "--batch=1", "--rounds=2"),
        reference="liveportrait",
    ),
    Bench("latent_diffusion_unet", ("--dtypes=float32,bfloat16",), ("--quick", "--dtypes=float32")),
    Bench(
        "anitalker_stage2_sampling",
        ("--seconds=10", "--steps=50", "--repeats=5"),
        ("--seconds=2", "--steps=5", "--repeats=2"),
    ),
    Bench(
        "data_loader",
        ("--sizes=256", "--workers=0,4", "--kinds=pairs", "--dtypes=uint8", "--repeats=2"),
        ("--sizes=64", "--workers=0,2", "--kinds=pairs", "--dtypes=uint8", "--repeats=2"),
    ),
)


def run_one(bench: Bench, quick: bool, references: dict, timeout: float) -> list[dict]:
    """The rows `bench` printed, each tagged with its name; a failure or timeout becomes a
    row saying so (with the end of its output)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            bench.command(quick, references),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=os.path.dirname(HERE),
        )
        stdout, error = proc.stdout, (proc.stderr[-2000:] if proc.returncode else "")
    except subprocess.TimeoutExpired as e:
        stdout, error = e.stdout or "", f"timed out after {timeout:.0f} s"
        stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
    rows = []
    for line in stdout.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append({"benchmark": bench.name, **row})
    wall = round(time.perf_counter() - start, 1)
    if error:
        rows.append({"benchmark": bench.name, "error": error, "wall_s": wall})
    else:
        rows.append({"benchmark": bench.name, "wall_s": wall})
    return rows


def with_peak_fraction(rows: list[dict]) -> list[dict]:
    """Adds `peak_fraction` (achieved GFLOP/s over the measured matmul peak of the row's
    dtype, fp32 when it names none) to each row that carries `gflop_per_s`."""
    peaks = {r["dtype"]: r["gflop_per_s"] for r in rows if r.get("run") == "matmul_peak"}
    out = []
    for r in rows:
        peak = peaks.get(r.get("dtype", "float32"))
        if peak and "gflop_per_s" in r and r.get("run") != "matmul_peak":
            r = {**r, "peak_fraction": round(r["gflop_per_s"] / peak, 3)}
        out.append(r)
    return out


# The table's columns: a row's case (what was run) and its figures, by the first key present.
CASE_KEYS = ("run", "bench", "variant", "dtype", "batch", "size", "kind", "workers", "frames")
FIGURES = (
    ("ms", ("ms", "ms_per_frame", "ms_per_frame_median", "s_per_step", "s_per_call")),
    ("rate", ("examples_per_s", "frames_per_s", "video_s_per_s")),
    ("per core", ("examples_per_s_per_core",)),
    ("GFLOP/s", ("gflop_per_s",)),
    ("of peak", ("peak_fraction", "mfu")),
    ("x release", ("speedup_vs_release",)),
)


def _figure(row: dict, keys) -> str:
    """The first of `keys` the row has, seconds as ms, named when it is not the column's
    first kind (a rate in frames/s rather than examples/s says so)."""
    for key in keys:
        if key in row:
            value = row[key] * 1000 if key.startswith("s_per") else row[key]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            return text if key in keys[:1] or key.startswith(("s_", "ms")) else f"{text} {key}"
    return ""


def _reason(error: str) -> str:
    """A failure's last exception line (what follows a traceback), else its last line."""
    lines = [line.strip() for line in error.splitlines() if line.strip()]
    named = [line for line in lines if "Error" in line.split(":")[0] or "error:" in line]
    return (named or lines or ["?"])[-1][:100]


def table(rows: list[dict]) -> str:
    """The rows as a markdown table (machine rows and per-benchmark wall times left out)."""
    machine = next((r for r in rows if "machine" in r), {})
    head = (
        f"Machine: {machine.get('machine', '?')}, {machine.get('device', '?')} "
        f"({machine.get('backend', '?')}, "
        f"{machine.get('cpus', '?')} CPUs), jax {machine.get('jax', '?')}, load average at start "
        f"{machine.get('loadavg', ['?'])[0]}.\n\n"
    )
    lines = [
        "| benchmark | case | " + " | ".join(name for name, _ in FIGURES) + " |",
        "|" + "---|" * (2 + len(FIGURES)),
    ]
    for r in rows:
        if "machine" in r or ("wall_s" in r and "error" not in r):
            continue
        if "error" in r:
            lines.append(f"| {r['benchmark']} | failed: {_reason(r['error'])} |")
            continue
        case = " ".join(
            f"{r[k]}" if k in ("run", "bench") else f"{k} {r[k]}" for k in CASE_KEYS if k in r
        )
        figures = [_figure(r, keys) for _, keys in FIGURES]
        if any(figures):  # a row of settings (a script's own machine or peak line) is left out
            lines.append(f"| {r['benchmark']} | {case} | {' | '.join(figures)} |")
    return head + "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="CPU shapes (the default on a CPU)")
    mode.add_argument("--full", action="store_true", help="accelerator shapes (default on one)")
    ap.add_argument("--out", default="", help="write the rows here as JSON")
    ap.add_argument("--only", default="", help="comma list of benchmark names")
    ap.add_argument("--budget_s", type=float, default=480, help="start nothing after this")
    ap.add_argument("--timeout_s", type=float, default=300, help="per benchmark")
    ap.add_argument("--lia_reference", default="", help="the official LIA checkout")
    ap.add_argument("--liveportrait_reference", default="", help="the official checkout")
    ap.add_argument("--table", default="", help="print the markdown table of a saved run")
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)["rows"]), end="")
        return
    references = {"lia": args.lia_reference, "liveportrait": args.liveportrait_reference}
    names = set(args.only.split(",")) - {""}
    start, rows, quick = time.perf_counter(), [], args.quick
    for bench in BENCHES:
        if names and bench.name not in names and bench.name != "peak":
            continue
        left = args.budget_s - (time.perf_counter() - start)
        if left <= 0:
            rows.append(
                {"benchmark": bench.name, "error": "not started: the suite's budget is spent"}
            )
            continue
        print(f"[suite] {bench.name} ...", file=sys.stderr, flush=True)
        rows += run_one(bench, quick, references, min(args.timeout_s, left))
        if bench.name == "peak" and not (args.quick or args.full):
            quick = next((r["backend"] == "cpu" for r in rows if "backend" in r), True)
    rows = with_peak_fraction(rows)
    result = {"quick": quick, "wall_s": round(time.perf_counter() - start, 1), "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    print(table(rows), end="")


if __name__ == "__main__":
    main()
