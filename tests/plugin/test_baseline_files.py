"""Baseline files are checked once at session start, before any ComfyUI starts."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

Project = Callable[..., pytest.Pytester]

RUN = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    wan22_run(BASE)
"""
FILE = ("baselines", "rtx5090", "wan22_i2v_a14b.json")
VARIANT = "high_low-5s-640p-lightx2v_4step"


def test_a_corrupt_baseline_stops_the_session_before_comfyui_starts(wan22_project: Project) -> None:
    p = wan22_project(RUN)
    path = p.path.joinpath(*FILE)
    path.parent.mkdir(parents=True)
    path.write_text('{"schema_version": 2, "tier": "rtx5')  # truncated
    result = p.runpytest("--wan22-log-dir", "logs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*baseline file *wan22_i2v_a14b.json is corrupt: not valid JSON*"
                                 "git checkout*--wan22-update-baselines*"])
    assert not (p.path / "logs").exists()  # no server was started, no round was run
    assert path.read_text() == '{"schema_version": 2, "tier": "rtx5'


def test_update_sets_a_corrupt_baseline_aside_and_rewrites_it(wan22_project: Project) -> None:
    p = wan22_project(RUN)
    path = p.path.joinpath(*FILE)
    path.parent.mkdir(parents=True)
    path.write_text("<<<<<<< HEAD\n{}\n=======\n{}\n>>>>>>> theirs\n")
    result = p.runpytest("--wan22-update-baselines")
    result.assert_outcomes(passed=1)
    (kept,) = path.parent.glob("wan22_i2v_a14b.json.corrupt-*")
    assert kept.read_text().startswith("<<<<<<< HEAD")
    result.stdout.fnmatch_lines([f"wan22: baseline *wan22_i2v_a14b.json was corrupt (*); kept as {kept.name}, "
                                 "rewritten from this run", "collected 1 item"])  # said in the header
    stored = json.loads(path.read_text())
    assert stored["schema_version"] == 2
    assert list(stored["variants"]) == [VARIANT]
    p.runpytest().assert_outcomes(passed=1)  # and the next session compares against it


def test_a_foreign_baseline_stops_even_an_update(wan22_project: Project) -> None:
    p = wan22_project(RUN)
    path = p.path.joinpath(*FILE)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema_version": 2, "tier": "h200", "workflow": "wan22_i2v_a14b", "variants": {}}))
    result = p.runpytest("--wan22-update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*is foreign: recorded for tier 'h200', but it lies in the 'rtx5090' folder*"])
