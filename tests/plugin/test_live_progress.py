"""Live progress against the fake ComfyUI: a status line on a terminal (a pty), plain lines without one."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable

import pytest

Project = Callable[..., pytest.Pytester]

RUN = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    wan22_run(BASE)
"""

SLOW = {"FAKE_COMFYUI_STEP_SECONDS": "0.4"}
ONE_ROUND = ("--wan22-rounds=1", "--wan22-warmup-rounds=0")

# What the live line writes: the status below pytest's line, then the cursor back; and its erasure.
DRAW = re.compile(r"\r?\n\r([^\n]*?)\x1b\[K\x1b\[1A\r(?:\x1b\[\d+C)?")
ERASE = re.compile(r"\r?\n\r\x1b\[2K\x1b\[1A\r(?:\x1b\[\d+C)?")


def run_in_pty(p: pytest.Pytester, *args: str, timeout: float = 120.0) -> str:
    """Run pytest in the project on a pseudo-terminal and return everything it wrote."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))  # 200 columns
    env = {k: v for k, v in os.environ.items() if k != "TERM"} | {"TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=p.path,
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


def test_live_line_on_a_terminal_counts_steps_and_leaves_pytest_output_intact(wan22_project: Project) -> None:
    p = wan22_project(RUN, fake_env=SLOW)
    out = run_in_pty(p, *ONE_ROUND)
    drawn = DRAW.findall(out)
    assert drawn, out
    sampler = [d for d in drawn if "KSampler (high noise)" in d]
    assert [n for n in ("step 1/2", "step 2/2") if any(n in d for d in sampler)] == ["step 1/2", "step 2/2"], drawn
    assert all(d.startswith("wan22 high_low-5s-640p-lightx2v_4step | round 1/1 |") for d in drawn)
    assert any("VRAM 5.9 GiB (peak 5.9)" in d for d in drawn), drawn  # the fake NVML's 6000 MiB
    assert ERASE.search(out), "the live line is erased when the round ends"
    assert set(re.findall(r"\x1b\[1A\r\x1b\[(\d+)C", out)) == {str(len("test_suite.py "))}  # back to pytest's column
    plain = re.sub(r"\x1b\[[0-9;]*m", "", ERASE.sub("", DRAW.sub("", out)))  # colours off too
    assert re.search(r"test_suite\.py \.", plain), plain  # pytest's own line, continued where it was
    assert "1 passed" in plain


def test_without_a_terminal_plain_lines_and_one_per_round(wan22_project: Project) -> None:
    p = wan22_project(RUN, fake_env=SLOW)
    result = p.runpytest_subprocess(*ONE_ROUND, "--wan22-progress-interval=0.5")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "\x1b[" not in out
    result.stdout.fnmatch_lines([
        "test_suite.py ",
        "wan22 high_low-5s-640p-lightx2v_4step | round 1/1 | * | 0:00",
        "wan22 high_low-5s-640p-lightx2v_4step | round 1/1 | KSampler * | step */2 | * | 0:01",
        "wan22 high_low-5s-640p-lightx2v_4step | round 1/1: success | * s | *0.* s/step | peak 5.9 GiB",
        ".*",
    ])


def test_quiet_keeps_one_line_per_round(wan22_project: Project) -> None:
    p = wan22_project(RUN, fake_env={"FAKE_COMFYUI_STEP_SECONDS": "0.01"})
    out = run_in_pty(p, "-q")
    assert not DRAW.search(out)
    rounds = re.findall(r"^wan22 \S+ \| round (\d)/3(?: \(warm-up\))?: success", out, re.MULTILINE)
    assert rounds == ["1", "2", "3"], out


def test_off_and_xdist_workers_write_no_progress(wan22_project: Project) -> None:
    p = wan22_project(RUN)
    off = p.runpytest_subprocess("--wan22-progress=off", *ONE_ROUND)
    off.assert_outcomes(passed=1)
    assert "| round 1/1" not in off.stdout.str()
    workers = p.runpytest_subprocess("-n", "1", *ONE_ROUND)
    workers.assert_outcomes(passed=1)
    assert "| round 1/1" not in workers.stdout.str()
