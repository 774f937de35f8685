"""What the gate judges and how long it runs, end to end against the fake ComfyUI: the cpu tier records timings
without judging them, and a headline agrees with its detail lines."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.plugin.conftest import FAKE_DIR
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
