"""The tests' command runner: a forked command is a fresh process in every way a test can
observe, and matches a plain subprocess."""

import json
import os
import subprocess
import sys

import pytest

from tests import cli_processes
from tests.train.helpers import REPO, cli_env


def probe(*args, devices=3, timeout=120, **env):
    command = [sys.executable, "-m", "tests.fork_probe", *args]
    return cli_processes.run(command, env=dict(cli_env(devices), **env), cwd=REPO, timeout=timeout)


def report(proc):
    return json.loads(proc.stdout.splitlines()[0])


def test_a_forked_command_is_its_own_process_with_its_env_and_devices(tmp_path):
    first, second = probe("ok", PROBE="a"), probe("ok", devices=2, PROBE="b")
    servers = [p.pid for p in cli_processes._servers.values()]
    assert servers, "the commands went through a server"
    a, b = report(first), report(second)
    assert first.returncode == second.returncode == 0 and first.stderr == ""
    assert len({a["pid"], b["pid"], os.getpid(), *servers}) == 2 + 1 + len(servers)
    assert (a["probe"], a["devices"], b["probe"], b["devices"]) == ("a", 3, "b", 2)
    assert a["cwd"] == REPO and a["argv"] == ["ok"]


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


def test_servers_are_kept_per_environment_and_the_least_recent_one_stops(monkeypatch):
    monkeypatch.setattr(cli_processes, "MAX_SERVERS", 2)
    monkeypatch.setattr(cli_processes, "_servers", {})
    servers = cli_processes._servers
    a = report(probe("ok", PROBE="a"))
    kept = dict(servers)
    assert report(probe("ok", PROBE="b"))["probe"] == "b" and len(servers) == 2
    second = list(servers.values())[-1]
    assert report(probe("ok", PROBE="a"))["probe"] == "a"  # a's server again, not a new one
    assert len(servers) == 2 and all(servers[k] is p for k, p in kept.items())
    assert report(probe("ok", PROBE="c"))["probe"] == "c"  # b's was used least recently
    (first,) = kept.values()
    assert list(servers.values())[0] is first and first.poll() is None
    assert second.wait(timeout=30) is not None and second not in servers.values()
    assert a["pid"] != os.getpid() and len(servers) == 2
    cli_processes._stop()
    assert not servers and first.poll() is not None
