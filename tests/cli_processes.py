"""`python -m jaxtalk.cli ...` (or any `-m` module) in a fresh process, without paying the
imports each time.

The suite starts a few hundred `jaxtalk` commands, and each spent 1.5-3 s importing jax,
flax, orbax and jaxtalk before doing anything. `run` hands them to a server (one per test
process, started on first use) that has imported those once and forks a child per command:
the child is a new process with its own pid, environment, working directory, stdout /
stderr files, exit status and jax backend (the server never starts one, so each command
still sees the XLA_FLAGS it is given), and it exits the way `python -m` does (SystemExit,
or a traceback and status 1). Commands run by a server started with the same import-time
environment (everything but the variables read per command) and working directory; a few
such servers are kept, so that tests alternating between two environments do not restart
them. `start` forks a command to signal while it runs (kill and preemption tests); its server
serves nothing else until the command ends. Everything runs as a plain subprocess when
JAXTALK_TESTS_FORK=0.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

# Read when a command runs, not at import: these may differ from the server's.
_PER_COMMAND = {"XLA_FLAGS", "JAXTALK_PLUGINS", "JAXTALK_COORDINATOR_ADDRESS",
                "JAXTALK_NUM_PROCESSES", "JAXTALK_PROCESS_ID", "JAXTALK_CACHE",
                "JAXTALK_XLA_CACHE"}  # fmt: skip
_PRELOAD = ("jax", "jax.numpy", "flax.linen", "optax", "orbax.checkpoint", "scipy.linalg",
            "grain", "jaxtalk.train.train", "jaxtalk.cli", "data_pipelines.datasets",
            "tensorboardX", "gcsfs")  # fmt: skip
# Every module of these too: the commands find the families' modules through
# jaxtalk.discovery, which imports them all (~0.3 s in each command otherwise). Not
# jaxtalk.commands: each command module defines its own absl flags, and only one may be
# imported per process.
_PRELOAD_PACKAGES = ("jaxtalk.inference", "jaxtalk.convert", "jaxtalk.tasks", "jaxtalk.evaluate")
# Servers kept, least recently used first: {key: process}. Each holds ~300 MB.
MAX_SERVERS = 3
_servers: dict[str, subprocess.Popen] = {}
_running: set = set()  # commands `start` forked that have not been waited for


def collect_less_often() -> None:
    """Python's cyclic garbage collector every 20,000 net allocations instead of 700: tracing
    allocates millions of short-lived objects, and the full collections this triggers walk
    the whole heap of imported jax / flax / orbax. Five model and task test files under
    `-n 2`, alternating, two rounds: 144.7 / 137.3 s against 150.0 / 147.3 s at the default.
    The suite's `gc.collect()` after a module that leaves a large heap (conftest) stays."""
    gc.set_threshold(20_000, 10, 10)


def _import_time_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in _PER_COMMAND and not k.startswith("PYTEST_")}


def run(
    args: list[str], env: dict, cwd: str, timeout: float, terminal: str | None = None
) -> subprocess.CompletedProcess:
    """subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=...),
    forked from the server when args are `sys.executable -m MODULE ...`. With `terminal` (a
    tty's path) the command writes both streams there instead, and the result holds neither."""
    server = _forking_server(args, env, cwd)
    if server is None:
        return _subprocess(args, env, cwd, timeout, terminal)
    with tempfile.TemporaryDirectory() as d:
        out, err = (terminal, terminal) if terminal else [os.path.join(d, n) for n in ("1", "2")]
        _send(server, args, dict(env=env, cwd=cwd, stdout=out, stderr=err, timeout=timeout))
        reply = _reply(server, args)
        text = [None, None] if terminal else [open(p, errors="replace").read() for p in (out, err)]
    if reply["timed_out"]:
        raise subprocess.TimeoutExpired(args, timeout, text[0], text[1])
    return subprocess.CompletedProcess(args, reply["returncode"], text[0], text[1])


def _subprocess(args, env, cwd, timeout, terminal=None):
    if terminal is None:
        return subprocess.run(
            args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    with open(terminal, "w") as tty:
        return subprocess.run(
            args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=tty, stderr=tty,
            timeout=timeout,
        )  # fmt: skip


def start(args: list[str], env: dict, cwd: str, timeout: float = 900):
    """subprocess.Popen(args, env=env, cwd=cwd, stdout=PIPE, stderr=STDOUT, text=True) for a
    command to signal while it runs, forked from a server when args are `sys.executable -m
    MODULE ...` (a `Started`); `communicate()` gives (output, None) once it has exited."""
    server = _forking_server(args, env, cwd)
    if server is None:
        return subprocess.Popen(
            args, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    key = _key(env, cwd)
    del _servers[key]  # busy until the command ends: other commands get another server
    folder = tempfile.mkdtemp()
    output = os.path.join(folder, "output")
    open(output, "w").close()  # there from the start, as a pipe would be
    request = dict(env=env, cwd=cwd, stdout=output, stderr=output, timeout=timeout, started=True)
    _send(server, args, request)
    return Started(args, server, key, _reply(server, args)["pid"], folder)


class Started:
    """A command `start` forked from a server: the subprocess.Popen methods the tests use. The
    server reports its exit; until then it serves nothing else."""

    def __init__(self, args, server, key, pid, folder):
        self.args, self.pid, self.returncode, self.stdout = args, pid, None, None
        self._server, self._key, self._folder = server, key, folder
        _running.add(self)

    def poll(self):
        if self.returncode is None and _exited(self.pid):
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode

    def communicate(self, timeout: float | None = None):
        self.wait(timeout)
        return self.stdout, None

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _collect(self) -> None:
        _running.discard(self)
        self.returncode = _reply(self._server, self.args)["returncode"]
        with open(os.path.join(self._folder, "output"), errors="replace") as f:
            self.stdout = f.read()
        shutil.rmtree(self._folder, ignore_errors=True)
        if self._key in _servers:  # another took its place meanwhile
            _close(self._server)
        else:
            _keep(self._key, self._server)


def _exited(pid: int) -> bool:
    """Whether the server's child `pid` has ended (gone, or a zombie the server will reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _send(server, args, request: dict) -> None:
    server.stdin.write(json.dumps(dict(request, argv=args[2:])) + "\n")
    server.stdin.flush()


def _reply(server, args) -> dict:
    line = server.stdout.readline()
    if not line:  # the server itself died: say so rather than fail to parse ''
        _forget(server)
        raise RuntimeError(f"the command server exited (status {server.wait()}) on {args}")
    return json.loads(line)


def _key(env: dict, cwd: str) -> str:
    return json.dumps([_import_time_env(env), cwd], sort_keys=True)


def _forking_server(args: list[str], env: dict, cwd: str):
    """The server to fork `args` from, or None for a plain subprocess: not a `python -m`
    command, JAXTALK_TESTS_FORK=0, or no server could start."""
    module_command = args[:2] == [sys.executable, "-m"] and len(args) > 2
    if not module_command or os.environ.get("JAXTALK_TESTS_FORK") == "0":
        return None
    return _server_for(env, cwd)


def _server_for(env: dict, cwd: str):
    """The server started with this import-time environment and working directory (started
    now if none is kept; the least recently used one stops when more than MAX_SERVERS would
    run), or None if it cannot start."""
    key = _key(env, cwd)
    proc = _servers.pop(key, None)
    if proc is None or proc.poll() is not None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.cli_processes"], env=_import_time_env(env), cwd=cwd,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        if proc.stdout.readline().strip() != "ready":
            proc.kill()
            return None
    _keep(key, proc)
    return proc


def _keep(key: str, proc) -> None:
    """Keeps `proc` as the most recently used server (last), stopping the least recently used
    ones beyond MAX_SERVERS."""
    while len(_servers) >= MAX_SERVERS:
        _stop_least_recent()
    _servers[key] = proc


def _forget(proc) -> None:
    for key in [k for k, p in _servers.items() if p is proc]:
        del _servers[key]


def _stop_least_recent() -> None:
    _close(_servers.pop(next(iter(_servers))))


def _close(proc) -> None:
    proc.stdin.close()  # the server's loop ends; it exits
    proc.wait(timeout=30)


@atexit.register
def _stop():
    for started in list(_running):  # left running by a test that failed: not for 900 s more
        started.kill()
        started.wait(timeout=30)
    while _servers:
        _stop_least_recent()


# ----------------------------------------------------------------------------- the server


def _child(request) -> None:
    """In the forked child: become `python -m MODULE ARGS`; never returns."""
    import runpy
    import traceback

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    fd = os.open(os.devnull, os.O_RDONLY)
    os.dup2(fd, 0)
    opened = {}  # one file description for both streams when they share a path
    for path, target in ((request["stdout"], 1), (request["stderr"], 2)):
        if path not in opened:
            opened[path] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(opened[path], target)
    for fd in opened.values():
        os.close(fd)
    sys.argv = list(request["argv"])  # runpy puts the module's path in argv[0]
    sys.modules.pop(request["argv"][0], None)  # runpy warns when it is already imported
    code = 0
    try:
        runpy.run_module(request["argv"][0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what the interpreter prints for an uncaught one
        traceback.print_exc()
        code = 1
    # What a normal interpreter exit does that anyone can see, in its order: wait for the
    # non-daemon threads (an async checkpoint's), atexit handlers, flush the streams. Not
    # the teardown of every module (0.4 s with jax loaded).
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _serve() -> None:
    import importlib
    import pkgutil

    for name in _PRELOAD:
        importlib.import_module(name)
    for package in _PRELOAD_PACKAGES:
        path = importlib.import_module(package).__path__
        for info in pkgutil.iter_modules(path, prefix=f"{package}."):
            importlib.import_module(info.name)
    collect_less_often()  # the forked commands inherit it
    print("ready", flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        if request.get("started"):
            print(json.dumps(dict(pid=pid)), flush=True)
        deadline = time.monotonic() + request["timeout"]
        timed_out = False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                timed_out, status = True, -signal.SIGKILL
                break
            time.sleep(0.01)
        code = os.waitstatus_to_exitcode(status) if not timed_out else status
        print(json.dumps(dict(returncode=code, timed_out=timed_out)), flush=True)


if __name__ == "__main__":
    _serve()
