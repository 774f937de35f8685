"""Render run records and verdicts as plain text for the terminal summary (and the rows report_html reuses)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .compare import metric_label
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


# --------------------------------------------------------------------------- checks, read defensively

def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class CheckView:
    """What a report shows of one judged metric, whatever the Check type carries (older ones lack some fields)."""

    metric: str
    status: str
    value: float | None  # now (median)
    base: float | None  # the baseline's median
    estimate: float | None  # relative change, 0.05 = +5 %
    ci_low: float | None
    ci_high: float | None
    mdc: float | None
    tolerance: str
    limit: float | None
    note: str
    line: str  # the Check's own describe(), when it has one

    @property
    def unit(self) -> str:
        """MiB for memory metrics, seconds otherwise."""
        return "MiB" if "vram" in self.metric or "mib" in self.metric.lower() else "s"

    def amount(self, value: float | None) -> str:
        """A value of this metric with its unit (GiB for memory)."""
        if value is None:
            return "-"
        if self.unit == "MiB":
            return f"{value / 1024:.2f} GiB"
        return f"{value:.3f} s" if abs(value) < 100 else f"{value:.1f} s"

    def change(self) -> str:
        """The relative change, e.g. '+3.1%'."""
        if self.estimate is None or not math.isfinite(self.estimate):
            return "-"
        return f"{self.estimate * 100:+.1f}%"

    def interval(self) -> str:
        """The confidence interval of the change, e.g. '[-1.0%, +4.2%]' ('' when the check has none)."""
        if self.ci_low is None or self.ci_high is None:
            return ""
        return f"[{self.ci_low * 100:+.1f}%, {self.ci_high * 100:+.1f}%]"


def view(check: Any) -> CheckView:
    """Read a compare.Check (today's fields or the statistical ones) into a CheckView."""
    value, base = _num(getattr(check, "value", None)), _num(getattr(check, "base", None))
    estimate = _num(getattr(check, "estimate", None))
    if estimate is None and value is not None and base:
        estimate = value / base - 1.0
    tol = getattr(check, "tolerance", None)
    describe = getattr(check, "describe", None)
    try:
        line = str(describe()) if callable(describe) else ""
    except Exception:  # a report must render whatever a custom compare hook returned
        line = ""
    return CheckView(
        metric=str(getattr(check, "metric", "?")), status=str(getattr(check, "status", "?")), value=value,
        base=base, estimate=estimate, ci_low=_num(getattr(check, "ci_low", None)),
        ci_high=_num(getattr(check, "ci_high", None)), mdc=_num(getattr(check, "mdc", None)),
        tolerance="" if tol is None else str(tol), limit=_num(getattr(check, "limit", None)),
        note=str(getattr(check, "note", "") or ""), line=line)


def checks_of(verdict: Any) -> list[CheckView]:
    """A verdict's checks as CheckViews."""
    return [view(c) for c in getattr(verdict, "checks", ()) or ()]


VERDICT_HEADER = ["variant", "metric", "baseline", "now", "change", "verdict"]
VERDICT_HEADER_V = [*VERDICT_HEADER, "95% CI", "noise (MDC)", "tolerance", "note"]


def verdict_rows(verdicts: Mapping[str, Any], verbose: bool = False) -> list[list[str]]:
    """One row per judged metric (passing ones included); a verdict without checks gets one row of its own."""
    rows: list[list[str]] = []
    for key in sorted(verdicts):
        verdict = verdicts[key]
        name = str(getattr(verdict, "variant_id", key))
        status = str(getattr(verdict, "status", "?"))
        checks = checks_of(verdict)
        if not checks:
            why = {"new": "no baseline yet", "insufficient": "not compared"}.get(status, "")
            rows.append([name, "-", "-", "-", "-", f"{status}{f' ({why})' if why else ''}"]
                        + (["", "", "", ""] if verbose else []))
            continue
        for i, c in enumerate(checks):
            row = [name if i == 0 else "", metric_label(c.metric), c.amount(c.base), c.amount(c.value), c.change(),
                   c.status]
            if verbose:
                mdc = f"{c.mdc * 100:.1f}%" if c.mdc is not None else ""
                tol = c.tolerance or (f"limit {c.amount(c.limit)}" if c.limit is not None else "")
                row += [c.interval(), mdc, tol, c.note]
            rows.append(row)
    return rows


def verdict_table(verdicts: Mapping[str, Any], verbose: bool = False) -> str:
    """Per variant: baseline, now, change and verdict of every metric judged."""
    return table(verdict_rows(verdicts, verbose), VERDICT_HEADER_V if verbose else VERDICT_HEADER)


def render(records: Sequence[RunRecord], verdicts: Mapping[str, Any], verbosity: int = 0) -> str:
    """The whole summary: every round, then baseline/now/change/verdict per metric, then the failures' notes."""
    out = [table([record_row(r) for r in records])]
    for r in records:
        for w in r.warnings:
            out.append(f"  {r.variant_id} round {r.round}: {w}")
    if verdicts:
        out += ["", verdict_table(verdicts, verbose=verbosity > 0)]
    if verbosity > 0:
        notes = [c.line for v in verdicts.values() for c in checks_of(v) if c.line and c.status != "ok"]
        if notes:
            out += ["", *notes]
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
