"""Running a command with a terminal as its output, as a user at a shell sees it (progress
bars draw only there)."""

import fcntl
import os
import pty
import select
import struct
import subprocess
import termios


def run_in_terminal(args, *, env, cwd, timeout=300) -> tuple[int, str]:
    """(exit status, everything written to stdout and stderr) of `args` run on a pty."""
    master, slave = pty.openpty()
    # A new pty is 0 x 0; a terminal window is not (tqdm sizes its bar to the width).
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise TimeoutError(f"{args} wrote nothing for {timeout}s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the command exited and closed its end
                break
            if not data:
                break
            chunks.append(data)
        return proc.wait(timeout), b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
