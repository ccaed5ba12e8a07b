"""Every family's speed benchmarks in one command: one table and one JSON file.

    python benchmarks/suite.py --quick --out=bench.json    # CPU shapes (minutes on 2 cores)
    python benchmarks/suite.py --out=bench.json            # accelerator shapes (< 8 min, 1 GPU)
    python benchmarks/suite.py --table=bench.json          # the README's markdown table
    bash benchmarks/gpu/run.sh                             # the prepared run on a lent GPU

Each benchmark script runs in its own process, one after the other (nothing else loads the
machine, and each starts with the whole accelerator's memory), and prints JSON rows
(benchmarks/_timing.emit); the suite collects them, adds each row's fraction of the
machine's matmul peak (benchmarks/peak.py, run first) where the row carries XLA's FLOP
count -- the peak of the row's own framework, device and dtype (_timing.peak_key) -- and
writes them all (after each benchmark, so a run cut short keeps what it measured). With
--lia_reference / --liveportrait_reference (the official checkouts) the LIA and LivePortrait
benchmarks also time the released PyTorch modules in the same process on --torch_device
(auto: the GPU when torch sees one), alternating with jaxtalk (benchmarks/_timing.alternate),
in the torch modes each benchmark's arguments name (the full shapes: LIA inference against
eager fp32 and torch.compile fp16, LivePortrait's frame against eager fp32 and fp16), and
peak.py measures torch.mm's peak there too. A benchmark that fails or runs out of its time
is reported as such, and the rest still run; the suite stops starting new ones when
--budget_s is spent, and with the full shapes a benchmark may run only until what is left
of the budget is what the benchmarks after it are guaranteed (their `share_s`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

from _timing import peak_key

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Bench:
    name: str
    full: tuple[str, ...]  # arguments on an accelerator
    quick: tuple[str, ...]  # arguments on a CPU (--quick)
    reference: str = ""  # which --*_reference flag it takes as --torch_reference
    script: str = ""  # default: <name>.py
    share_s: float = 30  # with the full shapes: seconds kept for it while those before run

    def command(self, quick: bool, references: dict, torch_device: str = "") -> list[str]:
        """Its command line; `torch_device` reaches it where a torch side runs (a benchmark
        given its reference, and the peak when any reference is given)."""
        args = list(self.quick if quick else self.full)
        if references.get(self.reference):
            args.append(f"--torch_reference={references[self.reference]}")
        torch_side = references.get(self.reference) or (
            self.name == "peak" and any(references.values())
        )
        if torch_device and torch_side:
            args.append(f"--torch_device={torch_device}")
        return [sys.executable, os.path.join(HERE, self.script or f"{self.name}.py"), *args]


# The full shapes are sized for one GPU (an H200, 139 GiB) with the torch sides on it too,
# within the 480 s budget: the shares add up to 480 s, and jax's and torch.compile's
# compilations take most of them. Memory, from XLA's buffer assignment of jaxtalk's steps
# (compiled on a CPU): the LIA step at batch 32 in bf16 needs 25 GiB of temporaries, the
# LivePortrait step at batch 8 in fp32 68 GiB, too much beside the release's fp32 step in
# the same process: it runs at 4, the paper recipe's batch per chip.
BENCHES = (
    Bench("peak", (), (), share_s=15),  # first: its machine row decides the mode
    Bench(
        "lia_inference",
        ("--batches=1,8", "--rounds=10", "--torch_modes=eager_fp32,compile_fp16"),
        ("--size=128", "--batches=1,4", "--rounds=3"),
        reference="lia",
        share_s=160,  # two torch.compile max-autotune compilations (batch 1 and 8)
    ),
    Bench(
        "lia_train_step",
        ("--batch=32", "--steps=5", "--dtype=bfloat16"),
        ("--size=128", "--batch=2", "--steps=2"),
        reference="lia",
        share_s=45,
    ),
    Bench(
        "liveportrait_frame",
        ("--batches=1,8", "--rounds=5", "--torch_modes=eager_fp32,eager_fp16"),
        ("--size=128", "--batches=1", "--rounds=3"),
        reference="liveportrait",
        share_s=75,
    ),
    Bench(
        "liveportrait_train_step",
        ("--batch=4", "--rounds=3"),
        ("--size=128", "--batch=1", "--rounds=2"),
        reference="liveportrait",
        share_s=90,
    ),
    Bench(
        "latent_diffusion_unet",
        ("--dtypes=bfloat16", "--iters=3"),
        ("--quick", "--dtypes=float32"),
        share_s=40,
    ),
    Bench(
        "anitalker_stage2_sampling",
        ("--seconds=10", "--steps=50", "--repeats=3"),
        ("--seconds=2", "--steps=5", "--repeats=2"),
        share_s=35,
    ),
    Bench(
        "data_loader",
        ("--sizes=256", "--workers=0,4", "--kinds=pairs", "--dtypes=uint8", "--repeats=2"),
        ("--sizes=64", "--workers=0,2", "--kinds=pairs", "--dtypes=uint8", "--repeats=2"),
        share_s=20,
    ),
)


def run_one(
    bench: Bench, quick: bool, references: dict, timeout: float, torch_device: str = "", log=None
) -> list[dict]:
    """The rows `bench` printed, each tagged with its name; a failure or timeout becomes a
    row saying so (with the end of its output). It runs in its own process group, killed
    whole at the timeout (compile workers and loader processes too, which would otherwise
    hold the GPU or the cores for the next one); `log` (a file) gets all it printed."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        bench.command(quick, references, torch_device),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=os.path.dirname(HERE),
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        error = stderr[-2000:] if proc.returncode else ""
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            stdout, stderr = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a descendant that left the group holds the pipes
            stdout = stderr = ""
        error = f"timed out after {timeout:.0f} s"
    if log is not None:
        log.write(f"==== {bench.name}: {' '.join(proc.args)}\n{stdout}{stderr}\n")
        log.flush()
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
    """Adds `peak_fraction` (achieved GFLOP/s over the matmul peak peak.py measured for the
    row's framework, device and dtype: _timing.peak_key; fp32 when it names none) to each
    row that carries `gflop_per_s`. A row without a measured peak of its own gets none."""
    peaks = {
        peak_key(r): r["gflop_per_s"]
        for r in rows
        if r.get("run") == "matmul_peak" and r.get("benchmark", "peak") == "peak"
    }
    out = []
    for r in rows:
        peak = peaks.get(peak_key(r))
        if peak and "gflop_per_s" in r and r.get("run") != "matmul_peak":
            r = {**r, "peak_fraction": round(r["gflop_per_s"] / peak, 3)}
        out.append(r)
    return out


def timeout_for(benches: list[Bench], index: int, left: float, timeout: float, quick: bool):
    """How long benches[index] (of those this run starts) may run: `timeout`, within what is
    `left` of the budget; with the full shapes also within what is left once the later
    benchmarks' shares are kept (never below its own share)."""
    if not quick:
        kept = sum(b.share_s for b in benches[index + 1 :])
        left = min(left, max(left - kept, benches[index].share_s))
    return min(timeout, left)


# The table's columns: a row's case (what was run) and its figures, by the first key present.
CASE_KEYS = ("run", "bench", "variant", "framework", "mode", "torch_device", "dtype", "batch",
             "size", "kind", "workers", "frames")  # fmt: skip
BARE = ("run", "bench", "framework", "mode", "torch_device")  # shown without their key
FIGURES = (
    ("ms", ("ms", "ms_per_frame", "ms_per_frame_median", "s_per_step", "s_per_call")),
    ("rate", ("examples_per_s", "frames_per_s", "video_s_per_s")),
    ("per core", ("examples_per_s_per_core",)),
    ("GFLOP/s", ("gflop_per_s",)),
    ("of peak", ("peak_fraction", "mfu")),
    ("x release", ("speedup_vs_release", "jax_speedup")),  # a torch row: jaxtalk x it
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
        case = " ".join(f"{r[k]}" if k in BARE else f"{k} {r[k]}" for k in CASE_KEYS if k in r)
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
    ap.add_argument("--torch_device", default="auto", help="auto|cpu|cuda: the torch sides'")
    ap.add_argument("--log", default="", help="write everything each benchmark printed here")
    ap.add_argument("--table", default="", help="print the markdown table of a saved run")
    args = ap.parse_args()
    if args.table:
        with open(args.table) as f:
            print(table(json.load(f)["rows"]), end="")
        return
    references = {"lia": args.lia_reference, "liveportrait": args.liveportrait_reference}
    names = set(args.only.split(",")) - {""}
    start, rows, quick = time.perf_counter(), [], args.quick

    def save():
        result = {"quick": quick, "wall_s": round(time.perf_counter() - start, 1), "rows": rows}
        if args.out:
            with open(args.out, "w") as f:
                json.dump({**result, "rows": with_peak_fraction(rows)}, f, indent=1)

    benches = [b for b in BENCHES if not names or b.name in names or b.name == "peak"]
    log = open(args.log, "w") if args.log else None
    for index, bench in enumerate(benches):
        left = args.budget_s - (time.perf_counter() - start)
        if left <= 0:
            rows.append(
                {"benchmark": bench.name, "error": "not started: the suite's budget is spent"}
            )
            continue
        print(f"[suite] {bench.name} ...", file=sys.stderr, flush=True)
        timeout = timeout_for(benches, index, left, args.timeout_s, quick)
        rows += run_one(bench, quick, references, timeout, args.torch_device, log)
        if bench.name == "peak" and not (args.quick or args.full):
            quick = next((r["backend"] == "cpu" for r in rows if "backend" in r), True)
        save()
    save()
    print(table(with_peak_fraction(rows)), end="")


if __name__ == "__main__":
    main()
