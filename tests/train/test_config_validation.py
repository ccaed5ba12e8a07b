"""Config values that cannot work are refused at start: one line naming the key, exit 2."""

import pytest

from tests.train.helpers import run_cli, train_command

BAD = {
    "batch_size": "0",
    "grad_accum_steps": "0",
    "total_steps": "-1",
    "log.every_steps": "0",
    "eval.every_steps": "-1",
    "samples.every_steps": "-5",
    "checkpoint.every_steps": "-1",
    "checkpoint.keep": "0",
    "device_prefetch": "-1",
    "profile.num_steps": "0",
    "nan_policy": "ignore",
    "checkpoint.best_mode": "median",
}


@pytest.mark.parametrize("key", sorted(BAD))
def test_validation_refuses_a_value_that_cannot_work(tmp_path, key):
    workdir = tmp_path / "run"
    proc = run_cli(train_command(workdir, f"--config.{key}={BAD[key]}"), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"jaxtalk train: error: config.{key}="), lines[0]
    assert BAD[key] in lines[0], lines[0]
    assert not workdir.exists()  # refused before anything is written


def test_validation_keeps_zero_as_off(tmp_path):
    """0 still switches evaluation, samples and periodic checkpoints off."""
    proc = run_cli(
        train_command(
            tmp_path / "run",
            "--config.total_steps=3",
            "--config.eval.every_steps=0",
            "--config.samples.every_steps=0",
            "--config.checkpoint.every_steps=0",
        )
    )
    assert "eval at step" not in proc.stdout
