"""pytest_wan22.processes: process trees, command lines, working folders and port owners through psutil, with
the Windows branches taken on Linux by forcing the platform switch and faking psutil's answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from pytest_wan22 import platforms, processes

GONE_PID = 2**22 + 12345  # above Linux's pid_max default: no such process


class _Proc:
    """A stand-in psutil.Process: a command line, a name and a working folder, or an error for each."""

    table: dict[int, dict[str, Any]] = {}

    def __init__(self, pid: int) -> None:
        if pid not in self.table:
            raise psutil.NoSuchProcess(pid)
        self.pid = pid
        self._row = self.table[pid]

    def _get(self, key: str) -> Any:
        value = self._row[key]
        if isinstance(value, BaseException):
            raise value
        return value

    def cmdline(self) -> list[str]:
        return list(self._get("cmdline"))

    def name(self) -> str:
        return str(self._get("name"))

    def cwd(self) -> str:
        return str(self._get("cwd"))


@pytest.fixture
def fake_procs(monkeypatch: pytest.MonkeyPatch) -> dict[int, dict[str, Any]]:
    table: dict[int, dict[str, Any]] = {}
    monkeypatch.setattr(_Proc, "table", table)
    monkeypatch.setattr(processes.psutil, "Process", _Proc)
    return table


@pytest.fixture
def on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platforms, "PLATFORM", "win32")


def test_a_process_that_cannot_be_read_is_not_visible(fake_procs: dict[int, dict[str, Any]]) -> None:
    fake_procs[7] = {"cmdline": psutil.AccessDenied(7), "name": "python", "cwd": psutil.AccessDenied(7)}
    fake_procs[8] = {"cmdline": psutil.ZombieProcess(8), "name": "python", "cwd": "/"}
    assert processes.process_name(7) == processes.NOT_VISIBLE == "(not visible here)"
    assert processes.process_name(8) == "(not visible here)"
    assert processes.process_name(GONE_PID) == "(not visible here)"
    assert processes.cwd(7) is None
    assert processes.cmdline(7) is None
    assert processes.process_tree(GONE_PID) == {GONE_PID}
    assert processes.children(GONE_PID) == []


def test_a_windows_program_is_named_without_its_folder(fake_procs: dict[int, dict[str, Any]], on_windows: None) -> None:
    fake_procs[4242] = {"cmdline": [r"C:\AI\ComfyUI_windows_portable\python_embeded\python.exe", "-s",
                                    r"ComfyUI\main.py", "--windows-standalone-build"], "name": "python.exe"}
    assert processes.process_name(4242) == r"python.exe -s ComfyUI\main.py --windows-standalone-build"
    assert processes.program(r"D:\tools\trainer.exe") == "trainer.exe"


def test_a_linux_program_keeps_a_backslash_in_its_name(fake_procs: dict[int, dict[str, Any]]) -> None:
    fake_procs[5] = {"cmdline": ["/opt/odd\\name", "--x"], "name": "odd"}
    assert processes.process_name(5) == "odd\\name --x"


def test_an_empty_command_line_gives_the_process_name(fake_procs: dict[int, dict[str, Any]]) -> None:
    fake_procs[2] = {"cmdline": [], "name": "kthreadd"}
    assert processes.process_name(2) == "kthreadd"
    fake_procs[3] = {"cmdline": ["x" * 200], "name": "x"}
    assert processes.process_name(3, width=20) == "x" * 17 + "..."


def _conn(port: int, pid: int | None, status: str = psutil.CONN_LISTEN) -> Any:
    return SimpleNamespace(laddr=SimpleNamespace(ip="127.0.0.1", port=port), status=status, pid=pid)


def test_the_listening_process_is_the_lowest_pid_that_listens_on_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    conns = [_conn(8188, 400, psutil.CONN_ESTABLISHED), _conn(8188, 420), _conn(8188, 410), _conn(8189, 7),
             _conn(8188, None)]
    monkeypatch.setattr(processes.psutil, "net_connections", lambda kind: conns)
    assert processes.listening_pid(8188) == 410
    assert processes.listening_pid(8189) == 7
    assert processes.listening_pid(8190) is None

    def denied(kind: str) -> list[Any]:
        raise psutil.AccessDenied()

    monkeypatch.setattr(processes.psutil, "net_connections", denied)
    assert processes.listening_pid(8188) is None


def test_a_real_listener_and_working_folder_are_found(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert processes.listening_pid(s.getsockname()[1]) == os.getpid()
    assert processes.cwd(os.getpid()) == Path.cwd()
    assert processes.cmdline(os.getpid()) == psutil.Process().cmdline()


def test_kill_tree_ends_a_process_and_its_children() -> None:
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    root = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert root.stdout is not None
        child = int(root.stdout.readline())
        assert processes.process_tree(root.pid) == {root.pid, child}
        assert processes.children(root.pid) == [child]
        processes.kill_tree(root.pid)
        root.wait(timeout=10)
        deadline = time.monotonic() + 10
        while processes.alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not processes.alive(child)
        assert not processes.alive(root.pid)
    finally:
        root.kill()
        root.wait(timeout=10)
        if root.stdout is not None:
            root.stdout.close()
    processes.kill_tree(GONE_PID)  # nothing to do, no error


def test_the_platform_switch_names_the_platform(monkeypatch: pytest.MonkeyPatch) -> None:
    for value, name in (("win32", "windows"), ("linux", "linux"), ("darwin", "macos"), ("freebsd14", "freebsd14")):
        monkeypatch.setattr(platforms, "PLATFORM", value)
        assert platforms.name() == name
        assert platforms.windows() == (value == "win32")
