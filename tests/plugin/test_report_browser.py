"""The report of a run against the fake ComfyUI, opened in headless Chromium (skipped without one)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.browser import find_chromium, open_page

Project = Callable[..., pytest.Pytester]

TWO = """
@pytest.mark.rtx5090
@pytest.mark.parametrize("seconds", [5, 10])
def test_variant(wan22_run, seconds):
    wan22_run(BASE.duration(seconds))
"""


def _report(wan22_project: Project, monkeypatch: pytest.MonkeyPatch) -> Path:
    p = wan22_project(TWO)
    p.runpytest_subprocess("--wan22-update-baselines").assert_outcomes(passed=2)
    summary = p.path / "step_summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    # rounds of a few ms, two a side: only a gross change is signal, so the bands have an absolute part too
    result = p.runpytest_subprocess("--wan22-report=report", "--wan22-tolerance=wall:500%+1s",
                                    "--wan22-tolerance=step:500%+1s", "--wan22-tolerance=sampling:500%+1s")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([  # every judged metric in the summary, passing ones included
        "workflow*variant*metric*baseline*now*change*verdict",
        "wan22_i2v_a14b  high_low-10s-640p-lightx2v_4step  step * s * s *%*",  # ok or inconclusive: a few ms
        "                                                  sampling (KSampler (high noise)) * s * s *% *",
        "                                                  wall * s * s *%*",
        "                                                  load * not measured * not measured * - * not measured",
        # vram compares the allocator's peak (the fake probe's 12 GiB), not NVML's 5.86 GiB of the process
        "                                                  vram *12.00 GiB *12.00 GiB *+0.0% *ok",
        f"wan22: report written to {p.path / 'report' / 'index.html'}"])
    assert summary.read_text() == (p.path / "report" / "summary.md").read_text() + "\n"
    return p.path / "report"


def test_report_of_a_fake_run_has_every_variant_and_verdict(wan22_project: Project,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    report = _report(wan22_project, monkeypatch)
    results = json.loads((report / "results.json").read_text())
    assert [v["variant_id"] for v in results["variants"]] == ["high_low-5s-640p-lightx2v_4step",
                                                             "high_low-10s-640p-lightx2v_4step"]
    for v in results["variants"]:
        assert v["status"] in ("ok", "improved")
        assert {c["metric"] for c in v["checks"]} >= {"wall", "step", "vram"}
        assert v["baseline"]["step_s"]
        assert v["rounds"][0]["peak_vram_mib"] == 6000


def test_report_opens_in_chromium_without_console_errors_one_figure_per_variant(
        wan22_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    browser = find_chromium()
    if browser is None:
        pytest.skip("no Chromium on PATH: apt-get install chromium (.ci/run installs it)")
    report = _report(wan22_project, monkeypatch)
    page = open_page(browser, report / "index.html", tmp_path / "profile")
    assert page.console == []
    assert page.probe == {"figures-decoded": 2, "sections": 2, "sections-with-figure": 2}, page.dom[:2000]
