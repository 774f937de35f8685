"""What the gate judges and how long it runs, end to end against the fake ComfyUI: the cpu tier records timings
without judging them, and a headline agrees with its detail lines."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest

from pytest_wan22.processes import process_tree
from tests.plugin.conftest import FAKE_DIR, RTX5090
from tests.plugin.test_ab_and_rounds import _install

Project = Callable[..., pytest.Pytester]

CPU_ONE = """
@pytest.mark.cpu
def test_variant(wan22_run):
    wan22_run(BASE)
"""

NO_GPU: dict[str, list[object]] = {"devices": []}


def _cpu_tier(tmp_path: Path, extra: str = "") -> str:
    """A cpu row on the user's own models (the fake ComfyUI has no synthetic set), as a tier file of one's own."""
    tiers = tmp_path / "tiers.toml"
    tiers.write_text(f'[tiers.cpu]\nargs = ["--cpu"]\nmodels = "user"\n{extra}')
    return f"wan22_tiers_file = {tiers}"


def test_cpu_tier_records_a_slowdown_without_failing_and_says_so(wan22_project: Project, tmp_path: Path) -> None:
    p = wan22_project(CPU_ONE, spec=NO_GPU, ini=_cpu_tier(tmp_path))
    p.runpytest("--wan22-update-baselines").assert_outcomes(passed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.2")  # a hundred times slower steps: a loaded shared CPU
        result = p.runpytest("-v")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*high_low-5s-640p-lightx2v_4step*step*+*%*recorded*",
        "step: recorded, *% slower, not judged on this tier; 95% CI*",
        "wan22: timings recorded, not judged on the cpu tier (1 variant): its row sets judge_timings = false (a "
        "shared CPU's rounds swing by more than any tolerance); OOM, fit, outputs, the graph and vram are judged. "
        "Set judge_timings = true in your tier table (--wan22-tiers-file) to judge them",
    ])
    assert "regressed" not in result.stdout.str()


def test_cpu_tier_judges_timings_when_its_row_asks(wan22_project: Project, tmp_path: Path) -> None:
    p = wan22_project(CPU_ONE, spec=NO_GPU, ini=_cpu_tier(tmp_path, "judge_timings = true\n"))
    p.runpytest("--wan22-update-baselines").assert_outcomes(passed=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.2")
        result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*high_low-5s-640p-lightx2v_4step: regressed (vs baseline): step *slower (95% CI*",
                                 "*step: regressed, *slower; 95% CI*"])
    assert "not judged" not in result.stdout.str()


def test_cpu_tier_ab_records_a_slower_candidate_without_failing(wan22_project: Project, tmp_path: Path) -> None:
    p = wan22_project(CPU_ONE, spec=NO_GPU, ini=_cpu_tier(tmp_path))
    b = _install(p.path, "candidate", FAKE_COMFYUI_STEP_SECONDS="0.05")
    result = p.runpytest(f"--wan22-comfyui-dir={b}", f"--wan22-ab-comfyui-dir={FAKE_DIR}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["wan22: timings recorded, not judged on the cpu tier (1 variant)*"])


# --- other compute processes on the GPU -------------------------------------------------------------------------

GPU_ONE = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    wan22_run(BASE)
"""


@pytest.fixture
def neighbour() -> Iterator[int]:
    """A real process that stands for a training job on the GPU (the fake NVML lists it with 7000 MiB); started
    through a shell that exits, so that it is no descendant of this session (whose processes are its own)."""
    if os.name == "nt":
        pytest.skip("needs POSIX: the stand-in is started through sh")
    out = subprocess.run(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(300)' train-neighbour "
                          ">/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True)
    pid = int(out.stdout)
    try:
        assert pid not in process_tree(os.getpid())
        yield pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # POSIX: the fixture skips elsewhere


def _beside(pid: int) -> dict[str, Any]:
    device = {**RTX5090["devices"][0], "processes": [{"pid": "children", "used_mib": 6000},
                                                     {"pid": pid, "used_mib": 7000}]}
    return {"devices": [device]}


def test_recording_a_baseline_beside_a_neighbour_fails_naming_it_and_the_flag(wan22_project: Project,
                                                                             neighbour: int) -> None:
    p = wan22_project(GPU_ONE, spec=_beside(neighbour))
    result = p.runpytest("--wan22-update-baselines", "--wan22-log-dir=logs")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*high_low-5s-640p-lightx2v_4step: not recording a baseline beside other compute processes on the GPU: "
        f"PID {neighbour} {Path(sys.executable).name} -c import time; time.sleep(300) train-neighbour (6.8 GiB). "
        "Their work "
        "slows this one's and every later comparison would inherit it; stop them, or pass --wan22-allow-neighbours"
        " (ini wan22_allow_neighbours) to record anyway (the records name them)"])
    assert not (p.path / "baselines").exists()
    assert not list(p.path.glob("logs/**/records/*.json"))  # refused before any round ran


def test_a_neighbour_is_named_in_the_records_the_summary_and_the_verdict(wan22_project: Project,
                                                                        neighbour: int) -> None:
    p = wan22_project(GPU_ONE, spec=_beside(neighbour))
    p.runpytest("--wan22-update-baselines", "--wan22-allow-neighbours", "--wan22-log-dir=logs").assert_outcomes(
        passed=1)
    records = [json.loads(f.read_text()) for f in p.path.glob("logs/**/records/*.json")]
    assert records
    assert all(r["vram"]["neighbours"] == [{"pid": neighbour, "name": ANY, "used_mib": 7000.0}] for r in records)
    assert (p.path / "baselines" / "rtx5090" / "wan22_i2v_a14b.json").is_file()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.2")
        result = p.runpytest()
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*other compute processes shared the GPU during these rounds: PID {neighbour} *train-neighbour (6.8 GiB);"
        " their work slows this run's, so a change may be theirs*",
        f"  high_low-5s-640p-lightx2v_4step round 2: neighbour: other compute processes on the GPU during this "
        f"round: PID {neighbour} *",
    ])
