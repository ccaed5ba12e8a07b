"""The tests' command runner: a forked command is a fresh process in every way a test can
observe, and matches a plain subprocess."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests import cli_processes
from tests.train.helpers import REPO, cli_env


def probe(*args, devices=3, timeout=120, **env):
    command = [sys.executable, "-m", "tests.fork_probe", *args]
    return cli_processes.run(command, env=dict(cli_env(devices), **env), cwd=REPO, timeout=timeout)


def report(proc):
    return json.loads(proc.stdout.splitlines()[0])


def test_a_forked_command_is_its_own_process_with_its_env_and_devices(monkeypatch):
    monkeypatch.setattr(cli_processes, "MAX_SERVERS", 2)
    servers = cli_processes._servers
    first, second = probe("ok", PROBE="a"), probe("ok", devices=2, PROBE="b")
    *_, server_a, server_b = servers.values()  # one per import-time environment
    a, b = report(first), report(second)
    assert first.returncode == second.returncode == 0 and first.stderr == ""
    assert len({a["pid"], b["pid"], os.getpid(), server_a.pid, server_b.pid}) == 5
    assert (a["probe"], a["devices"], b["probe"], b["devices"]) == ("a", 3, "b", 2)
    assert a["cwd"] == REPO and a["argv"] == ["ok"]
    # Kept: a's server runs a's commands again; then c's replaces b's, the least recently used.
    assert report(probe("ok", PROBE="a"))["probe"] == "a"
    assert list(servers.values()) == [server_b, server_a]
    assert report(probe("ok", PROBE="c"))["probe"] == "c"
    assert len(servers) == 2 and list(servers.values())[0] is server_a
    assert server_b.wait(timeout=30) == 0 and server_a.poll() is None


def test_exit_status_traceback_threads_and_timeout_as_a_plain_process(tmp_path):
    assert probe("exit3").returncode == 3
    failed = probe("raise")
    assert failed.returncode == 1
    assert "Traceback" in failed.stderr and "RuntimeError: probe failure" in failed.stderr
    late = tmp_path / "late.txt"
    assert probe("thread", str(late)).returncode == 0
    assert late.read_text() == "done"  # the exit waited for the non-daemon thread
    with pytest.raises(subprocess.TimeoutExpired):
        probe("sleep", timeout=3)
    assert probe("ok").returncode == 0  # the server survives a killed child


def test_forked_and_plain_processes_give_the_same_result(monkeypatch):
    command = [sys.executable, "-m", "jaxtalk.cli", "fly"]
    forked = cli_processes.run(command, env=cli_env(), cwd=REPO, timeout=120)
    monkeypatch.setenv("JAXTALK_TESTS_FORK", "0")
    plain = cli_processes.run(command, env=cli_env(), cwd=REPO, timeout=120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        plain.returncode,
        plain.stdout,
        plain.stderr,
    )
    assert forked.returncode == 2 and "unknown command 'fly'" in forked.stderr


def test_a_started_command_can_be_signalled_and_its_server_serves_again():
    command = [sys.executable, "-m", "tests.fork_probe", "sleep"]
    env = cli_env(3)
    probe("ok")  # the server for this environment
    server = cli_processes._servers[cli_processes._key(env, REPO)]
    started = cli_processes.start(command, env=env, cwd=REPO)
    assert isinstance(started, cli_processes.Started) and started.pid != server.pid
    assert started.poll() is None and server not in cli_processes._servers.values()  # busy
    output = os.path.join(started._folder, "output")
    while not os.path.getsize(output):  # until it has reported and sleeps
        assert started.poll() is None
        time.sleep(0.05)
    started.send_signal(signal.SIGTERM)
    assert started.wait(timeout=60) == -signal.SIGTERM
    assert report(started)["pid"] == started.pid  # its output, stdout and stderr in one
    assert cli_processes._servers[cli_processes._key(env, REPO)] is server  # back in service
    assert report(probe("ok"))["probe"] is None
