"""One error per cause: what would fail every test stops the session once, before anything runs; ComfyUI's
interpreter is found in its folder and checked once; a server that does not start is tried once."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.plugin.conftest import FAKE_DIR
from tests.posix import posix_only

Project = Callable[..., pytest.Pytester]

RUN = """
@pytest.mark.rtx5090
def test_variant(wan22_run):
    assert wan22_run(BASE).summary.rounds == 2
"""
THREE = "".join(RUN.replace("test_variant", f"test_{n}") for n in ("a", "b", "c"))


def comfy_folder(root: Path, requirements: str | None = "aiohttp\n", venv: str | None = ".venv") -> Path:
    """A ComfyUI folder whose main.py is the fake's, with a requirements.txt and, in `venv`, a python (a shell
    script running this interpreter) that notes each time it runs in `<folder>/ran`."""
    folder = root / "ComfyUI"
    folder.mkdir(parents=True)
    (folder / "main.py").write_text(f"import runpy\nrunpy.run_path({str(FAKE_DIR / 'main.py')!r}, "
                                    "run_name='__main__')\n")
    if requirements is not None:
        (folder / "requirements.txt").write_text(requirements)
    if venv is not None:
        if os.name == "nt":
            pytest.skip("needs POSIX: a shell script stands in for the venv's interpreter")
        python = folder / venv / "bin" / "python"
        python.parent.mkdir(parents=True)
        python.write_text(f'#!/bin/sh\necho "$*" >> "{folder}/ran"\nexec "{sys.executable}" "$@"\n')
        python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return folder


def all_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines + result.errlines if line.strip()]


# --------------------------------------------------------------------------- ComfyUI's interpreter

def test_the_comfyui_folders_own_venv_is_found_checked_once_and_runs_comfyui(wan22_project: Project) -> None:
    p = wan22_project(RUN)
    folder = comfy_folder(p.path)
    result = p.runpytest(f"--wan22-comfyui-dir={folder}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"wan22: ComfyUI's interpreter: {folder}/.venv/bin/python (found in the "
                                 "ComfyUI folder)"])
    ran = (folder / "ran").read_text().splitlines()
    assert sum("WAN22-CHECK" in line for line in ran) == 1  # checked once
    assert sum("main.py" in line for line in ran) == 1  # and ComfyUI ran with it


@pytest.mark.parametrize("how", ["flag", "ini", "env"])
def test_the_header_says_who_named_the_interpreter(wan22_project: Project, monkeypatch: pytest.MonkeyPatch,
                                                   how: str) -> None:
    p = wan22_project("def test_nothing():\n    pass\n",
                      ini=f"wan22_python = {sys.executable}" if how == "ini" else "")
    args = [f"--wan22-python={sys.executable}"] if how == "flag" else []
    if how == "env":
        monkeypatch.setenv("WAN22_PYTHON", sys.executable)
    why = {"flag": "--wan22-python", "ini": "ini wan22_python", "env": "WAN22_PYTHON"}[how]
    p.runpytest(*args).stdout.fnmatch_lines([f"wan22: ComfyUI's interpreter: {sys.executable} ({why})"])


def test_without_one_in_the_folder_it_is_the_interpreter_running_pytest(wan22_project: Project) -> None:
    p = wan22_project("def test_nothing():\n    pass\n")
    p.runpytest().stdout.fnmatch_lines([f"wan22: ComfyUI's interpreter: {sys.executable} (the interpreter "
                                        "running pytest)"])


def test_an_interpreter_that_lacks_comfyuis_requirements_is_one_short_error(wan22_project: Project) -> None:
    p = wan22_project(THREE)
    folder = comfy_folder(p.path, "torch-wan22-missing\naiohttp\ncomfy-kitchen-wan22-missing>=0.2\n")
    result = p.runpytest(f"--wan22-comfyui-dir={folder}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    lines = all_lines(result)
    assert len(lines) < 20, "\n".join(lines)
    python = f"{folder}/.venv/bin/python"
    result.stderr.fnmatch_lines([
        f"ERROR: ComfyUI's interpreter {python} (found in the ComfyUI folder) cannot start ComfyUI: it lacks "
        "torch_wan22_missing, comfy_kitchen_wan22_missing.",
        "Fix: point --wan22-python (ini wan22_python, env WAN22_PYTHON) at the Python of your ComfyUI install,",
        f"or install them there: {python} -m pip install -r {folder}/requirements.txt",
    ])
    assert sum("cannot start ComfyUI" in line for line in lines) == 1
    assert "main.py" not in (folder / "ran").read_text()  # nothing was launched
    assert not any("During handling" in line for line in lines)
    collected = p.runpytest(f"--wan22-comfyui-dir={folder}", "--collect-only")
    assert collected.ret == pytest.ExitCode.OK  # nothing is launched, so nothing is checked


def test_attach_mode_checks_no_interpreter(wan22_project: Project) -> None:
    p = wan22_project("def test_nothing():\n    pass\n")
    folder = comfy_folder(p.path, "torch-wan22-missing\n")
    result = p.runpytest(f"--wan22-comfyui-dir={folder}", "--wan22-url=http://127.0.0.1:9")
    result.assert_outcomes(passed=1)
    assert not (folder / "ran").exists()


def test_ab_side_a_is_found_in_its_own_folder_and_checked(wan22_project: Project) -> None:
    p = wan22_project("def test_nothing():\n    pass\n")
    a = comfy_folder(p.path / "a", "torch-wan22-missing\n")
    result = p.runpytest(f"--wan22-ab-comfyui-dir={a}", f"--wan22-python={sys.executable}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([
        f"ERROR: A/B side A (current): ComfyUI's interpreter {a}/.venv/bin/python (found in the ComfyUI "
        "folder) cannot start ComfyUI: it lacks torch_wan22_missing.",
        "Fix: point --wan22-ab-python (ini wan22_ab_python, env WAN22_AB_PYTHON) at the Python*"])
    (a / "requirements.txt").write_text("aiohttp\n")
    result = p.runpytest(f"--wan22-ab-comfyui-dir={a}", f"--wan22-python={sys.executable}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"wan22: side A's interpreter: {a}/.venv/bin/python (found in the ComfyUI "
                                 "folder)"])


# --------------------------------------------------------------------------- other session-level causes

@pytest.mark.parametrize(("args", "message"), [
    pytest.param(["--wan22-report=/proc/nope"], "ERROR: --wan22-report /proc/nope: cannot write there (*); point "
                 "--wan22-report (ini wan22_report, env WAN22_REPORT) at a folder you can write",
                 marks=posix_only("/proc is a folder nobody can write in")),
    pytest.param(["--wan22-log-dir=/proc/nope/logs"], "ERROR: --wan22-log-dir /proc/nope/logs: cannot write there*",
                 marks=posix_only("/proc is a folder nobody can write in")),
    (["--wan22-tiers-file=tiers.toml"], "ERROR: *tiers.toml*"),
    (["--wan22-comfyui-dir=nowhere"], "ERROR: ComfyUI folder *nowhere does not exist; point --wan22-comfyui-dir*"),
])
def test_a_session_level_problem_is_one_error_before_anything_runs(wan22_project: Project, args: list[str],
                                                                  message: str) -> None:
    p = wan22_project(THREE)
    p.path.joinpath("tiers.toml").write_text("[tiers.mine\nvram = 'lots'\n")  # not TOML
    result = p.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    lines = all_lines(result)
    assert len(lines) < 20, "\n".join(lines)
    assert not any("During handling" in line or "Traceback" in line for line in lines)
    assert not (p.path / ".wan22").exists()  # no server started, nothing written


def test_the_probe_leaves_no_folder_behind(wan22_project: Project) -> None:
    p = wan22_project("def test_nothing():\n    pass\n")
    p.runpytest("--wan22-report=out/report").assert_outcomes(passed=1)
    assert not (p.path / "out").exists()  # the report writer makes it when it has something to write


def test_tests_that_need_comfyui_without_one_given_are_one_error(wan22_project: Project) -> None:
    p = wan22_project(THREE + "\ndef test_plain():\n    pass\n")
    p.makeini("[pytest]\nwan22_rounds = 2\n")  # no wan22_comfyui_dir
    result = p.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: 3 selected test(s) need ComfyUI (the first: test_suite.py::test_a), "
                                 "but none is given: pass --wan22-comfyui-dir DIR*"])
    assert len(all_lines(result)) < 20
    p.runpytest("-k", "plain").assert_outcomes(passed=1)  # tests that need no server still run


# --------------------------------------------------------------------------- a server that does not start

def test_a_server_that_crashes_at_start_is_tried_once(wan22_project: Project) -> None:
    p = wan22_project(THREE, fake_env={"FAKE_COMFYUI_CRASH_ON_START": "3"})
    result = p.runpytest("--wan22-log-dir=logs")
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines([
        "*ERROR at setup of test_a*", "*ComfyUI exited with code 3 during start*", "*last log lines:*",
        "*ERROR at setup of test_b*",
        "*ComfyUI did not start, so it is not started again for this test; the failure of "
        "test_suite.py::test_a says why*",
        "*ERROR at setup of test_c*", "*ComfyUI did not start, so it is not started again*",
    ])
    # the log tail is printed once in the errors (pytest's own short summary repeats whole messages where CI is set)
    text = "\n".join(result.outlines).split("short test summary info")[0]
    assert text.count("FAKE_COMFYUI_CRASH_ON_START=3") == 1
    log = (p.path / "logs/main/comfyui.log").read_text()
    assert log.count("=== wan22: starting") == 1


def test_a_failure_carries_only_the_log_written_during_that_test(wan22_project: Project) -> None:
    p = wan22_project(RUN + textwrap.dedent("""
        def test_fails_before_any_run(wan22_server):
            raise AssertionError("found wrong before any run")

        @pytest.mark.rtx5090
        def test_fails_in_its_run(wan22_run):
            wan22_run(BASE.interpolate(2))
    """), fake_env={"FAKE_COMFYUI_SCENARIO": "oom", "FAKE_COMFYUI_FAIL_NODE": "RIFE VFI",
                   "FAKE_COMFYUI_CUSTOM_NODES": "frame-interpolation"})
    result = p.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=2)
    report = result.stdout.str()
    before = report.split("_ test_fails_before_any_run _")[1].split("_ test_fails_in_its_run _")[0]
    assert "found wrong before any run" in before
    assert "ComfyUI log" not in before  # the server logged nothing during it: test_variant's lines are not its
    during = report.split("_ test_fails_in_its_run _")[1]
    assert "ComfyUI log (last lines)" in during
    assert "Got an OOM" in during
    assert "Starting server" not in during  # written during test_variant's setup
