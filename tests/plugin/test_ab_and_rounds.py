"""A/B sessions, adaptive rounds and shared warm-ups, end to end against the fake ComfyUI."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.plugin.conftest import FAKE_DIR

Project = Callable[..., pytest.Pytester]

# Rounds of a few milliseconds on a shared CPU: only a gross change is signal here, so every metric gets a wide band.
LOOSE = tuple(f"--wan22-tolerance={m}:500%+1s" for m in (
    "step", "sampling", "wall", "load", "text", "encode", "decode", "interpolation", "save", "compile"))

ONE = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    wan22_run(BASE)
"""


def _records(p: pytest.Pytester) -> list[dict]:
    files = sorted(p.path.glob("logs/*/**/records/*.json"), key=lambda f: f.stat().st_mtime_ns)
    return [json.loads(f.read_text()) for f in files]


def _install(tmp: Path, name: str, **knobs: str) -> Path:
    """A copy of the fake ComfyUI: another install, with its own behaviour."""
    dest = tmp / name
    shutil.copytree(FAKE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    if knobs:
        (dest / "fake_knobs.json").write_text(json.dumps(knobs))
    return dest


def test_ab_identical_installs_pass_interleaved_and_write_no_baseline(wan22_project: Project) -> None:
    p = wan22_project(ONE)
    a = _install(p.path, "current")
    result = p.runpytest("--wan22-log-dir=logs", f"--wan22-ab-comfyui-dir={a}", "--wan22-rounds=3",
                         "--wan22-min-rounds=3", *LOOSE)
    result.assert_outcomes(passed=1)
    records = _records(p)
    assert [(r["side"], r["warmup"]) for r in records] == [
        ("A", True), ("B", True), ("A", False), ("B", False), ("A", False), ("B", False), ("A", False),
        ("B", False)]
    assert not (p.path / "baselines").exists()


def test_ab_slower_candidate_fails_naming_the_metric_and_both_sides(wan22_project: Project) -> None:
    p = wan22_project(ONE)
    b = _install(p.path, "candidate", FAKE_COMFYUI_STEP_SECONDS="0.05")
    result = p.runpytest(f"--wan22-comfyui-dir={b}", f"--wan22-ab-comfyui-dir={FAKE_DIR}", "--wan22-rounds=3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        f"*B (candidate) vs A (current), rounds interleaved A B A B; ComfyUI {FAKE_DIR} -> {b}*",
        "*step*regressed*",
    ])
    assert not (p.path / "baselines").exists()


@pytest.mark.parametrize(("knobs", "needle"), [
    ({"FAKE_COMFYUI_SCENARIO": "oom"}, "*(side B) round 1 (warm-up): oom: out of memory in KSamplerAdvanced*"),
    ({"FAKE_COMFYUI_SCENARIO": "crash_during_run"}, "*(side B) round 1 (warm-up): server_died*"),
])
def test_ab_candidate_that_fails_fails_the_test_naming_side_b(wan22_project: Project, knobs: dict[str, str],
                                                               needle: str) -> None:
    p = wan22_project(ONE)
    b = _install(p.path, "candidate", **knobs)
    result = p.runpytest(f"--wan22-comfyui-dir={b}", f"--wan22-ab-comfyui-dir={FAKE_DIR}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([needle])


def test_ab_profile_variation_runs_two_servers_with_their_own_flags(wan22_project: Project) -> None:
    p = wan22_project(ONE)
    result = p.runpytest("--wan22-log-dir=logs", "--wan22-ab-args=--use-pytorch-cross-attention --disable-smart-memory",
                         *LOOSE)
    result.assert_outcomes(passed=1)
    logs = {f.parent.name: f.read_text() for f in p.path.glob("logs/main/*/comfyui.log")}
    assert set(logs) == {"A", "B"}
    assert "--disable-smart-memory" in logs["A"].splitlines()[1]
    assert "--disable-smart-memory" not in logs["B"].splitlines()[1]


def test_ab_attention_backends_each_side_keeps_one_attention_flag(wan22_project: Project) -> None:
    """ComfyUI refuses two attention flags: the tier's is replaced on each side, never doubled."""
    p = wan22_project(ONE, fake_env={"FAKE_COMFYUI_PACKAGES": "sageattention"})
    result = p.runpytest("--wan22-log-dir=logs", "--wan22-server-args=--use-sage-attention",
                         "--wan22-ab-args=--use-pytorch-cross-attention", *LOOSE)
    result.assert_outcomes(passed=1)
    logs = {f.parent.name: f.read_text().splitlines()[1] for f in p.path.glob("logs/main/*/comfyui.log")}
    assert logs["A"].endswith("--use-pytorch-cross-attention")
    assert "--use-sage-attention" not in logs["A"]
    assert logs["B"].endswith("--use-sage-attention")
    assert "--use-pytorch-cross-attention" not in logs["B"]


def test_rounds_stop_once_the_verdict_is_decided(wan22_project: Project) -> None:
    p = wan22_project(ONE)
    p.runpytest("--wan22-update-baselines", "--wan22-rounds=3").assert_outcomes(passed=1)
    result = p.runpytest("--wan22-log-dir=logs", "--wan22-rounds=8", "--wan22-min-rounds=2",
                         *LOOSE)
    result.assert_outcomes(passed=1)
    records = _records(p)
    assert [r["warmup"] for r in records] == [True, False, False]  # decided after the fewest rounds


def test_without_a_baseline_the_fewest_rounds_run(wan22_project: Project) -> None:
    p = wan22_project(ONE)
    result = p.runpytest("--wan22-log-dir=logs", "--wan22-rounds=8", "--wan22-min-rounds=2")
    result.assert_outcomes(passed=1)
    assert [r["warmup"] for r in _records(p)] == [True, False, False]


def test_recording_baselines_runs_every_round(wan22_project: Project) -> None:
    p = wan22_project(ONE)
    result = p.runpytest("--wan22-log-dir=logs", "--wan22-update-baselines", "--wan22-rounds=4",
                         "--wan22-min-rounds=2")
    result.assert_outcomes(passed=1)
    assert [r["warmup"] for r in _records(p)] == [True, False, False, False, False]


def test_a_variant_with_the_models_and_shape_of_the_one_before_needs_no_warmup(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variants(wan22_run):
            wan22_run(BASE)
            wan22_run(BASE.pass_order("low_high"))  # same models, same shape: already warm
            wan22_run(BASE.duration(10))  # another shape: warmed again
    """)
    result = p.runpytest("--wan22-log-dir=logs", "--wan22-rounds=2", "--wan22-min-rounds=2")
    result.assert_outcomes(passed=1)
    rows = [(r["variant_id"].split("-")[0] + "-" + r["variant_id"].split("-")[1], r["warmup"])
            for r in _records(p)]
    assert rows == [("high_low-5s", True), ("high_low-5s", False), ("high_low-5s", False),
                    ("low_high-5s", False), ("low_high-5s", False),
                    ("high_low-10s", True), ("high_low-10s", False), ("high_low-10s", False)]
    result.stdout.fnmatch_lines(["*warm-up skipped*low_high-5s*"])


def test_ab_speaks_a_and_b_in_the_summary_the_round_lines_and_the_report(wan22_project: Project,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    p = wan22_project(ONE, fake_env={"FAKE_COMFYUI_STEP_SECONDS": "0.1"})
    a = _install(p.path, "current")
    result = p.runpytest_subprocess("--wan22-log-dir=logs", f"--wan22-ab-comfyui-dir={a}", "--wan22-rounds=3",
                                    "--wan22-min-rounds=3", "--wan22-report=report", "--wan22-progress=lines",
                                    "--wan22-progress-interval=0.1", *LOOSE)
    result.assert_outcomes(passed=1)
    name = "high_low-5s-640p-lightx2v_4step"
    result.stdout.fnmatch_lines([  # the progress lines name the side, numbered as the table numbers them
        f"wan22 {name} | [[]A] round 1 (warm-up) | * | 0:0*",
        f"wan22 {name} | [[]A] round 1 (warm-up): success | *",
        f"wan22 {name} | [[]B] round 1 (warm-up) | * | 0:0*",
        f"wan22 {name} | [[]B] round 1 (warm-up): success | *",
        f"wan22 {name} | [[]A] round 2: success | *",
        f"wan22 {name} | [[]B] round 4: success | *",
        "*wan22 runs*",
        "workflow*variant*side*round*outcome*",
        f"wan22_i2v_a14b  {name}  A (current)    1 (warm-up)  success*",
        f"wan22_i2v_a14b  {name}  B (candidate)  1 (warm-up)  success*",
        f"wan22_i2v_a14b  {name}  A (current)    2            success*",
        "workflow*variant*metric*A (current)*B (candidate)*change*verdict",
    ])
    section = result.stdout.str().split("wan22 runs")[1]
    assert "baseline" not in section
    report = p.path / "report"
    data = json.loads((report / "results.json").read_text())
    (variant,) = data["variants"]
    assert [(r["side"], r["name"]) for r in variant["rounds"]] == [
        ("A", "1 (warm-up)"), ("B", "1 (warm-up)"), ("A", "2"), ("B", "2"), ("A", "3"), ("B", "3"), ("A", "4"),
        ("B", "4")]
    a_walls = [r["wall_s"] for r in _records(p) if r["side"] == "A" and not r["warmup"]]
    assert sorted(variant["baseline"]["wall_s"]) == sorted(a_walls)
    assert data["sides"] == {"baseline": "A (current)", "now": "B (candidate)"}
    page = (report / "index.html").read_text()
    sides = re.findall(rf"<tr><td>wan22_i2v_a14b</td><td>{name}</td><td>([AB]) \((?:current|candidate)\)</td>", page)
    assert sides == ["A", "B"] * 4
    assert page.count("<th>A (current)</th><th>B (candidate)</th><th>change</th><th>verdict</th>") == 1
    assert "Same machine block" not in page
    assert "Both sides ran on the same GPU in this session" in page
    md = (report / "summary.md").read_text()
    assert "| workflow | variant | metric | A (current) | B (candidate) | change | verdict |" in md


# A card with 2.6 GiB free once side A has warmed up (its processes hold 6 GiB): side B cannot load beside A.
TIGHT = {"devices": [{"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607, "uuid": "GPU-5090-0",
                      "used_mib": 30000, "processes": [{"pid": "children", "used_mib": 6000}]}]}


def test_ab_in_blocks_waits_until_the_idle_side_has_let_go_of_its_memory(wan22_project: Project) -> None:
    p = wan22_project(ONE, spec=TIGHT, fake_env={"FAKE_COMFYUI_FREE_SECONDS": "1.5"})
    a = _install(p.path, "current")
    result = p.runpytest("--wan22-log-dir=logs", f"--wan22-ab-comfyui-dir={a}", "--wan22-rounds=2",
                         "--wan22-min-rounds=2", "--wan22-report=report", *LOOSE)
    result.assert_outcomes(passed=1)
    records = _records(p)
    assert [(r["side"], r["warmup"]) for r in records] == [
        ("A", True), ("A", False), ("A", False), ("B", True), ("B", False), ("B", False)]
    # B's warm-up starts only once A's models have moved off the card (1.5 s in the fake), not beside them.
    a_done = records[2]["started_at"] + records[2]["wall_s"]
    assert records[3]["started_at"] - a_done >= 1.5
    results = (p.path / "report" / "results.json").read_text()
    assert "in blocks, the idle side's models freed before each block (A: released in " in results
