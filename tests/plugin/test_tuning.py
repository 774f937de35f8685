"""--wan22-tune end to end against the fake ComfyUI: each candidate of a search space an A/B against the tier's
profile, ending where it should (an OOM, an offload, another output, a faster one), the winner written as a tier
row that the next session loads and runs, and a budget that runs out."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable

import pytest

from pytest_wan22.tiers import load_tiers

Project = Callable[..., pytest.Pytester]

SMALL = """
@pytest.mark.rtx5090
def test_small(wan22_run):
    wan22_run(BASE.resolution(64, 64).duration(0.5))
"""

ROW = """
[tiers.rtx5090]
description = "RTX 5090 for the tuning tests"
match = ["RTX 5090"]
args = ["--normalvram", "--reserve-vram", "1.0", "--use-pytorch-cross-attention"]
env = {{ OMP_NUM_THREADS = "1" }}
run_timeout_s = 60

[tiers.rtx5090.tune]
{space}
"""

# One install whose launch profiles behave differently: what each candidate's flags make of the fake.
WHEN = {
    "--fast fp8_matrix_mult": {"FAKE_COMFYUI_SCENARIO": "oom"},
    "--highvram": {"FAKE_COMFYUI_SCENARIO": "offload"},
    "--use-split-cross-attention": {"FAKE_COMFYUI_FRAMES": "noise:40"},
    "--async-offload": {"FAKE_COMFYUI_STEP_SECONDS": "0.001", "FAKE_COMFYUI_NODE_SECONDS": "0.001"},
}
SLOW = {"FAKE_COMFYUI_STEP_SECONDS": "0.06", "FAKE_COMFYUI_NODE_SECONDS": "0.01",
        "FAKE_COMFYUI_WHEN": json.dumps(WHEN)}


def _project(make: Project, space: str, tests: str = SMALL) -> pytest.Pytester:
    p = make(tests, fake_env=SLOW)
    (p.path / "tiers.toml").write_text(ROW.format(space=textwrap.dedent(space)))
    return p


def _trials(p: pytest.Pytester) -> dict[str, dict]:
    data = json.loads((p.path / "report" / "results.json").read_text())
    return {t["candidate"]: t for t in data["tune"]["trials"]}


def _launch_lines(p: pytest.Pytester) -> list[str]:
    return [f.read_text().splitlines()[1] for f in sorted(p.path.glob("logs/**/comfyui.log"))]


def test_each_candidate_ends_where_it_should_and_the_winner_becomes_a_tier_row(wan22_project: Project) -> None:
    p = _project(wan22_project, """
        attention = ["sage", "split"]
        fast = ["fp8_matrix_mult"]
        vram = ["highvram"]
        args = ["--async-offload"]
    """)
    result = p.runpytest("--wan22-tiers-file=tiers.toml", "--wan22-tune", "--wan22-tune-out=tuned.toml",
                         "--wan22-log-dir=logs", "--wan22-report=report", "--wan22-rounds=4", "--wan22-min-rounds=2")
    result.assert_outcomes(passed=1)
    trials = _trials(p)
    assert trials["attention=sage"]["status"] == "unavailable"
    assert "pip install sageattention" in trials["attention=sage"]["reason"]
    assert trials["fast=fp8_matrix_mult"]["status"] == "oom"
    assert trials["vram=highvram"]["status"] == "does not fit"
    assert "model loaded partially" in trials["vram=highvram"]["reason"]
    split = trials["attention=split"]
    assert split["status"] == "output differs"
    assert split["psnr_db"] < 32
    assert "below the 32 dB" in split["reason"]
    assert split["rounds"] == [1, 1]  # rejected after the first timed pair, the one of a shared seed
    fast = trials["args=--async-offload"]
    assert fast["status"] == "faster", fast["reason"]
    assert fast["speedup"] > 1.5
    assert fast["identical"]
    result.stdout.fnmatch_lines([
        "*wan22 tuning*",
        "*search: single options against the tier's profile, then the faster ones combined greedily*",
        "rank*candidate*against*rounds A+B*speed-up (95% CI)*peak GiB (incumbent)*output vs incumbent*result*",
        "1 *args=--async-offload*the tier's profile*x (*x*)*identical*faster*",
        "- *attention=sage*unavailable: sageattention does not import*",
        "*winner: args=--async-offload: --normalvram --reserve-vram 1.0 --use-pytorch-cross-attention --async-offload; "
        "OMP_NUM_THREADS=1",
        "*tier row written to *tuned.toml*",
    ])
    # the row: loadable, the winner's flags, its evidence in the comment block
    text = (p.path / "tuned.toml").read_text()
    assert "# Winner: args=--async-offload" in text
    assert "faster than the tier's profile" in text
    assert "output against the tier's profile's of the same seed: identical" in " ".join(
        line.lstrip("# ") for line in text.splitlines())
    row = load_tiers(p.path / "tuned.toml")["rtx5090"]
    assert row.args[-1] == "--async-offload"
    assert row.match == ("RTX 5090",)
    # the report: the candidates' table and the plot
    page = (p.path / "report" / "index.html").read_text()
    assert "<h2>Tuning</h2>" in page
    assert '<svg class="tune-plot"' in page
    # the next session runs the winner
    nxt = p.runpytest("--wan22-tiers-file=tuned.toml", "--wan22-log-dir=logs2", "--wan22-rounds=2")
    nxt.assert_outcomes(passed=1)
    logs = [f.read_text().splitlines() for f in p.path.glob("logs2/**/comfyui.log")]
    assert logs
    assert all(log[1].endswith("--async-offload") for log in logs)
    assert all(log[2].startswith("=== wan22: environment ") and " OMP_NUM_THREADS=1 " in log[2] for log in logs)


def test_a_candidate_clearly_slower_stops_after_two_rounds(wan22_project: Project) -> None:
    p = wan22_project(SMALL, fake_env={"FAKE_COMFYUI_WHEN": json.dumps({"--cache-none": {
        "FAKE_COMFYUI_STEP_SECONDS": "0.08"}})})
    (p.path / "tiers.toml").write_text(ROW.format(space='cache = ["none"]'))
    result = p.runpytest("--wan22-tiers-file=tiers.toml", "--wan22-tune", "--wan22-report=report",
                         "--wan22-rounds=8", "--wan22-min-rounds=4")
    result.assert_outcomes(passed=1)
    slow = _trials(p)["cache=none"]
    assert slow["status"] == "slower", slow["reason"]
    assert slow["rounds"] == [2, 2]  # not the fewest (4): slower beyond doubt after two
    result.stdout.fnmatch_lines(["*winner: none*", "*tier row written to *tuned-rtx5090.toml*"])
    (row,) = p.path.glob(".wan22/runs/*/tuned-rtx5090.toml")
    assert "# No candidate was faster" in row.read_text()
    assert load_tiers(row)["rtx5090"].args == ("--normalvram", "--reserve-vram", "1.0",
                                               "--use-pytorch-cross-attention")


def test_a_session_out_of_budget_reports_what_it_tried(wan22_project: Project) -> None:
    p = _project(wan22_project, """
        vram = ["highvram"]
        args = ["--async-offload", "--disable-pinned-memory", "--deterministic"]
    """)
    result = p.runpytest("--wan22-tiers-file=tiers.toml", "--wan22-tune", "--wan22-tune-budget=1s",
                         "--wan22-report=report", "--wan22-rounds=4", "--wan22-min-rounds=2")
    result.assert_outcomes(passed=1)
    trials = _trials(p)
    ran = [name for name, t in trials.items() if t["spent_s"] > 0]
    assert ran
    assert trials[ran[-1]]["status"] in ("cut short", "does not fit")
    untried = [name for name, t in trials.items() if t["status"] == "not tried"]
    assert untried, trials
    result.stdout.fnmatch_lines([
        f"*GPU time spent tuning: * s of a 1 s budget; the budget ran out: tried {', '.join(ran)}; not tried: "
        f"{', '.join(untried)}"])


def test_tune_refuses_what_it_cannot_run_with(wan22_project: Project) -> None:
    p = wan22_project(SMALL)
    result = p.runpytest("--wan22-tune", "--wan22-update-baselines")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--wan22-tune runs A/Bs of its own*drop --wan22-update-baselines*"])
    result = p.runpytest("--wan22-tune", "--wan22-tune-space=speed=max")
    result.stderr.fnmatch_lines(["*--wan22-tune-space 'speed=max': 'speed' is no option class; known: attention,*"])


TWO_CLASSES = """
@pytest.mark.rtx5090
def test_nine_frames(wan22_run):
    wan22_run(BASE.resolution(64, 64).duration(0.5))


@pytest.mark.rtx5090
def test_nine_frames_low_high(wan22_run):
    wan22_run(BASE.resolution(64, 64).duration(0.5).pass_order("low_high"))


@pytest.mark.rtx5090
def test_seventeen_frames(wan22_run):
    result = wan22_run(BASE.resolution(64, 64).duration(1))
    assert result.last.ok
"""


def test_winners_combine_greedily_and_the_winner_is_confirmed_on_each_class_of_work(
        wan22_project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    p = _project(wan22_project, 'args = ["--disable-pinned-memory", "--async-offload"]', TWO_CLASSES)
    monkeypatch.setenv("FAKE_COMFYUI_NODE_SECONDS", "0.02")  # each option saves 40-50% of a round, a shared CPU less
    monkeypatch.setenv("FAKE_COMFYUI_WHEN", json.dumps({
        "--async-offload": {"FAKE_COMFYUI_STEP_SECONDS": "0.001"},
        "--disable-pinned-memory": {"FAKE_COMFYUI_NODE_SECONDS": "0.001"}}))
    result = p.runpytest("--wan22-tiers-file=tiers.toml", "--wan22-tune", "--wan22-tune-out=tuned.toml",
                         "--wan22-report=report", "--wan22-rounds=6", "--wan22-min-rounds=2", "-rs")
    result.assert_outcomes(passed=2, skipped=1)
    result.stdout.fnmatch_lines(["SKIPPED *low_high-9f-64x64-lightx2v_4step: tuned as "
                                 "high_low-9f-64x64-lightx2v_4step, which stands for its class of work "
                                 "(wan22_i2v_a14b, 64x64, 9 frames)*"])
    data = json.loads((p.path / "report" / "results.json").read_text())["tune"]
    rows = [(t["class"], t["stage"], t["candidate"], t["incumbent"], t["status"]) for t in data["trials"]]
    nine, seventeen = "high_low-9f-64x64-lightx2v_4step", "high_low-1s-64x64-lightx2v_4step"
    both = "args=--async-offload + args=--disable-pinned-memory"
    assert rows == [
        (nine, "single", "args=--disable-pinned-memory", "the tier's profile", "faster"),
        (nine, "single", "args=--async-offload", "the tier's profile", "faster"),
        (nine, "combination", both, "args=--async-offload", "faster"),  # the fastest single first
        (nine, "confirmation", both, "the tier's profile", "faster"),
        (seventeen, "confirmation", both, "the tier's profile", "faster"),
    ], [t["reason"] for t in data["trials"]]
    assert data["winner"]["options"] == ["args=--async-offload", "args=--disable-pinned-memory"]
    assert [t["class"] for t in data["winner"]["evidence"]] == [nine, seventeen]
    row = load_tiers(p.path / "tuned.toml")["rtx5090"]
    assert row.args[-2:] == ("--async-offload", "--disable-pinned-memory")


def test_a_tuning_session_without_a_variant_says_nothing_was_tuned(wan22_project: Project) -> None:
    p = wan22_project(SMALL)
    result = p.runpytest("--wan22-tune", "-k", "no_such_test")
    result.stdout.fnmatch_lines(["wan22: --wan22-tune: no test ran a variant through wan22_run, so nothing was tuned "
                                 "and no tier row was written"])
