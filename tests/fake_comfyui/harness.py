"""Start the fake ComfyUI as a real subprocess for a test, and the pytest fixtures that do it.

Loaded by path from tests/unit/conftest.py and tests/integration/conftest.py (see ``load``), so
that it works whether or not ``tests`` is importable as a package.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from pytest_wan22.processes import kill_tree

MAIN = Path(__file__).resolve().parent / "main.py"


def port_range() -> range:
    """Ports to try: WAN22_FAKE_PORTS=LO-HI, default 18200-18299."""
    raw = os.environ.get("WAN22_FAKE_PORTS", "18200-18299")
    lo, _, hi = raw.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reserve(port: int) -> Path | None:
    """Claim a port for this test process with a sentinel file, so parallel workers never pick the same one."""
    folder = Path(tempfile.gettempdir()) / "wan22-fake-ports"
    folder.mkdir(exist_ok=True)
    lock = folder / f"{port}.lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text(encoding="utf-8") or "0")
            except (OSError, ValueError):
                return None
            if owner and _pid_alive(owner):
                return None
            lock.unlink(missing_ok=True)  # left by a test process that is gone
            continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return lock
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class FakeServer:
    """One fake ComfyUI process: ``url``, ``proc``, ``log_text()``, ``is_alive()``, ``stop()``."""

    def __init__(
        self, workdir: Path, env: Mapping[str, str] | None = None, args: Sequence[str] = (), probe: bool = False
    ) -> None:
        self.workdir = Path(workdir)
        self.env = dict(env or {})
        self.args = list(args)
        self.probe = probe
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log_path = self.workdir / "fake-comfyui.log"
        self._lock: Path | None = None
        self._log_offset = 0

    @property
    def url(self) -> str:
        """http://127.0.0.1:PORT."""
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        """The argv, ComfyUI style."""
        return [
            sys.executable,
            str(MAIN),
            "--listen",
            "127.0.0.1",
            "--port",
            str(port),
            "--base-directory",
            str(self.workdir / "base"),
            "--disable-auto-launch",
            *self.args,
        ]

    def start(self, *, wait: bool = True, timeout: float = 15.0) -> FakeServer:
        """Start on a free port of port_range(); with wait, return once /system_stats answers."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.probe:  # what the launcher installs: the fake then serves /wan22/memory
            node = self.workdir / "base" / "custom_nodes" / "wan22_probe"
            node.mkdir(parents=True, exist_ok=True)
            (node / "__init__.py").write_text('"""Marker of the wan22 probe node."""\n', encoding="utf-8")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        candidates = list(port_range())
        random.shuffle(candidates)
        for port in candidates:
            lock = _reserve(port)
            if lock is None:
                continue
            if not _port_free(port):
                lock.unlink(missing_ok=True)
                continue
            self._release()
            self._lock = lock
            self.port = port
            self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    self.command(port),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=self.workdir,
                    start_new_session=True,
                )
            if not wait:
                return self
            if self.wait_ready(timeout):
                return self
            if self.proc.poll() is not None and self._lost_port():
                continue  # lost a race for the port
            break
        raise RuntimeError(f"fake ComfyUI did not start (exit {self.proc and self.proc.poll()}):\n{self.log_text()}")

    def wait_ready(self, timeout: float) -> bool:
        """Poll /system_stats until this process answers; False if it died or time ran out.

        The answer must echo this server's --base-directory: another test's server on a port this one
        failed to bind (a race between xdist workers) does not count.
        """
        deadline = time.monotonic() + timeout
        base = str(self.workdir / "base")
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=1) as resp:
                    argv = json.loads(resp.read()).get("system", {}).get("argv", [])
                    if resp.status == 200 and base in argv and self.proc.poll() is None:
                        return True
            except (OSError, ValueError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        return False

    def ensure_ready(self, timeout: float = 20.0) -> FakeServer:
        """After start(wait=False): wait, and start again elsewhere if the port was lost to a race."""
        if self.wait_ready(timeout):
            return self
        if self.proc is not None and self.proc.poll() is not None and self._lost_port():
            return self.start(timeout=timeout)
        raise RuntimeError(f"fake ComfyUI did not start (exit {self.proc and self.proc.poll()}):\n{self.log_text()}")

    def _lost_port(self) -> bool:
        """The last attempt exited because its port was taken."""
        return "could not listen" in self.log_text()[self._log_offset :]

    def is_alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float = 5.0) -> bool:
        """Wait until the log contains text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log_text():
                return True
            time.sleep(0.02)
        return text in self.log_text()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.unlink(missing_ok=True)
            self._lock = None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL (on Windows: kill its process tree); idempotent; frees the port's
        sentinel."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self._release()
            return
        if os.name == "nt":  # no process groups: end the fake and anything it started
            kill_tree(proc.pid)
            proc.wait(timeout=5)
            self._release()
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait(timeout=5)
        self._release()

    def __enter__(self) -> FakeServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


FAST = {"FAKE_COMFYUI_NODE_SECONDS": "0.005", "FAKE_COMFYUI_STEP_SECONDS": "0.005"}


@pytest.fixture(scope="session")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeServer]:
    """A fake ComfyUI (scenario success, fast nodes, binary previews, probe node) shared by the session."""
    server = FakeServer(
        tmp_path_factory.mktemp("fake-comfyui"), env=FAST, args=["--preview-method", "latent2rgb"], probe=True
    ).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_fake(tmp_path: Path) -> Iterator[Callable[..., FakeServer]]:
    """Factory: start_fake(env={...}, args=[...], wait=True) -> FakeServer, stopped after the test."""
    started: list[FakeServer] = []

    def start(
        env: Mapping[str, str] | None = None, args: Sequence[str] = (), wait: bool = True, timeout: float = 15.0
    ) -> FakeServer:
        server = FakeServer(tmp_path / f"fake-{len(started)}", env={**FAST, **(env or {})}, args=args)
        started.append(server)
        return server.start(wait=wait, timeout=timeout)

    try:
        yield start
    finally:
        for server in started:
            server.stop()


DATA = Path(__file__).resolve().parents[1] / "data"
#: Protocol captures of a real ComfyUI 0.8.0, written by tools/record_captures.py (re-record for a new version).
CAPTURES = DATA / "comfyui-0.8.0"
#: Workflows made for these tests: the constructs wan22-check and the workflow loader read.
OWN_WORKFLOWS = DATA / "workflows"
#: Opt-in: a folder with third-party Wan 2.2 workflows (not in the repository: their authors' licences).
REAL_WORKFLOWS_ENV = "WAN22_REAL_WORKFLOWS_DIR"


@pytest.fixture(scope="session")
def captures() -> Path:
    """The folder of protocol captures."""
    return CAPTURES


def real_workflows_dir() -> Path | None:
    """The folder of third-party workflows named by WAN22_REAL_WORKFLOWS_DIR, when it is set and exists."""
    raw = os.environ.get(REAL_WORKFLOWS_ENV)
    return Path(raw) if raw and Path(raw).is_dir() else None


needs_real_workflows = pytest.mark.skipif(
    real_workflows_dir() is None,
    reason=f"third-party workflows are not in the repository (their authors' licences); set {REAL_WORKFLOWS_ENV} "
           "to a folder of them to run this check")


def official_template(name: str) -> Path:
    """An official ComfyUI workflow template (MIT), from the comfyui-workflow-templates-json test dependency."""
    from importlib import resources

    return Path(str(resources.files("comfyui_workflow_templates_json") / "templates" / name))


def load_capture(folder: Path, name: str) -> Any:
    """A capture file: JSON, or a list of JSON lines for .jsonl."""
    path = folder / name
    if name.endswith(".jsonl"):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return json.loads(path.read_text(encoding="utf-8"))


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll predicate until it holds or the timeout passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads processes from /proc (Linux)")


def process_group(pid: int) -> int | None:
    """The process group of a live process; None when it is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else int(fields[2])


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    return [int(e) for e in os.listdir("/proc") if e.isdigit() and process_group(int(e)) == pgid]


def procs_mentioning(*texts: str) -> list[int]:
    """Live processes (not this one) whose command line contains every text."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if all(t in cmdline for t in texts) and process_group(int(entry)) is not None:
            out.append(int(entry))
    return out

