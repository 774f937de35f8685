"""The report folder: a self-contained index.html (plots embedded as PNG), summary.md and results.json.

Plain data in (records, verdicts, stored baselines, the tier's budgets), files out. Plots need matplotlib
(``pip install 'pytest-wan22[report]'``); without it the page still holds every table and says so.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import math
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baselines import BaselineStore
from .records import Environment, RunRecord, round_name, to_jsonable
from .report import (
    OUTCOME_HEADER,
    STATUS_COLUMN,
    TUNE_HEADER,
    TestOutcome,
    checks_of,
    outcome_counts,
    outcome_rows,
    round_rows,
    side_name,
    sides_header,
    tune_head,
    tune_rows,
    tune_tail,
    verdict_header,
    verdict_rows,
)

SCHEMA_VERSION = 1
EXTRA_HINT = "pip install 'pytest-wan22[report]'"
PHASE_ORDER = ("load", "text", "encode", "compile", "sampling", "decode", "interpolation", "save", "other")


@dataclass(frozen=True)
class VariantData:
    """One variant as the report shows it: its rounds, its verdict, and the baseline it was judged against (in
    an A/B session: side A's rounds, which are among `records` beside side B's)."""

    variant_id: str
    workflow: str
    records: tuple[RunRecord, ...]
    verdict: Any = None
    baseline_step_s: tuple[float, ...] = ()
    baseline_wall_s: tuple[float, ...] = ()
    baseline_peak_mib: float | None = None
    budget_gib: float | None = None
    ab: bool = False
    tests: tuple[str, ...] = ()  # node ids of the tests that ran it

    @property
    def timed(self) -> list[RunRecord]:
        """The successful timed rounds (of side B, the candidate, in an A/B session)."""
        return [r for r in self.records if r.ok and not r.warmup and (not self.ab or r.side != "A")]

    @property
    def key(self) -> tuple[str, str]:
        """(workflow, variant), as baselines and verdicts are keyed."""
        return self.workflow, self.variant_id

    @property
    def anchor(self) -> str:
        """The id of its section in index.html."""
        return f"{self.workflow}--{self.variant_id}"

    @property
    def step_s(self) -> list[float]:
        """Seconds per step of every sampler pass of every timed round (what a baseline stores)."""
        return [s for r in self.timed for p in r.passes if (s := p.seconds_per_step) is not None]


@dataclass(frozen=True)
class ReportData:
    """Everything one report holds."""

    tier: str | None
    variants: tuple[VariantData, ...]
    machine: Environment | None = None
    baseline_machine: Environment | None = None  # in an A/B session: side A's
    created: float = field(default_factory=time.time)
    title: str = "pytest-wan22 report"
    tests: tuple[TestOutcome, ...] = ()
    ab: bool = False
    tolerances: Mapping[str, Any] | None = None
    tune: Mapping[str, Any] | None = None  # --wan22-tune: what the tuning found (tune.Tuner.finish)

    @property
    def verdicts(self) -> dict[tuple[str, str], Any]:
        """Every variant's verdict by (workflow, variant)."""
        return {v.key: v.verdict for v in self.variants if v.verdict is not None}


def summary_of(baseline: Any, name: str) -> tuple[float, ...]:
    """A tuple field of a stored baseline summary, read defensively."""
    value = getattr(baseline, name, ()) if baseline is not None else ()
    return tuple(float(v) for v in value or () if isinstance(v, (int, float)))


def group(records: Iterable[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    """Records by (workflow, variant), in first-seen order: two workflow files may derive the same variant id."""
    out: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        out.setdefault((r.workflow, r.variant_id), []).append(r)
    return out


def collect(records: Sequence[RunRecord], verdicts: Mapping[Any, Any], tier: Any, machine: Environment | None,
            baselines_dir: Path, reference: Mapping[str, Any] | None = None,
            reference_machine: Environment | None = None, *, tests: Sequence[TestOutcome] = (), ab: bool = False,
            tolerances: Mapping[str, Any] | None = None, tune: Mapping[str, Any] | None = None) -> ReportData:
    """Gather a session's tests, records and verdicts with the stored baselines they were judged against.

    `tier` is a tiers.Tier (or None): it gives each variant's VRAM budget. `verdicts` are keyed by (workflow,
    variant) (a plain variant id also matches). `reference` (variant id to a compare.Summary) replaces the stored
    baseline of a variant, with `reference_machine` as its environment. With `ab`, `records` hold both sides:
    side A (current) is the reference of side B (candidate), every round of both is shown, and no baseline file
    is read.
    """
    store = BaselineStore(baselines_dir)
    name = getattr(tier, "name", None)
    stored: dict[str, Any] = {}
    variants = []
    baseline_machine = None
    ran_by: dict[tuple[str, str], list[str]] = {}
    for t in tests:
        for workflow, variant_id in t.variants:
            ran_by.setdefault((workflow, variant_id), []).append(t.nodeid)
    if ab:
        a_side = [r for r in records if r.side == "A"]
        b_side = [r for r in records if r.side != "A"]
        baseline_machine = a_side[0].environment if a_side else None
        machine = b_side[0].environment if b_side else machine
    for (workflow, variant_id), rounds in group(records).items():
        budget = tier.budget_gib(variant_id) if tier is not None and hasattr(tier, "budget_gib") else None
        verdict = verdicts.get((workflow, variant_id), verdicts.get(variant_id))
        tested = tuple(ran_by.get((workflow, variant_id), ()))
        if ab:  # side A is the reference, measured the way side B is
            current = VariantData(variant_id, workflow, tuple(r for r in rounds if r.side == "A"))
            peaks = [p for r in current.records if r.ok and (p := _peak(r)) is not None]
            variants.append(VariantData(
                variant_id, workflow, tuple(rounds), verdict, tuple(current.step_s),
                tuple(r.wall_s for r in current.timed if r.wall_s is not None), max(peaks, default=None), budget,
                True, tested))
            continue
        if name and workflow not in stored:
            try:
                stored[workflow] = store.load(name, workflow)
            except Exception:  # an unreadable baseline file fails its tests; the report goes on without it
                stored[workflow] = None
        baseline = stored.get(workflow)
        base = baseline.variants.get(variant_id) if baseline is not None else None
        if base is not None and baseline is not None and baseline_machine is None:
            baseline_machine = baseline.machine
        if reference is not None and variant_id in reference:
            base = reference[variant_id]
            baseline_machine = reference_machine or baseline_machine
        peak = getattr(base, "peak_vram_mib", None)
        variants.append(VariantData(
            variant_id, workflow, tuple(rounds), verdict, summary_of(base, "step_s"),
            summary_of(base, "wall_s"), float(peak) if isinstance(peak, (int, float)) else None, budget,
            tests=tested))
    return ReportData(name, tuple(variants), machine, baseline_machine, tests=tuple(tests), ab=ab,
                      tolerances=tolerances, tune=tune)


def _peak(r: RunRecord) -> float | None:
    return r.vram.peak_mib if r.vram and r.vram.available else None


# --------------------------------------------------------------------------- environment diff

def environment_diff(baseline: Environment | None, current: Environment | None) -> list[dict[str, Any]]:
    """Every field of the machine block that differs between the baseline (side A) and this run (side B)."""
    if baseline is None or current is None:
        return []
    out = []
    for f in dataclasses.fields(Environment):
        if f.name == "gpu_state":
            continue
        a, b = getattr(baseline, f.name), getattr(current, f.name)
        if a != b and (a or b):
            out.append({"field": f.name, "baseline": to_jsonable(a), "now": to_jsonable(b)})
    return out


# --------------------------------------------------------------------------- plots

def matplotlib_available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _round_label(r: RunRecord) -> str:
    """A round as the figures name it: '[A] 1 (warm-up)', '3'."""
    return f"{f'[{r.side}] ' if r.side else ''}{round_name(r)}"


def figure_png(v: VariantData) -> bytes | None:
    """The variant's figure as PNG (None without matplotlib)."""
    fig = figure(v)
    if fig is None:
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def figure(v: VariantData) -> Any:
    """One matplotlib Figure for a variant: step-time distributions, phases per round, VRAM timeline (None
    without matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(15, 4.2), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax_step, ax_phase, ax_vram = fig.subplots(1, 3, width_ratios=(1, 1.2, 1.6))
    fig.suptitle(f"{v.workflow}: {v.variant_id}", fontsize=11)

    # step time: baseline vs now (A vs B)
    before, after = sides_header(v.ab)
    groups = [(label, list(values)) for label, values in ((before, v.baseline_step_s), (after, v.step_s))
              if values]
    if groups:
        ax_step.boxplot([g[1] for g in groups], tick_labels=[g[0] for g in groups], widths=0.5)
        for i, (_, values) in enumerate(groups, start=1):
            n = len(values)
            xs = [i + (k - (n - 1) / 2) * (0.25 / max(1, n)) for k in range(n)]
            ax_step.plot(xs, values, "o", alpha=0.6, color="C0" if i == 1 and len(groups) == 2 else "C1")
    else:
        ax_step.text(0.5, 0.5, "no sampler steps", ha="center", va="center", transform=ax_step.transAxes)
    ax_step.set_title("seconds per step (each sampler pass)", fontsize=9)
    ax_step.set_ylabel("s/step")

    # phases per round: stacked horizontal bars
    rounds = [r for r in v.records if r.phases]
    labels = [_round_label(r) for r in rounds]
    present = [p for p in PHASE_ORDER if any(r.phases.get(p) for r in rounds)]
    left = [0.0] * len(rounds)
    for k, phase in enumerate(present):
        widths = [r.phases.get(phase, 0.0) for r in rounds]
        ax_phase.barh(range(len(rounds)), widths, left=left, label=phase, color=f"C{k % 10}")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax_phase.set_yticks(range(len(rounds)), labels, fontsize=7)
    if present:
        ax_phase.legend(fontsize=7, loc="lower right")
    ax_phase.invert_yaxis()
    ax_phase.set_title("phases per round", fontsize=9)
    ax_phase.set_xlabel("seconds")
    ax_phase.set_ylabel("round")

    # VRAM timeline with the budget line; in an A/B session side A solid, side B dashed
    drawn = False
    for r in v.records:
        samples = r.vram.samples if r.vram and r.vram.available else ()
        if not samples:
            continue
        ts = [s.t for s in samples]
        ys = [(s.process_mib if s.process_mib is not None else s.device_mib) / 1024 for s in samples]
        ax_vram.plot(ts, ys, lw=1, ls="--" if r.side == "B" else "-", label=f"round {_round_label(r)}")
        drawn = True
    if v.budget_gib is not None:
        ax_vram.axhline(v.budget_gib, color="red", ls="--", lw=1, label=f"budget {v.budget_gib:g} GiB")
    if v.baseline_peak_mib is not None and not v.ab:
        ax_vram.axhline(v.baseline_peak_mib / 1024, color="grey", ls=":", lw=1, label="baseline peak")
    if not drawn:
        ax_vram.text(0.5, 0.5, "VRAM not measured (no NVML)", ha="center", va="center",
                     transform=ax_vram.transAxes)
    if drawn or v.budget_gib is not None:
        ax_vram.legend(fontsize=7, loc="center right")
    ax_vram.set_title("VRAM during each round" + (" (A solid, B dashed)" if v.ab else ""), fontsize=9)
    ax_vram.set_xlabel("seconds from submit")
    ax_vram.set_ylabel("GiB")
    return fig


# --------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1500px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok,.improved,.passed{color:#17692b}.regressed,.failed,.error{color:#b00020;font-weight:bold}
.inconclusive,.suspicious,.insufficient,.interrupted{color:#8a6100}.new,.skipped,.not{color:#555}
img.figure{max-width:100%;border:1px solid #eee}.noplot{color:#8a6100}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], status_col: int | None = None,
           links: Mapping[int, Mapping[str, str]] | None = None) -> str:
    """An HTML table; the status column's cells get their first word as class, `links` (column: cell text to
    anchor) link cells to sections of the page."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = f' class="{_e(str(c).split(" ")[0].rstrip(","))}"' if i == status_col and c else ""
            target = (links or {}).get(i, {}).get(str(c))
            text = f'<a href="#{_e(target)}">{_e(c)}</a>' if target else _e(c)
            cells.append(f"<td{cls}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _value(value: Any) -> str:
    """An environment field as the report shows it ('-' for none)."""
    return "-" if value in (None, "", [], ()) else " ".join(map(str, value)) if isinstance(value, list) else str(value)


def _status(v: VariantData) -> str:
    if v.verdict is not None:
        return str(getattr(v.verdict, "status", "?"))
    failed = [r for r in v.records if not r.ok]
    return failed[-1].outcome if failed else "not judged"


def _overview(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """One row per variant: workflow, variant, the tests that ran it, verdict, rounds."""
    rows = [[v.workflow, v.variant_id, ", ".join(v.tests) or "-", _status(v), str(len(v.timed)),
             str(len(v.records))] for v in data.variants]
    timed = "timed rounds (B)" if data.ab else "timed rounds"
    return ["workflow", "variant", "test", "verdict", timed, "rounds"], rows


def _environment_html(data: ReportData) -> list[str]:
    before, after = sides_header(data.ab)
    diff = environment_diff(data.baseline_machine, data.machine)
    rows = [[d["field"], _value(d["baseline"]), _value(d["now"])] for d in diff]
    if data.ab:
        m = data.machine or Environment()
        where = (f"GPU in this session ({m.gpu_name})" if m.gpu_name
                 else f"machine in this session ({m.device or 'cpu'})")
        out = ["<h2>Environment of the two sides</h2>",
               f"<p>Both sides ran on the same {_e(where)}, each with its own ComfyUI server.</p>"]
        if data.baseline_machine is None or data.machine is None:
            return [*out, "<p>Only one side ran (the session ended early).</p>"]
        return [*out, _table(["field", before, after], rows) if rows else
                "<p>The sides' machine blocks are identical.</p>"]
    out = ["<h2>Environment since the baseline</h2>"]
    if data.baseline_machine is None:
        return [*out, "<p>No stored baseline for these variants.</p>"]
    return [*out, _table(["field", before, after], rows) if rows else "<p>Same machine block as the baseline.</p>"]


STATUS_COLOURS = {"faster": "#17692b", "no gain": "#777", "slower": "#b00020", "undecided": "#8a6100",
                  "cut short": "#8a6100"}


def tune_svg(tune: Mapping[str, Any]) -> str:
    """Speed-up against the output's difference from the incumbent (PSNR; identical at the right edge), one
    point per candidate that ran timed rounds, as an inline SVG ('' with none)."""
    points = [t for t in tune.get("trials", ()) if t.get("speedup") is not None]
    if not points:
        return ""
    w, h, left, bottom = 640, 320, 60, 40
    finite = [t["psnr_db"] for t in points if t.get("psnr_db") is not None]
    x_lo = min([*finite, 20.0]) - 2.0
    x_hi = max([*finite, 50.0]) + 8.0  # the identical ones sit at the right edge
    ys = [t["speedup"] for t in points] + [1.0]
    y_lo, y_hi = min(ys) / 1.25, max(ys) * 1.25  # whiskers past it are cut at the frame

    def x(t: Mapping[str, Any]) -> float:
        db = x_hi - 4.0 if t.get("psnr_db") is None else float(t["psnr_db"])
        return float(left + (db - x_lo) / (x_hi - x_lo) * (w - left - 10))

    def y(v: float) -> float:
        v = min(max(v, y_lo), y_hi)
        return float(h - bottom - (v - y_lo) / (y_hi - y_lo) * (h - bottom - 10))

    ticks = list(range(math.ceil(x_lo / 5.0) * 5, int(x_hi - 6.0), 5))

    out = [f'<svg class="tune-plot" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
           f'role="img" aria-label="speed-up against output difference">',
           f'<rect x="{left}" y="10" width="{w - left - 10}" height="{h - bottom - 10}" fill="none" stroke="#ccc"/>',
           f'<line x1="{left}" x2="{w - 10}" y1="{y(1.0):.1f}" y2="{y(1.0):.1f}" stroke="#999" stroke-dasharray="4"/>',
           f'<text x="{w - 12}" y="{y(1.0) - 4:.1f}" font-size="10" text-anchor="end">the incumbent (1.00x)</text>',
           f'<text x="{(w + left) / 2:.0f}" y="{h - 8}" font-size="11" text-anchor="middle">output against the '
           "incumbent's, one seed: PSNR dB (identical at the right)</text>",
           f'<text x="14" y="{(h - bottom) / 2:.0f}" font-size="11" text-anchor="middle" '
           f'transform="rotate(-90 14 {(h - bottom) / 2:.0f})">speed-up (wall)</text>',
           f'<text x="{left - 4}" y="{y(y_hi) + 10:.1f}" font-size="10" text-anchor="end">{y_hi:.2f}x</text>',
           f'<text x="{left - 4}" y="{y(y_lo):.1f}" font-size="10" text-anchor="end">{y_lo:.2f}x</text>',
           *(f'<text x="{x({"psnr_db": d}):.1f}" y="{h - bottom + 12}" font-size="9" text-anchor="middle">{d}</text>'
             for d in ticks),
           f'<text x="{x({}):.1f}" y="{h - bottom + 12}" font-size="9" text-anchor="middle">identical</text>']
    for t in points:
        colour = STATUS_COLOURS.get(str(t.get("status")), "#b00020")
        px = x(t)
        if t.get("speedup_low") is not None and t.get("speedup_high") is not None:
            out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{y(t["speedup_low"]):.1f}" '
                       f'y2="{y(t["speedup_high"]):.1f}" stroke="{colour}"/>')
        out.append(f'<circle cx="{px:.1f}" cy="{y(t["speedup"]):.1f}" r="4" fill="{colour}"><title>'
                   f'{_e(t["candidate"])} vs {_e(t["incumbent"])}: {_e(t["status"])}</title></circle>')
        out.append(f'<text x="{px + 6:.1f}" y="{y(t["speedup"]) + 3:.1f}" font-size="9">{_e(t["candidate"])}</text>')
    out.append("</svg>")
    return "".join(out)


def _tune_html(tune: Mapping[str, Any]) -> list[str]:
    parts = ["<h2>Tuning</h2>", *(f"<p>{_e(line)}</p>" for line in tune_head(tune))]
    for c in tune.get("classes", ()):
        parts.append(f"<h3>{_e(c['key'])} ({_e(c['describe'])})</h3>")
        parts.append(_table(TUNE_HEADER, tune_rows(tune, c["key"]), len(TUNE_HEADER) - 1))
    svg = tune_svg(tune)
    if svg:
        parts.append(f"<figure>{svg}<figcaption>Each candidate that ran: its speed-up (95% interval) against the "
                     "output's difference from the incumbent's video of the same seed.</figcaption></figure>")
    parts += [f"<p>{_e(line)}</p>" for line in tune_tail(tune)]
    if tune.get("row"):
        parts.append(f"<pre>{_e(tune['row'])}</pre>")
    return parts


def render_html(data: ReportData, *, plots: bool = True) -> str:
    """The whole page."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.created))
    m = data.machine or Environment()
    what = ("tuning: each candidate (B) judged against its incumbent (A) · " if data.tune is not None else
            "A/B: B (candidate) judged against A (current) · " if data.ab else "")
    parts = [f"<h1>{_e(data.title)}</h1>",
             f"<p>{_e(what)}tier <b>{_e(data.tier or '-')}</b> · {_e(m.gpu_name or m.device or 'no GPU')} · driver "
             f"{_e(m.driver or '-')} · torch {_e(m.torch or '-')} · ComfyUI {_e(m.comfyui or '-')} · {when}</p>"]
    anchors = {v.variant_id: v.anchor for v in data.variants}
    if data.tune is not None:
        parts += _tune_html(data.tune)
    if data.tests:
        parts += [f"<h2>Tests</h2><p>{_e(outcome_counts(data.tests))}</p>",
                  _table(OUTCOME_HEADER, outcome_rows(data.tests, data.verdicts), 1)]
    if data.variants:
        header, rows = _overview(data)
        parts += ["<h2>Variants</h2>", _table(header, rows, 3, {1: anchors})]
    parts += _environment_html(data)
    have_plots = plots and matplotlib_available()
    if not have_plots and data.variants:
        parts.append(f'<p class="noplot">Plots need matplotlib: <code>{_e(EXTRA_HINT)}</code>.</p>')
    for v in data.variants:
        parts.append(f'<section class="variant" id="{_e(v.anchor)}"><h2>{_e(v.workflow)}: {_e(v.variant_id)} · '
                     f'<span class="{_e(_status(v))}">{_e(_status(v))}</span></h2>')
        if v.tests:
            parts.append(f"<p>test {_e(', '.join(v.tests))}</p>")
        if v.verdict is not None:  # the metric table, once per variant
            parts.append(_table(verdict_header(True, data.ab), verdict_rows({v.key: v.verdict}, True, data.tolerances),
                                STATUS_COLUMN))
        for note in getattr(v.verdict, "notes", ()) or ():
            parts.append(f"<p>{_e(note)}</p>")
        png = figure_png(v) if have_plots else None
        if png is not None:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            alt = f"{v.variant_id}: step times, phases per round, VRAM timeline"
            parts.append(f'<figure><img class="figure" alt="{_e(alt)}" src="{src}"></figure>')
        header, rows = round_rows(v.records)
        parts.append(_table(header, rows, header.index("outcome")))
        for r in v.records:
            for w in r.warnings:
                parts.append(f"<p>round {_e(_round_label(r))}: {_e(w)}</p>")
            if not r.ok and r.message:
                parts.append(f"<pre>round {_e(_round_label(r))}: {_e(r.message)}</pre>")
        parts.append("</section>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(data.title)}</title>'
            f"<style>{CSS}</style></head><body>\n{body}\n</body></html>\n")


# --------------------------------------------------------------------------- markdown and json

def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(c: str) -> str:
        return str(c).replace("|", "\\|") or " "

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(data: ReportData) -> str:
    """summary.md: every test with its outcome and reason, the verdicts and what changed, for a CI job page."""
    m = data.machine or Environment()
    ab = " · A/B: B (candidate) vs A (current)" if data.ab else ""
    out = [f"## pytest-wan22: {data.tier or 'no tier'} · {m.gpu_name or m.device or 'no GPU'}{ab}", ""]
    if data.tests:
        out += [outcome_counts(data.tests), "", _md_table(OUTCOME_HEADER, outcome_rows(data.tests, data.verdicts)),
                ""]
    rows = []
    for v in data.variants:
        if v.verdict is not None:
            rows += verdict_rows({v.key: v.verdict})
        else:
            rows.append([v.workflow, v.variant_id, "-", "-", "-", "-", _status(v)])
    if rows:
        out += [_md_table(verdict_header(ab=data.ab), rows), ""]
    if data.tune is not None:
        out += ["### Tuning", ""]
        for c in data.tune.get("classes", ()):
            out += [f"{c['key']} ({c['describe']}):", "", _md_table(TUNE_HEADER, tune_rows(data.tune, c["key"])), ""]
        out += [*tune_tail(data.tune), ""]
    diff = environment_diff(data.baseline_machine, data.machine)
    if diff:
        since = "Side B differs from side A" if data.ab else "Changed since the baseline"
        out += [f"{since}: " + ", ".join(f"{d['field']} {_value(d['baseline'])} → {_value(d['now'])}" for d in diff),
                ""]
    return "\n".join(out)


def _round(r: RunRecord) -> dict[str, Any]:
    return {"round": r.round, "name": round_name(r), "side": r.side, "side_name": side_name(r.side),
            "warmup": r.warmup, "outcome": r.outcome, "message": r.message, "wall_s": r.wall_s,
            "server_s": r.server_s, "seconds_per_step": [p.seconds_per_step for p in r.passes],
            "peak_vram_mib": _peak(r), "phases": r.phases, "warnings": list(r.warnings)}


def render_json(data: ReportData) -> dict[str, Any]:
    """results.json: every test with its outcome and reason, every verdict with its checks, each variant's rounds
    (both sides in an A/B session; "baseline" is then side A, "now" side B), and the environment diff."""
    variants = []
    for v in data.variants:
        checks = [dataclasses.asdict(c) for c in checks_of(v.verdict)] if v.verdict is not None else []
        for c in checks:
            c.pop("line", None)
        variants.append({
            "variant_id": v.variant_id, "workflow": v.workflow, "tests": list(v.tests), "status": _status(v),
            "verdict": to_jsonable(v.verdict) if dataclasses.is_dataclass(v.verdict) else None,
            "checks": checks, "budget_gib": v.budget_gib,
            "baseline": {"step_s": list(v.baseline_step_s), "wall_s": list(v.baseline_wall_s),
                         "peak_vram_mib": v.baseline_peak_mib},
            "now": {"step_s": v.step_s, "wall_s": [r.wall_s for r in v.timed],
                    "step_median": statistics.median(v.step_s) if v.step_s else None},
            "rounds": [_round(r) for r in v.records]})
    tests = [{"nodeid": t.nodeid, "outcome": t.outcome, "reason": reason, "verdict": verdict,
              "variants": [{"workflow": w, "variant_id": k} for w, k in t.variants], "workflow_file": t.workflow_file}
             for t, (_, _, verdict, reason) in zip(data.tests, outcome_rows(data.tests, data.verdicts), strict=True)]
    return {"schema_version": SCHEMA_VERSION, "created": data.created, "tier": data.tier, "ab": data.ab,
            "sides": {"baseline": "A (current)", "now": "B (candidate)"} if data.ab else None,
            "machine": to_jsonable(data.machine), "baseline_machine": to_jsonable(data.baseline_machine),
            "environment_diff": environment_diff(data.baseline_machine, data.machine), "tests": tests,
            "variants": variants, "tune": data.tune}


def write_report(data: ReportData, out_dir: Path, env: Mapping[str, str] | None = None) -> Path:
    """Write index.html, summary.md and results.json into out_dir; append summary.md to $GITHUB_STEP_SUMMARY."""
    env = os.environ if env is None else env
    out_dir.mkdir(parents=True, exist_ok=True)
    md = render_markdown(data)
    files = {"index.html": render_html(data), "summary.md": md,
             "results.json": json.dumps(render_json(data), indent=1, default=str)}
    for name, text in files.items():
        tmp = out_dir / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out_dir / name)
    step_summary = env.get("GITHUB_STEP_SUMMARY")
    if step_summary:
        with open(step_summary, "a", encoding="utf-8") as f:
            f.write(md + "\n")
    return out_dir / "index.html"
