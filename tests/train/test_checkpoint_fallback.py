"""A damaged newest checkpoint: train, eval, export and sweeps fall back to the next older
step with a one-line report; when no step restores, one error line and exit status 2."""

import asyncio
import gc
import glob
import json
import logging
import os
import shutil
import sys
import warnings

import numpy as np
import pytest

from tests.train.helpers import checkpoint_steps, run_cli, saved_state, train_command

ARGS = [
    "--config.total_steps=60",
    "--config.checkpoint.every_steps=20",
    "--config.eval.every_steps=0",
    "--config.samples.every_steps=0",
]


def _array_files(step_dir):
    return glob.glob(os.path.join(step_dir, "state", "ocdbt.process_0", "d", "*"))


def _delete_array_files(step_dir):
    # All of them: orbax reads only what the restore needs, so one file may go unnoticed.
    for path in _array_files(step_dir):
        os.remove(path)


def _truncate_array_files(step_dir):
    for path in _array_files(step_dir):
        with open(path, "r+b") as f:
            f.truncate(10)


def _truncate_metadata(step_dir):
    with open(os.path.join(step_dir, "state", "_METADATA"), "r+b") as f:
        f.truncate(20)


def _garble_data_state(step_dir):
    with open(os.path.join(step_dir, "data", "metadata"), "w") as f:
        f.write('{"state": ')


def _half_copied(step_dir):
    shutil.rmtree(os.path.join(step_dir, "state"))


DAMAGES = {
    "array_files_deleted": _delete_array_files,
    "array_files_truncated": _truncate_array_files,
    "metadata_truncated": _truncate_metadata,
    "data_state_garbled": _garble_data_state,
    "half_copied": _half_copied,
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A toy run with checkpoints at steps 20, 40 and 60."""
    workdir = tmp_path_factory.mktemp("fallback") / "run"
    run_cli(train_command(workdir, *ARGS))
    assert checkpoint_steps(workdir) == [20, 40, 60]
    return workdir


def _damaged_copy(run, tmp_path, damage, steps=(60,)):
    workdir = tmp_path / "damaged"
    shutil.copytree(run, workdir)
    for step in steps:
        DAMAGES[damage](os.path.join(workdir, "checkpoints", str(step)))
    return workdir


def _fell_back(text, workdir, step=60, to=40):
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    line = [x for x in text.splitlines() if x.startswith(f"checkpoint step {step} in")]
    assert line, text
    assert line[0].startswith(f"checkpoint step {step} in {directory} cannot be restored (")
    assert line[0].endswith(f"; falling back to step {to}"), line[0]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_fallback_train_resumes_from_the_older_step(run, tmp_path, damage):
    workdir = _damaged_copy(run, tmp_path, damage)
    out = run_cli(train_command(workdir, *ARGS, "--config.total_steps=80"))
    text = out.stdout + out.stderr
    _fell_back(text, workdir)
    assert "from step 40" in out.stdout, text
    # Nothing but the report: no traceback, nor asyncio's or Python's notes on the failed
    # restore's abandoned sibling reads (which may come out mid-restore or at exit).
    reported = ("checkpoint step 60 in", "moved the damaged checkpoint step 60")
    assert all(x.startswith(reported) for x in out.stderr.splitlines()), out.stderr
    assert checkpoint_steps(workdir)[-2:] == [60, 80]  # 60 saved again, then 80
    assert os.listdir(workdir / "damaged_checkpoints") == ["60"]  # moved, not deleted


def _abandon_failed_future(loop, message):
    future = loop.create_future()
    future.set_exception(ValueError(message))
    del future  # asyncio logs a failed future nobody awaited when it is collected
    gc.collect()


def test_abandoned_checkpoint_reads_are_quiet_and_other_failures_are_not(caplog):
    from jaxtalk.train import checkpoints

    checkpoints._quiet_failed_read_noise()
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            _abandon_failed_future(loop, 'OUT_OF_RANGE: Error reading "k" in OCDBT database')
            _abandon_failed_future(loop, "a failure of someone else's")
    finally:
        loop.close()
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and "someone else's" in logged[0], logged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        checkpoints._quiet_failed_read_noise()  # idempotent, and puts its filter first
        warnings.warn("coroutine '_read_shard' was never awaited", RuntimeWarning)
        warnings.warn("coroutine 'mine' was never awaited", RuntimeWarning)
    assert [str(w.message) for w in caught] == ["coroutine 'mine' was never awaited"]


def _command(args: list[str]):
    """`jaxtalk ARGS` in a fresh process, whatever its exit status."""
    return run_cli([sys.executable, "-m", "jaxtalk.cli", *args], check=False)


def _write_test_set(tmp_path):
    data = tmp_path / "test_set"
    data.mkdir()
    info = {"splits": {"test": {"num_clips": 0}}, "identities": [], "config": {"size": 64}}
    (data / "dataset_info.json").write_text(json.dumps(info))
    return data


def test_fallback_eval_export_and_sweep_pick_the_older_step(run, tmp_path):
    from jaxtalk.evaluate import sweep
    from jaxtalk.train import checkpoints

    workdir = _damaged_copy(run, tmp_path, "array_files_truncated")
    # eval: the step is chosen (with the report) before the toy task is found to have no
    # evaluation protocol, which reads the chosen step's config.
    out = _command(
        [
            "eval",
            f"--workdir={workdir}",
            f"--test_set=toy={_write_test_set(tmp_path)}:test",
            "--metrics=psnr",
        ]
    )
    _fell_back(out.stdout + out.stderr, workdir)
    assert "no eval_outputs" in out.stderr and "Traceback" not in out.stderr

    exported = tmp_path / "model.safetensors"
    out = _command(
        [
            "export",
            f"--workdir={workdir}",
            "--group=model",
            f"--out={exported}",
        ]
    )
    _fell_back(out.stdout + out.stderr, workdir)
    assert out.stderr.count("cannot be restored") == 1  # reported once, not per read

    # In-process: the values are step 40's, and the sweep's "last" is 40.
    assert sweep.resolve_steps(str(workdir), "last") == [40]
    variables = checkpoints.eval_variables(str(workdir))
    want = saved_state(run, 40)
    np.testing.assert_array_equal(
        variables["params"]["model"]["hidden_0"]["kernel"],
        want["ema_params/model/hidden_0/kernel"],
    )
    assert checkpoints.run_config(str(workdir))["total_steps"] == 60


def test_fallback_explicit_damaged_step_is_one_line(run, tmp_path):
    workdir = _damaged_copy(run, tmp_path, "array_files_truncated")
    out = _command(
        [
            "export",
            f"--workdir={workdir}",
            "--step=60",
            "--group=model",
            f"--out={tmp_path / 'x.safetensors'}",
        ]
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("jaxtalk export: error: checkpoint step 60 in"), out.stderr
    assert "cannot be restored" in lines[-1] and "Traceback" not in out.stderr


def _assert_one_line_failure(proc, command, workdir):
    directory = os.path.join(os.path.abspath(workdir), "checkpoints")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"jaxtalk {command}: error: no checkpoint in {directory}"), last


def test_fallback_all_damaged_is_one_error_line(run, tmp_path):
    workdir = _damaged_copy(run, tmp_path, "half_copied", steps=(20, 40, 60))
    proc = run_cli(train_command(workdir, *ARGS), check=False)
    _assert_one_line_failure(proc, "train", workdir)
    assert "falling back to step 20" in proc.stderr  # each step reported on the way
    assert not os.path.exists(workdir / "damaged_checkpoints")  # nothing moved on failure

    export = [
        "export",
        f"--workdir={workdir}",
        "--group=model",
        f"--out={tmp_path / 'x.safetensors'}",
    ]
    _assert_one_line_failure(_command(export), "export", workdir)
    evaluate = [
        "eval",
        f"--workdir={workdir}",
        f"--test_set=toy={_write_test_set(tmp_path)}:test",
        "--metrics=psnr",
    ]
    _assert_one_line_failure(_command(evaluate), "eval", workdir)
