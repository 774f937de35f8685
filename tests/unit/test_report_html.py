"""The report folder: self-contained HTML with one figure per variant, summary.md, results.json."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from pytest_wan22 import report_html
from pytest_wan22.compare import Check, Verdict
from pytest_wan22.plugin import State
from pytest_wan22.plugin import write_report as write_session_report
from pytest_wan22.records import Environment, RunRecord, SamplerPass, VramReport, VramSample
from pytest_wan22.report import TestOutcome
from pytest_wan22.report_html import ReportData, VariantData, environment_diff, render_html, write_report
from pytest_wan22.settings import Settings, Side
from tests.posix import posix_only

NOW = Environment(gpu_name="NVIDIA H200", driver="580.1", torch="2.9.1", comfyui="0.8.0")
BASE = Environment(gpu_name="NVIDIA H200", driver="570.9", torch="2.9.1", comfyui="0.7.0")


def record(variant: str, i: int, warmup: bool = False) -> RunRecord:
    samples = tuple(VramSample(t / 10, 1000.0 + 50 * t, 2000.0 + 50 * t) for t in range(30))
    return RunRecord(variant, "wan22_i2v_a14b", "h200", "success", round=i, warmup=warmup, wall_s=60.0 + i,
                     passes=(SamplerPass("3", "hi", 4, (1.0, 2.0, 3.0, 4.0), 8.0 + i),
                             SamplerPass("4", "lo", 4, (), 8.5)),
                     phases={"load": 5.0, "sampling": 40.0 + i, "decode": 3.0},
                     vram=VramReport(True, interval_s=0.1, peak_process_mib=2450.0, samples=samples))


def data() -> ReportData:
    ok = Verdict("a-5s", "ok", (Check("wall", "ok", estimate=61 / 60 - 1, value=61.0, base=60.0),
                                       Check("vram", "ok", estimate=2450 / 2400 - 1, value=2450.0, base=2400.0)))
    variants = (
        VariantData("a-5s", "wan22_i2v_a14b", tuple(record("a-5s", i, i == 0) for i in range(3)), ok,
                    (2.0, 2.1, 2.05), (60.0, 60.5), 2400.0, 96.0),
        VariantData("b-10s", "wan22_i2v_a14b", tuple(record("b-10s", i) for i in range(2)), Verdict("b-10s", "new"),
                    budget_gib=100.0),
    )
    return ReportData("h200", variants, NOW, BASE)


def test_writes_three_files_and_appends_the_step_summary(tmp_path: Path) -> None:
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    index = write_report(data(), tmp_path / "report", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert index == tmp_path / "report" / "index.html"
    assert sorted(p.name for p in index.parent.iterdir()) == ["index.html", "results.json", "summary.md"]
    md = (index.parent / "summary.md").read_text()
    assert "| a-5s | wall | 60.000 s | 61.000 s | +1.7% | ok |" in md
    assert "driver 570.9 → 580.1" in md
    assert summary.read_text() == "earlier step\n" + md + "\n"


def test_html_is_self_contained_with_one_figure_per_variant(tmp_path: Path) -> None:
    page = render_html(data())
    assert len(re.findall(r'<img class="figure"[^>]*src="data:image/png;base64,', page)) == 2
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing to fetch
    assert "<script" not in page
    assert "Plots need matplotlib" not in page
    assert "<td>driver</td><td>570.9</td><td>580.1</td>" in page


def test_without_matplotlib_the_tables_render_and_the_page_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report_html, "matplotlib_available", lambda: False)
    page = render_html(data())
    assert "<img" not in page
    assert "Plots need matplotlib: <code>pip install &#x27;pytest-wan22[report]&#x27;</code>" in page
    assert page.count('<section class="variant"') == 2


def test_results_json_has_every_verdict_rounds_and_the_environment_diff(tmp_path: Path) -> None:
    write_report(data(), tmp_path, env={})
    results = json.loads((tmp_path / "results.json").read_text())
    assert [v["status"] for v in results["variants"]] == ["ok", "new"]
    first = results["variants"][0]
    assert [c["metric"] for c in first["checks"]] == ["wall", "vram"]
    assert first["checks"][0]["estimate"] == pytest.approx(61 / 60 - 1)
    assert first["baseline"]["step_s"] == [2.0, 2.1, 2.05]
    assert len(first["rounds"]) == 3
    assert {d["field"] for d in results["environment_diff"]} == {"driver", "comfyui"}


def test_environment_diff_needs_both_sides() -> None:
    assert environment_diff(None, NOW) == []
    assert environment_diff(NOW, NOW) == []


def test_collect_reads_stored_baselines_or_a_reference(tmp_path: Path) -> None:
    from pytest_wan22.baselines import BaselineStore
    from pytest_wan22.compare import Summary
    from pytest_wan22.tiers import load_tiers

    tier = load_tiers(None)["h200"]
    BaselineStore(tmp_path).update("h200", "wan22_i2v_a14b", BASE,
                                   {"a-5s": Summary("a-5s", 2, {"wall": ((60.0,), (61.0,)), "step": ((2.0,), (2.1,)),
                                                             "vram": ((2400.0,),)})})
    records = [record("a-5s", 0, True), record("a-5s", 1), record("c-5s", 1)]
    data = report_html.collect(records, {}, tier, NOW, tmp_path)
    a, c = data.variants
    assert (a.baseline_step_s, a.baseline_peak_mib, a.budget_gib) == ((2.0, 2.1), 2400.0, 96.0)
    assert (c.variant_id, c.baseline_step_s) == ("c-5s", ())
    assert data.baseline_machine == BASE
    other = Environment(gpu_name="NVIDIA H200", torch="2.10.0")
    reference = {"c-5s": Summary("c-5s", 1, {"wall": ((5.0,),), "step": ((1.5,),)})}
    ab = report_html.collect(records, {}, tier, NOW, tmp_path, reference, other)
    assert ab.variants[1].baseline_step_s == (1.5,)
    assert ab.baseline_machine == other


def ab_data() -> ReportData:
    """An interleaved A/B of one variant: a warm-up on each side, then 3 timed rounds a side (8 rounds)."""
    order = [("A", 0, True), ("B", 0, True), ("A", 1, False), ("B", 1, False), ("A", 2, False), ("B", 2, False),
             ("A", 3, False), ("B", 3, False)]
    records = [replace(record("a-5s", i, warm), side=side,
                       environment=NOW if side == "B" else replace(NOW, python="/srv/current/bin/python"))
               for side, i, warm in order]
    verdict = Verdict("a-5s", "ok", (Check("wall", "ok", estimate=0.0, value=61.0, base=61.0),), label="B vs A",
                      notes=("B (candidate) vs A (current), rounds interleaved A B A B",))
    tests = [TestOutcome("suites/test_x.py::test_variant[5s]", "passed", "", (("wan22_i2v_a14b", "a-5s"),))]
    return report_html.collect(records, {("wan22_i2v_a14b", "a-5s"): verdict}, None, NOW, Path("/nonexistent"),
                               tests=tests, ab=True)


def test_ab_report_shows_every_round_of_both_sides_once_in_a_and_b_words() -> None:
    data = ab_data()
    (v,) = data.variants
    assert [(r.side, r.warmup) for r in v.records][:2] == [("A", True), ("B", True)]
    assert len(v.timed) == 3  # side B's
    assert v.baseline_wall_s == (61.0, 62.0, 63.0)  # side A's
    page = render_html(data)
    rows = re.findall(r"<tr><td>wan22_i2v_a14b</td><td>a-5s</td><td>([AB]) \((?:current|candidate)\)</td>"
                      r"<td>([^<]*)</td>", page)
    assert rows == [("A", "1 (warm-up)"), ("B", "1 (warm-up)"), ("A", "2"), ("B", "2"), ("A", "3"), ("B", "3"),
                    ("A", "4"), ("B", "4")]
    assert page.count("<th>A (current)</th><th>B (candidate)</th><th>change</th>") == 1  # the metric table, once
    assert "<th>tolerance</th>" in page
    assert "<th>baseline</th>" not in page
    assert "Same machine block" not in page
    assert "Both sides ran on the same GPU in this session (NVIDIA H200)" in page
    assert "<td>python</td><td>/srv/current/bin/python</td><td>-</td>" in page
    md = report_html.render_markdown(data)
    assert "| workflow | variant | metric | A (current) | B (candidate) | change | verdict |" in md
    assert "Side B differs from side A: python /srv/current/bin/python → -" in md
    results = report_html.render_json(data)
    assert results["ab"] is True
    assert [r["side"] for r in results["variants"][0]["rounds"]] == ["A", "B"] * 4


def test_ab_figure_plots_the_vram_of_both_sides() -> None:
    pytest.importorskip("matplotlib")
    (v,) = ab_data().variants
    fig = report_html.figure(v)
    labels = [line.get_label() for line in fig.axes[2].get_lines()]
    assert labels[:8] == ["round [A] 1 (warm-up)", "round [B] 1 (warm-up)", "round [A] 2", "round [B] 2",
                          "round [A] 3", "round [B] 3", "round [A] 4", "round [B] 4"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["A (current)", "B (candidate)"]


def test_every_test_of_the_session_is_in_all_three_files_with_its_reason(tmp_path: Path) -> None:
    tests = (TestOutcome("flows/good.json::test_workflow[good]", "passed", "", (("good", "high_low-default"),),
                         "flows/good.json"),
             TestOutcome("flows/bad.json::test_workflow[bad]", "failed",
                         "high_low-default cannot run on this server:", (("bad", "high_low-default"),),
                         "flows/bad.json"),
             TestOutcome("flows/gpu.json::test_workflow[gpu]", "skipped", "needs tier h200"))
    good = replace(record("high_low-default", 1), workflow="good")
    data = report_html.collect([good], {("good", "high_low-default"): Verdict("high_low-default", "new")}, None,
                               NOW, tmp_path, tests=tests)
    write_report(data, tmp_path / "report", env={})
    page = (tmp_path / "report" / "index.html").read_text()
    md = (tmp_path / "report" / "summary.md").read_text()
    results = json.loads((tmp_path / "report" / "results.json").read_text())
    assert "3 tests: 1 passed, 1 failed, 1 skipped" in page
    assert ('<td>flows/bad.json::test_workflow[bad]</td><td class="failed">failed</td><td>not judged</td>'
            "<td>high_low-default cannot run on this server:</td>") in page
    assert '<a href="#good--high_low-default">high_low-default</a>' in page
    assert '<section class="variant" id="good--high_low-default"><h2>good: high_low-default' in page
    assert "| flows/bad.json::test_workflow[bad] | failed | not judged | high_low-default cannot run on this " \
           "server: |" in md
    assert "| flows/gpu.json::test_workflow[gpu] | skipped | - | needs tier h200 |" in md
    assert "| flows/good.json::test_workflow[good] | passed | new | no baseline yet |" in md
    assert [(t["nodeid"], t["outcome"], t["verdict"], t["reason"]) for t in results["tests"]] == [
        ("flows/good.json::test_workflow[good]", "passed", "new", "no baseline yet"),
        ("flows/bad.json::test_workflow[bad]", "failed", "not judged", "high_low-default cannot run on this server:"),
        ("flows/gpu.json::test_workflow[gpu]", "skipped", "-", "needs tier h200")]
    assert results["variants"][0]["tests"] == ["flows/good.json::test_workflow[good]"]


def _state(report_dir: Path, ab: Side | None = None) -> State:
    return State(Settings(rootdir=report_dir.parent, tiers={}, report_dir=report_dir, ab=ab), None, "cpu")


@posix_only("/proc is a folder nobody can write in")
def test_a_report_folder_that_cannot_be_made_is_one_reason_not_a_traceback() -> None:
    state = _state(Path("/proc/wan22-report"))
    state.records.append(record("a-5s", 0))
    write_session_report(state)
    assert state.report_path is None
    assert state.report_error.endswith("(/proc/wan22-report); fix --wan22-report")


def test_an_ab_session_stopped_after_side_a_still_gets_its_report(tmp_path: Path) -> None:
    state = _state(tmp_path / "report", ab=Side(None, "python", (), name="A"))
    state.records.append(replace(record("a-5s", 0, True), side="A"))
    write_session_report(state)
    assert state.report_error == ""
    page = (tmp_path / "report" / "index.html").read_text()
    assert "Only one side ran" in page
    assert "A (current)" in page


def test_a_failure_while_rendering_is_named_and_the_session_ends_normally(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(report_html, "collect", boom)
    state = _state(tmp_path / "report")
    state.records.append(record("a-5s", 0))
    write_session_report(state)
    assert state.report_error == "RuntimeError: boom"


def test_the_page_shows_tolerances_as_the_user_writes_them() -> None:
    from pytest_wan22.compare import tolerances

    step = Check("step", "ok", 0.001, -0.01, 0.012, 0.02, 2.002, 2.0, tolerance=0.013 + 0.005 / 2.0 - 1e-17)
    data = report_html.collect([record("a-5s", 1)], {("wan22_i2v_a14b", "a-5s"): Verdict("a-5s", "ok", (step,))},
                               None, NOW, Path("/nonexistent"), tolerances=tolerances(["step:1.3%+5ms"]))
    page = render_html(data)
    assert "<td>1.3%+5ms (1.5% here)</td>" in page
    assert "0.01549" not in page
