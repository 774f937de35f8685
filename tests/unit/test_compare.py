from __future__ import annotations

import pytest

from pytest_wan22.compare import Summary, compare, parse_tolerance, summarise, tolerances
from pytest_wan22.records import RunRecord, SamplerPass, VramReport


@pytest.mark.parametrize(
    ("text", "ratio", "absolute"),
    [("time:10%", 0.10, None), ("vram:512MiB", None, 512.0), ("vram:1GiB", None, 1024.0),
     ("step:5%+0.05s", 0.05, 0.05), ("time:250ms", None, 0.25)],
)
def test_parse_tolerance(text: str, ratio: float | None, absolute: float | None) -> None:
    t = parse_tolerance(text)
    assert t.ratio == (pytest.approx(ratio) if ratio is not None else None)
    assert t.absolute == (pytest.approx(absolute) if absolute is not None else None)


@pytest.mark.parametrize("text", ["10%", "speed:10%", "time:ten", "vram:5s", "time:5MiB", "time:"])
def test_bad_tolerance_says_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="tolerance"):
        parse_tolerance(text)


def _s(wall: tuple[float, ...], step: tuple[float, ...] = (), vram: float | None = None) -> Summary:
    return Summary("v", len(wall), wall, step, vram)


TOLS = tolerances([])


def test_within_noise_is_ok() -> None:
    v = compare(_s((10.3, 10.4, 10.2)), _s((10.0, 10.1, 10.2)), TOLS)
    assert v.status == "ok"
    assert not v.failed


def test_clear_slowdown_regresses_and_says_by_how_much() -> None:
    v = compare(_s((12.0, 12.1, 12.2), (1.2,)), _s((10.0, 10.1, 10.2), (1.0,)), TOLS)
    assert v.failed
    assert "time: 12.100 s vs baseline 10.100 s (+19.8%" in v.message


def test_overlapping_rounds_are_suspicious_not_failed() -> None:
    v = compare(_s((11.5, 11.6, 10.0)), _s((10.0, 10.1, 10.2)), TOLS)
    assert v.status == "suspicious"
    assert not v.failed


def test_vram_growth_is_judged_on_its_own() -> None:
    v = compare(_s((10.0,), vram=30000), _s((10.0,), vram=20000), TOLS)
    assert v.failed
    assert any(c.metric == "vram" and c.status == "regressed" for c in v.checks)


def test_faster_is_improved_and_no_baseline_is_new() -> None:
    assert compare(_s((5.0, 5.1)), _s((10.0, 10.1)), TOLS).status == "improved"
    assert compare(_s((5.0,)), None, TOLS).status == "new"


def test_summarise_drops_warmup_and_failed_rounds() -> None:
    p = SamplerPass("11", "high", 2, (1.0, 2.0), 4.0)
    recs = [
        RunRecord("v", "w", "cpu", "success", warmup=True, wall_s=30.0, passes=(p,)),
        RunRecord("v", "w", "cpu", "success", wall_s=10.0, passes=(p,), vram=VramReport(True, peak_process_mib=900)),
        RunRecord("v", "w", "cpu", "success", wall_s=11.0, passes=(p,), vram=VramReport(True, peak_process_mib=950)),
    ]
    s = summarise("v", recs)
    assert s.rounds == 2
    assert s.wall_s == (10.0, 11.0)
    assert s.step_s == (2.0, 2.0)
    assert s.peak_vram_mib == 950
