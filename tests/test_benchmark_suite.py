"""benchmarks/suite.py: collecting the scripts' rows, failures and timeouts kept as rows (a
timed-out script's whole process group ended), the budget's shares, each row's fraction of
the measured peak of its own framework, device and dtype, and the README table; and what
the comparisons use (benchmarks/_timing.py): the alternating timer with any number of
sides, the torch modes and devices (torch itself only where it is installed)."""

import importlib.util
import json
import os
import sys
import time
import types

import pytest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")


def load(name):
    sys.path.insert(0, BENCHMARKS)  # the scripts import their siblings (_timing)
    try:
        spec = importlib.util.spec_from_file_location(name, os.path.join(BENCHMARKS, f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(BENCHMARKS)


suite = load("suite")
timing = load("_timing")


def script(tmp_path, name, body):
    path = tmp_path / f"{name}.py"
    path.write_text(body)
    return suite.Bench(name, (), ("--quick_flag",), script=str(path))


def test_rows_are_collected_tagged_and_other_output_ignored(tmp_path):
    bench = script(
        tmp_path,
        "ok",
        "import json, sys\n"
        "print('compiling...')\n"
        "print(json.dumps({'run': 'x', 'args': sys.argv[1:], 'ms': 2.5}))\n"
        "print('[1, 2]')\n",
    )
    rows = suite.run_one(bench, quick=True, references={}, timeout=60)
    assert rows[0] == {"benchmark": "ok", "run": "x", "args": ["--quick_flag"], "ms": 2.5}
    assert rows[1]["benchmark"] == "ok" and "wall_s" in rows[1] and "error" not in rows[1]
    assert len(rows) == 2


def test_a_failing_or_slow_benchmark_is_a_row_and_keeps_what_it_printed(tmp_path):
    failing = script(
        tmp_path,
        "bad",
        "import json\nprint(json.dumps({'run': 'before'}))\nraise SystemExit('no GPU here')\n",
    )
    rows = suite.run_one(failing, quick=True, references={}, timeout=60)
    assert rows[0]["run"] == "before"
    assert "no GPU here" in rows[1]["error"]
    slow = script(tmp_path, "slow", "import time\ntime.sleep(30)\n")
    t0 = time.perf_counter()
    rows = suite.run_one(slow, quick=True, references={}, timeout=1)
    assert time.perf_counter() - t0 < 20
    assert rows == [
        {"benchmark": "slow", "error": "timed out after 1 s", "wall_s": rows[0]["wall_s"]}
    ]


def _gone(pid) -> bool:
    """The process has ended (no longer listed, or a zombie nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_a_timed_out_benchmark_is_ended_with_its_children_and_logged(tmp_path):
    pid_file = tmp_path / "child.pid"
    bench = script(
        tmp_path,
        "spawner",
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
        'print(\'{"run": "started"}\', flush=True)\n'
        "time.sleep(60)\n",
    )
    log = tmp_path / "benches.log"
    with open(log, "w") as f:
        rows = suite.run_one(bench, quick=True, references={}, timeout=3, log=f)
    assert rows[0] == {"benchmark": "spawner", "run": "started"}
    assert rows[1]["error"] == "timed out after 3 s"
    child = int(pid_file.read_text())
    deadline = time.time() + 10
    while not _gone(child) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone(child)
    text = log.read_text()
    assert text.startswith("==== spawner: ") and '{"run": "started"}' in text


def test_reference_checkouts_and_the_torch_device_reach_the_scripts_that_take_them():
    bench = suite.Bench("lia_inference", ("--a",), ("--b",), reference="lia")
    command = bench.command(quick=False, references={"lia": "/ref/LIA", "liveportrait": ""})
    assert command[1].endswith(os.path.join("benchmarks", "lia_inference.py"))
    assert command[2:] == ["--a", "--torch_reference=/ref/LIA"]
    assert bench.command(quick=True, references={"lia": ""})[2:] == ["--b"]
    references = {"lia": "/ref/LIA", "liveportrait": ""}
    assert bench.command(False, references, "cuda")[2:] == [
        "--a", "--torch_reference=/ref/LIA", "--torch_device=cuda"
    ]  # fmt: skip
    assert bench.command(False, {"lia": ""}, "cuda")[2:] == ["--a"]  # no torch side
    peak = suite.Bench("peak", (), ())
    assert peak.command(False, references, "auto")[2:] == ["--torch_device=auto"]
    assert peak.command(False, {"lia": "", "liveportrait": ""}, "auto")[2:] == []
    loader = suite.Bench("data_loader", ("--x",), ())
    assert loader.command(False, references, "cuda")[2:] == ["--x"]


def test_full_shapes_keep_the_later_benchmarks_shares():
    benches = [suite.Bench(n, (), (), share_s=s) for n, s in (("a", 20), ("b", 100), ("c", 50))]
    # 400 s left: b may run until only c's 50 s are left; a until b's and c's 150 s are
    assert suite.timeout_for(benches, 0, 400, 300, quick=False) == 250
    assert suite.timeout_for(benches, 1, 400, 300, quick=False) == 300  # the per-run cap
    assert suite.timeout_for(benches, 1, 120, 300, quick=False) == 100  # never below its share
    assert suite.timeout_for(benches, 1, 60, 300, quick=False) == 60  # nor past the budget
    assert suite.timeout_for(benches, 2, 70, 300, quick=False) == 70
    assert suite.timeout_for(benches, 0, 400, 300, quick=True) == 300  # CPU shapes: no shares
    assert sum(b.share_s for b in suite.BENCHES) <= 480  # the default budget holds them all


def test_peak_fraction_by_dtype_and_the_table():
    rows = [
        {"benchmark": "peak", "machine": "x86_64", "cpus": 2, "backend": "cpu", "device": "TFRT_CPU_0",
         "jax": "0.0", "loadavg": [0.1, 0.2, 0.3]},
        {"benchmark": "peak", "run": "matmul_peak", "dtype": "float32", "gflop_per_s": 100.0},
        {"benchmark": "peak", "run": "matmul_peak", "dtype": "bfloat16", "gflop_per_s": 400.0},
        {"benchmark": "lia", "run": "jax_full", "batch": 1, "ms_per_frame": 9.0, "gflop_per_s": 50.0,
         "speedup_vs_release": 2.5},
        {"benchmark": "unet", "bench": "step", "dtype": "bfloat16", "s_per_step": 0.5,
         "gflop_per_s": 100.0},
        {"benchmark": "loader", "run": "loader", "workers": 2, "examples_per_s": 900,
         "examples_per_s_per_core": 450},
        {"benchmark": "lia", "wall_s": 3.0},
        {"benchmark": "dead", "error": "Traceback\nRuntimeError: out of memory\n---\nFor simplicity"},
    ]  # fmt: skip
    rows = suite.with_peak_fraction(rows)
    assert rows[3]["peak_fraction"] == 0.5  # no dtype: fp32's peak
    assert "framework" not in rows[1] and timing.peak_key(rows[1]) == ("jax", "float32")
    assert rows[4]["peak_fraction"] == 0.25
    assert "peak_fraction" not in rows[1] and "peak_fraction" not in rows[5]
    text = suite.table(rows)
    assert text.startswith("Machine: x86_64, TFRT_CPU_0 (cpu, 2 CPUs)")
    lines = text.splitlines()
    assert "| lia | jax_full batch 1 | 9 |  |  | 50 | 0.5 | 2.5 |" in lines
    assert "| unet | step dtype bfloat16 | 500 |  |  | 100 | 0.25 |  |" in lines
    assert "| loader | loader workers 2 |  | 900 | 450 |  |  |  |" in lines
    assert "| dead | failed: RuntimeError: out of memory |" in lines
    assert not any("wall_s" in line or "| peak | x86_64" in line for line in lines)


def test_each_row_against_the_peak_of_its_framework_device_and_dtype():
    rows = [
        {"benchmark": "peak", "run": "matmul_peak", "dtype": "float32", "gflop_per_s": 400.0},
        {"benchmark": "peak", "run": "matmul_peak", "dtype": "bfloat16", "gflop_per_s": 800.0},
        {"benchmark": "peak", "run": "matmul_peak", "framework": "torch", "torch_device": "cuda",
         "dtype": "float32", "tf32": True, "gflop_per_s": 200.0},
        {"benchmark": "peak", "run": "matmul_peak", "framework": "torch", "torch_device": "cuda",
         "dtype": "float16", "gflop_per_s": 1000.0},
        # a script's own peak measurement: not the suite's
        {"benchmark": "lia", "run": "matmul_peak", "dtype": "float32", "gflop_per_s": 1.0},
        {"benchmark": "lia", "run": "jax_lia_full", "batch": 8, "ms_per_frame": 2.0,
         "gflop_per_s": 100.0, "speedup_vs_release": 1.5},
        {"benchmark": "lia", "run": "torch_release_full", "torch_device": "cuda",
         "mode": "eager_fp32", "dtype": "float32", "batch": 8, "ms_per_frame": 3.0,
         "gflop_per_s": 50.0, "jax_speedup": 1.5},
        {"benchmark": "lia", "run": "torch_release_full", "torch_device": "cuda",
         "mode": "compile_fp16", "dtype": "float16", "batch": 8, "ms_per_frame": 1.0,
         "gflop_per_s": 250.0, "jax_speedup": 0.5},
        {"benchmark": "lia", "run": "torch_release_full", "torch_device": "cpu",
         "mode": "eager_fp32", "dtype": "float32", "batch": 8, "ms_per_frame": 90.0,
         "gflop_per_s": 5.0, "jax_speedup": 45.0},
        {"benchmark": "unet", "bench": "step", "dtype": "bfloat16", "s_per_step": 0.5,
         "gflop_per_s": 200.0},
    ]  # fmt: skip
    rows = suite.with_peak_fraction(rows)
    assert rows[5]["peak_fraction"] == 0.25  # jax, fp32
    assert rows[6]["peak_fraction"] == 0.25  # torch on cuda, fp32 (TF32 as torch runs it)
    assert rows[7]["peak_fraction"] == 0.25  # torch on cuda, fp16
    assert "peak_fraction" not in rows[8]  # no torch peak was measured on the CPU
    assert rows[9]["peak_fraction"] == 0.25  # jax, bf16
    assert not any("peak_fraction" in r for r in rows[:5])
    lines = suite.table(rows).splitlines()
    assert "| peak | matmul_peak torch cuda dtype float16 |  |  |  | 1000 |  |  |" in lines
    assert "| lia | jax_lia_full batch 8 | 2 |  |  | 100 | 0.25 | 1.5 |" in lines
    assert (
        "| lia | torch_release_full compile_fp16 cuda dtype float16 batch 8 | 1 |  |  | 250 "
        "| 0.25 | 0.5 jax_speedup |" in lines
    )


def test_the_table_of_a_saved_run(tmp_path, capsys, monkeypatch):
    saved = tmp_path / "bench.json"
    rows = [{"benchmark": "lia", "run": "jax_full", "batch": 8, "ms_per_frame": 1.25}]
    saved.write_text(json.dumps({"quick": True, "wall_s": 1, "rows": rows}))
    monkeypatch.setattr(sys, "argv", ["suite.py", f"--table={saved}"])
    suite.main()
    assert "| lia | jax_full batch 8 | 1.25 |" in capsys.readouterr().out


def test_the_committed_runs_still_render(capsys, monkeypatch):
    saved = os.path.join(BENCHMARKS, "results", "cpu_2core_quick.json")
    monkeypatch.setattr(sys, "argv", ["suite.py", f"--table={saved}"])
    suite.main()
    lines = capsys.readouterr().out.splitlines()
    assert (
        "| lia_inference | jax_lia_full batch 1 | 461.5 | 2.17 frames_per_s |  | 148 | 0.714 "
        "| 1.9 |" in lines
    )
    assert (
        "| liveportrait_frame | torch eager_fp32 cpu dtype float32 batch 1 size 128 | 1817 | "
        "0.55 frames_per_s |  | 164.3 | 0.869 | 0.88 jax_speedup |" in lines
    )


def test_a_run_writes_its_json_after_each_benchmark(tmp_path, capsys, monkeypatch):
    peak = script(
        tmp_path,
        "peak",
        "import json\n"
        "print(json.dumps({'machine': 'x', 'backend': 'cpu', 'device': 'cpu'}))\n"
        "print(json.dumps({'run': 'matmul_peak', 'dtype': 'float32', 'gflop_per_s': 10.0}))\n",
    )
    ok = script(
        tmp_path,
        "ok",
        "import json\nprint(json.dumps({'run': 'x', 'ms': 1.0, 'gflop_per_s': 5.0}))\n",
    )
    dead = script(tmp_path, "dead", "raise SystemExit('RuntimeError: broken')\n")
    monkeypatch.setattr(suite, "BENCHES", (peak, ok, dead))
    out = tmp_path / "run.json"
    monkeypatch.setattr(sys, "argv", ["suite.py", "--quick", f"--out={out}"])
    suite.main()
    saved = json.loads(out.read_text())
    assert saved["quick"] is True
    assert [r["benchmark"] for r in saved["rows"]] == ["peak"] * 3 + ["ok"] * 2 + ["dead"]
    assert saved["rows"][3]["peak_fraction"] == 0.5
    assert "| ok | x | 1 |  |  | 5 | 0.5 |  |" in capsys.readouterr().out.splitlines()


@pytest.fixture
def clock(monkeypatch):
    """The timing module's clock, advanced only by the sides below: the times are exact, not
    a loaded machine's sleeps (a 5 ms margin between two sleeps flipped under a busy test run)."""
    now = [0.0]
    monkeypatch.setattr(timing, "time", types.SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def _sides(order: list, clock: list, **seconds):
    """{name: a call that takes its seconds on `clock` and notes its name in `order`}."""

    def side(name, s):
        def call():
            order.append(name)
            clock[0] += s

        return call

    return {name: side(name, s) for name, s in seconds.items()}


def test_alternate_takes_turns_and_reports_the_per_round_ratio(clock):
    order = []
    out = timing.alternate(_sides(order, clock, slow=0.02, fast=0.005), rounds=3)
    assert order == ["slow", "fast"] * 4  # one warm-up call each, then both per round
    assert out["slow"]["rounds"] == out["fast"]["rounds"] == 3
    for key in ("min_s", "median_s", "max_s"):
        assert out["slow"][key] == pytest.approx(0.02)
    assert out["ratio"]["median"] == pytest.approx(4.0)
    assert out["ratio"]["min"] <= out["ratio"]["median"] <= out["ratio"]["max"]
    assert out["ratios"] == {"fast": out["ratio"]}
    alone = timing.alternate(_sides(order, clock, one=0), rounds=2)
    assert "ratio" not in alone and "ratios" not in alone


def test_alternate_with_more_sides_gives_the_first_against_each_other(clock):
    order, times = [], {}
    sides = _sides(order, clock, jax=0.01, eager=0.03, compiled=0.005)
    out = timing.alternate(sides, rounds=3, times=times)
    assert order == ["jax", "eager", "compiled"] * 4
    assert set(out["ratios"]) == {"eager", "compiled"} and "ratio" not in out
    assert out["ratios"]["eager"]["max"] < 1 < out["ratios"]["compiled"]["min"]
    assert [len(t) for t in times.values()] == [3, 3, 3]
    assert out["ratios"]["eager"] == timing.ratio(times["jax"], times["eager"])
    assert timing.ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == {"median": 3.0, "min": 2.0, "max": 4.0}
    fast = timing.speedup({"median": 0.5, "min": 0.25, "max": 1.0})
    assert fast == {"speedup_vs_release": 2.0, "speedup_min": 1.0, "speedup_max": 4.0}
    assert timing.speedup({"median": 2.0, "min": 1.0, "max": 4.0}, *timing.JAX_SPEEDUP) == {
        "jax_speedup": 0.5, "jax_speedup_min": 0.25, "jax_speedup_max": 1.0
    }  # fmt: skip


def test_torch_modes_are_parsed_and_fp16_is_refused_on_the_cpu():
    modes = timing.torch_modes("eager_fp32,compile_fp16,eager_bf16", "cuda")
    assert [(m.name, m.compiled, m.dtype) for m in modes] == [
        ("eager_fp32", False, "float32"),
        ("compile_fp16", True, "float16"),
        ("eager_bf16", False, "bfloat16"),
    ]
    assert [m.dtype for m in timing.torch_modes("compile_fp32,eager_bf16", "cpu")] == [
        "float32", "bfloat16"
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="compile_fp16: fp16 runs on cuda only"):
        timing.torch_modes("eager_fp32,compile_fp16", "cpu")
    with pytest.raises(SystemExit, match="jit_fp16: not one of"):
        timing.torch_modes("jit_fp16", "cuda")
    eager = modes[0]
    assert eager.module(None, "module", "max-autotune") == "module"  # eager: itself
    with eager.autocast(None, "cuda"):  # fp32: no autocast, torch not needed
        pass
    row = {**timing.torch_fields(_FakeTorch, "cuda", modes[1], threads=2), "gflop_per_s": 1.0}
    assert row == {"torch_device": "cuda", "mode": "compile_fp16", "dtype": "float16",
                   "torch": "0.0", "gflop_per_s": 1.0}  # fmt: skip
    assert timing.peak_key(row) == ("torch", "cuda", "float16")
    assert timing.torch_fields(_FakeTorch, "cpu", threads=2)["threads"] == 2


class _FakeTorch:
    __version__ = "0.0"


def test_torch_on_this_machine_peak_and_device():
    torch = pytest.importorskip("torch")
    device = timing.torch_device(torch, "auto")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SystemExit, match="one of auto, cpu, cuda"):
        timing.torch_device(torch, "gpu")
    row = timing.peak_row("float32", 64, 2, torch, "cpu")
    assert row["framework"] == "torch" and row["torch_device"] == "cpu" and row["gflop_per_s"] > 0
    assert timing.peak_key(row) == ("torch", "cpu", "float32")
    calls = []
    call = timing.blocking(torch, "cpu", lambda: calls.append(1))
    call()
    assert calls == [1]


@pytest.mark.parametrize("dtype", ["float32"])
def test_matmul_peak_and_flop_count_are_positive(dtype):
    import jax
    import jax.numpy as jnp

    assert timing.matmul_peak(jnp.dtype(dtype), 64, 2) > 0
    dot = jax.jit(jnp.dot)
    x = jnp.ones((8, 16))
    assert timing.flops(dot, x, x.T) == pytest.approx(2 * 8 * 16 * 8, rel=0.01)
