"""benchmarks/suite.py: collecting the scripts' rows, failures and timeouts kept as rows,
each row's fraction of the measured peak, and the README table; and the alternating timer
the comparisons use (benchmarks/_timing.py)."""

import importlib.util
import json
import os
import sys
import time

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


def test_reference_checkouts_reach_the_scripts_that_take_them():
    bench = suite.Bench("lia_inference", ("--a",), ("--b",), reference="lia")
    command = bench.command(quick=False, references={"lia": "/ref/LIA", "liveportrait": ""})
    assert command[1].endswith(os.path.join("benchmarks", "lia_inference.py"))
    assert command[2:] == ["--a", "--torch_reference=/ref/LIA"]
    assert bench.command(quick=True, references={"lia": ""})[2:] == ["--b"]


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


def test_the_table_of_a_saved_run(tmp_path, capsys, monkeypatch):
    saved = tmp_path / "bench.json"
    rows = [{"benchmark": "lia", "run": "jax_full", "batch": 8, "ms_per_frame": 1.25}]
    saved.write_text(json.dumps({"quick": True, "wall_s": 1, "rows": rows}))
    monkeypatch.setattr(sys, "argv", ["suite.py", f"--table={saved}"])
    suite.main()
    assert "| lia | jax_full batch 8 | 1.25 |" in capsys.readouterr().out


def test_alternate_takes_turns_and_reports_the_per_round_ratio():
    order = []

    def side(name, seconds):
        def call():
            order.append(name)
            time.sleep(seconds)

        return call

    out = timing.alternate({"slow": side("a", 0.02), "fast": side("b", 0.005)}, rounds=3)
    assert order == ["a", "b"] * 4  # one warm-up call each, then a, b per round
    assert out["slow"]["rounds"] == out["fast"]["rounds"] == 3
    assert out["slow"]["min_s"] <= out["slow"]["median_s"] <= out["slow"]["max_s"]
    assert out["slow"]["median_s"] >= 0.02
    assert 1.5 < out["ratio"]["median"] < 6
    assert out["ratio"]["min"] <= out["ratio"]["median"] <= out["ratio"]["max"]
    assert "ratio" not in timing.alternate({"one": side("c", 0)}, rounds=2)


@pytest.mark.parametrize("dtype", ["float32"])
def test_matmul_peak_and_flop_count_are_positive(dtype):
    import jax
    import jax.numpy as jnp

    assert timing.matmul_peak(jnp.dtype(dtype), 64, 2) > 0
    dot = jax.jit(jnp.dot)
    x = jnp.ones((8, 16))
    assert timing.flops(dot, x, x.T) == pytest.approx(2 * 8 * 16 * 8, rel=0.01)
