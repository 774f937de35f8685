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
import os
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .baselines import BaselineStore
from .records import Environment, RunRecord, to_jsonable
from .report import HEADER as ROUND_HEADER
from .report import VERDICT_HEADER, checks_of, record_row, verdict_rows

SCHEMA_VERSION = 1
EXTRA_HINT = "pip install 'pytest-wan22[report]'"
PHASE_ORDER = ("load", "text", "encode", "compile", "sampling", "decode", "interpolation", "save", "other")


@dataclass(frozen=True)
class VariantData:
    """One variant as the report shows it: its rounds, its verdict, and the baseline it was judged against."""

    variant_id: str
    workflow: str
    records: tuple[RunRecord, ...]
    verdict: Any = None
    baseline_step_s: tuple[float, ...] = ()
    baseline_wall_s: tuple[float, ...] = ()
    baseline_peak_mib: float | None = None
    budget_gib: float | None = None

    @property
    def timed(self) -> list[RunRecord]:
        """The successful timed rounds."""
        return [r for r in self.records if r.ok and not r.warmup]

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
    baseline_machine: Environment | None = None
    created: float = field(default_factory=time.time)
    title: str = "pytest-wan22 report"


def summary_of(baseline: Any, name: str) -> tuple[float, ...]:
    """A tuple field of a stored baseline summary, read defensively."""
    value = getattr(baseline, name, ()) if baseline is not None else ()
    return tuple(float(v) for v in value or () if isinstance(v, (int, float)))


def group(records: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """Records by variant, in first-seen order."""
    out: dict[str, list[RunRecord]] = {}
    for r in records:
        out.setdefault(r.variant_id, []).append(r)
    return out


def collect(records: Sequence[RunRecord], verdicts: Mapping[str, Any], tier: Any, machine: Environment | None,
            baselines_dir: Path, reference: Mapping[str, Any] | None = None,
            reference_machine: Environment | None = None) -> ReportData:
    """Gather a session's records and verdicts with the stored baselines they were judged against.

    `tier` is a tiers.Tier (or None): it gives each variant's VRAM budget. `reference` (variant id to a
    compare.Summary) replaces the stored baseline of a variant, e.g. the current side of an A/B run, with
    `reference_machine` as its environment.
    """
    store = BaselineStore(baselines_dir)
    name = getattr(tier, "name", None)
    stored: dict[str, Any] = {}
    variants = []
    baseline_machine = None
    for variant_id, rounds in group(records).items():
        workflow = rounds[0].workflow
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
        budget = tier.budget_gib(variant_id) if tier is not None and hasattr(tier, "budget_gib") else None
        variants.append(VariantData(
            variant_id, workflow, tuple(rounds), verdicts.get(variant_id), summary_of(base, "step_s"),
            summary_of(base, "wall_s"), float(peak) if isinstance(peak, (int, float)) else None, budget))
    return ReportData(name, tuple(variants), machine, baseline_machine)


# --------------------------------------------------------------------------- environment diff

def environment_diff(baseline: Environment | None, current: Environment | None) -> list[dict[str, Any]]:
    """Every field of the machine block that differs between the baseline and this run."""
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


def figure_png(v: VariantData) -> bytes | None:
    """One figure for a variant: step-time distributions, phases per round, VRAM timeline (None without
    matplotlib)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(15, 4.2), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    ax_step, ax_phase, ax_vram = fig.subplots(1, 3, width_ratios=(1, 1.2, 1.6))
    fig.suptitle(v.variant_id, fontsize=11)

    # step time: baseline vs now
    groups = [(label, list(values)) for label, values in (("baseline", v.baseline_step_s), ("now", v.step_s))
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
    labels = [f"{r.round}{' w' if r.warmup else ''}" for r in rounds]
    present = [p for p in PHASE_ORDER if any(r.phases.get(p) for r in rounds)]
    left = [0.0] * len(rounds)
    for k, phase in enumerate(present):
        widths = [r.phases.get(phase, 0.0) for r in rounds]
        ax_phase.barh(labels, widths, left=left, label=phase, color=f"C{k % 10}")
        left = [a + b for a, b in zip(left, widths, strict=True)]
    if present:
        ax_phase.legend(fontsize=7, loc="lower right")
    ax_phase.invert_yaxis()
    ax_phase.set_title("phases per round (w = warm-up)", fontsize=9)
    ax_phase.set_xlabel("seconds")
    ax_phase.set_ylabel("round")

    # VRAM timeline with the budget line
    drawn = False
    for r in v.records:
        samples = r.vram.samples if r.vram and r.vram.available else ()
        if not samples:
            continue
        ts = [s.t for s in samples]
        ys = [(s.process_mib if s.process_mib is not None else s.device_mib) / 1024 for s in samples]
        ax_vram.plot(ts, ys, lw=1, label=f"round {r.round}{' (warm-up)' if r.warmup else ''}")
        drawn = True
    if v.budget_gib is not None:
        ax_vram.axhline(v.budget_gib, color="red", ls="--", lw=1, label=f"budget {v.budget_gib:g} GiB")
    if v.baseline_peak_mib is not None:
        ax_vram.axhline(v.baseline_peak_mib / 1024, color="grey", ls=":", lw=1, label="baseline peak")
    if not drawn:
        ax_vram.text(0.5, 0.5, "VRAM not measured (no NVML)", ha="center", va="center",
                     transform=ax_vram.transAxes)
    if drawn or v.budget_gib is not None:
        ax_vram.legend(fontsize=7, loc="center right")
    ax_vram.set_title("VRAM during each round", fontsize=9)
    ax_vram.set_xlabel("seconds from submit")
    ax_vram.set_ylabel("GiB")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


# --------------------------------------------------------------------------- html

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em;color:#222;max-width:1500px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok,.improved{color:#17692b}.regressed{color:#b00020;font-weight:bold}
.inconclusive,.suspicious,.insufficient{color:#8a6100}.new{color:#555}
img.figure{max-width:100%;border:1px solid #eee}.noplot{color:#8a6100}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], status_col: int | None = None) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, c in enumerate(row):
            cls = f' class="{_e(str(c).split(" ")[0])}"' if i == status_col else ""
            cells.append(f"<td{cls}>{_e(c)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _status(v: VariantData) -> str:
    if v.verdict is not None:
        return str(getattr(v.verdict, "status", "?"))
    failed = [r for r in v.records if not r.ok]
    return failed[-1].outcome if failed else "not judged"


def render_html(data: ReportData, *, plots: bool = True) -> str:
    """The whole page."""
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(data.created))
    m = data.machine or Environment()
    parts = [f"<h1>{_e(data.title)}</h1>",
             f"<p>tier <b>{_e(data.tier or '-')}</b> · {_e(m.gpu_name or m.device or 'no GPU')} · driver "
             f"{_e(m.driver or '-')} · torch {_e(m.torch or '-')} · ComfyUI {_e(m.comfyui or '-')} · {when}</p>"]
    verdicts = {v.variant_id: v.verdict for v in data.variants if v.verdict is not None}
    overview = [[v.variant_id, _status(v), str(len(v.timed)), str(len(v.records))] for v in data.variants]
    parts += ["<h2>Variants</h2>", _table(["variant", "verdict", "timed rounds", "rounds"], overview, 1)]
    if verdicts:
        parts += ["<h2>Every judged metric</h2>", _table(VERDICT_HEADER, verdict_rows(verdicts), 5)]
    diff = environment_diff(data.baseline_machine, data.machine)
    parts.append("<h2>Environment since the baseline</h2>")
    if data.baseline_machine is None:
        parts.append("<p>No stored baseline for these variants.</p>")
    elif diff:
        parts.append(_table(["field", "baseline", "now"], [[d["field"], str(d["baseline"]), str(d["now"])]
                                                          for d in diff]))
    else:
        parts.append("<p>Same machine block as the baseline.</p>")
    have_plots = plots and matplotlib_available()
    if not have_plots:
        parts.append(f'<p class="noplot">Plots need matplotlib: <code>{_e(EXTRA_HINT)}</code>.</p>')
    for v in data.variants:
        parts.append(f'<section class="variant" id="{_e(v.variant_id)}"><h2>{_e(v.variant_id)} · '
                     f'<span class="{_e(_status(v))}">{_e(_status(v))}</span></h2>')
        if v.verdict is not None:
            parts.append(_table(VERDICT_HEADER, verdict_rows({v.variant_id: v.verdict}), 5))
        png = figure_png(v) if have_plots else None
        if png is not None:
            src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
            alt = f"{v.variant_id}: step times, phases per round, VRAM timeline"
            parts.append(f'<figure><img class="figure" alt="{_e(alt)}" src="{src}"></figure>')
        parts.append(_table(ROUND_HEADER, [record_row(r) for r in v.records], 2))
        for r in v.records:
            for w in r.warnings:
                parts.append(f"<p>round {r.round}: {_e(w)}</p>")
            if not r.ok and r.message:
                parts.append(f"<pre>round {r.round}: {_e(r.message)}</pre>")
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
    """summary.md: the verdicts and what changed, for a CI job page."""
    m = data.machine or Environment()
    out = [f"## pytest-wan22: {data.tier or 'no tier'} · {m.gpu_name or m.device or 'no GPU'}", ""]
    rows = []
    for v in data.variants:
        if v.verdict is not None:
            rows += verdict_rows({v.variant_id: v.verdict})
        else:
            rows.append([v.variant_id, "-", "-", "-", "-", _status(v)])
    out += [_md_table(VERDICT_HEADER, rows), ""]
    diff = environment_diff(data.baseline_machine, data.machine)
    if diff:
        out += ["Changed since the baseline: " + ", ".join(f"{d['field']} {d['baseline']} → {d['now']}"
                                                          for d in diff), ""]
    return "\n".join(out)


def _round(r: RunRecord) -> dict[str, Any]:
    peak = r.vram.peak_mib if r.vram and r.vram.available else None
    return {"round": r.round, "side": r.side, "warmup": r.warmup, "outcome": r.outcome, "message": r.message,
            "wall_s": r.wall_s,
            "server_s": r.server_s, "seconds_per_step": [p.seconds_per_step for p in r.passes],
            "peak_vram_mib": peak, "phases": r.phases, "warnings": list(r.warnings)}


def render_json(data: ReportData) -> dict[str, Any]:
    """results.json: every verdict with its checks, each variant's rounds, and the environment diff."""
    variants = []
    for v in data.variants:
        checks = [dataclasses.asdict(c) for c in checks_of(v.verdict)] if v.verdict is not None else []
        for c in checks:
            c.pop("line", None)
        variants.append({
            "variant_id": v.variant_id, "workflow": v.workflow, "status": _status(v),
            "verdict": to_jsonable(v.verdict) if dataclasses.is_dataclass(v.verdict) else None,
            "checks": checks, "budget_gib": v.budget_gib,
            "baseline": {"step_s": list(v.baseline_step_s), "wall_s": list(v.baseline_wall_s),
                         "peak_vram_mib": v.baseline_peak_mib},
            "now": {"step_s": v.step_s, "wall_s": [r.wall_s for r in v.timed],
                    "step_median": statistics.median(v.step_s) if v.step_s else None},
            "rounds": [_round(r) for r in v.records]})
    return {"schema_version": SCHEMA_VERSION, "created": data.created, "tier": data.tier,
            "machine": to_jsonable(data.machine), "baseline_machine": to_jsonable(data.baseline_machine),
            "environment_diff": environment_diff(data.baseline_machine, data.machine), "variants": variants}


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
