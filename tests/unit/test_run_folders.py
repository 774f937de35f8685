"""The default folder of server logs and run records: one per session under .wan22/runs, the newest kept."""

from __future__ import annotations

from pathlib import Path

from pytest_wan22.runs import KEEP, prune, session_dir


def test_session_folders_are_named_by_utc_time_and_sort_by_it(tmp_path: Path) -> None:
    first = session_dir(tmp_path, now=1_700_000_000.25, pid=42)
    assert first == tmp_path / ".wan22" / "runs" / "20231114T221320.250Z-42"
    later = session_dir(tmp_path, now=1_700_000_000.5, pid=7)
    assert sorted([later.name, first.name]) == [first.name, later.name]


def test_prune_keeps_the_newest_and_what_it_did_not_name(tmp_path: Path) -> None:
    runs = tmp_path / ".wan22" / "runs"
    made = [session_dir(tmp_path, now=1_700_000_000 + i, pid=1) for i in range(KEEP + 3)]
    for path in made:
        (path / "main").mkdir(parents=True)
    (runs / "notes").mkdir()  # someone's own folder: never ours to remove
    current = made[0]  # even the oldest name survives while it is this session's
    removed = prune(runs, current=current)
    assert removed == made[1:3]
    assert sorted(p.name for p in runs.iterdir()) == sorted([*(p.name for p in made[3:]), current.name, "notes"])
    assert prune(runs / "missing") == []
