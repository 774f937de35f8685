"""Which operating system the plugin runs on: one switch that every platform branch reads (no pytest here).

Tests set ``PLATFORM`` to ``"win32"`` to take the Windows branches on Linux (with fakes for the Windows APIs).
"""

from __future__ import annotations

import sys

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
