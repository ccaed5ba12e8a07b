"""Preemption: SIGTERM saves a checkpoint at the next step boundary (the same step on every
process), exits 0, and a rerun resumes from it exactly."""

import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

from tests import cli_processes
from tests.train.helpers import REPO, checkpoint_steps, cli_env, run_cli, saved_state, train_command

# The signal goes out once the run logs its first step (10); the run is far from its end then
# (~100 toy steps/s on 2 idle cores) and the step it saves is not a regular checkpoint's.
TOTAL, EVERY = 240, 100
ARGS = [
    f"--config.total_steps={TOTAL}",
    f"--config.checkpoint.every_steps={EVERY}",
    "--config.eval.every_steps=0",
    "--config.samples.every_steps=0",
]


def _wait_for_metrics(workdir, procs, timeout=300):
    """Returns once the run has logged a step (it is in its loop)."""
    metrics = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(metrics) and os.path.getsize(metrics):
            return
        if any(p.poll() is not None for p in procs):
            raise AssertionError("the run ended before it logged a step")
        time.sleep(0.05)
    raise AssertionError("no metrics within the timeout")


def _preempted_step(text: str) -> int:
    found = re.findall(r"preempted at step (\d+): checkpoint saved", text)
    assert found, text
    return int(found[-1])


def test_preemption_sigterm_saves_exits_zero_and_resumes_exactly(tmp_path):
    run_cli(train_command(tmp_path / "straight", *ARGS))
    workdir = tmp_path / "preempted"
    proc = cli_processes.start(train_command(workdir, *ARGS), env=cli_env(), cwd=REPO)
    try:
        _wait_for_metrics(workdir, [proc])
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "Traceback" not in out, out
    step = _preempted_step(out)
    assert 0 < step < TOTAL and step % EVERY, out  # not a regular checkpoint step
    assert max(checkpoint_steps(workdir)) == step

    resumed = run_cli(train_command(workdir, *ARGS))
    assert f"from step {step}" in resumed.stdout
    a, b = saved_state(tmp_path / "straight", TOTAL), saved_state(workdir, TOTAL)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _launch_two(workdir, log_dir, args):
    """Two cooperating processes of 4 CPU devices each, as launch/local.py starts them, but
    with their process handles, so that each can be signalled."""
    sys.path.insert(0, os.path.join(REPO, "launch"))
    try:
        from local import free_port
    finally:
        sys.path.pop(0)
    address = f"127.0.0.1:{free_port()}"
    os.makedirs(log_dir, exist_ok=True)
    procs = []
    for pid in range(2):
        env = dict(
            cli_env(devices=4),
            JAXTALK_COORDINATOR_ADDRESS=address,
            JAXTALK_NUM_PROCESSES="2",
            JAXTALK_PROCESS_ID=str(pid),
        )
        log = open(os.path.join(log_dir, f"process_{pid}.log"), "w")
        procs.append(
            subprocess.Popen(
                train_command(workdir, *args), env=env, cwd=REPO, stdout=log, stderr=log
            )
        )
    return procs


def _logs(log_dir) -> list[str]:
    return [open(os.path.join(log_dir, f"process_{p}.log")).read() for p in range(2)]


def test_preemption_two_processes_agree_on_the_step_and_resume(tmp_path):
    workdir, logs = tmp_path / "two", tmp_path / "logs"
    args = [*ARGS, "--config.mesh.data=4", "--config.mesh.fsdp=2"]
    procs = _launch_two(workdir, logs, args)
    try:
        _wait_for_metrics(workdir, procs)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    texts = _logs(logs)
    assert codes == [0, 0], texts
    steps = {_preempted_step(t) for t in texts}
    assert len(steps) == 1, texts  # both processes saved the same step
    step = steps.pop()
    assert step % EVERY and max(checkpoint_steps(workdir)) == step, texts

    # The rerun resumes from that step (stopped soon after, to stay fast).
    procs = _launch_two(workdir, tmp_path / "logs2", [*args, f"--config.total_steps={step + 5}"])
    codes = [p.wait(timeout=300) for p in procs]
    texts = _logs(tmp_path / "logs2")
    assert codes == [0, 0], texts
    assert f"from step {step}" in texts[0], texts
    assert max(checkpoint_steps(workdir)) == step + 5
