"""Live progress against the fake ComfyUI: a status line on a terminal (a pty), plain lines without one."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.posix import posix_only
from tests.terminal import DRAW, ERASE, run_in_pty

Project = Callable[..., pytest.Pytester]

RUN = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    wan22_run(BASE)
"""

SLOW = {"FAKE_COMFYUI_STEP_SECONDS": "0.4"}
ONE_ROUND = ("--wan22-rounds=1", "--wan22-warmup-rounds=0")

@posix_only("a pseudo-terminal (pty)")
def test_live_line_on_a_terminal_counts_steps_and_leaves_pytest_output_intact(wan22_project: Project) -> None:
    p = wan22_project(RUN, fake_env=SLOW)
    out = run_in_pty(p.path, *ONE_ROUND)
    drawn = DRAW.findall(out)
    assert drawn, out
    sampler = [d for d in drawn if "KSampler (high noise)" in d]
    assert [n for n in ("step 1/2", "step 2/2") if any(n in d for d in sampler)] == ["step 1/2", "step 2/2"], drawn
    assert all(d.startswith("wan22 high_low-5s-640p-lightx2v_4step | round 1 |") for d in drawn)
    assert any("VRAM 5.9 GiB (peak 5.9)" in d for d in drawn), drawn  # the fake NVML's 6000 MiB
    assert ERASE.search(out), "the live line is erased when the round ends"
    assert set(re.findall(r"\x1b\[1A\r\x1b\[(\d+)C", out)) == {str(len("test_suite.py "))}  # back to pytest's column
    plain = re.sub(r"\x1b\[[0-9;]*m", "", ERASE.sub("", DRAW.sub("", out)))  # colours off too
    assert re.search(r"test_suite\.py \.", plain), plain  # pytest's own line, continued where it was
    assert "1 passed" in plain


def test_without_a_terminal_plain_lines_and_one_per_round(wan22_project: Project,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # a wide CI log: nothing shortened
    p = wan22_project(RUN, fake_env=SLOW)
    result = p.runpytest_subprocess(*ONE_ROUND, "--wan22-progress-interval=0.5")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert "\x1b[" not in out
    result.stdout.fnmatch_lines([
        "test_suite.py ",
        "wan22 high_low-5s-640p-lightx2v_4step | round 1 | * | 0:00",
        "wan22 high_low-5s-640p-lightx2v_4step | round 1 | KSampler * | step */2 | * | 0:01",
        "wan22 high_low-5s-640p-lightx2v_4step | round 1: success | * s | *0.* s/step | peak 5.9 GiB",
        ".*",
    ])


def test_plain_lines_fit_80_columns_keeping_every_number(wan22_project: Project,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # no terminal, no COLUMNS: 80 columns
    p = wan22_project(RUN, fake_env=SLOW)
    result = p.runpytest_subprocess(*ONE_ROUND, "--wan22-progress-interval=0.5")
    result.assert_outcomes(passed=1)
    ours = [line for line in result.stdout.lines if "| round 1" in line]
    assert len(ours) >= 3, result.stdout.str()
    assert max(map(len, ours)) < 80, ours
    result.stdout.fnmatch_lines([
        "wan22 high_low*4step | round 1 | step */2 | *VRAM 5.9 GiB (peak 5.9) | 0:0*",
        "wan22 * | round 1: success | * s | 0.*/0.* s/step | peak 5.9 GiB",
    ])


def test_quiet_keeps_one_line_per_round(wan22_project: Project) -> None:
    p = wan22_project(RUN, fake_env={"FAKE_COMFYUI_STEP_SECONDS": "0.01"})
    out = run_in_pty(p.path, "-q")
    assert not DRAW.search(out)
    rounds = re.findall(r"^wan22 \S+ \| round (\d)(?: \(warm-up\))?: success", out, re.MULTILINE)
    assert rounds == ["1", "2", "3"], out


def test_off_and_xdist_workers_write_no_progress(wan22_project: Project) -> None:
    p = wan22_project(RUN)
    off = p.runpytest_subprocess("--wan22-progress=off", *ONE_ROUND)
    off.assert_outcomes(passed=1)
    assert "| round 1" not in off.stdout.str()
    workers = p.runpytest_subprocess("-n", "1", *ONE_ROUND)
    workers.assert_outcomes(passed=1)
    assert "| round 1" not in workers.stdout.str()
