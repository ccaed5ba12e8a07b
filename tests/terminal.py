"""Running a command with a terminal as its output, as a user at a shell sees it (progress
bars draw only there)."""

import fcntl
import os
import pty
import select
import struct
import termios
import threading

from tests import cli_processes


def run_in_terminal(args, *, env, cwd, timeout=300) -> tuple[int, str]:
    """(exit status, everything written to stdout and stderr) of `args` run on a pty
    (forked from a command server like the tests' other commands: tests/cli_processes.py)."""
    master, slave = pty.openpty()
    # A new pty is 0 x 0; a terminal window is not (tqdm sizes its bar to the width).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    result = {}

    def command():
        try:
            result["done"] = cli_processes.run(args, env, cwd, timeout, os.ttyname(slave))
        except BaseException as e:  # noqa: BLE001 - raised again below, in the test
            result["error"] = e

    thread = threading.Thread(target=command, daemon=True)
    thread.start()
    chunks = []
    try:
        # Our end of the slave stays open until the command is done (the command opens the
        # terminal by its path), so the master never reads EIO; drain it, then stop.
        while True:
            if select.select([master], [], [], 0.05)[0]:
                chunks.append(os.read(master, 65536))
            elif not thread.is_alive():
                break
    finally:
        thread.join()
        os.close(master)
        os.close(slave)
    if "error" in result:
        raise result["error"]
    return result["done"].returncode, b"".join(chunks).decode(errors="replace")
