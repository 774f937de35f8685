"""The summary and the report tell the whole session: every test with its outcome and reason, whatever ended it."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path

import pytest

from tests.plugin.test_workflow_files import FAKE_INFO, WORKFLOW, api_to_ui

Project = Callable[..., pytest.Pytester]
ONE_ROUND = ("--wan22-rounds=1", "--wan22-warmup-rounds=0")


def _literal(text: str) -> str:
    """`text` as an fnmatch pattern that matches it literally (test ids have brackets)."""
    return text.replace("[", "[[]")


def _flows(root: Path) -> Path:
    """A workflows folder: one file that runs, one that names a model the server lacks, one that cannot be
    converted, one for another tier."""
    flows = root / "flows"
    flows.mkdir()
    text = WORKFLOW.read_text(encoding="utf-8")
    (flows / "good.json").write_text(text, encoding="utf-8")
    prompt = json.loads(text)
    loader = next(n for n in prompt.values() if n["class_type"] == "UNETLoader")
    loader["inputs"]["unet_name"] = "no_such_model.safetensors"
    (flows / "nomodel.json").write_text(json.dumps(prompt), encoding="utf-8")
    ui = api_to_ui(json.loads(text), json.loads(FAKE_INFO.read_text(encoding="utf-8")))
    next(n for n in ui["nodes"] if n["type"] == "VAELoader")["mode"] = 2  # muted: the decoder loses its vae
    (flows / "broken.json").write_text(json.dumps(ui), encoding="utf-8")
    (flows / "gpu.json").write_text(text, encoding="utf-8")
    (flows / "gpu.wan22.toml").write_text('tiers = ["h200"]\n', encoding="utf-8")
    return flows


def test_a_workflows_session_lists_every_test_with_its_outcome_and_reason(wan22_project: Project) -> None:
    p = wan22_project("")
    flows = _flows(p.path)
    result = p.runpytest(f"--wan22-workflows={flows}", "--wan22-report=report", "-p", "no:randomly", *ONE_ROUND)
    result.assert_outcomes(passed=1, failed=2, skipped=1)
    expected = [
        ("flows/broken.json::test_workflow[broken]", "failed", "not judged",
         "*broken.json: the UI-format workflow cannot be converted to API format without guessing*"),
        ("flows/good.json::test_workflow[good]", "passed", "new", "no baseline yet"),
        ("flows/gpu.json::test_workflow[gpu]", "skipped", "-", "needs tier h200; this machine is rtx5090*"),
        ("flows/nomodel.json::test_workflow[nomodel]", "failed", "not judged",
         "high_low-*-default cannot run on this server: *no_such_model.safetensors*"),
    ]
    result.stdout.fnmatch_lines(["*wan22 runs*", "4 tests: 1 passed, 2 failed, 1 skipped",
                                 "test*outcome*verdict*reason", "-*",
                                 *(f"{_literal(t)}  *{o}  *{v}  *" for t, o, v, _ in expected)])
    result.stdout.fnmatch_lines(["*nomodel*failed*not judged*high_low-*-default cannot run on this server: *..."])
    report = p.path / "report"
    results = json.loads((report / "results.json").read_text())
    got = [(t["nodeid"], t["outcome"], t["verdict"], t["reason"]) for t in results["tests"]]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    assert all(fnmatch(g[3], e[3]) for g, e in zip(got, expected, strict=True)), got
    assert [t["workflow_file"] for t in results["tests"]] == ["flows/broken.json", "flows/good.json",
                                                             "flows/gpu.json", "flows/nomodel.json"]
    (variant,) = results["variants"]  # only the good file ran: named after its file, with its test
    assert (variant["workflow"], variant["variant_id"], variant["tests"]) == (
        "good", "high_low-5s-640p-default", ["flows/good.json::test_workflow[good]"])
    md = (report / "summary.md").read_text()
    page = (report / "index.html").read_text()
    for nodeid, outcome, verdict, _ in expected:
        assert f"| {nodeid} | {outcome} | {verdict} |" in md
        assert f'<td>{nodeid}</td><td class="{outcome}">{outcome}</td><td>{verdict}</td>' in page
    assert "| good | high_low-5s-640p-default | - | - | - | - | new (no baseline yet) |" in md
    assert md.count("new (no baseline yet)") == 1  # the failures are never 'new'
    assert "cannot run on this server: " in page
    assert "needs tier h200" in page


def test_outcomes_come_back_from_xdist_workers(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_runs(wan22_run):
            wan22_run(BASE)

        @pytest.mark.rtx4090
        def test_other_tier(wan22_run):
            wan22_run(BASE)

        def test_not_the_gates():
            pass
    """)
    result = p.runpytest_subprocess("-n", "1", "--wan22-report=report", *ONE_ROUND)
    result.assert_outcomes(passed=2, skipped=1)
    results = json.loads((p.path / "report" / "results.json").read_text())
    assert sorted((t["nodeid"], t["outcome"]) for t in results["tests"]) == [
        ("test_suite.py::test_other_tier", "skipped"), ("test_suite.py::test_runs", "passed")]
    result.stdout.fnmatch_lines(["2 tests: 1 passed, 1 skipped"])


def test_a_report_that_cannot_be_written_is_one_line_and_the_summary_stays(wan22_project: Project) -> None:
    p = wan22_project("""
        import shutil
        from pathlib import Path

        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            wan22_run(BASE)
            report = Path("report")  # the folder turns into a file while the session runs
            shutil.rmtree(report, ignore_errors=True)
            report.write_text("not a folder")
    """)
    result = p.runpytest("--wan22-report=report", *ONE_ROUND)
    result.assert_outcomes(passed=1)
    assert result.ret == 0
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["*wan22 runs*", "1 test: 1 passed", "*high_low-5s-640p-lightx2v_4step*1*success*",
                                 f"wan22: report not written: {p.path / 'report'} is not a folder; fix --wan22-report"])
    assert "Traceback" not in out
    assert "INTERNALERROR" not in out
    assert out.count("report not written") == 1


def test_ctrl_c_still_writes_the_summary_and_the_report_of_what_ran(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_first(wan22_run):
            wan22_run(BASE)
            raise KeyboardInterrupt  # Ctrl-C after one variant ran

        @pytest.mark.rtx5090
        def test_second(wan22_run):
            wan22_run(BASE.duration(10))
    """)
    result = p.runpytest_subprocess("--wan22-report=report", "-p", "no:randomly", *ONE_ROUND)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "INTERNALERROR" not in out
    result.stdout.fnmatch_lines([
        "*wan22 runs*", "2 tests: 1 interrupted, 1 not run",
        "test_suite.py::test_first * interrupted * new * the session was interrupted while it ran",
        "test_suite.py::test_second * not run *",
        "wan22_i2v_a14b  high_low-5s-640p-lightx2v_4step  1 * success*",
        f"wan22: report written to {p.path / 'report' / 'index.html'}", "*KeyboardInterrupt*"])
    results = json.loads((p.path / "report" / "results.json").read_text())
    assert [(t["nodeid"], t["outcome"]) for t in results["tests"]] == [
        ("test_suite.py::test_first", "interrupted"), ("test_suite.py::test_second", "not run")]
    (variant,) = results["variants"]
    assert [r["outcome"] for r in variant["rounds"]] == ["success"]
    assert "test_suite.py::test_second" in (p.path / "report" / "summary.md").read_text()


def test_setup_errors_and_failures_after_the_runs_keep_their_own_reasons(wan22_project: Project) -> None:
    p = wan22_project(textwrap.dedent("""
        @pytest.fixture
        def broken():
            raise RuntimeError("the fixture broke")

        @pytest.mark.rtx5090
        def test_setup_error(wan22_run, broken):
            pass

        @pytest.mark.rtx5090
        def test_own_assert(wan22_run):
            wan22_run(BASE)
            assert 1 == 2, "the test's own check"
    """))
    result = p.runpytest("-p", "no:randomly", *ONE_ROUND)
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines([
        "2 tests: 1 failed, 1 error",
        "test_suite.py::test_setup_error * error * not judged * error in setup: RuntimeError: the fixture broke",
        "test_suite.py::test_own_assert * failed * new * AssertionError: the test's own check*"])
