"""Arithmetic only: summarise a variant's rounds and judge them against a baseline."""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from .records import RunRecord

METRICS = ("time", "step", "vram")
UNITS_MIB = {"mib": 1.0, "gib": 1024.0, "mb": 1e6 / 2**20, "gb": 1e9 / 2**20}
UNITS_S = {"s": 1.0, "ms": 1e-3}

DEFAULT_TOLERANCES = ("time:10%", "step:10%", "vram:5%")


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may grow before it counts as a regression: a ratio, an absolute amount, or both."""

    metric: str
    ratio: float | None = None
    absolute: float | None = None

    def limit(self, base: float) -> float:
        """The largest value that still passes against `base`."""
        limits = []
        if self.ratio is not None:
            limits.append(base * (1.0 + self.ratio))
        if self.absolute is not None:
            limits.append(base + self.absolute)
        return max(limits)

    def __str__(self) -> str:
        parts = []
        if self.ratio is not None:
            parts.append(f"{self.ratio * 100:g}%")
        if self.absolute is not None:
            parts.append(f"{self.absolute:g}{'MiB' if self.metric == 'vram' else 's'}")
        return f"{self.metric}:{'+'.join(parts)}"


_PART = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>%|[a-zA-Z]+)?\s*$")


def parse_tolerance(text: str) -> Tolerance:
    """Parse METRIC:LIMIT, e.g. 'time:10%', 'vram:512MiB', 'step:5%+0.05s'."""
    metric, sep, rest = text.partition(":")
    metric = metric.strip().lower()
    if not sep or metric not in METRICS:
        raise ValueError(f"tolerance {text!r} must look like METRIC:LIMIT with METRIC one of "
                         f"{', '.join(METRICS)}, e.g. time:10% or vram:512MiB")
    ratio = absolute = None
    for part in rest.split("+"):
        m = _PART.match(part)
        if not m:
            raise ValueError(f"tolerance {text!r}: {part!r} is not a number with a unit (10%, 2s, 512MiB)")
        num, unit = float(m["num"]), (m["unit"] or "").lower()
        if unit == "%":
            ratio = num / 100.0
        elif metric == "vram" and unit in UNITS_MIB:
            absolute = num * UNITS_MIB[unit]
        elif metric != "vram" and unit in UNITS_S:
            absolute = num * UNITS_S[unit]
        else:
            raise ValueError(f"tolerance {text!r}: unit {m['unit']!r} does not fit {metric} "
                             f"(use % or {'MiB/GiB' if metric == 'vram' else 's/ms'})")
    return Tolerance(metric, ratio, absolute)


def tolerances(texts: Iterable[str]) -> dict[str, Tolerance]:
    """Defaults overlaid with the user's tolerances, one per metric."""
    out = {t.metric: t for t in map(parse_tolerance, DEFAULT_TOLERANCES)}
    out.update({t.metric: t for t in map(parse_tolerance, texts)})
    return out


@dataclass(frozen=True)
class Summary:
    """The statistics of one variant's timed rounds: what a baseline stores and a comparison reads."""

    variant_id: str
    rounds: int
    wall_s: tuple[float, ...]
    step_s: tuple[float, ...]  # seconds per step, every sampler pass of every round
    peak_vram_mib: float | None
    digest: str = ""
    outcome: str = "success"

    @property
    def wall_median(self) -> float | None:
        """Median wall time."""
        return statistics.median(self.wall_s) if self.wall_s else None

    @property
    def step_median(self) -> float | None:
        """Median seconds per step."""
        return statistics.median(self.step_s) if self.step_s else None


def summarise(variant_id: str, records: Sequence[RunRecord], digest: str = "") -> Summary:
    """Fold a variant's timed (non-warm-up) successful rounds into a Summary."""
    timed = [r for r in records if not r.warmup and r.ok]
    wall = tuple(r.wall_s for r in timed if r.wall_s is not None)
    steps = tuple(s for r in timed for p in r.passes if (s := p.seconds_per_step) is not None)
    peaks = [r.vram.peak_process_mib or r.vram.peak_device_mib for r in records
             if r.vram and r.vram.available]
    peak = max((p for p in peaks if p is not None), default=None)
    outcome = "success" if timed else (records[-1].outcome if records else "invalid")
    return Summary(variant_id, len(timed), wall, steps, peak, digest, outcome)


Status = Literal["ok", "regressed", "improved", "new", "suspicious", "insufficient"]


@dataclass(frozen=True)
class Check:
    """One metric compared against its baseline."""

    metric: str
    status: Status
    value: float | None
    base: float | None
    limit: float | None
    note: str = ""

    def describe(self) -> str:
        """One line for a failure message or a report."""
        unit = "MiB" if self.metric == "vram" else "s"
        if self.value is None or self.base is None:
            return f"{self.metric}: {self.status} {self.note}".rstrip()
        change = (self.value / self.base - 1.0) * 100 if self.base else math.inf
        lim = f", limit {self.limit:.3f} {unit}" if self.limit is not None else ""
        return (f"{self.metric}: {self.value:.3f} {unit} vs baseline {self.base:.3f} {unit} "
                f"({change:+.1f}%{lim}) {self.status} {self.note}").rstrip()


@dataclass(frozen=True)
class Verdict:
    """The comparison of a variant's Summary with its baseline."""

    variant_id: str
    status: Status
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> bool:
        """True when the test should fail."""
        return self.status == "regressed"

    @property
    def message(self) -> str:
        """All checks, one per line."""
        head = f"{self.variant_id}: {self.status}"
        return "\n".join([head, *("  " + c.describe() for c in self.checks)])


def _judge(metric: str, new: Sequence[float], base: Sequence[float], tol: Tolerance) -> Check:
    """Regressed only when the best new value is beyond the tolerance of the worst baseline value too.

    A median past the limit with a best value inside it is 'suspicious': noise or a real change that
    more rounds would settle.
    """
    if not new or not base:
        return Check(metric, "insufficient", None, None, None, "(no data)")
    new_med, base_med = statistics.median(new), statistics.median(base)
    limit = tol.limit(base_med)
    if new_med <= limit:
        floor = base_med / (1.0 + tol.ratio) if tol.ratio else base_med - (tol.absolute or 0.0)
        status: Status = "improved" if max(new) < floor else "ok"
        return Check(metric, status, new_med, base_med, limit)
    if min(new) > tol.limit(max(base)):
        return Check(metric, "regressed", new_med, base_med, limit)
    return Check(metric, "suspicious", new_med, base_med, limit, "(rounds overlap the baseline's spread)")


def compare(summary: Summary, baseline: Summary | None, tols: Mapping[str, Tolerance]) -> Verdict:
    """Judge a Summary against its baseline: time, seconds per step and peak VRAM."""
    if baseline is None:
        return Verdict(summary.variant_id, "new")
    checks = [
        _judge("time", summary.wall_s, baseline.wall_s, tols["time"]),
        _judge("step", summary.step_s, baseline.step_s, tols["step"]),
    ]
    if summary.peak_vram_mib is not None and baseline.peak_vram_mib is not None:
        checks.append(_judge("vram", [summary.peak_vram_mib], [baseline.peak_vram_mib], tols["vram"]))
    statuses = {c.status for c in checks}
    status: Status
    if "regressed" in statuses:
        status = "regressed"
    elif "suspicious" in statuses:
        status = "suspicious"
    elif statuses <= {"insufficient"}:
        status = "insufficient"
    elif "improved" in statuses and statuses <= {"improved", "ok", "insufficient"}:
        status = "improved"
    else:
        status = "ok"
    return Verdict(summary.variant_id, status, tuple(checks))
