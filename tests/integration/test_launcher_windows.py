"""ComfyServer's Windows branch on any platform: the platform switch forced to win32, kernel32 faked (FakeKernel32
acts out the job object and Ctrl+Break), and the fake ComfyUI started for real."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from pytest_wan22 import launcher, platforms, processes, winjob
from pytest_wan22.errors import ServerStartError
from pytest_wan22.launcher import ComfyServer, ServerSpec
from tests.fake_comfyui.harness import wait_until
from tests.fakes.fake_kernel32 import FakeKernel32

REPO = Path(__file__).resolve().parents[2]
FAKE_DIR = REPO / "tests" / "fake_comfyui"
EXTENDED_LIMITS_SIZE = 144 if ctypes.sizeof(ctypes.c_void_p) == 8 else 112  # what Windows expects


@pytest.fixture
def kernel32(monkeypatch: pytest.MonkeyPatch) -> FakeKernel32:
    fake = FakeKernel32()
    monkeypatch.setattr(platforms, "PLATFORM", "win32")
    monkeypatch.setattr(winjob, "kernel32", lambda: fake)
    return fake


@pytest.fixture
def popen_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Popen's keyword arguments per call; the process starts without the Windows-only creation flags."""
    calls: list[dict[str, Any]] = []
    real = subprocess.Popen

    def popen(argv: list[str], **kw: Any) -> subprocess.Popen[bytes]:
        calls.append({"argv": argv, **kw})
        kw.pop("creationflags", None)
        return real(argv, **kw)

    monkeypatch.setattr(launcher.subprocess, "Popen", popen)
    return calls


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ComfyServer]:
    spec = ServerSpec(comfyui_dir=FAKE_DIR, work_dir=tmp_path / "work", python=sys.executable,
                      env={"FAKE_COMFYUI_NODE_SECONDS": "0.002"}, startup_timeout=30)
    made = ComfyServer(spec)
    try:
        yield made
    finally:
        made.stop(grace=1)  # through the fake, while it is still in place
        if made.proc is not None and made.proc.poll() is None:  # whatever the fake left: end it for real
            processes.kill_tree(made.proc.pid)


def test_the_server_starts_in_its_own_process_group_inside_a_job_that_kills_on_close(
        kernel32: FakeKernel32, popen_calls: list[dict[str, Any]], server: ComfyServer) -> None:
    handle = server.start()
    assert requests.get(handle.url + "/system_stats", timeout=5).status_code == 200
    assert server.proc is not None
    pid = server.proc.pid
    (call,) = popen_calls  # the server alone: no watchdog beside it on Windows
    assert call["creationflags"] == winjob.CREATE_NEW_PROCESS_GROUP == 0x200
    assert "preexec_fn" not in call
    assert "start_new_session" not in call
    assert call.get("close_fds", True) is True  # the job's handle is never inherited by the server
    assert kernel32.names() == ["CreateJobObjectW", "SetInformationJobObject", "OpenProcess",
                                "AssignProcessToJobObject", "CloseHandle"]
    create, limits, open_, assign, close = kernel32.calls
    assert create == ("CreateJobObjectW", None, None)  # no security attributes: a handle children cannot inherit
    job = limits[1]
    assert limits == ("SetInformationJobObject", job, 9, winjob.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
                      EXTENDED_LIMITS_SIZE)
    assert open_ == ("OpenProcess", winjob.PROCESS_SET_QUOTA | winjob.PROCESS_TERMINATE, False, pid)
    process = assign[2]
    assert assign == ("AssignProcessToJobObject", job, process)
    assert close == ("CloseHandle", process)  # the process handle only: the job's stays open while pytest runs
    assert kernel32.jobs[job]["pids"] == [pid]
    # pytest's handle closing (pytest exiting in any way) ends the server: Windows' part, acted out by the fake
    kernel32.CloseHandle(job)
    assert wait_until(lambda: not server.alive(), 10)


def test_stop_sends_ctrl_break_first_then_terminates_the_job_and_closes_it(
        kernel32: FakeKernel32, popen_calls: list[dict[str, Any]], server: ComfyServer) -> None:
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    job = next(iter(kernel32.jobs))
    del kernel32.calls[:]
    server.stop(grace=10)
    assert kernel32.calls == [("GenerateConsoleCtrlEvent", winjob.CTRL_BREAK_EVENT, pid),
                              ("TerminateJobObject", job, winjob.KILLED_EXIT_CODE), ("CloseHandle", job)]
    assert server.exit_code() is not None
    assert not processes.alive(pid)
    server.stop()  # again: nothing to do, nothing raised
    assert kernel32.names()[3:] == []


def test_a_server_that_ignores_ctrl_break_is_ended_by_the_job_after_the_grace(
        kernel32: FakeKernel32, popen_calls: list[dict[str, Any]], server: ComfyServer) -> None:
    kernel32.console = "ignored"
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    tree = processes.process_tree(pid)
    server.stop(grace=0.5)
    assert kernel32.names()[-3:] == ["GenerateConsoleCtrlEvent", "TerminateJobObject", "CloseHandle"]
    assert wait_until(lambda: not any(processes.alive(p) for p in tree), 10)


def test_without_a_console_the_stop_goes_straight_to_the_job(
        kernel32: FakeKernel32, popen_calls: list[dict[str, Any]], server: ComfyServer) -> None:
    kernel32.console = False  # pytest started without a console (a service): Ctrl+Break cannot be sent
    server.start()
    began = time.monotonic()
    server.stop(grace=30)
    assert time.monotonic() - began < 10  # no 30 s wait for an event that was never sent
    assert kernel32.names()[-3:] == ["GenerateConsoleCtrlEvent", "TerminateJobObject", "CloseHandle"]
    assert not server.alive()


def test_without_a_job_the_hard_stop_kills_the_process_tree(
        kernel32: FakeKernel32, popen_calls: list[dict[str, Any]], server: ComfyServer) -> None:
    kernel32.fail = {"AssignProcessToJobObject"}
    kernel32.console = "ignored"
    server.start()
    assert server.proc is not None
    pid = server.proc.pid
    job = next(iter(kernel32.jobs))
    assert not kernel32.jobs[job]["open"]  # the job that could not hold the server is closed at once
    log = server.spec.log_path.read_text()
    assert "=== wan22: no job object (AssignProcessToJobObject failed" in log
    server.stop(grace=0.2)
    assert "TerminateJobObject" not in kernel32.names()
    assert wait_until(lambda: not processes.alive(pid), 10)


def test_a_crash_at_start_closes_the_job(kernel32: FakeKernel32, popen_calls: list[dict[str, Any]],
                                         tmp_path: Path) -> None:
    spec = ServerSpec(comfyui_dir=FAKE_DIR, work_dir=tmp_path, python=sys.executable,
                      env={"FAKE_COMFYUI_CRASH_ON_START": "3"}, startup_timeout=30)
    server = ComfyServer(spec)
    with pytest.raises(ServerStartError) as info:
        server.start()
    assert info.value.exit_code == 3
    job = next(iter(kernel32.jobs))
    assert not kernel32.jobs[job]["open"]
    assert ("CloseHandle", job) in kernel32.calls


def test_a_job_object_that_cannot_be_limited_is_closed_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeKernel32(fail={"SetInformationJobObject"})
    with pytest.raises(OSError, match=r"SetInformationJobObject failed \(Windows error \d+\)"):
        winjob.JobObject(fake)
    assert fake.names() == ["CreateJobObjectW", "SetInformationJobObject", "CloseHandle"]
    with pytest.raises(winjob.JobError, match="CreateJobObjectW failed"):
        winjob.JobObject(FakeKernel32(fail={"CreateJobObjectW"}))
    ok = FakeKernel32()
    job = winjob.JobObject(ok)
    job.close()
    job.close()
    job.terminate()  # closed: nothing to end, nothing raised
    assert ok.names().count("CloseHandle") == 1
    assert ctypes.sizeof(winjob.JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == EXTENDED_LIMITS_SIZE
    assert winjob.ctrl_break(4242, FakeKernel32(console=False)) is False
