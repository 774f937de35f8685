"""The state of one pytest process's session, below the pytest layer: what it knows and gathers (settings, tier,
records, verdicts, every test's outcome), the worker payload and its merge, and the baseline and report writes.

The pytest layer (plugin, fixtures, collect, _xdist) keeps a State in pytest's config stash (stash.py) and hands it
here; nothing here imports pytest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .baselines import BaselineStore
from .compare import Summary, Verdict
from .gpu import DeviceInfo
from .progress import Progress
from .records import Environment, RunRecord, from_jsonable, to_jsonable
from .report import TestOutcome
from .settings import Settings
from .tiers import Tier


@dataclass
class State:
    """What one pytest process knows and gathers: resolved settings, the tier, records, verdicts."""

    settings: Settings
    tier: Tier | None
    detection: str
    device: DeviceInfo | None = None
    nvml: Any = None
    nvml_reason: str = ""
    records: list[RunRecord] = field(default_factory=list)
    verdicts: dict[tuple[str, str], Verdict] = field(default_factory=dict)  # by (workflow, variant key)
    tests: dict[str, TestOutcome] = field(default_factory=dict)  # every wan22 test of the session, by node id
    test_variants: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # what each test ran
    summaries: dict[tuple[str, str], Summary] = field(default_factory=dict)
    machine: Environment | None = None
    server: Any = None
    server_start_s: float = 0.0
    skipped_warmups: list[str] = field(default_factory=list)
    synth_notes: list[str] = field(default_factory=list)  # what the synthetic set wrote, and how long it took
    baseline_notes: list[str] = field(default_factory=list)  # files set aside at session start
    written_notes: list[str] = field(default_factory=list)  # ... and when baselines were written
    progress: Progress = field(default_factory=lambda: Progress(None))
    report_path: Any = None
    report_error: str = ""
    run_dir: Path | None = None  # server logs and run records: --wan22-log-dir or .wan22/runs/<UTC time>
    log_marks: dict[str, tuple[Path, int]] = field(default_factory=dict)  # test id -> (server log, its size)
    tuner: Any = None  # --wan22-tune: the session's tune.Tuner, once a test has asked for it
    tune: dict[str, Any] | None = None  # ... and what it found, as plain data (Tuner.finish)


def session_tests(state: State) -> list[TestOutcome]:
    """Every test of the gate with its outcome; a test cut short by Ctrl-C (no report after its setup) gets the
    variants it had started."""
    return [t if t.variants else replace(t, variants=tuple(state.test_variants.get(t.nodeid, ())))
            for t in state.tests.values()]


def worker_output(state: State) -> str:
    """What an xdist worker hands the controller: its records, summaries, verdicts and costs, as JSON."""
    return json.dumps({
        "records": [r.to_dict() for r in state.records],
        "summaries": [[k[0], to_jsonable(v)] for k, v in state.summaries.items()],
        "verdicts": [[k[0], to_jsonable(v)] for k, v in state.verdicts.items()],
        "machine": to_jsonable(state.machine) if state.machine else None,
        "server_start_s": state.server_start_s, "skipped_warmups": state.skipped_warmups,
        "synth_notes": state.synth_notes})


def merge_worker_output(state: State, payload: str) -> None:
    """Fold one xdist worker's records and summaries into the controller's State."""
    data = json.loads(payload)
    state.records.extend(RunRecord.from_dict(r) for r in data["records"])
    for workflow, summary in data["summaries"]:
        s = from_jsonable(Summary, summary)
        state.summaries[(workflow, s.variant_id)] = s
    for workflow, v in data["verdicts"]:
        verdict = from_jsonable(Verdict, v)
        state.verdicts[(workflow, verdict.variant_id)] = verdict
    state.server_start_s += data.get("server_start_s", 0.0)
    state.skipped_warmups.extend(data.get("skipped_warmups", []))
    state.synth_notes.extend(data.get("synth_notes", []))
    if data["machine"] and state.machine is None:
        state.machine = from_jsonable(Environment, data["machine"])


def write_baselines(state: State) -> None:
    """With --wan22-update-baselines: one atomic write per workflow file, from the controller only."""
    s = state.settings
    if not (s.update_baselines and state.summaries and state.tier):
        return
    store = BaselineStore(s.baselines_dir)
    by_workflow: dict[str, dict[str, Summary]] = {}
    for (workflow, variant_id), summary in state.summaries.items():
        if summary.rounds:
            by_workflow.setdefault(workflow, {})[variant_id] = summary
    for workflow, summaries in by_workflow.items():
        store.update(state.tier.name, workflow, state.machine or Environment(), summaries)
    state.written_notes.extend(f"baseline {old} was unreadable when written; kept as {kept.name}"
                                for old, kept in store.set_aside)


def finish_tuning(state: State) -> None:
    """With --wan22-tune: the winner's tier row written (--wan22-tune-out, else tuned-<tier>.toml in the run
    folder) and what the tuning found kept for the summary and the report."""
    if state.tuner is None or state.tier is None:
        return
    s = state.settings
    out = s.tune_out or (state.run_dir or s.rootdir / ".wan22") / f"tuned-{state.tier.name}.toml"
    state.tune = state.tuner.finish(out, state.machine)


def write_report(state: State) -> None:
    """With --wan22-report=DIR: index.html, summary.md and results.json, from the controller only. Whatever goes
    wrong here (a folder that cannot be written, a partial state after Ctrl-C) becomes one line of the summary:
    the end of the session never fails on the report."""
    s = state.settings
    if s.report_dir is None or not (state.records or state.tests):
        return
    from .report_html import collect
    from .report_html import write_report as write

    try:
        data = collect(state.records, state.verdicts, state.tier, state.machine, s.baselines_dir,
                       tests=session_tests(state), ab=s.ab is not None or s.tune,
                       tolerances=s.tolerances_for(state.tier), tune=state.tune)
        state.report_path = write(data, s.report_dir)
    except (FileExistsError, NotADirectoryError) as exc:
        state.report_error = f"{exc.filename or s.report_dir} is not a folder; fix --wan22-report"
    except OSError as exc:
        state.report_error = f"{exc.strerror or exc} ({exc.filename or s.report_dir}); fix --wan22-report"
    except Exception as exc:  # a bug must not cost the summary: say what failed
        state.report_error = f"{type(exc).__name__}: {exc}"
