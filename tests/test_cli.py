"""The `jaxtalk` entry point: dispatch, help and one-line errors."""

import sys

from tests import cli_processes
from tests.train.helpers import REPO, cli_env


def jaxtalk(*args, env=None):
    """Runs `jaxtalk ARGS` on 8 simulated CPU devices; `env` adds variables."""
    return cli_processes.run(
        [sys.executable, "-m", "jaxtalk.cli", *args],
        env=dict(cli_env(), **(env or {})),
        cwd=REPO,
        timeout=300,
    )


def test_usage_lists_commands_and_rejects_unknown_ones():
    out = jaxtalk("--help")
    assert out.returncode == 0 and "train" in out.stdout
    bad = jaxtalk("fly")
    assert bad.returncode == 2 and "unknown command 'fly'" in bad.stderr


def test_train_help_shows_the_commands_flags():
    out = jaxtalk("train", "--help")
    assert out.returncode == 0
    assert "--workdir" in out.stdout and "--config" in out.stdout and "Example" in out.stdout


def test_train_errors_name_what_is_wrong(tmp_path):
    cases = {
        (
            "--config=configs/missing.py:tiny",
            f"--workdir={tmp_path}",
        ): "config file 'configs/missing.py' does not exist",
        (
            "--config=toy_regression:tiny",
            "--config.batchsize=4",
            f"--workdir={tmp_path}",
        ): "unknown config key in an override: batchsize",
        (
            "--config=toy_regression:bogus",
            f"--workdir={tmp_path}",
        ): "unknown variant 'bogus' of toy_regression",
        ("--config=toy_regression:tiny",): "--workdir is required",
        (f"--workdir={tmp_path}",): "--config is required",
        ("--config=toy_regression:tiny", "--workdir=/proc/jaxtalk_cannot_write"): "is not writable",
    }
    for args, message in cases.items():
        out = jaxtalk("train", *args)
        assert out.returncode != 0, args
        assert message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr, (args, out.stderr)


def test_version_is_the_packages():
    import jaxtalk as package

    out = jaxtalk("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"jaxtalk {package.__version__}"


def test_every_commands_help_shows_verbosity_and_progress():
    from jaxtalk.cli import _available

    for command in _available():
        out = jaxtalk(command, "--help")
        assert out.returncode == 0, (command, out.stderr)
        common = out.stdout.split("common flags:", 1)
        assert len(common) == 2, (command, out.stdout)
        assert "-v,--verbosity" in common[1] and "--[no]progress" in common[1], command
        assert "--logtostderr" not in out.stdout  # absl's own logging flags stay out
