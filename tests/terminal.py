"""Run pytest on a pseudo-terminal, and the escape sequences of the live progress line."""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import sys
import time
from pathlib import Path

# What the live line writes: the status below pytest's line, then the cursor back; and its erasure.
DRAW = re.compile(r"\r?\n\r([^\n]*?)\x1b\[K\x1b\[1A\r(?:\x1b\[\d+C)?")
ERASE = re.compile(r"\r?\n\r\x1b\[2K\x1b\[1A\r(?:\x1b\[\d+C)?")


def run_in_pty(cwd: Path, *args: str, timeout: float = 120.0) -> str:
    """Run pytest in the project on a pseudo-terminal and return everything it wrote (POSIX only)."""
    import fcntl
    import pty
    import termios

    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # 200 columns
    env = {k: v for k, v in os.environ.items() if k != "TERM"} | {"TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd,
                            stdin=secondary, stdout=secondary, stderr=secondary, env=env, close_fds=True)
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    data = os.read(primary, 65536)
                except OSError:  # the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        os.close(primary)
    return b"".join(chunks).decode("utf-8", "replace")
