"""Live progress and the report against a real ComfyUI on the CPU (set WAN22_COMFYUI_DIR and WAN22_PYTHON)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from tests.browser import find_chromium, open_page, screenshot
from tests.real.conftest import COMFYUI, REPO, real_project
from tests.terminal import DRAW, run_in_pty

TEST = f'''
from __future__ import annotations

from pytest_wan22.workflows import Variant, load_workflow

WF = load_workflow({str(REPO / "workflows" / "wan22_i2v_a14b.json")!r})


def test_i2v(wan22_run):
    wan22_run(Variant(WF).duration(5))
'''


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory,
            monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in list(os.environ):
        if name.startswith(("WAN22_", "PYTEST_ADDOPTS", "PYTEST_XDIST")) and name != "WAN22_MODELS_DIR":
            monkeypatch.delenv(name)
    real_project(pytester, tmp_path_factory, comfyui_dir=COMFYUI, baselines_dir="baselines", rounds=2,
                 warmup_rounds=1)
    pytester.makepyfile(test_real=TEST)
    return pytester


def test_step_counter_advances_on_a_terminal_and_plain_lines_without_one(project: pytest.Pytester) -> None:
    out = run_in_pty(project.path, timeout=600)
    assert "1 passed" in out, out[-3000:]
    high = [d for d in DRAW.findall(out) if "| round 2 | KSampler (high noise) | step" in d]
    steps = [int(m) for d in high for m in re.findall(r"step (\d+)/\d+", d)]
    assert steps == sorted(steps), high
    assert len(set(steps)) >= 2, high  # the counter moved within one pass
    plain = project.runpytest_subprocess("--wan22-progress-interval=0.1")
    plain.assert_outcomes(passed=1)
    assert "\x1b[" not in plain.stdout.str()
    plain.stdout.fnmatch_lines(["wan22 * | round 1 (warm-up) | * | 0:0*",
                                "wan22 * | round 1 (warm-up): success | * s | * s/step",
                                "wan22 * | round 3: success | * s | * s/step"])


def test_report_of_a_baseline_and_a_rerun_opens_in_chromium(project: pytest.Pytester, tmp_path: Path) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH: apt-get install chromium (.ci/run installs it)")
    project.runpytest_subprocess("--wan22-update-baselines").assert_outcomes(passed=1)
    # CPU timings on a shared machine are noise: the tolerances keep this test about the report.
    rerun = project.runpytest_subprocess("--wan22-report=report", *(
        f"--wan22-tolerance={m}:1000%+1s" for m in ("step", "sampling", "wall", "load", "text", "encode", "decode",
                                                    "interpolation", "save", "compile")))
    rerun.assert_outcomes(passed=1)
    report = project.path / "report"
    results = json.loads((report / "results.json").read_text())
    (variant,) = results["variants"]
    assert {c["metric"] for c in variant["checks"]} >= {"wall", "step"}
    assert variant["baseline"]["step_s"]
    assert results["machine"]["comfyui"]
    page = open_page(browser, report / "index.html", tmp_path / "profile")
    assert page.console == []
    assert page.probe == {"figures-decoded": 1, "sections": 1, "sections-with-figure": 1}
    shot = tmp_path / "report.png"
    screenshot(browser, report / "index.html", shot, tmp_path / "profile2")
    assert shot.stat().st_size > 10_000
