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


def cost(records: Sequence[RunRecord], server_start_s: float, skipped_warmups: Sequence[str]) -> list[str]:
    """What the session spent of the GPU: run time in timed and warm-up rounds, server starts, warm-ups saved."""
    timed = sum(r.wall_s or 0.0 for r in records if not r.warmup)
    warm = sum(r.wall_s or 0.0 for r in records if r.warmup)
    lines = [f"wan22: GPU time {timed + warm + server_start_s:.1f} s: {timed:.1f} s in "
             f"{sum(not r.warmup for r in records)} timed rounds, {warm:.1f} s in "
             f"{sum(r.warmup for r in records)} warm-up rounds, {server_start_s:.1f} s starting servers"]
    if skipped_warmups:
        lines.append(f"wan22: warm-up skipped (the server had just run the same models and shape): "
                     f"{', '.join(skipped_warmups)}")
    return lines
