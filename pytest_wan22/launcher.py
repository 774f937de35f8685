"""Launch ComfyUI in its own process group, wait until it answers, and make sure it dies with us."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import platforms, processes, winjob
from .errors import PortInUse, ServerStartError, ServerTimeout
from .interpreter import portable_build

PROBE_NODE = Path(__file__).with_name("comfy_node.py")
#: What the Windows portable build's run_nvidia_gpu.bat passes to ComfyUI.
STANDALONE_FLAG = "--windows-standalone-build"

# Kills the server's process group when the process that launched it disappears, even by SIGKILL.
_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
while True:
    time.sleep(0.5)
    try:
        os.killpg(group, 0)
    except OSError:
        sys.exit(0)
    if os.getppid() != parent:
        os.setpgid(0, 0)  # leave the group: outlive its SIGTERM, see it empty, send the SIGKILL
        try:
            os.killpg(group, signal.SIGTERM)
            for _ in range(30):
                time.sleep(0.1)
                os.killpg(group, 0)
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass
        sys.exit(0)
"""

# Flags the launcher sets itself; a user's --wan22-server-args may replace them.
_OWN_FLAGS = ("--output-directory", "--temp-directory", "--input-directory", "--user-directory",
              "--database-url", "--front-end-root")


def public_argv(argv: Sequence[str] | None) -> tuple[str, ...]:
    """A launched server's argv without main.py, its address, and the private folders the launcher gave it."""
    private = {"--listen", "--port", "--base-directory", "--extra-model-paths-config", *_OWN_FLAGS}
    out: list[str] = []
    skip = False
    for arg in list(argv or ())[1:]:
        if skip:
            skip = False
        elif arg in private:
            skip = True
        else:
            out.append(str(arg))
    return tuple(out)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something accepts connections (or holds the address) at host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        if os.name == "posix":  # as the server binds: a dead server's TIME_WAIT connections do not count
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def is_local_host(host: str) -> bool:
    """True when host names this machine (loopback, or an address a socket here can bind)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, addr in infos:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            try:
                s.bind((addr[0], 0))
            except OSError:
                continue
            return True
    return False


def listening_pid(host: str, port: int) -> int | None:
    """The process that listens on a local host's TCP port, or None: a remote host, another user's process, or
    nobody listening."""
    if not is_local_host(host):
        return None
    return processes.listening_pid(port)


def output_dir_of(pid: int, argv: Sequence[str]) -> Path | None:
    """Where a local ComfyUI process (its pid and argv, as /system_stats echoes it) writes its outputs."""
    cwd = processes.cwd(pid)
    if cwd is None:
        return None
    args = list(argv)

    def value(flag: str) -> str | None:
        for i, a in enumerate(args):
            if a == flag and i + 1 < len(args):
                return args[i + 1]
            if a.startswith(flag + "="):
                return a.split("=", 1)[1]
        return None

    out = value("--output-directory")
    if out is not None:
        return cwd / out
    base = value("--base-directory")
    if base is not None:
        return cwd / base / "output"
    main = next((a for a in args if a.endswith("main.py")), None)
    return (cwd / main).parent / "output" if main else None


def tail(path: Path | None, lines: int = 30, since: int = 0) -> str:
    """The last lines of a log file, of what it holds after byte `since` ('' when there is none)."""
    if path is None or not path.is_file():
        return ""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(since, size - 64 * 1024))
        text = f.read().decode("utf-8", "replace")
    return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ServerSpec:
    """How to launch one ComfyUI: where, with which interpreter, flags and environment."""

    comfyui_dir: Path
    work_dir: Path
    python: str = sys.executable
    host: str = "127.0.0.1"
    port: int = 0
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    base_directory: Path | None = None
    install_probe: bool = True
    startup_timeout: float = 180.0
    name: str = "comfyui"
    custom_nodes: tuple[Path, ...] = ()  # more node-pack folders to load, e.g. the install's own beside a base dir

    @property
    def log_path(self) -> Path:
        """Where stdout and stderr of the server go."""
        return self.work_dir / f"{self.name}.log"

    @property
    def input_dir(self) -> Path:
        """The folder the server reads input files from: its own, unless the arguments name one."""
        args = list(self.args)
        given = args.index("--input-directory") + 1 if "--input-directory" in args else 0
        return Path(args[given]) if 0 < given < len(args) else self.work_dir / "input"

    def command(self, port: int) -> list[str]:
        """The argv that starts ComfyUI on `port`."""
        w = self.work_dir
        portable = portable_build(self.comfyui_dir, self.python)
        # the portable build's own command line: no user site-packages (-s), and its standalone flag
        argv = [self.python, *(["-s"] if portable else []), "-u", str(self.comfyui_dir / "main.py"),
                "--listen", self.host, "--port", str(port), "--disable-auto-launch"]
        if portable and STANDALONE_FLAG not in self.args:
            argv.append(STANDALONE_FLAG)
        if self.base_directory is not None:
            argv += ["--base-directory", str(self.base_directory)]
        own = {
            "--output-directory": str(w / "output"), "--temp-directory": str(w / "temp"),
            "--input-directory": str(w / "input"), "--user-directory": str(w / "user"),
            "--database-url": "sqlite:///:memory:", "--front-end-root": str(w / "frontend"),
        }
        for flag in _OWN_FLAGS:
            if flag not in self.args:
                argv += [flag, own[flag]]
        if self.install_probe or self.custom_nodes:
            argv += ["--extra-model-paths-config", str(w / "extra_model_paths.yaml")]
        return argv + list(self.args)

    def prepare(self) -> None:
        """Create the private folders, and install the probe node where only this server looks."""
        for sub in ("output", "temp", "input", "user", "frontend", "custom_nodes"):
            (self.work_dir / sub).mkdir(parents=True, exist_ok=True)
        if self.install_probe:
            node = self.work_dir / "custom_nodes" / "wan22_probe"
            node.mkdir(exist_ok=True)
            shutil.copyfile(PROBE_NODE, node / "__init__.py")
        if self.install_probe or self.custom_nodes:
            # quoted (JSON is YAML): a Windows path's backslashes, a space, '#' or ': ' in a folder read back as written
            text = f"wan22:\n  base_path: {json.dumps(str(self.work_dir))}\n  custom_nodes: custom_nodes\n"
            text += "".join(f"wan22_packs_{i}:\n  custom_nodes: {json.dumps(str(p))}\n"
                            for i, p in enumerate(self.custom_nodes))
            (self.work_dir / "extra_model_paths.yaml").write_text(text, encoding="utf-8")


@dataclass(frozen=True)
class ServerHandle:
    """A running (or attached) server: its URL, process id and log."""

    url: str
    pid: int | None = None
    log_path: Path | None = None

    def __str__(self) -> str:
        return self.url

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log."""
        return tail(self.log_path, lines)

    def log_size(self) -> int:
        """Current log length in bytes: an offset for `log_since`."""
        return self.log_path.stat().st_size if self.log_path and self.log_path.is_file() else 0

    def log_since(self, offset: int) -> str:
        """What the server logged after `offset`."""
        if not self.log_path or not self.log_path.is_file():
            return ""
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")


_LIVE: set[ComfyServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class _PosixGroup:
    """The server in a process group of its own, with a watchdog in that group that ends it when pytest dies."""

    def __init__(self) -> None:
        self._watchdog: subprocess.Popen[bytes] | None = None

    @staticmethod
    def popen_options() -> dict[str, Any]:
        # A process group of its own (not a session), so the watchdog can join it and a terminal's Ctrl-C
        # reaches pytest, which then stops the server on its way out.
        return {"preexec_fn": os.setpgrp}

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        group = proc.pid

        def join_group() -> None:  # runs in the child: join the server's group, so stopping it ends us too
            os.setpgid(0, group)

        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(group)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                preexec_fn=join_group)  # setpgid only

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes]) -> bool:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except OSError:
            return False
        return True

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)

    def close(self) -> None:
        if self._watchdog is not None:
            with contextlib.suppress(OSError):
                self._watchdog.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._watchdog.wait(timeout=5)
        self._watchdog = None


class _WindowsGroup:
    """The server in a console process group of its own (Ctrl+Break stops it) and in a job object that ends all its
    processes when pytest's handle closes, as the watchdog does on Linux."""

    def __init__(self) -> None:
        self.job: winjob.JobObject | None = None
        self.note = ""  # why the job could not be made: then the hard stop ends the process tree through psutil

    @staticmethod
    def popen_options() -> dict[str, Any]:
        return {"creationflags": winjob.CREATE_NEW_PROCESS_GROUP}

    def started(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            self.job = winjob.JobObject()
            self.job.assign(proc.pid)
        except OSError as exc:
            if self.job is not None:
                self.job.close()
            self.job = None
            self.note = f"no job object ({exc}): the server outlives a pytest that is killed"

    @staticmethod
    def terminate(proc: subprocess.Popen[bytes]) -> bool:
        try:
            return winjob.ctrl_break(proc.pid)
        except OSError:
            return False

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        if self.job is not None:
            try:
                self.job.terminate()
                return
            except OSError:
                pass
        processes.kill_tree(proc.pid)

    def close(self) -> None:
        if self.job is not None:
            self.job.close()
        self.job = None


_Group = _PosixGroup | _WindowsGroup


def _new_group() -> _Group:
    return _WindowsGroup() if platforms.windows() else _PosixGroup()


class ComfyServer:
    """One launched ComfyUI process group: start, wait until ready, restart after a crash, stop."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen[bytes] | None = None
        self.handle: ServerHandle | None = None
        self.starts = 0
        self._group: _Group | None = None

    def __enter__(self) -> ServerHandle:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def command(self) -> list[str]:
        """The argv of the last start."""
        port = int(self.handle.url.rsplit(":", 1)[1]) if self.handle else self.spec.port
        return self.spec.command(port)

    def alive(self) -> bool:
        """True while the server process runs."""
        return self.proc is not None and self.proc.poll() is None

    def exit_code(self) -> int | None:
        """The exit code once the process has ended."""
        return None if self.proc is None else self.proc.poll()

    def start(self) -> ServerHandle:
        """Launch and wait for /system_stats; raise ServerStartError with the log tail when it fails."""
        spec = self.spec
        if spec.port and port_in_use(spec.host, spec.port):
            raise PortInUse.at(spec.host, spec.port)
        port = spec.port or free_port(spec.host)
        spec.prepare()
        argv = spec.command(port)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **spec.env}
        group = _new_group()
        log = spec.log_path.open("ab")
        log.write(f"\n=== wan22: starting {platforms.command_text(argv)}\n".encode())
        if spec.env:  # the profile's variables (the allocator's, a tuned row's), after the command line
            log.write(f"=== wan22: environment {' '.join(f'{k}={v}' for k, v in spec.env.items())}\n".encode())
        log.flush()
        try:
            self.proc = subprocess.Popen(argv, cwd=spec.comfyui_dir, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, **group.popen_options())
        except OSError as exc:
            raise ServerStartError(f"could not run {argv[0]}: {exc}; fix --wan22-python (ini wan22_python)",
                                   command=argv) from exc
        finally:
            log.close()
        self._group = group
        _LIVE.add(self)
        self.starts += 1
        group.started(self.proc)
        if isinstance(group, _WindowsGroup) and group.note:
            with spec.log_path.open("ab") as log:
                log.write(f"=== wan22: {group.note}\n".encode())
        url = f"http://{_url_host(spec.host)}:{port}"
        self.handle = ServerHandle(url=url, pid=self.proc.pid, log_path=spec.log_path)
        self._wait_ready(url, argv)
        return self.handle

    def _wait_ready(self, url: str, argv: Sequence[str]) -> None:
        deadline = time.monotonic() + self.spec.startup_timeout
        session = requests.Session()
        try:
            while True:
                code = self.exit_code()
                if code is not None:
                    self._reap()
                    raise ServerStartError.exited(code, argv, tail(self.spec.log_path))
                with contextlib.suppress(requests.RequestException, ValueError):
                    r = session.get(url + "/system_stats", timeout=2)
                    if r.status_code == 200 and isinstance(r.json(), dict):
                        return
                if time.monotonic() > deadline:
                    log_tail = tail(self.spec.log_path)
                    self.stop()
                    raise ServerTimeout.after(self.spec.startup_timeout, url, argv, log_tail)
                time.sleep(0.2)
        finally:
            session.close()

    def ensure_running(self) -> bool:
        """Start again when the process has died; True when a restart happened."""
        if self.alive():
            return False
        self._reap()
        self.start()
        return True

    def stop(self, grace: float = 10.0) -> None:
        """Ask the whole process group to stop (SIGTERM; Ctrl+Break on Windows), then kill it; safe to call twice."""
        proc, group = self.proc, self._group
        if proc is not None and group is not None and group.terminate(proc):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        self._reap()

    def _reap(self) -> None:
        """Kill what is left of the group, wait for the server, and let the watchdog or job go."""
        proc, group = self.proc, self._group
        if proc is not None and group is not None:
            group.kill(proc)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if group is not None:
            group.close()
        self._group = None
        _LIVE.discard(self)


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
