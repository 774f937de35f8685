"""Where a session's server logs and run records go when --wan22-log-dir is not given: a folder of its own under
``<rootdir>/.wan22/runs/``, named by its UTC start time, kept for the last KEEP sessions (pytest's temporary
folder keeps three, and is hard to find).

Each pytest process (the session, or each xdist worker) writes into ``<session folder>/<worker>/`` (``main`` when
there are no workers), as it does under --wan22-log-dir.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

__all__ = ["KEEP", "RUNS", "prune", "session_dir"]

RUNS = Path(".wan22") / "runs"
KEEP = 20  # sessions kept under .wan22/runs
_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z-\d+$")


def session_dir(rootdir: Path, now: float | None = None, pid: int | None = None) -> Path:
    """This session's folder: <rootdir>/.wan22/runs/<UTC time>-<pid> (not created here)."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    return rootdir / RUNS / f"{stamp}-{os.getpid() if pid is None else pid}"


def prune(runs: Path, keep: int = KEEP, current: Path | None = None) -> list[Path]:
    """Remove all but the newest `keep` session folders under `runs` (never `current`, never a folder this
    module did not name); returns what was removed."""
    try:
        found = sorted(p for p in runs.iterdir() if p.is_dir() and _NAME.match(p.name))
    except OSError:
        return []
    removed = []
    for path in found[:max(0, len(found) - keep)]:
        if current is not None and path == current:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
