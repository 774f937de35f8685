"""Render a session as plain text for the terminal summary (and the rows report_html reuses): every test with
its outcome and reason, every round, then every judged metric."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from .compare import base_metric, metric_label
from .records import RunRecord, round_name

SIDES = {"A": "A (current)", "B": "B (candidate)"}
OUTCOMES = ("passed", "failed", "error", "skipped", "interrupted", "not run")
VerdictKey = tuple[str, str]  # (workflow, variant key), as baselines are keyed


def _f(value: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value)


def side_name(side: str) -> str:
    """'A (current)', 'B (candidate)', or the side as it is ('' outside A/B)."""
    return SIDES.get(side, side)


# --------------------------------------------------------------------------- tests of the session

@dataclass(frozen=True)
class TestOutcome:
    """One collected test: its outcome, why (failure's first line, skip reason), the variants it ran and, for a
    `--wan22-workflows` test, the workflow file."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    nodeid: str
    outcome: str  # one of OUTCOMES
    reason: str = ""
    variants: tuple[VerdictKey, ...] = ()
    workflow_file: str = ""


def first_line(text: str, most: int = 240) -> str:
    """The first non-empty line of a message (with the next one when it ends in a colon: 'X cannot run on this
    server: <what it lacks>'), cut to `most` characters."""
    lines = [s.strip() for s in str(text).splitlines() if s.strip()]
    line = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else (lines[0] if lines else "")
    return line if len(line) <= most else line[: most - 3] + "..."


def _key(key: Any) -> VerdictKey:
    """A verdicts key as (workflow, variant): plain variant ids (older callers) get no workflow."""
    if isinstance(key, tuple) and len(key) == 2:
        return str(key[0]), str(key[1])
    return "", str(key)


def verdict_of_test(test: TestOutcome, verdicts: Mapping[Any, Any]) -> str:
    """What the gate said of a test's variants: their verdicts, 'not judged' where none was reached."""
    found = {_key(k): v for k, v in verdicts.items()}
    statuses = [str(getattr(found[k], "status", "?")) if k in found else "not judged" for k in test.variants]
    return ", ".join(dict.fromkeys(statuses)) or ("not judged" if test.outcome != "skipped" else "-")


def reason_of_test(test: TestOutcome, verdicts: Mapping[Any, Any]) -> str:
    """A test's reason: its own (failure, skip) or, for a pass, what its verdicts found."""
    if test.reason or test.outcome != "passed":
        return test.reason
    found = {_key(k): v for k, v in verdicts.items()}
    words = []
    for k in test.variants:
        v = found.get(k)
        if v is None:
            continue
        status = str(getattr(v, "status", ""))
        headline = "no baseline yet" if status == "new" else str(getattr(v, "headline", "") or "")
        words.append(f"{k[1]}: {headline}" if len(test.variants) > 1 and headline else headline)
    return "; ".join(w for w in words if w)


OUTCOME_HEADER = ["test", "outcome", "verdict", "reason"]
REASON_COLUMNS = 100  # of a reason in the terminal summary


def outcome_rows(tests: Sequence[TestOutcome], verdicts: Mapping[Any, Any]) -> list[list[str]]:
    """One row per test: node id, outcome, verdict of its variants, reason."""
    return [[t.nodeid, t.outcome, verdict_of_test(t, verdicts), reason_of_test(t, verdicts)] for t in tests]


def outcome_counts(tests: Sequence[TestOutcome]) -> str:
    """'5 tests: 2 passed, 2 failed, 1 skipped'."""
    counts = {o: sum(t.outcome == o for t in tests) for o in OUTCOMES}
    parts = [f"{n} {o}" for o, n in counts.items() if n]
    return f"{len(tests)} test{'s' if len(tests) != 1 else ''}: {', '.join(parts)}"


# --------------------------------------------------------------------------- rounds

def record_row(r: RunRecord, sides: bool = False) -> list[str]:
    """One table row for a run (with its side in an A/B session)."""
    steps = " / ".join(_f(p.seconds_per_step, "{:.3f}") for p in r.passes) or "-"
    peak = r.vram.peak_mib if r.vram and r.vram.available else None
    side = [side_name(r.side) or "-"] if sides else []
    return [r.workflow, r.variant_id, *side, round_name(r), r.outcome, _f(r.wall_s), _f(r.server_s), steps,
            _f(peak / 1024 if peak is not None else None, "{:.1f}"), str(len(r.warnings))]


HEADER = ["workflow", "variant", "round", "outcome", "wall s", "server s", "s/step per pass", "peak GiB", "warnings"]


def round_header(sides: bool = False) -> list[str]:
    """The rounds table's header, with a side column in an A/B session."""
    return [*HEADER[:2], "side", *HEADER[2:]] if sides else list(HEADER)


def round_rows(records: Sequence[RunRecord]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the rounds table; a side column when any round has a side."""
    sides = any(r.side for r in records)
    return round_header(sides), [record_row(r, sides) for r in records]


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
    allowance: float | None = None  # the relative allowance the check used (Check.tolerance as a number)

    @property
    def unit(self) -> str:
        """MiB for memory metrics, seconds otherwise."""
        return "MiB" if "vram" in self.metric or "mib" in self.metric.lower() else "s"

    @property
    def measured(self) -> bool:
        """False for a metric neither side measured (a phase that did not run, or came from the cache on both)."""
        return bool(self.value) or bool(self.base)

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
    allowance = _num(tol)
    if tol is None:
        text = ""
    elif allowance is not None:  # compare.Check: the relative allowance used
        text = f"{allowance * 100:.1f}%"
    else:  # a Tolerance or text, as the user wrote it
        text = str(tol).split(":", 1)[-1]
    describe = getattr(check, "describe", None)
    try:
        line = str(describe()) if callable(describe) else ""
    except Exception:  # a report must render whatever a custom compare hook returned
        line = ""
    return CheckView(
        metric=str(getattr(check, "metric", "?")), status=str(getattr(check, "status", "?")), value=value,
        base=base, estimate=estimate, ci_low=_num(getattr(check, "ci_low", None)),
        ci_high=_num(getattr(check, "ci_high", None)), mdc=_num(getattr(check, "mdc", None)),
        tolerance=text, limit=_num(getattr(check, "limit", None)),
        note=str(getattr(check, "note", "") or ""), line=line, allowance=allowance)


def checks_of(verdict: Any) -> list[CheckView]:
    """A verdict's checks as CheckViews."""
    return [view(c) for c in getattr(verdict, "checks", ()) or ()]


def tolerance_text(c: CheckView, tolerances: Mapping[str, Any] | None) -> str:
    """The tolerance as the user writes it ('1.3%+5ms'), with the allowance it came to here when that differs
    (the absolute part, or another GPU's spread): '1.3%+5ms (2.0% here)'."""
    tol = (tolerances or {}).get(base_metric(c.metric))
    if tol is None:
        return c.tolerance or (f"limit {c.amount(c.limit)}" if c.limit is not None else "")
    text = str(tol).split(":", 1)[-1]
    ratio = getattr(tol, "ratio", None)
    if c.allowance is not None and (ratio is None or abs(c.allowance - ratio) > 0.0005):
        text += f" ({c.allowance * 100:.1f}% here)"
    return text


def sides_header(ab: bool) -> tuple[str, str]:
    """What the two compared columns are called: baseline and now, or A (current) and B (candidate)."""
    return (SIDES["A"], SIDES["B"]) if ab else ("baseline", "now")


def verdict_header(verbose: bool = False, ab: bool = False) -> list[str]:
    """The metric table's header."""
    before, after = sides_header(ab)
    head = ["workflow", "variant", "metric", before, after, "change", "verdict"]
    return [*head, "95% CI", "noise (MDC)", "tolerance", "note"] if verbose else head


VERDICT_HEADER = verdict_header()
VERDICT_HEADER_V = verdict_header(True)
STATUS_COLUMN = VERDICT_HEADER.index("verdict")


def verdict_rows(verdicts: Mapping[Any, Any], verbose: bool = False,
                 tolerances: Mapping[str, Any] | None = None) -> list[list[str]]:
    """One row per judged metric (passing ones included); a verdict without checks gets one row of its own.
    Keys are (workflow, variant) pairs (a plain variant id is read as one without a workflow)."""
    rows: list[list[str]] = []
    for key in sorted(verdicts, key=lambda k: _key(k)):
        verdict = verdicts[key]
        workflow, name = _key(key)
        status = str(getattr(verdict, "status", "?"))
        checks = checks_of(verdict)
        if not checks:
            why = {"new": "no baseline yet", "insufficient": "not compared"}.get(status, "")
            rows.append([workflow, name, "-", "-", "-", "-", f"{status}{f' ({why})' if why else ''}"]
                        + (["", "", "", ""] if verbose else []))
            continue
        for i, c in enumerate(checks):
            first = [workflow, name] if i == 0 else ["", ""]
            if not c.measured:  # e.g. a phase every round took from the cache: nothing to judge
                row = [*first, metric_label(c.metric), "not measured", "not measured", "-", "not measured"]
            else:
                row = [*first, metric_label(c.metric), c.amount(c.base),
                       c.amount(c.value) if c.value is not None else "not measured", c.change(), c.status]
            if verbose:
                mdc = f"{c.mdc * 100:.1f}%" if c.mdc is not None else ""
                row += [c.interval(), mdc, tolerance_text(c, tolerances) if c.measured else "", c.note]
            rows.append(row)
    return rows


def verdict_table(verdicts: Mapping[Any, Any], verbose: bool = False, ab: bool = False,
                  tolerances: Mapping[str, Any] | None = None) -> str:
    """Per variant: baseline (A), now (B), change and verdict of every metric judged."""
    return table(verdict_rows(verdicts, verbose, tolerances), verdict_header(verbose, ab))


def render(records: Sequence[RunRecord], verdicts: Mapping[Any, Any], verbosity: int = 0, *,
           tests: Sequence[TestOutcome] = (), ab: bool = False, tolerances: Mapping[str, Any] | None = None) -> str:
    """The whole summary: every test with its outcome and reason, every round, then baseline (A) / now (B) /
    change / verdict per metric, then the notes of the checks that were not ok."""
    out: list[str] = []
    if tests:  # reasons cut shorter than in the report files: the terminal is narrow
        rows = [[*row[:3], first_line(row[3], REASON_COLUMNS)] for row in outcome_rows(tests, verdicts)]
        out += [outcome_counts(tests), table(rows, OUTCOME_HEADER), ""]
    if records:
        header, rows = round_rows(records)
        out.append(table(rows, header))
        for r in records:
            for w in r.warnings:
                side = f" [{r.side}]" if r.side else ""
                out.append(f"  {r.variant_id}{side} round {round_name(r)}: {w}")
    if verdicts:
        out += ["", verdict_table(verdicts, verbose=verbosity > 0, ab=ab, tolerances=tolerances)]
    if verbosity > 0:
        notes = [c.line for v in verdicts.values() for c in checks_of(v) if c.line and c.status != "ok"]
        if notes:
            out += ["", *notes]
    while out and not out[-1]:
        out.pop()
    return "\n".join(out)


def cost(records: Sequence[RunRecord], server_start_s: float, skipped_warmups: Sequence[str],
         synth_notes: Sequence[str] = ()) -> list[str]:
    """What the session spent of the GPU: run time in timed and warm-up rounds, server starts, warm-ups saved,
    and the synthetic files written before first runs."""
    timed = sum(r.wall_s or 0.0 for r in records if not r.warmup)
    warm = sum(r.wall_s or 0.0 for r in records if r.warmup)
    lines = [f"wan22: GPU time {timed + warm + server_start_s:.1f} s: {timed:.1f} s in "
             f"{sum(not r.warmup for r in records)} timed rounds, {warm:.1f} s in "
             f"{sum(r.warmup for r in records)} warm-up rounds, {server_start_s:.1f} s starting servers"]
    if skipped_warmups:
        lines.append(f"wan22: warm-up skipped (the server had just run the same models and shape): "
                     f"{', '.join(skipped_warmups)}")
    lines += [f"wan22: {n}" for n in synth_notes]
    return lines


# --------------------------------------------------------------------------- tuning (--wan22-tune)

TUNE_HEADER = ["rank", "candidate", "against", "rounds A+B", "speed-up (95% CI)", "peak GiB (incumbent)",
               "output vs incumbent", "result"]


def _speed(t: Mapping[str, Any]) -> str:
    if t.get("speedup") is None:
        return "-"
    low, high = t.get("speedup_low"), t.get("speedup_high")
    if low is not None and high is not None:
        return f"{t['speedup']:.2f}x ({low:.2f}x to {high:.2f}x)"
    return f"{t['speedup']:.2f}x" + (f" (at least {low:.2f}x)" if low is not None else "")


def _output(t: Mapping[str, Any]) -> str:
    if t.get("identical"):
        return "identical"
    if t.get("psnr_db") is not None:
        least = f" (>= {t['min_psnr']:g})" if t.get("min_psnr") is not None else ""
        return f"{t['psnr_db']:.1f} dB{least}"
    return "-"


def _peaks(t: Mapping[str, Any]) -> str:
    peak, before = t.get("peak_mib"), t.get("incumbent_peak_mib")
    if peak is None and before is None:
        return "-"
    def gib(mib: float | None) -> str:
        return _f(mib / 1024 if mib is not None else None, "{:.1f}")

    return f"{gib(peak)} ({gib(before)})"


def tune_rows(data: Mapping[str, Any], cls: str, most: int | None = None) -> list[list[str]]:
    """One class of work's candidates: those faster than the tier's profile ranked by speed-up, then the others in the
    order tried (their results cut to `most` characters)."""
    trials = [t for t in data.get("trials", ()) if t.get("class") == cls]
    ranked = sorted((t for t in trials if t.get("status") == "faster" and not t.get("incumbent_options")),
                    key=lambda t: -(t.get("speedup") or 0.0))
    rows = []
    for i, t in enumerate([*ranked, *(t for t in trials if t not in ranked)]):
        rank = str(i + 1) if i < len(ranked) else "-"
        rounds = f"{t['rounds'][0]}+{t['rounds'][1]}" if any(t.get("rounds", ())) else "-"
        result = str(t.get("status", ""))
        if t.get("reason"):
            result += f": {t['reason']}"
        if most is not None:
            result = first_line(result, most)
        rows.append([rank, str(t.get("candidate", "")), str(t.get("incumbent", "")), rounds, _speed(t), _peaks(t),
                     _output(t), result])
    return rows


def tune_head(data: Mapping[str, Any]) -> list[str]:
    """The profile tuned and how the search went about it."""
    profile = data.get("profile", {})
    env = " ".join(f"{k}={v}" for k, v in profile.get("env", {}).items())
    return [f"tier {data.get('tier')}, profile: {' '.join(profile.get('args', ())) or '(no flags)'}"
            + (f"; {env}" if env else ""),
            f"search: {data.get('search')}; a gain counts from {data.get('min_gain', 0) * 100:g}% of wall time"]


def tune_tail(data: Mapping[str, Any]) -> list[str]:
    """The winner with its evidence, the tier file written, and the GPU time spent (what the budget left out)."""
    win = data.get("winner", {})
    out = []
    if win.get("options"):
        out.append(f"winner: {win['name']}: {' '.join(win.get('args', ()))}"
                   + (f"; {' '.join(f'{k}={v}' for k, v in win.get('env', {}).items())}" if win.get("env") else "")
                   + (f"; torch.compile {win['torch_compile']}" if win.get("torch_compile") else ""))
        for t in win.get("evidence", ()):
            out.append(f"  {t['class']}: {_speed(t)} faster than the tier's profile, peak {_peaks(t)} GiB, "
                       f"output {t.get('output') or '-'}")
    else:
        out.append("winner: none; no candidate was faster than the tier's profile while fitting and keeping the "
                   "output, so the row keeps the profile")
    if data.get("row_error"):
        out.append(f"tier row not written: {data['row_error']}")
    else:
        out.append(f"tier row written to {data.get('row_file')}: run it with --wan22-tiers-file={data.get('row_file')}")
    budget = data.get("budget_s")
    spent = f"GPU time spent tuning: {data.get('spent_s', 0.0):.1f} s" + (
        f" of a {budget:g} s budget" if budget is not None else "")
    if data.get("out_of_budget"):
        tried = list(dict.fromkeys(t["candidate"] for t in data.get("trials", ()) if t.get("spent_s")))
        spent += f"; the budget ran out: tried {', '.join(tried) or 'nothing'}"
        if data.get("not_tried"):
            spent += f"; not tried: {', '.join(data['not_tried'])}"
    out.append(spent)
    return out


def tune_summary(data: Mapping[str, Any]) -> list[str]:
    """The tuning's end, for the terminal: the profile and the search, each class's ranked candidates, the winner
    with its evidence, the tier file and the GPU time spent."""
    out = tune_head(data)
    for c in data.get("classes", ()):
        rows = tune_rows(data, c["key"], REASON_COLUMNS)
        out += ["", f"{c['key']} ({c['describe']}), standing for its class of work:"]
        out += table(rows, TUNE_HEADER).splitlines() if rows else ["  nothing tried"]
    return [*out, "", *tune_tail(data)]
