"""The terminal summary: baseline, now, change and verdict for every judged metric, with today's and richer checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from pytest_wan22.compare import DEFAULT_TOLERANCES, Check, Verdict, parse_tolerance, tolerances
from pytest_wan22.progress import round_label
from pytest_wan22.records import RunRecord, round_name
from pytest_wan22.report import (
    TestOutcome,
    outcome_counts,
    outcome_rows,
    render,
    round_rows,
    verdict_header,
    verdict_rows,
    view,
)


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
    rows = verdict_rows({("wf", "v-ok"): OK, ("wf", "v-new"): NEW})
    assert rows == [
        ["wf", "v-new", "-", "-", "-", "-", "new (no baseline yet)"],
        ["wf", "v-ok", "wall", "10.000 s", "10.300 s", "+3.0%", "ok"],
        ["", "", "step", "1.000 s", "0.990 s", "-1.0%", "ok"],
        ["", "", "vram", "6.00 GiB", "6.00 GiB", "+0.0%", "ok"],
    ]


def test_variants_of_two_workflow_files_with_one_id_stay_apart_named_after_their_file() -> None:
    rows = verdict_rows({("clip_a", "high_low-default"): NEW, ("clip_b", "high_low-default"): NEW})
    assert [r[:2] for r in rows] == [["clip_a", "high_low-default"], ["clip_b", "high_low-default"]]
    a = RunRecord("high_low-default", "clip_a", "cpu", "success")
    header, rows = round_rows([a, replace(a, workflow="clip_b")])
    assert header[:2] == ["workflow", "variant"]
    assert [r[:2] for r in rows] == [["clip_a", "high_low-default"], ["clip_b", "high_low-default"]]


def test_every_default_tolerance_prints_as_it_is_written() -> None:
    assert [str(t) for t in map(parse_tolerance, DEFAULT_TOLERANCES)] == list(DEFAULT_TOLERANCES)
    assert str(parse_tolerance("vram:512MiB")) == "vram:512MiB"
    assert str(parse_tolerance("wall:10%+1.5s")) == "wall:10%+1.5s"


def test_tolerance_column_shows_what_the_user_wrote_and_what_it_came_to() -> None:
    # compare.Check carries the allowance used as a fraction: 1.3% + 5 ms of a 0.5 s step is 2.3%
    step = Check("step", "ok", 0.001, -0.01, 0.012, 0.02, 0.5005, 0.5, tolerance=0.023 - 1e-17)
    wall = Check("wall", "ok", 0.0, -0.01, 0.01, 0.02, 100.0, 100.0, tolerance=0.08)
    v = Verdict("v", "ok", (step, wall))
    rows = verdict_rows({("wf", "v"): v}, verbose=True, tolerances=tolerances(["step:1.3%+5ms"]))
    assert [r[9] for r in rows] == ["1.3%+5ms (2.3% here)", "8%+0.5s"]
    assert [r[9] for r in verdict_rows({("wf", "v"): v}, verbose=True)] == ["2.3%", "8.0%"]  # no table: the figure


def test_phases_that_were_not_measured_say_so_instead_of_zero_seconds_ok() -> None:
    cached = Check("load", "ok", value=0.0, base=0.0)
    absent = Check("decode", "insufficient", base=0.4, note="(not measured in this run)")
    rows = verdict_rows({("wf", "v"): Verdict("v", "ok", (cached, absent))})
    assert rows == [["wf", "v", "load", "not measured", "not measured", "-", "not measured"],
                    ["", "", "decode", "0.400 s", "not measured", "-", "insufficient"]]


def test_ab_tables_say_a_current_and_b_candidate() -> None:
    assert verdict_header(ab=True)[3:5] == ["A (current)", "B (candidate)"]
    assert verdict_header()[3:5] == ["baseline", "now"]
    a = RunRecord("v", "wf", "cpu", "success", round=0, warmup=True, side="A")
    b = replace(a, side="B")
    header, rows = round_rows([a, b, replace(a, round=1, warmup=False), replace(b, round=1, warmup=False)])
    assert header[:4] == ["workflow", "variant", "side", "round"]
    assert [r[2:4] for r in rows] == [["A (current)", "1 (warm-up)"], ["B (candidate)", "1 (warm-up)"],
                                      ["A (current)", "2"], ["B (candidate)", "2"]]
    text = render([a, b], {("wf", "v"): OK}, ab=True)
    assert "metric  A (current)  B (candidate)  change  verdict" in text
    assert "baseline" not in text


@pytest.mark.parametrize("warmup", [True, False])
def test_round_numbers_of_the_table_and_the_live_line_agree(warmup: bool) -> None:
    r = RunRecord("v", "wf", "cpu", "success", round=2, warmup=warmup, side="B")
    assert round_label(r.round, None, r.warmup, r.side) == f"[B] round {round_name(r)}"


def test_every_test_is_listed_with_its_outcome_verdict_and_reason() -> None:
    tests = [TestOutcome("f/a.json::test_workflow[a]", "failed", "a cannot run on this server:", (("a", "v1"),),
                         "f/a.json"),
             TestOutcome("f/b.json::test_workflow[b]", "passed", "", (("b", "v1"),), "f/b.json"),
             TestOutcome("f/c.json::test_workflow[c]", "skipped", "needs tier h200"),
             TestOutcome("t.py::test_d", "error", "error in setup: ComfyUI did not start"),
             TestOutcome("t.py::test_e", "not run")]
    verdicts = {("b", "v1"): Verdict("v1", "new")}
    assert outcome_rows(tests, verdicts) == [
        ["f/a.json::test_workflow[a]", "failed", "not judged", "a cannot run on this server:"],
        ["f/b.json::test_workflow[b]", "passed", "new", "no baseline yet"],
        ["f/c.json::test_workflow[c]", "skipped", "-", "needs tier h200"],
        ["t.py::test_d", "error", "not judged", "error in setup: ComfyUI did not start"],
        ["t.py::test_e", "not run", "not judged", ""]]
    assert outcome_counts(tests) == "5 tests: 1 passed, 1 failed, 1 error, 1 skipped, 1 not run"
    text = render([], verdicts, tests=tests)
    assert text.splitlines()[0] == outcome_counts(tests)
    assert "f/a.json::test_workflow[a]  failed" in text
    long = TestOutcome("t.py::test_f", "failed", "x" * 200)
    assert render([], {}, tests=[long]).splitlines()[-1].endswith(" " + "x" * 97 + "...")  # cut in the terminal


def test_statistical_checks_show_interval_noise_and_tolerance_with_verbose() -> None:
    check = StatCheck("step", "inconclusive", 0.042, -0.01, 0.09, 0.03, 1.042, 1.0, "step:5%", "wide interval")
    v = Verdict("v", "ok", (check,))  # type: ignore[arg-type]
    assert verdict_rows({"v": v}) == [["", "v", "step", "1.000 s", "1.042 s", "+4.2%", "inconclusive"]]
    assert verdict_rows({"v": v}, verbose=True)[0][7:] == ["[-1.0%, +9.0%]", "3.0%", "5%", "wide interval"]
    assert view(check).line == "step: inconclusive (wide interval)"


def test_render_lists_rounds_then_every_verdict() -> None:
    text = render([RunRecord("v-ok", "wf", "cpu", "success", wall_s=10.3)], {("wf", "v-ok"): OK})
    lines = text.splitlines()
    assert lines[0].startswith("workflow  variant")
    assert any(line.startswith("wf") and "v-ok" in line and line.rstrip().endswith("ok") and "+3.0%" in line
               for line in lines)


def test_a_check_without_numbers_still_renders() -> None:
    v = Verdict("v", "insufficient", (Check("wall", "insufficient", note="(no data)"),))
    assert verdict_rows({"v": v}, verbose=True) == [["", "v", "wall", "not measured", "not measured", "-",
                                                      "not measured", "", "", "", "(no data)"]]


def test_tuning_ranks_what_beat_the_tier_profile_and_lists_the_rest_in_order() -> None:
    from pytest_wan22.report import tune_rows

    def trial(candidate: str, status: str, speedup: float | None, incumbent: tuple[str, ...] = ()) -> dict:
        return {"class": "v", "candidate": candidate, "incumbent": " + ".join(incumbent) or "the tier's profile",
                "incumbent_options": list(incumbent), "status": status, "reason": "", "rounds": [3, 3],
                "speedup": speedup, "speedup_low": None, "speedup_high": None, "psnr_db": None, "identical": True}

    data = {"trials": [trial("a=1", "faster", 1.2), trial("b=1", "oom", None), trial("c=1", "faster", 1.5),
                       trial("a=1 + c=1", "faster", 1.1, ("c=1",))]}
    rows = tune_rows(data, "v")
    assert [(r[0], r[1]) for r in rows] == [("1", "c=1"), ("2", "a=1"), ("-", "b=1"), ("-", "a=1 + c=1")]
    assert rows[0][4] == "1.50x"
