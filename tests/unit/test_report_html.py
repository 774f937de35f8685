"""The report folder: self-contained HTML with one figure per variant, summary.md, results.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pytest_wan22 import report_html
from pytest_wan22.compare import Check, Verdict
from pytest_wan22.records import Environment, RunRecord, SamplerPass, VramReport, VramSample
from pytest_wan22.report_html import ReportData, VariantData, environment_diff, render_html, write_report

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
