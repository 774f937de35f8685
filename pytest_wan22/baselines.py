"""Baseline files: baselines/<tier>/<workflow>.json, checked at session start, written atomically under a lock.

Schema 2 keeps, per variant, the Summary of the session that recorded it (every round's samples per metric, and
the machine it ran on: GPU UUID, driver, clocks) and a bounded history of the sessions recorded before, which
the change-point check reads for slow drift. Schema 1 files (one machine block, wall and step lists) are read
and migrated; every write is schema 2.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from . import platforms
from .compare import Summary, Tolerance, base_metric, change_points, metric_label
from .errors import BaselineError
from .records import Environment, from_jsonable, to_jsonable

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)
HISTORY_LENGTH = 20  # sessions kept per variant
LOCK_TIMEOUT_S = 120.0
VERSION_KEYS = ("driver", "cuda", "torch", "comfyui", "python")
DRIFT_METRICS = ("step", "wall")
SPREAD_SESSIONS = 5  # sessions of one GPU before their spread is trusted


@dataclass(frozen=True)
class Session:
    """One recorded session of a variant, as the history keeps it: when, on which GPU, with which software,
    and the median of each metric's round means."""

    recorded_at: float
    rounds: int
    medians: dict[str, float] = field(default_factory=dict)
    gpu_uuid: str | None = None
    versions: dict[str, str] = field(default_factory=dict)


def session_of(summary: Summary) -> Session:
    """The history's compact record of a Summary."""
    m = summary.machine or Environment()
    medians = {k: round(v, 6) for k in summary.metrics if (v := summary.median(k)) is not None}
    versions = {k: v for k in VERSION_KEYS if (v := getattr(m, k))}
    return Session(summary.recorded_at, summary.rounds, medians, m.gpu_uuid, versions)


@dataclass(frozen=True)
class Entry:
    """One variant in a baseline file: the recorded Summary and the sessions before it (oldest first)."""

    summary: Summary
    history: tuple[Session, ...] = ()


@dataclass(frozen=True)
class Baseline:
    """One workflow's baselines on one tier."""

    tier: str
    workflow: str
    entries: Mapping[str, Entry] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION  # as read: 1 for a migrated file

    @property
    def variants(self) -> dict[str, Summary]:
        """variant id -> recorded Summary."""
        return {k: e.summary for k, e in self.entries.items()}

    def machine_of(self, variant_id: str) -> Environment:
        """The machine a variant's baseline was recorded on (empty when unknown)."""
        entry = self.entries.get(variant_id)
        return (entry.summary.machine if entry else None) or Environment()

    @property
    def machine(self) -> Environment:
        """The machine of the most recently recorded variant."""
        if not self.entries:
            return Environment()
        latest = max(self.entries.values(), key=lambda e: e.summary.recorded_at)
        return latest.summary.machine or Environment()


Kind = Literal["corrupt", "foreign"]


@dataclass(frozen=True)
class Problem:
    """A baseline file that cannot be used: corrupt (unreadable, truncated, a bad merge) or foreign (another
    tier's or workflow's, a newer schema, not a baseline at all)."""

    path: Path
    kind: Kind
    reason: str


CONFLICT = "an unresolved git merge conflict"
_CONFLICT_MARKER = re.compile(r"^(<<<<<<<|=======$|>>>>>>>)", re.MULTILINE)


class _Unusable(Exception):
    def __init__(self, kind: Kind, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _parse(path: Path, text: str, tier: str, workflow: str) -> Baseline:
    """A file's text as a Baseline; raises _Unusable with the kind of trouble."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        marker = _CONFLICT_MARKER.search(text)
        if marker is not None:
            line = text.count("\n", 0, marker.start()) + 1
            raise _Unusable("corrupt", f"{CONFLICT} (its markers start at line {line})") from None
        raise _Unusable("corrupt", f"not valid JSON ({exc})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise _Unusable("foreign", "not a pytest-wan22 baseline file (no schema_version)")
    version = data["schema_version"]
    if version not in READABLE_SCHEMAS:
        raise _Unusable("foreign", f"schema_version {version!r}; this plugin reads "
                        f"{', '.join(map(str, READABLE_SCHEMAS))} (a newer pytest-wan22 wrote it?)")
    if data.get("tier") != tier:
        raise _Unusable("foreign", f"recorded for tier {data.get('tier')!r}, but it lies in the {tier!r} folder")
    if data.get("workflow") != workflow:
        raise _Unusable("foreign", f"holds workflow {data.get('workflow')!r}, but is named {path.name}")
    try:
        variants = data["variants"]
        if not isinstance(variants, dict):
            raise TypeError("variants is not an object")
        if version == 1:
            entries = _migrate_v1(data)
        else:
            entries = {k: Entry(from_jsonable(Summary, v["summary"]),
                                tuple(from_jsonable(Session, s) for s in v.get("history") or ()))
                       for k, v in variants.items()}
        for key, entry in entries.items():
            if entry.summary.variant_id != key or not isinstance(entry.summary.samples, dict):
                raise TypeError(f"variant {key!r} is malformed")
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _Unusable("corrupt", f"malformed ({type(exc).__name__}: {exc})") from None
    return Baseline(tier, workflow, entries, version)


def _migrate_v1(data: dict[str, Any]) -> dict[str, Entry]:
    """Schema 1: wall and step lists and one peak per variant, one machine block for the file. The step list
    holds each round's passes in order, so it splits into rounds when its length allows."""
    machine = from_jsonable(Environment, data.get("machine") or {})
    out = {}
    for key, v in data["variants"].items():
        rounds = int(v["rounds"])
        wall = [float(x) for x in v.get("wall_s") or ()]
        step = [float(x) for x in v.get("step_s") or ()]
        samples: dict[str, tuple[tuple[float, ...], ...]] = {}
        if wall:
            samples["wall"] = tuple((x,) for x in wall)
        if step:
            per = len(step) // rounds if rounds and len(step) % rounds == 0 else 1
            samples["step"] = tuple(tuple(step[i:i + per]) for i in range(0, len(step), per))
        if v.get("peak_vram_mib") is not None:
            samples["vram"] = ((float(v["peak_vram_mib"]),),)
        summary = Summary(key, rounds, samples, v.get("digest", ""), v.get("outcome", "success"), machine)
        out[key] = Entry(summary, (session_of(summary),))
    return out


_NUMBERS = re.compile(r"\[\s*((?:-?[\d.eE+-]+|null)(?:,\s*(?:-?[\d.eE+-]+|null))*)\s*\]")


def _dumps(payload: Mapping[str, Any]) -> str:
    """Indented JSON with each list of numbers on one line (a round's samples, argv stays one per line)."""
    text = json.dumps(payload, indent=1)
    return _NUMBERS.sub(lambda m: "[" + ", ".join(x.strip() for x in m[1].split(",")) + "]", text) + "\n"


class BaselineStore:
    """Reads, checks and writes baselines/<tier>/<workflow>.json; knows nothing of how results are judged."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.set_aside: list[tuple[Path, Path]] = []  # (corrupt file, where it was kept)
        self._cache: dict[Path, tuple[tuple[int, int], Baseline]] = {}

    def path(self, tier: str, workflow: str) -> Path:
        """The file that holds a workflow's baselines on a tier."""
        return self.root / tier / f"{workflow}.json"

    def _lock(self, path: Path) -> FileLock:
        return FileLock(path.with_name(f".{path.name}.lock"), timeout=LOCK_TIMEOUT_S)

    def _read(self, path: Path, tier: str, workflow: str) -> Baseline | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._cache.get(path)
        if cached and cached[0] == stamp:
            return cached[1]
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise _Unusable("corrupt", f"not UTF-8 text ({exc})") from None
        baseline = _parse(path, text, tier, workflow)
        self._cache[path] = (stamp, baseline)
        return baseline

    def load(self, tier: str, workflow: str) -> Baseline | None:
        """The stored baseline (a schema 1 file migrated), or None when there is none yet."""
        path = self.path(tier, workflow)
        try:
            return self._read(path, tier, workflow)
        except _Unusable as exc:
            raise BaselineError(_explain(Problem(path, exc.kind, exc.reason))) from None

    def problems(self, tier: str) -> list[Problem]:
        """Every baseline file of a tier that cannot be used, read once (also fills the cache)."""
        out = []
        for path in sorted((self.root / tier).glob("*.json")):
            try:
                self._read(path, tier, path.stem)
            except _Unusable as exc:
                out.append(Problem(path, exc.kind, exc.reason))
        return out

    def check(self, tier: str, update: bool = False) -> list[str]:
        """Check a tier's files before anything runs. Raises BaselineError naming each unusable file, its cause
        and the fix; with `update`, corrupt files are set aside (kept beside, renamed) to be rewritten from this
        run instead, and the lines returned say so. Foreign files always stop: they are someone's data."""
        found = self.problems(tier)
        stop = [p for p in found if p.kind == "foreign" or not update]
        if stop:
            raise BaselineError("\n".join(_explain(p) for p in stop))
        return [f"baseline {p.path} was {p.kind} ({p.reason}); kept as {self.move_aside(p.path).name}, "
                "rewritten from this run" for p in found]

    def move_aside(self, path: Path) -> Path:
        """Rename a corrupt file to <name>.corrupt-<UTC time> beside it; returns the new path."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
        platforms.replace_file(path, target)
        self._cache.pop(path, None)
        self.set_aside.append((path, target))
        return target

    def save(self, baseline: Baseline) -> Path:
        """Write atomically (temp file, fsync, rename): the old file stays whole if anything fails."""
        path = self.path(baseline.tier, baseline.workflow)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "tier": baseline.tier, "workflow": baseline.workflow,
            "variants": {k: {"summary": to_jsonable(e.summary), "history": to_jsonable(e.history)}
                         for k, e in sorted(baseline.entries.items())},
        }
        text = _dumps(payload)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it private; a baseline is shared data (on Windows: not read-only)
            platforms.replace_file(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._cache.pop(path, None)
        return path

    def update(self, tier: str, workflow: str, machine: Environment, summaries: Mapping[str, Summary]) -> Path:
        """Merge new summaries into the stored file under a lock (other variants, and other sessions' writes in
        the meantime, are kept), each variant's previous session moving into its history, and save it. A
        summary without a machine gets `machine`. A corrupt file is set aside first."""
        path = self.path(tier, workflow)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._lock(path):
                self._cache.pop(path, None)
                try:
                    old = self._read(path, tier, workflow)
                except _Unusable as exc:
                    if exc.kind == "foreign":
                        raise BaselineError(_explain(Problem(path, exc.kind, exc.reason))) from None
                    self.move_aside(path)
                    old = None
                entries = dict(old.entries) if old else {}
                for key, summary in summaries.items():
                    s = summary if summary.machine is not None else replace(summary, machine=machine)
                    history = entries[key].history if key in entries else ()
                    entries[key] = Entry(s, (*history, session_of(s))[-HISTORY_LENGTH:])
                return self.save(Baseline(tier, workflow, entries))
        except Timeout:
            raise BaselineError(f"{path} stayed locked by another session for {LOCK_TIMEOUT_S:g} s; if none runs, "
                                f"delete the stale lock {path.with_name(f'.{path.name}.lock')}") from None


def _explain(p: Problem) -> str:
    if p.reason.startswith(CONFLICT):
        return (f"baseline file {p.path} has {p.reason}: resolve it (keep one side's version, e.g. git checkout "
                "--theirs -- FILE, then git add FILE) or rerun with --wan22-update-baselines, which keeps it aside "
                "and records the variants again")
    if p.kind == "corrupt":
        fix = ("restore it from version control (git checkout -- FILE), or rerun with --wan22-update-baselines, "
               "which keeps it aside and records the variants again")
    else:
        fix = ("move it where it belongs or out of the baselines folder (--wan22-baselines-dir), or upgrade "
               "pytest-wan22 if a newer one wrote it")
    return f"baseline file {p.path} is {p.kind}: {p.reason}; {fix}"


def machine_mismatch(stored: Environment, current: Environment) -> str | None:
    """Why a baseline cannot be compared on this machine (another GPU model, other models), or None."""
    if stored.gpu_name and current.gpu_name and stored.gpu_name != current.gpu_name:
        return (f"baseline recorded on {stored.gpu_name}, this run is on {current.gpu_name}; record this GPU's "
                "own baseline with --wan22-update-baselines or point --wan22-baselines-dir elsewhere")
    if stored.models and current.models and stored.models != current.models:
        return (f"baseline recorded with {stored.models} models, this run uses {current.models}; compare like "
                "with like (--wan22-synthetic) or re-record with --wan22-update-baselines")
    return None


def same_gpu(stored: Environment, current: Environment) -> bool:
    """False when both name a GPU UUID and they differ: another physical GPU of the same model, whose
    machine-to-machine spread belongs in the band (compare's `machine_spread`)."""
    return not (stored.gpu_uuid and current.gpu_uuid and stored.gpu_uuid != current.gpu_uuid)


def version_changes(stored: Environment, current: Environment) -> list[str]:
    """What changed since the baseline among driver, CUDA, torch, ComfyUI and Python: what the gate is about."""
    out = []
    for name in VERSION_KEYS:
        a, b = getattr(stored, name), getattr(current, name)
        if a and b and a != b:
            out.append(f"{name} {a} -> {b}")
    return out


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t)) if t else "an undated session"


def drift(history: Sequence[Session], current: Summary | None, tols: Mapping[str, Tolerance],
          metrics: Sequence[str] = DRIFT_METRICS) -> list[str]:
    """Slow drift no single comparison sees: level shifts in the sessions of one GPU (the history, then this
    session), found by `compare.change_points` and kept when at least the metric's tolerance ratio."""
    sessions = list(history) + ([session_of(current)] if current is not None else [])
    if sessions:
        uuid = sessions[-1].gpu_uuid
        sessions = [s for s in sessions if s.gpu_uuid == uuid]
    out = []
    for metric in metrics:
        points = [(s, s.medians[metric]) for s in sessions if metric in s.medians]
        tol = tols.get(base_metric(metric))
        found = change_points([v for _, v in points], min_change=(tol.ratio or 0.0) if tol else 0.0)
        for cp in found:
            before, after = points[cp.index - 1][0], points[cp.index][0]
            changed = [f"{k} {before.versions[k]} -> {after.versions[k]}" for k in VERSION_KEYS
                       if k in before.versions and k in after.versions and before.versions[k] != after.versions[k]]
            why = f" ({', '.join(changed)})" if changed else ""
            out.append(f"{metric_label(metric)} shifted {cp.change * 100:+.1f}% from {_day(after.recorded_at)} "
                       f"on{why}, across {len(points)} sessions of this GPU (p={cp.p_value:.2g})")
    return out



def session_spread(history: Sequence[Session], baseline: Summary | None = None,
                   min_sessions: int = SPREAD_SESSIONS) -> dict[str, float]:
    """Per metric, how far a whole session's mean wanders (a standard deviation relative to the mean), from the
    recorded sessions of the latest one's GPU: half the mean square of successive relative differences (so a
    level shift counts once, not in every pair), less what the baseline's own rounds already account for.
    Metrics with fewer than `min_sessions` sessions are left out."""
    sessions = [s for s in history if s.gpu_uuid == history[-1].gpu_uuid]  # history[-1]: never read when empty
    out = {}
    for metric in sorted({m for s in sessions for m in s.medians}):
        values = [s.medians[metric] for s in sessions if metric in s.medians]
        if len(values) < min_sessions or metric == "vram" or any(v <= 0.0 for v in values):
            continue
        diffs = [b / a - 1.0 for a, b in itertools.pairwise(values)]
        square = statistics.fmean(d * d for d in diffs) / 2.0
        means = baseline.round_means(metric) if baseline is not None else []
        if len(means) >= 2:
            square -= statistics.variance(means) / len(means) / statistics.fmean(means) ** 2
        if square > 0.0:
            out[metric] = math.sqrt(square)
    return out
