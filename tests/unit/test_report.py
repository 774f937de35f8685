"""The terminal summary: baseline, now, change and verdict for every judged metric, with today's and richer checks."""

from __future__ import annotations

from dataclasses import dataclass

from pytest_wan22.compare import Check, Verdict
from pytest_wan22.records import RunRecord
from pytest_wan22.report import render, verdict_rows, view


@dataclass(frozen=True)
class StatCheck:
    """The statistical Check's shape: a relative estimate with its interval and noise floor."""

    metric: str
    status: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    mdc: float | None
    value: float | None
    base: float | None
    tolerance: str
    note: str = ""

    def describe(self) -> str:
        return f"{self.metric}: {self.status} ({self.note})"


OK = Verdict("v-ok", "ok", (Check("wall", "ok", estimate=0.03, value=10.3, base=10.0),
                            Check("step", "ok", estimate=-0.01, value=0.99, base=1.0),
                            Check("vram", "ok", estimate=0.0, value=6144.0, base=6144.0)))
NEW = Verdict("v-new", "new")


def test_passing_metrics_are_shown_with_baseline_now_and_change() -> None:
    rows = verdict_rows({"v-ok": OK, "v-new": NEW})
    assert rows == [
        ["v-new", "-", "-", "-", "-", "new (no baseline yet)"],
        ["v-ok", "wall", "10.000 s", "10.300 s", "+3.0%", "ok"],
        ["", "step", "1.000 s", "0.990 s", "-1.0%", "ok"],
        ["", "vram", "6.00 GiB", "6.00 GiB", "+0.0%", "ok"],
    ]


def test_statistical_checks_show_interval_noise_and_tolerance_with_verbose() -> None:
    check = StatCheck("step", "inconclusive", 0.042, -0.01, 0.09, 0.03, 1.042, 1.0, "step:5%", "wide interval")
    v = Verdict("v", "ok", (check,))  # type: ignore[arg-type]
    assert verdict_rows({"v": v}) == [["v", "step", "1.000 s", "1.042 s", "+4.2%", "inconclusive"]]
    assert verdict_rows({"v": v}, verbose=True)[0][6:] == ["[-1.0%, +9.0%]", "3.0%", "step:5%", "wide interval"]
    assert view(check).line == "step: inconclusive (wide interval)"


def test_render_lists_rounds_then_every_verdict() -> None:
    text = render([RunRecord("v-ok", "wf", "cpu", "success", wall_s=10.3)], {"v-ok": OK})
    lines = text.splitlines()
    assert lines[0].startswith("variant")
    assert any(line.startswith("v-ok") and line.rstrip().endswith("ok") and "+3.0%" in line for line in lines)


def test_a_check_without_numbers_still_renders() -> None:
    v = Verdict("v", "insufficient", (Check("wall", "insufficient", note="(no data)"),))
    assert verdict_rows({"v": v}, verbose=True) == [["v", "wall", "-", "-", "-", "insufficient", "", "", "",
                                                      "(no data)"]]
