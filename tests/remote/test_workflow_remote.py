"""The whole workflow on gs:// (the local emulator): prepare -> train -> kill -> resume -> eval
-> sweep, every data, work and output directory in the bucket, none made local."""

import os
import signal
import sys
import time

from jaxtalk import fs
from tests import cli_processes
from tests.train.helpers import REPO, cli_env


def _cli(*args, check=True, timeout=900):
    proc = cli_processes.run(
        [sys.executable, "-m", "jaxtalk.cli", *args],
        env=cli_env(devices=1), cwd=REPO, timeout=timeout,
    )  # fmt: skip
    if check and proc.returncode:
        raise AssertionError(
            f"jaxtalk {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def _train_args(workdir, data_dir, *extra):
    return [
        "train",
        f"--config={REPO}/configs/anitalker_stage1.py:tiny",
        f"--workdir={workdir}",
        f"--config.data.data_dir={data_dir}",
        "--config.model.size=32",  # what runs where is the point here, not the model
        "--config.data.image_size=32",
        "--config.total_steps=3",
        "--config.checkpoint.every_steps=1",
        "--config.checkpoint.async_save=False",
        "--config.log.every_steps=1",
        "--config.eval.every_steps=0",
        "--config.samples.every_steps=0",
        "--config.log.progress_bar=False",
        *extra,
    ]


def test_remote_emulator_prepare_train_kill_resume_eval_sweep(gcs, tmp_path, monkeypatch):
    monkeypatch.setenv("JAXTALK_CACHE", str(tmp_path / "cache"))
    data = f"{gcs}/data/synthetic"
    _cli(
        "prepare", "synthetic", f"--out_dir={data}", "--size=64", "--num_identities=3",
        "--videos_per_identity=1", "--utterances_per_video=2", "--utterance_seconds=1.6",
        "--raw_resolution=96", "--test_identities=1",
    )  # fmt: skip
    assert fs.isfile(fs.join(data, "dataset_info.json"))

    workdir = f"{gcs}/runs/s1"
    first = cli_processes.start(
        [sys.executable, "-m", "jaxtalk.cli", *_train_args(workdir, data)],
        env=cli_env(devices=1), cwd=REPO,
    )  # fmt: skip
    deadline = time.monotonic() + 900
    while "1" not in fs.listdir(fs.join(workdir, "checkpoints")):
        assert first.poll() is None, first.communicate()[0][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)  # no chance to clean up: a host lost mid-run
    first.wait()

    _cli(*_train_args(workdir, data))
    steps = fs.listdir(fs.join(workdir, "checkpoints"))
    assert steps[-1] == "3", steps

    out = f"{gcs}/eval/rows.json"
    evaluated = _cli(
        "eval", f"--workdir={workdir}", f"--test_set=synthetic={data}:test",
        "--metrics=psnr", "--modes=self", "--num_batches=1", "--batch_size=8", f"--json_out={out}",
    )  # fmt: skip
    assert "| s1 | 3 | synthetic | self |" in evaluated.stdout
    assert fs.read_json(out)["rows"][0]["step"] == 3

    sweep_dir = f"{gcs}/sweeps/s1"
    _cli(
        "sweep", f"--runs={workdir}", "--steps=all", f"--test_sets=synthetic={data}:test",
        "--metrics=psnr", "--modes=self", "--num_batches=1", "--batch_size=8",
        f"--out_dir={sweep_dir}",
    )  # fmt: skip
    names = fs.listdir(sweep_dir)
    assert {"results.jsonl", "results.md", "results.csv", "psnr_vs_step.png"} <= set(names)
    assert fs.read_text(fs.join(sweep_dir, "results.md")).count("| s1 |") == len(steps)
    assert not os.path.exists(os.path.join(REPO, "gs:")), "a gs:// path was made local"
