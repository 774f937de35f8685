"""The mark for tests that need POSIX (a shell script standing in for an interpreter, a pseudo-terminal, /proc, a
symlink, process groups): on Windows they skip with the reason."""

from __future__ import annotations

import os

import pytest


def posix_only(reason: str) -> pytest.MarkDecorator:
    """Skip on Windows, saying what POSIX feature the test needs."""
    return pytest.mark.skipif(os.name == "nt", reason=f"needs POSIX: {reason}")
