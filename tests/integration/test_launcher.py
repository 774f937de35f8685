"""ComfyServer against the fake ComfyUI as a real subprocess: ready, crash, timeout, stop, restart, watchdog."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from pytest_wan22 import processes
from pytest_wan22.errors import PortInUse, ServerStartError, ServerTimeout
from pytest_wan22.launcher import ComfyServer, ServerSpec
from tests.fake_comfyui import harness
from tests.fake_comfyui.harness import group_members, needs_proc, procs_mentioning, wait_until

REPO = Path(__file__).resolve().parents[2]
FAKE_DIR = REPO / "tests" / "fake_comfyui"

# What kills a process outright: SIGKILL, or on Windows TerminateProcess (os.kill with any other signal number).
KILL = getattr(signal, "SIGKILL", signal.SIGTERM)
KILLED = -KILL if os.name == "posix" else KILL  # its exit code


def assert_group_gone(pgid: int) -> None:
    """The process group has no process left (this process reaped every one of it); on Windows, which has no
    process groups, the server's process is gone."""
    if os.name == "nt":
        assert wait_until(lambda: not processes.alive(pgid), 10)
        return
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)


def _claim_port() -> tuple[int, Path]:
    """A port of the harness range, reserved with its sentinel file (released by the caller)."""
    candidates = list(harness.port_range())
    random.shuffle(candidates)
    for port in candidates:
        lock = harness._reserve(port)
        if lock is None:
            continue
        if harness._port_free(port):
            return port, lock
        lock.unlink(missing_ok=True)
    pytest.fail(f"no free port in {candidates[0]}..{candidates[-1]}; set WAN22_FAKE_PORTS=LO-HI")


@pytest.fixture
def port() -> Iterator[int]:
    """A free port of the harness range, held for this test."""
    number, lock = _claim_port()
    try:
        yield number
    finally:
        lock.unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FAKE_COMFYUI_"):
            monkeypatch.delenv(name)


@pytest.fixture
def servers() -> Iterator[list[ComfyServer]]:
    """Servers a test started, stopped afterwards whatever happened."""
    started: list[ComfyServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop(grace=2)


def make(servers: list[ComfyServer], work: Path, port: int = 0, *, install_probe: bool = True,
         startup_timeout: float = 30.0, comfyui_dir: Path = FAKE_DIR, **env: str) -> ComfyServer:
    """A ComfyServer over the fake (not started)."""
    spec = ServerSpec(comfyui_dir=comfyui_dir, work_dir=work, python=sys.executable, port=port,
                      env={"FAKE_COMFYUI_NODE_SECONDS": "0.002", **env}, install_probe=install_probe,
                      startup_timeout=startup_timeout)
    server = ComfyServer(spec)
    servers.append(server)
    return server


@pytest.mark.parametrize("install_probe", [True, False], ids=["probe", "no-probe"])
def test_ready_server_answers_and_logs_its_start(servers: list[ComfyServer], tmp_path: Path, port: int,
                                                 install_probe: bool) -> None:
    server = make(servers, tmp_path, port, install_probe=install_probe)
    handle = server.start()
    assert handle.url == f"http://127.0.0.1:{port}"
    assert server.proc is not None
    assert handle.pid == server.proc.pid
    stats = requests.get(handle.url + "/system_stats", timeout=5).json()
    argv = stats["system"]["argv"]
    assert str(tmp_path / "output") in argv  # the launcher's private folders
    assert ("--extra-model-paths-config" in argv) is install_probe
    log = server.spec.log_path.read_text()
    assert "=== wan22: starting " in log
    assert f"--port {port}" in log
    assert "Starting server" in log
    assert f"To see the GUI go to: http://127.0.0.1:{port}" in log
    memory = requests.get(handle.url + "/wan22/memory", timeout=5)
    if install_probe:
        assert memory.status_code == 200
        assert memory.json()["available"] is True
        assert (tmp_path / "custom_nodes" / "wan22_probe" / "__init__.py").is_file()
        assert "wan22_probe" in log  # the fake lists the probe among the imported custom nodes
    else:
        assert memory.status_code == 404
        assert not (tmp_path / "custom_nodes" / "wan22_probe").exists()
    assert server.alive()
    assert server.starts == 1


def test_crash_on_start_reports_exit_code_command_and_log(servers: list[ComfyServer], tmp_path: Path) -> None:
    server = make(servers, tmp_path, FAKE_COMFYUI_CRASH_ON_START="3")
    with pytest.raises(ServerStartError) as info:
        server.start()
    err = info.value
    assert not isinstance(err, ServerTimeout)
    assert err.exit_code == 3
    assert str(FAKE_DIR / "main.py") in err.command
    assert "--port" in err.command
    assert "FAKE_COMFYUI_CRASH_ON_START=3" in err.log_tail
    assert "RuntimeError: Found no NVIDIA driver" in err.log_tail
    text = str(err)
    assert "ComfyUI exited with code 3 during start" in text
    assert "command: " in text
    assert "last log lines:" in text
    assert server.proc is not None
    assert_group_gone(server.proc.pid)


@needs_proc
def test_start_timeout_kills_the_whole_group(servers: list[ComfyServer], tmp_path: Path) -> None:
    server = make(servers, tmp_path, startup_timeout=2, FAKE_COMFYUI_HANG="1")
    with pytest.raises(ServerTimeout) as info:
        server.start()
    text = str(info.value)
    assert "did not answer" in text
    assert "within 2 s" in text
    assert "--wan22-startup-timeout" in text
    assert "FAKE_COMFYUI_HANG is set" in info.value.log_tail
    assert server.proc is not None
    assert_group_gone(server.proc.pid)
    assert not server.alive()
    assert procs_mentioning(str(tmp_path)) == []


@needs_proc
def test_stop_leaves_no_process_and_is_safe_twice(servers: list[ComfyServer], tmp_path: Path, port: int) -> None:
    server = make(servers, tmp_path, port)
    server.start()
    assert server.proc is not None
    pgid = server.proc.pid
    members = group_members(pgid)
    assert pgid in members
    assert len(members) >= 2, "the watchdog joins the server's process group"
    server.stop()
    assert_group_gone(pgid)
    assert procs_mentioning(str(tmp_path)) == []
    assert not server.alive()
    server.stop()  # again: nothing to do, nothing raised
    assert_group_gone(pgid)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/system_stats", timeout=2)


def test_context_manager_stops_the_server(tmp_path: Path) -> None:
    spec = ServerSpec(comfyui_dir=FAKE_DIR, work_dir=tmp_path, startup_timeout=30)
    server = ComfyServer(spec)
    try:
        with server as handle:
            assert requests.get(handle.url + "/system_stats", timeout=5).status_code == 200
            assert server.proc is not None
            pgid = server.proc.pid
        assert_group_gone(pgid)
    finally:
        server.stop(grace=2)


@pytest.mark.parametrize("same_port", [True, False], ids=["explicit-port", "free-port"])
def test_ensure_running_restarts_after_sigkill(servers: list[ComfyServer], tmp_path: Path, port: int,
                                               same_port: bool) -> None:
    server = make(servers, tmp_path, port if same_port else 0)
    first = server.start()
    assert server.ensure_running() is False  # alive: nothing to do
    assert server.proc is not None
    old = server.proc.pid
    # A client connection open at the time of death, as the plugin's websocket is: the killed server's
    # side of it lingers in TIME_WAIT on the server's port.
    conn = socket.create_connection(("127.0.0.1", int(first.url.rsplit(":", 1)[1])), timeout=5)
    try:
        conn.sendall(b"GET /system_stats HTTP/1.1\r\nHost: x\r\n\r\n")
        assert conn.recv(64).startswith(b"HTTP/1.1 200")
        os.kill(old, KILL)
        assert wait_until(lambda: not server.alive(), 10)
        assert server.exit_code() == KILLED
        assert server.ensure_running() is True
    finally:
        conn.close()
    assert server.starts == 2
    assert server.proc.pid != old
    assert_group_gone(old)  # the old watchdog went with its group
    second = server.handle
    assert second is not None
    if same_port:
        assert second.url == first.url
    assert requests.get(second.url + "/system_stats", timeout=5).status_code == 200
    assert server.spec.log_path.read_text().count("=== wan22: starting ") == 2


def test_busy_port_is_refused_naming_the_fix(servers: list[ComfyServer], tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        server = make(servers, tmp_path, busy)
        with pytest.raises(PortInUse) as info:
            server.start()
    text = str(info.value)
    assert f"port {busy} on 127.0.0.1 is already in use" in text
    assert "--wan22-port 0" in text
    assert server.proc is None  # nothing was launched


HELPER = """
import sys, time
from pathlib import Path
sys.path.insert(0, {repo!r})
from pytest_wan22.launcher import ComfyServer, ServerSpec

spec = ServerSpec(comfyui_dir=Path({comfyui!r}), work_dir=Path({work!r}), port={port}, install_probe=False,
                  startup_timeout=30)
server = ComfyServer(spec)
server.start()
print(server.proc.pid, flush=True)
time.sleep(120)
"""

# A server that ignores SIGTERM and has a child that ignores it too: only SIGKILL ends them.
STUBBORN = '''
import http.server, json, os, signal, subprocess, sys

signal.signal(signal.SIGTERM, signal.SIG_IGN)
port = int(sys.argv[sys.argv.index("--port") + 1])
subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                  "time.sleep(300)"])


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"system": {"argv": sys.argv}, "devices": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


print("Starting server", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
'''


def _stubborn_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "stubborn"
    folder.mkdir()
    (folder / "main.py").write_text(STUBBORN)
    return folder


@needs_proc
@pytest.mark.parametrize("stubborn", [False, True], ids=["fake", "ignores-sigterm"])
def test_watchdog_kills_the_group_when_the_launcher_is_sigkilled(tmp_path: Path, port: int, stubborn: bool) -> None:
    comfyui = _stubborn_dir(tmp_path) if stubborn else FAKE_DIR
    work = tmp_path / "work"
    script = HELPER.format(repo=str(REPO), comfyui=str(comfyui), work=str(work), port=port)
    errors = tmp_path / "helper.err"
    pgid = 0
    with errors.open("wb") as err, subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True) as helper:
        try:
            assert helper.stdout is not None
            line = helper.stdout.readline().decode().strip()
            if not line.isdigit():
                pytest.fail(f"the helper did not start a server: {line!r}\n{errors.read_text()}")
            pgid = int(line)
            members = group_members(pgid)
            assert pgid in members
            assert len(members) >= 2  # server (+ its child) and the watchdog
            helper.kill()
            helper.wait(timeout=10)
            assert wait_until(lambda: not group_members(pgid), 10), \
                f"left alive after the launcher was SIGKILLed: {group_members(pgid)}"
            assert procs_mentioning(str(work)) == []
        finally:
            if helper.poll() is None:
                helper.kill()
            if pgid and group_members(pgid):
                os.killpg(pgid, signal.SIGKILL)


@pytest.mark.parametrize("stubborn", [False, True], ids=["fake", "ignores-sigterm"])
def test_a_launcher_killed_outright_leaves_no_server_behind(tmp_path: Path, port: int, stubborn: bool) -> None:
    """The same promise on every platform, read through psutil: the watchdog keeps it on Linux, the job object on
    Windows."""
    comfyui = _stubborn_dir(tmp_path) if stubborn else FAKE_DIR
    script = HELPER.format(repo=str(REPO), comfyui=str(comfyui), work=str(tmp_path / "work"), port=port)
    errors = tmp_path / "helper.err"
    tree: set[int] = set()
    with errors.open("wb") as err, subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)],
                                                   stdout=subprocess.PIPE, stderr=err,
                                                   stdin=subprocess.DEVNULL) as helper:
        try:
            assert helper.stdout is not None
            line = helper.stdout.readline().decode().strip()
            if not line.isdigit():
                pytest.fail(f"the helper did not start a server: {line!r}\n{errors.read_text()}")
            server = int(line)
            assert wait_until(lambda: len(processes.process_tree(server)) >= (2 if stubborn else 1), 10)
            tree = processes.process_tree(server)
            helper.kill()
            helper.wait(timeout=10)
            assert wait_until(lambda: not any(processes.alive(p) for p in tree), 15), \
                f"left alive after the launcher was killed: {[p for p in tree if processes.alive(p)]}"
        finally:
            if helper.poll() is None:
                helper.kill()
            for pid in tree:
                processes.kill_tree(pid)


@needs_proc
def test_stop_kills_a_server_that_ignores_sigterm(servers: list[ComfyServer], tmp_path: Path, port: int) -> None:
    server = make(servers, tmp_path / "work", port, install_probe=False, comfyui_dir=_stubborn_dir(tmp_path))
    server.start()
    assert server.proc is not None
    pgid = server.proc.pid
    assert wait_until(lambda: len(group_members(pgid)) >= 3, 10)  # server, its child, the watchdog
    server.stop(grace=0.5)
    assert wait_until(lambda: not group_members(pgid), 10), group_members(pgid)
    assert server.proc.poll() == -signal.SIGKILL


# --------------------------------------------------------------------------- attach mode: finding the server


@needs_proc
def test_the_process_behind_a_local_port_is_found(fake_server: harness.FakeServer) -> None:
    from pytest_wan22.launcher import is_local_host, listening_pid, output_dir_of

    assert fake_server.proc is not None
    assert is_local_host("127.0.0.1")
    assert is_local_host("localhost")
    assert not is_local_host("192.0.2.1")  # TEST-NET-1: never this machine
    assert not is_local_host("no-such-host.invalid")
    assert listening_pid("127.0.0.1", fake_server.port) == fake_server.proc.pid
    assert listening_pid("localhost", fake_server.port) == fake_server.proc.pid
    assert listening_pid("192.0.2.1", fake_server.port) is None
    with socket.socket() as s:  # bound, not listening: nobody serves that port
        s.bind(("127.0.0.1", 0))
        assert listening_pid("127.0.0.1", s.getsockname()[1]) is None
    argv = requests.get(fake_server.url + "/system_stats", timeout=5).json()["system"]["argv"]
    base = fake_server.workdir / "base"
    assert output_dir_of(fake_server.proc.pid, argv) == base / "output"
    assert output_dir_of(fake_server.proc.pid, ["main.py", "--output-directory", "/srv/out"]) == Path("/srv/out")
    assert output_dir_of(fake_server.proc.pid, ["main.py", "--output-directory=rel"]) == fake_server.workdir / "rel"
    assert output_dir_of(fake_server.proc.pid, ["/opt/comfy/main.py"]) == Path("/opt/comfy/output")
    assert output_dir_of(fake_server.proc.pid, ["python"]) is None
    assert output_dir_of(2**22 + 12345, argv) is None  # no such process
