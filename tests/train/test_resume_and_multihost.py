"""Fresh processes: SIGKILL and resume, resume on another mesh, two processes vs one."""

import json
import os
import signal
import sys
import time

import numpy as np

from tests import cli_processes
from tests.train.helpers import REPO, checkpoint_steps, cli_env, run_cli, saved_state, train_command

LONG = [
    "--config.total_steps=240",
    "--config.checkpoint.every_steps=20",
    "--config.eval.every_steps=0",
    "--config.samples.every_steps=0",
]


def test_sigkill_at_any_moment_then_resume_is_bitwise_identical(tmp_path):
    run_cli(train_command(tmp_path / "straight", *LONG))
    killed = tmp_path / "killed"
    proc = cli_processes.start(train_command(killed, *LONG), env=cli_env(), cwd=REPO)
    # Kill as soon as a checkpoint beyond the first exists: typically while later async
    # saves are in flight, so the resume must skip any half-written checkpoint.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if [s for s in checkpoint_steps(killed) if s >= 40]:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    resumed_from = max(checkpoint_steps(killed))
    assert resumed_from < 240
    out = run_cli(train_command(killed, *LONG))
    assert f"from step {resumed_from}" in out.stdout + out.stderr or resumed_from == 0
    a, b = saved_state(tmp_path / "straight", 240), saved_state(killed, 240)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_resume_on_a_different_mesh(tmp_path):
    common = ["--config.total_steps=40", "--config.checkpoint.every_steps=20"]
    run_cli(
        train_command(tmp_path / "eight", *common, "--config.mesh.data=4", "--config.mesh.fsdp=2")
    )
    moved = tmp_path / "moved"
    run_cli(
        train_command(
            moved,
            *common,
            "--config.total_steps=20",
            "--config.mesh.data=4",
            "--config.mesh.fsdp=2",
        )
    )
    out = run_cli(
        train_command(moved, *common, "--config.mesh.data=2", "--config.mesh.fsdp=2"), devices=4
    )
    assert "from step 20" in out.stdout
    a, b = saved_state(tmp_path / "eight", 40), saved_state(moved, 40)
    for k in a:
        if k.startswith("params/"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-5, err_msg=k)


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return {r["step"]: r["model/loss"] for r in rows if "model/loss" in r}


def test_two_processes_of_four_devices_match_one_process_of_eight(tmp_path):
    args = ["--config.mesh.data=4", "--config.mesh.fsdp=2", "--config.total_steps=30"]
    run_cli(train_command(tmp_path / "one", *args))
    launcher = [
        sys.executable,
        os.path.join(REPO, "launch", "local.py"),
        "--num_processes=2",
        "--devices_per_process=4",
        f"--log_dir={tmp_path / 'logs'}",
        "--",
    ]
    proc = run_cli(launcher + train_command(tmp_path / "two", *args), check=False)
    logs = "".join(open(tmp_path / "logs" / f).read() for f in os.listdir(tmp_path / "logs"))
    assert proc.returncode == 0, logs
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == [10, 20, 30]
    for step in one:
        np.testing.assert_allclose(two[step], one[step], rtol=1e-5)
