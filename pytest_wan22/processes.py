"""The machine's processes through psutil, the same on Linux and Windows (no pytest here).

A process tree, a process's command line and working folder, the process that listens on a TCP port. A process
that cannot be read (gone, another user's, hidden from a container) answers with what is known: the PID alone,
None, or '(not visible here)'.
"""

from __future__ import annotations

import ntpath
import posixpath
from pathlib import Path

import psutil

from . import platforms

#: What process_name says of a PID it cannot read.
NOT_VISIBLE = "(not visible here)"

_GONE = (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError, PermissionError)


def children(pid: int) -> list[int]:
    """The direct children of pid ([] when it cannot be read)."""
    try:
        return [p.pid for p in psutil.Process(pid).children()]
    except _GONE:
        return []


def process_tree(pid: int) -> set[int]:
    """pid and all its descendants; {pid} where the process cannot be read."""
    try:
        return {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}
    except _GONE:
        return {pid}


def cmdline(pid: int) -> list[str] | None:
    """A process's command line; None where it cannot be read."""
    try:
        return list(psutil.Process(pid).cmdline())
    except _GONE:
        return None


def cwd(pid: int) -> Path | None:
    """A process's working folder; None where it cannot be read."""
    try:
        folder = psutil.Process(pid).cwd()
    except _GONE:
        return None
    return Path(folder) if folder else None


def program(arg: str) -> str:
    """A command line's program without its folder: 'python.exe' of 'C:\\ComfyUI\\python_embeded\\python.exe'."""
    return ntpath.basename(arg) if platforms.windows() else posixpath.basename(arg)


def process_name(pid: int, width: int = 80) -> str:
    """A process's command line with its program's folder left out (`python train.py --lr 3e-4`), cut to `width`
    characters (its name where the command line is empty, NOT_VISIBLE where the PID cannot be read, as from
    inside a container or for another user's process on Windows)."""
    try:
        proc = psutil.Process(pid)
        args = [a for a in proc.cmdline() if a]
        text = " ".join([program(args[0]), *args[1:]]) if args else proc.name()
    except _GONE:
        return NOT_VISIBLE
    text = text or NOT_VISIBLE
    return text if len(text) <= width else text[:width - 3] + "..."


def listening_pid(port: int) -> int | None:
    """The process that listens on a TCP port of this machine; None when none does or its owner cannot be seen
    (another user's process, or a platform that needs more rights to list sockets)."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError, OSError):
        return None
    found = [c.pid for c in conns if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
             and c.pid is not None]
    return min(found) if found else None  # a forked listener shares its socket: take the lowest PID


def alive(pid: int) -> bool:
    """True while pid runs (a zombie does not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except _GONE:
        return False


def kill_tree(pid: int, timeout: float = 5.0) -> None:
    """Kill pid and every descendant (children first seen, then the parent), and wait for them to go."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except _GONE:
        return
    for p in procs:
        try:
            p.kill()
        except _GONE:
            continue
    psutil.wait_procs(procs, timeout=timeout)
