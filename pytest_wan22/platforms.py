"""Which operating system the plugin runs on: one switch that every platform branch reads (no pytest here).

Tests set ``PLATFORM`` to ``"win32"`` to take the Windows branches on Linux (with fakes for the Windows APIs).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

#: sys.platform as the plugin sees it.
PLATFORM: str = sys.platform


def windows() -> bool:
    """True on Windows (native CPython: the portable build's python_embeded too)."""
    return PLATFORM == "win32"


def name() -> str:
    """The platform's name in the tier table: 'windows', 'linux' or 'macos' (another POSIX: its sys.platform)."""
    if windows():
        return "windows"
    if PLATFORM.startswith("linux"):
        return "linux"
    return "macos" if PLATFORM == "darwin" else PLATFORM


def command_text(argv: Sequence[str]) -> str:
    """A command line as this platform's shell reads it back: POSIX shell quoting, or Windows' (cmd, CreateProcess)
    double quotes around an argument with a space, as in 'C:\\Program Files\\ComfyUI\\main.py'."""
    args = [str(a) for a in argv]
    return subprocess.list2cmdline(args) if windows() else shlex.join(args)


def split_args(text: str) -> list[str]:
    """Arguments typed as one string (--wan22-server-args), split as this platform does: POSIX shell words, or on
    Windows the C runtime's rules, where a backslash is a folder separator (C:\\models stays whole) and only
    escapes a double quote."""
    return _split_windows(text) if windows() else shlex.split(text)


def _split_windows(text: str) -> list[str]:
    """CommandLineToArgvW's rules for the arguments after the program name."""
    out: list[str] = []
    arg: list[str] = []
    in_arg = quoted = False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t" and not quoted:
            if in_arg:
                out.append("".join(arg))
                arg, in_arg = [], False
            i += 1
            continue
        in_arg = True
        if c == "\\":
            j = i
            while j < n and text[j] == "\\":
                j += 1
            slashes = j - i
            if j < n and text[j] == '"':  # 2k backslashes + quote: k backslashes, then the quote's meaning
                arg.append("\\" * (slashes // 2))
                if slashes % 2:
                    arg.append('"')
                    j += 1
                i = j
            else:
                arg.append("\\" * slashes)
                i = j
            continue
        if c == '"':
            if quoted and i + 1 < n and text[i + 1] == '"':  # "" inside quotes: a literal quote
                arg.append('"')
                i += 2
                continue
            quoted = not quoted
            i += 1
            continue
        arg.append(c)
        i += 1
    if in_arg:
        out.append("".join(arg))
    return out


def replace_file(source: str | os.PathLike[str], target: str | os.PathLike[str], *, attempts: int = 6,
                 sleep: Callable[[float], None] = time.sleep) -> None:
    """os.replace, atomic over an existing target; on Windows retried for a moment where another process (a virus
    scanner, the search indexer, an editor) holds either file open, which Windows refuses a rename for."""
    for attempt in range(attempts):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if not windows() or attempt == attempts - 1:
                raise
            sleep(0.05 * 2**attempt)
