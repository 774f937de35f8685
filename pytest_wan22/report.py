"""Render run records and verdicts as plain text for the terminal summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .compare import Verdict
from .records import RunRecord


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def record_row(r: RunRecord) -> list[str]:
    """One table row for a run."""
    steps = " / ".join(_f(p.seconds_per_step, "{:.3f}") for p in r.passes) or "-"
    peak = r.vram.peak_mib if r.vram and r.vram.available else None
    return [r.variant_id, f"{r.round}{'w' if r.warmup else ''}", r.outcome, _f(r.wall_s), _f(r.server_s), steps,
            _f(peak / 1024 if peak is not None else None, "{:.1f}"), str(len(r.warnings))]


HEADER = ["variant", "round", "outcome", "wall s", "server s", "s/step per pass", "peak GiB", "warnings"]


def table(rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> str:
    """Columns padded to the widest cell."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(records: Sequence[RunRecord], verdicts: Mapping[str, Verdict]) -> str:
    """The whole summary: every round, then each verdict that is not plain ok."""
    out = [table([record_row(r) for r in records])]
    for r in records:
        for w in r.warnings:
            out.append(f"  {r.variant_id} round {r.round}: {w}")
    notes = [v.message for v in verdicts.values() if v.status not in ("ok",)]
    if notes:
        out.append("")
        out.extend(notes)
    return "\n".join(out)
