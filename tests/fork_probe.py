"""A module for tests/test_cli_processes.py to run as a command: reports what its process
sees, then exits as told (`python -m tests.fork_probe ACTION`)."""

import json
import os
import sys
import threading
import time

import jax

action = sys.argv[1]
print(json.dumps(dict(pid=os.getpid(), cwd=os.getcwd(), probe=os.environ.get("PROBE"),
                      devices=len(jax.devices()), argv=sys.argv[1:])))  # fmt: skip
if action == "exit3":
    sys.exit(3)
if action == "raise":
    raise RuntimeError("probe failure")
if action == "sleep":
    time.sleep(60)
if action == "thread":
    # A non-daemon thread still writing when the main module ends: exit waits for it.
    def write_late():
        time.sleep(0.5)
        with open(sys.argv[2], "w") as f:
            f.write("done")

    threading.Thread(target=write_late).start()
