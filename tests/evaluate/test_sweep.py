"""jaxtalk eval / sweep on a tiny stage-1 run with two checkpoints and a small synthetic set."""

import json
import os
import re
import sys

import pytest

from jaxtalk.evaluate import eval_sets, sweep
from tests import cli_processes
from tests.tasks.helpers import shared_synthetic
from tests.train.helpers import REPO, cli_env


def _jaxtalk(*args, check=True):
    # One CPU device in the child (a batch of 8 needs no simulated mesh there), compiled
    # as the suite compiles.
    proc = cli_processes.run(
        [sys.executable, "-m", "jaxtalk.cli", *args], cwd=REPO, env=cli_env(1), timeout=300
    )
    if check and proc.returncode:
        raise AssertionError(f"jaxtalk {args[0]} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _save_run(workdir, data_dir, steps=(1, 2)):
    """A tiny stage-1 run's checkpoints, in the layout `jaxtalk train` writes, without
    compiling a train step (minutes on a loaded CPU): the initial params at the first step,
    a perturbed EMA generator at the next."""
    import jax
    from flax import linen as nn

    from configs import anitalker_stage1
    from jaxtalk.train import checkpoints
    from jaxtalk.train.grouped_init import grouped_initializers
    from jaxtalk.train.task import get_task

    config = anitalker_stage1.get_config("tiny")
    config.data.data_dir = data_dir
    config.checkpoint.async_save = False
    task = get_task(config)
    batch = next(task.data("train", global_batch_size=8, seed=0, process_index=0, process_count=1))
    grouped = grouped_initializers(task.init)  # as train() initialises
    init = jax.jit(lambda rng, b: nn.unbox(grouped(rng, b)))  # eager init: minutes
    params, model_state = init(jax.random.key(0), batch)
    ckpt = checkpoints.Checkpointer(workdir, config)
    generator = params["generator"]
    for i, step in enumerate(steps):
        ema = jax.tree.map(lambda x: x * (1.0 - 0.05 * i), generator)
        state = {
            "step": step,
            "params": params,
            "ema_params": {"generator": ema},
            "model_state": model_state,
        }
        ckpt.save(step, state, {})
    ckpt.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(run dir with checkpoints at steps 1 and 2, data root holding `synthetic`: the run's
    shared synthetic set, read only)."""
    root = tmp_path_factory.mktemp("sweep")
    (root / "data").mkdir()
    data_dir = str(root / "data" / "synthetic")
    os.symlink(shared_synthetic(tmp_path_factory), data_dir)
    run = str(root / "run")
    _save_run(run, data_dir)
    return run, os.path.dirname(data_dir)


def _sweep(setup, out_dir, metrics=("psnr", "ssim"), **kwargs):
    run, data_root = setup
    lines = []
    summary = sweep.run_sweep(
        [run],
        [eval_sets.parse("synthetic", data_root)],
        list(metrics),
        str(out_dir),
        modes=["self"],
        batch_size=8,
        num_batches=1,
        log=lines.append,
        **kwargs,
    )
    return summary, lines


def test_sweep_writes_table_and_plot_and_resumes(setup, tmp_path):
    summary, lines = _sweep(setup, tmp_path, steps="all")
    assert summary.computed == 2 and "2 cells to compute" in lines[0]
    table = (tmp_path / "results.md").read_text()
    assert table.count("| run | step |") == 1 and "| psnr | ssim |" in table
    assert "| run | 1 | synthetic | self |" in table and "| run | 2 | synthetic | self |" in table
    assert (tmp_path / "psnr_vs_step.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "ssim_vs_step.png").exists()
    assert (tmp_path / "results.csv").read_text().count("\n") == 3  # header + 2 rows
    results = (tmp_path / "results.jsonl").read_text()
    assert len(results.splitlines()) == 2
    assert all(
        0 < json.loads(l)["psnr"] < 100 and json.loads(l)["n_examples"] == 8
        for l in results.splitlines()
    )

    again, lines = _sweep(setup, tmp_path, steps="all")
    assert again.computed == 0 and "0 cells to compute" in lines[0]
    assert (tmp_path / "results.jsonl").read_text() == results


def test_missing_weights_metric_is_skipped_and_others_computed(setup, tmp_path):
    summary, lines = _sweep(
        setup,
        tmp_path,
        metrics=("psnr", "lpips_alex", "ssim"),
        steps="last",
        weights_dir=str(tmp_path / "no_weights"),
    )
    assert list(summary.skipped_metrics) == ["lpips_alex"]
    message = summary.skipped_metrics["lpips_alex"]
    assert "lpips_alex.safetensors" in message and "jaxtalk import" in message
    assert any(l.startswith("skipping metric lpips_alex") for l in lines)
    (row,) = summary.rows
    assert row["step"] == 2 and {"psnr", "ssim"} <= set(row) and "lpips_alex" not in row
    assert "skipped lpips_alex" in (tmp_path / "results.md").read_text()


def test_processes_split_cells_and_render_merges(setup, tmp_path):
    for index in (0, 1):
        summary, _ = _sweep(setup, tmp_path, steps="all", process_index=index, process_count=2)
        assert summary.cells == 1 and summary.computed == 1
    assert {"results.p0.jsonl", "results.p1.jsonl"} <= set(os.listdir(tmp_path))
    assert [r["step"] for r in summary.rows] == [1, 2]  # the second render sees both files


def test_eval_cli_prints_table(setup, tmp_path):
    run, data_root = setup
    out = tmp_path / "eval.json"
    proc = _jaxtalk(
        "eval",
        f"--workdir={run}",
        "--step=1",
        f"--test_set=synthetic={data_root}/synthetic:test",
        "--metrics=psnr,ssim",
        "--modes=self,cross",
        "--num_batches=1",
        f"--json_out={out}",
    )
    assert "| run | step | test set | mode | psnr | ssim | n examples |" in proc.stdout
    assert "| run | 1 | synthetic | self |" in proc.stdout
    assert "ssim is not defined for mode 'cross'" in proc.stdout
    rows = json.loads(out.read_text())["rows"]
    assert [r["mode"] for r in rows] == ["self", "cross"] and "psnr" in rows[0]


def test_eval_cli_bad_workdir(tmp_path):
    proc = _jaxtalk("eval", f"--workdir={tmp_path}", "--test_set=synthetic=/nowhere", check=False)
    assert proc.returncode == 2
    assert "jaxtalk eval: error:" in proc.stderr and "not a prepared data dir" in proc.stderr


def test_clear_errors(setup, tmp_path):
    run, data_root = setup
    with pytest.raises(sweep.SweepError, match="not a training run"):
        sweep.resolve_steps(str(tmp_path))
    with pytest.raises(sweep.SweepError, match="no checkpoints at steps \\[7\\]"):
        sweep.resolve_steps(run, "1,7")
    with pytest.raises(sweep.SweepError, match="unknown metrics \\['psnrr'\\]"):
        _sweep(setup, tmp_path, metrics=("psnrr",))
    with pytest.raises(eval_sets.EvalSetError, match="unknown test set 'mine'"):
        eval_sets.parse(f"mine={data_root}/synthetic")
    with pytest.raises(eval_sets.EvalSetError, match="no split 'val'"):
        eval_sets.parse(f"synthetic={data_root}/synthetic:val")
    with pytest.raises(eval_sets.EvalSetError, match="prepared as 'synthetic'"):
        eval_sets.parse(f"hdtf={data_root}/synthetic")
    assert eval_sets.parse(f"mine={data_root}/synthetic:train").split == "train"
    with pytest.raises(sweep.SweepError, match="no eval mode"):
        sweep.grid(
            sweep.Evaluator({}, batch_size=8, num_batches=1, mesh=sweep.local_mesh(8)),
            [run],
            "last",
            [eval_sets.parse("synthetic", data_root)],
            ["speech"],
        )


def test_talkinghead1kh_is_a_named_test_set(tmp_path):
    """A bare `talkinghead1kh` under --data_root is the split `jaxtalk prepare
    talkinghead1kh` fills with the official val tubes."""
    from data_pipelines.parsers import talkinghead1kh

    assert eval_sets.NAMED["talkinghead1kh"] == talkinghead1kh.LISTS["val"] == "test"
    prepared = tmp_path / "talkinghead1kh"
    prepared.mkdir()
    info = {
        "name": "talkinghead1kh",
        "splits": {"train": {"num_clips": 5}, "test": {"num_clips": 3}},
        "identities": [],
        "config": {"size": 64},
    }
    (prepared / "dataset_info.json").write_text(json.dumps(info))
    test_set = eval_sets.parse("talkinghead1kh", str(tmp_path))
    assert (test_set.split, test_set.data_dir) == ("test", str(prepared))
    assert test_set.num_examples(2) == 6
    with pytest.raises(eval_sets.EvalSetError, match="prepared as 'talkinghead1kh'"):
        eval_sets.parse(f"vfhq={prepared}")


def test_process_identity_from_flags_or_launcher(monkeypatch):
    assert sweep.process_identity(1, 3) == (1, 3)
    monkeypatch.setenv("JAXTALK_PROCESS_ID", "2")  # as launch/local.py sets them
    monkeypatch.setenv("JAXTALK_NUM_PROCESSES", "4")
    assert sweep.process_identity(None, None) == (2, 4)
    with pytest.raises(sweep.SweepError, match="both"):
        sweep.process_identity(1, None)


def test_params_are_sharded_like_training_and_metrics_unchanged(setup):
    """On 8 devices the params are placed by the run's logical axis rules over fsdp (not
    replicated); the metrics equal those of a one-device evaluation."""
    import jax

    from jaxtalk.evaluate import registry

    run, data_root = setup
    test_set = eval_sets.parse("synthetic", data_root)
    rows = []
    for devices in (jax.devices()[:1], jax.devices()):
        metrics, _ = registry.create_many(["psnr", "ssim"], None, None)
        evaluator = sweep.Evaluator(
            metrics,
            batch_size=8,
            num_batches=1,
            mesh=sweep.local_mesh(8, devices),
            log=lambda *_: None,
        )
        rows.append(evaluator.evaluate(run, 2, test_set, "self", ["psnr", "ssim"]))
    params = evaluator._variables[1]["params"]
    assert dict(evaluator.mesh.shape)["fsdp"] == 8
    assert any(not leaf.sharding.is_fully_replicated for leaf in jax.tree.leaves(params))
    for name in ("psnr", "ssim"):
        assert rows[1][name] == pytest.approx(rows[0][name], rel=1e-5, abs=1e-6)


def test_eval_and_sweep_draw_progress_bars_on_a_terminal(setup, tmp_path):
    """A bar over the batches (eval) and over the cells (sweep), with rate and ETA, when the
    output is a terminal; the results are printed as without one."""
    from tests.terminal import run_in_terminal
    from tests.test_progress import BAR

    run, data_root = setup
    env = cli_env(1)
    cli = [sys.executable, "-m", "jaxtalk.cli"]
    rc, text = run_in_terminal(
        cli + ["eval", f"--workdir={run}", "--step=1", "--test_set=synthetic",
               f"--data_root={data_root}", "--metrics=psnr", "--modes=self", "--num_batches=2"],
        env=env, cwd=REPO,
    )  # fmt: skip
    assert rc == 0, text
    assert ("2", "2") in re.findall(BAR.format(unit="batch"), text), text
    assert "| run | 1 | synthetic | self |" in text
    rc, text = run_in_terminal(
        cli + ["sweep", f"--runs={run}", "--steps=all", "--test_sets=synthetic",
               f"--data_root={data_root}", "--metrics=psnr", "--modes=self",
               "--num_batches=1", f"--out_dir={tmp_path}"],
        env=env, cwd=REPO,
    )  # fmt: skip
    assert rc == 0, text
    assert ("2", "2") in re.findall(BAR.format(unit="cell"), text), text
    assert "computed 2 of this process's 2 cells" in text
