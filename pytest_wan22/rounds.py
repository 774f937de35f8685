"""A variant's rounds, below the pytest layer: the round plan and its one stop rule, what a warm-up warms, the
baseline key, the rounds of one side against its stored baseline or of sides A and B against each other
(interleaved, or in blocks), and the checks on what they recorded.

What ends a test raises errors.Fail or errors.Skip; the hooks and reports of the pytest layer come in as
callables (Gate), and the session's State (session.py) gathers the records.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import fit, preflight
from .baselines import BaselineStore, drift, machine_mismatch, same_gpu, session_spread, version_changes
from .client import ComfyClient
from .compare import MACHINE_SPREAD, Summary, Verdict, compare, more_rounds, summarise
from .errors import Fail, Skip, Wan22Error
from .records import Environment, Neighbour, RunRecord, round_name
from .runner import RunContext, ensure_inputs, fresh_seed, run_prompt
from .servers import Server, ServerPool, SyntheticModels, launch_command, side_words, write_synthetic
from .session import State
from .settings import Settings
from .tiers import Tier
from .workflows import Variant

# --------------------------------------------------------------------------- the plan and its stop rule


@dataclass(frozen=True)
class RoundPlan:
    """How many rounds a variant gets: warm-ups, then timed rounds, at least `fewest` and at most `most`, that stop
    in between once the verdict is decided."""

    warmups: int
    fewest: int
    most: int
    warmups_asked: bool = False  # the test named its warm-ups: they run even on a warm server

    @classmethod
    def of(cls, settings: Settings, rounds: int | None = None, warmup_rounds: int | None = None) -> RoundPlan:
        """The session's plan (--wan22-rounds, --wan22-min-rounds, --wan22-warmup-rounds), or a test's: rounds it
        names all run."""
        most = settings.rounds if rounds is None else rounds
        fewest = most if rounds is not None else settings.fewest_rounds
        warmups = settings.warmup_rounds if warmup_rounds is None else warmup_rounds
        return cls(warmups, fewest, most, warmup_rounds is not None)

    def more(self, done: int, verdict: Callable[[], Verdict | None]) -> bool:
        """The stop rule, after `done` timed rounds: another one below the fewest, none at the most, and in between
        while the verdict so far is not decided (compare.more_rounds). `verdict` is asked only in between; None
        (nothing to judge against: no baseline, or one being recorded) stops at the fewest."""
        if done >= self.most:
            return False
        if done < self.fewest:
            return True
        now = verdict()
        return now is not None and more_rounds(now, done, self.fewest, self.most)


def baseline_key(variant_id: str, server_args: tuple[str, ...]) -> str:
    """The baseline key: the variant id, plus the extra launch flags of a profile variation."""
    return "+".join([variant_id, *(a.lstrip("-") for a in server_args)])


def warm_shape(graph: Mapping[str, Any]) -> str:
    """What a warm-up round warms: the model files, compilation, and the shapes of the graph's latents. Two runs
    with the same shape on one server need one warm-up between them."""
    parts = []
    for _, node in sorted(graph.items()):
        cls = str(node.get("class_type", ""))
        inputs = node.get("inputs") or {}
        if "Loader" in cls or "Compile" in cls:
            parts.append((cls, sorted((k, v) for k, v in inputs.items() if not isinstance(v, list))))
        size = {k: inputs[k] for k in ("width", "height", "length", "batch_size") if k in inputs}
        if size and not any(isinstance(v, list) for v in size.values()):
            parts.append((cls, sorted(size.items())))
    return json.dumps(parts, sort_keys=True, default=str)


# --------------------------------------------------------------------------- the variant as the tier runs it

def adapt(variant: Variant, tier: Tier, models: SyntheticModels | None) -> Variant:
    """The variant as this tier runs it: on a tiny synthetic set the text encoder replaced by precomputed
    conditioning where the graph allows it, the tier's scale applied, and through torch.compile where the row says
    so (`torch_compile`); the synthetic set writes every model file the graph then names, under its name."""
    if models is not None and "conditioning" in models.files and "text_encoder" not in models.files:
        candidate = variant.precomputed_conditioning(models.set.name("conditioning"))
        try:
            candidate.build()
            variant = candidate
        except Wan22Error:
            pass  # no core text-encoder path to replace: the synthetic set says why it cannot write the encoder
    if not tier.is_gpu:
        variant = variant.on_cpu()
    if tier.scale:
        variant = variant.scaled(**tier.scale)
    if tier.torch_compile:
        variant = variant.torch_compile(tier.torch_compile)
    return variant


OPTIONAL_NODES = frozenset({"RIFE VFI", "FILM VFI", "FrameInterpolate", "FrameInterpolationModelLoader"})


def check_graph(server: Server, client: ComfyClient, prompt: Mapping[str, Any], variant_id: str,
                missing: str) -> None:
    """The preflight: Fail (or Skip, for optional nodes or with --wan22-missing=skip) naming what the server lacks
    for this graph: node packs, model files, their folders."""
    if not server.object_info:
        server.object_info = client.object_info()
    problems = preflight.find_problems(prompt, server.object_info, server.places)
    if not problems:
        return
    text = f"{variant_id} cannot run on this server:\n{preflight.format_problems(problems)}"
    optional = all(p.kind == "node" and p.class_type in OPTIONAL_NODES for p in problems)
    if optional or missing == "skip":
        raise Skip(text)
    raise Fail(text + "\n(--wan22-missing=skip skips such variants instead)")


def empty_queue(client: ComfyClient) -> None:
    """Clear what an earlier test left queued or running."""
    queue = client.queue()
    if queue.get("queue_running") or queue.get("queue_pending"):
        client.clear_queue()
        client.interrupt()


# --------------------------------------------------------------------------- the session as the rounds see it

def _nothing(record: RunRecord) -> None:
    return None


def _no_verdict(summary: Summary, baseline: Summary | None) -> Verdict | None:
    return None


FirstRounds = Callable[[Callable[[], object], int, int], None]
"""Runs a variant's first rounds itself, given one round, the timed rounds and the warm-ups (pytest-benchmark)."""


class RunPrompt(Protocol):
    """runner.run_prompt: one prompt submitted and followed to its RunRecord."""

    def __call__(self, ctx: RunContext, prompt: Mapping[str, Any], *, variant_id: str, workflow: str,
                 seed: int | None, round_index: int = 0, warmup: bool = False) -> RunRecord: ...


@dataclass
class Gate:
    """What running a variant needs: the session's State, its servers, tier and model set, and the hooks of the
    pytest layer as callables (`run_finished` hears of every record, `compare` may replace the comparison)."""

    state: State
    pool: ServerPool
    tier: Tier
    models: SyntheticModels | None = None
    run_finished: Callable[[RunRecord], None] = _nothing
    compare: Callable[[Summary, Summary | None], Verdict | None] = _no_verdict
    run_prompt: RunPrompt = run_prompt


@dataclass(frozen=True)
class VariantResult:
    """What `wan22_run` returns: every round's record, the summary of the timed ones, and the verdict."""

    records: tuple[RunRecord, ...]
    summary: Summary
    verdict: Verdict

    @property
    def last(self) -> RunRecord:
        """The last round's record."""
        return self.records[-1]


@dataclass(frozen=True)
class Ran:
    """A variant's rounds, not judged yet: its key and workflow, records, summary and verdict, and a line for
    the failure message (what changed since the baseline)."""

    key: str
    workflow: str
    records: tuple[RunRecord, ...]
    summary: Summary
    verdict: Verdict
    note: str = ""

    @property
    def result(self) -> VariantResult:
        """What the test gets back."""
        return VariantResult(self.records, self.summary, self.verdict)


# --------------------------------------------------------------------------- GPU readings for a run

def _vram_monitor(state: State, server: Server, interval: float) -> Callable[[], Any] | None:
    """Per process when the server's PID is known (launched, or attached on this machine), else device-wide."""
    if state.nvml is None or state.device is None:
        return None
    from .gpu import VramMonitor
    from .processes import process_tree

    pid = server.handle.pid
    device = state.device
    pids = (lambda: process_tree(pid)) if pid is not None else None
    return lambda: VramMonitor(state.nvml, device, pids=pids, interval=interval, own=own_pids)


def own_pids() -> set[int]:
    """This session's processes, never neighbours: pytest's process tree, with every server it launched."""
    from .processes import process_tree

    return process_tree(os.getpid())


def _gpu_state(state: State) -> Callable[[], dict[str, float | None]] | None:
    if state.nvml is None or state.device is None:
        return None
    from .gpu import accounting_peak_mib, environment_readings
    from .processes import process_tree

    nvml, device = state.nvml, state.device
    server = state.server

    def read() -> dict[str, float | None]:
        h = nvml.handle(device.index)
        readings = {k: v for k, v in environment_readings(nvml, h).items() if k not in ("driver", "cuda")}
        if state.settings.nvml_accounting and server is not None and server.handle.pid:
            readings["accounting_peak_mib"] = accounting_peak_mib(nvml, h, process_tree(server.handle.pid))
        return readings

    return read


# --------------------------------------------------------------------------- the rounds of one side

class SideRunner:
    """Runs rounds of one variant on one server: a fresh seed each, records saved, failures fail the test."""

    def __init__(self, gate: Gate, server: Server, client: ComfyClient, variant: Variant, key: str,
                 workflow: str) -> None:
        state = gate.state
        s = state.settings
        self.gate, self.state, self.server, self.variant, self.key, self.workflow = (
            gate, state, server, variant, key, workflow)
        self.ctx = RunContext(
            client=client, tier=gate.tier.name, timeout=s.run_timeout or gate.tier.run_timeout_s,
            environment=server.environment, is_alive=server.alive, log_size=server.handle.log_size,
            log_since=server.handle.log_since, output_dir=server.output_dir,
            monitor=state.progress.track(_vram_monitor(state, server, s.vram_interval)),
            gpu_state=_gpu_state(state), on_event=state.progress.on_event,
            input_dir=server.launcher.spec.input_dir if server.launcher else None,
            user_input_dir=server.launcher.spec.comfyui_dir / "input" if server.launcher else None,
            synthetic_input_dir=gate.models.root / "input" if gate.models is not None else None)
        self.records: list[RunRecord] = []
        self.graph = variant.seed(0).build()
        self.shape = warm_shape(self.graph)
        self.first_seed: int | None = None  # the seed of the first timed round, when another side shares it

    @property
    def timed(self) -> list[RunRecord]:
        """The timed rounds so far."""
        return [r for r in self.records if not r.warmup]

    def prepare(self, missing: str) -> None:
        """Bring in the input files the server lacks, then check the graph against the server before any run."""
        for cls in ensure_inputs(self.ctx, self.graph, self.variant.image_size()):
            if self.server.object_info:  # its file list has changed
                self.server.object_info.update(self.ctx.client.object_info(cls))
        check_graph(self.server, self.ctx.client, self.graph, self.key, missing)

    def warmups_needed(self, plan: RoundPlan) -> int:
        """Warm-up rounds for this variant: none when the server last ran the same models and shape, unless the
        test named its warm-ups."""
        if plan.warmups and not plan.warmups_asked and self.server.warm_shape == self.shape:
            self.state.skipped_warmups.append(self.key + side_words(self.server.side))
            return 0
        return plan.warmups

    def round(self, warmup: bool) -> RunRecord:
        """One run with a fresh seed; Fail on anything but success or on a wrong video."""
        i = len(self.records)
        seed = self.first_seed if self.first_seed is not None and not warmup and not self.timed else fresh_seed()
        with self.state.progress.round(self.key, i, None, warmup=warmup, prompt=self.graph,  # adaptive: no total
                                       side=self.server.side):
            record = self.gate.run_prompt(self.ctx, self.variant.seed(seed).build(), variant_id=self.key,
                                          workflow=self.workflow, seed=seed, round_index=i, warmup=warmup)
        if self.server.side:
            record = replace(record, side=self.server.side)
        if record.vram is not None and record.vram.neighbours:
            record = replace(record, warnings=(*record.warnings, "neighbour: other compute processes on the GPU "
                                               "during this round: " + _names(record.vram.neighbours)))
        if self.server.unknown:  # said once, in the session's first record
            record = replace(record, warnings=(*record.warnings, f"attach: {self.server.unknown}"))
            self.server.unknown = ""
        self.records.append(record)
        self.state.records.append(record)
        save_record(self.server, record)
        self.gate.run_finished(record)
        who = f"{self.key}{side_words(self.server.side)}"
        if not record.ok:
            self.server.warm_shape = None
            raise Fail(f"{who} round {round_name(record)}: {record.outcome}: {record.message}")
        self.server.warm_shape = self.shape
        fail_if(fit.check_output(record, self.variant.expected_output()))
        return record

    def free(self) -> str:
        """Unload this side's models and wait until its memory is let go; how that went, in words."""
        release = self.ctx.client.free_and_wait()
        self.server.warm_shape = None
        return f"{self.server.side}: {release.describe()}"


# --------------------------------------------------------------------------- a variant, start to verdict

def run_variant(gate: Gate, variant: Variant, plan: RoundPlan, *, server_args: tuple[str, ...] = (),
                test_id: str = "", as_written: bool = False,
                first_rounds: Callable[[], FirstRounds | None] | None = None) -> Ran:
    """A variant's rounds: on one server against its stored baseline, or on sides A and B in an A/B session.
    `as_written`: a workflow file's test, whose graph as the file has it is checked first where the server lacks
    one of its nodes (the failure then names every pack, file and folder the file needs)."""
    state = gate.state
    key = baseline_key(variant.variant_id, tuple(server_args))
    if as_written:
        _check_as_written(gate, variant, state.settings.missing)
    v = as_run(gate, variant)
    state.test_variants.setdefault(test_id, []).append((variant.workflow.name, key))
    if state.settings.ab is not None:
        return _run_ab(gate, v, variant, key, tuple(server_args), plan)
    return _run_one(gate, v, variant, key, tuple(server_args), plan, first_rounds)


def _check_as_written(gate: Gate, variant: Variant, missing: str) -> None:
    server = gate.pool.get()
    try:
        graph = variant.build()
    except Wan22Error as exc:
        raise Fail(str(exc)) from None
    with gate.pool.client(server.handle.url) as client:
        if not server.object_info:
            server.object_info = client.object_info()
        if any(str(n.get("class_type")) not in server.object_info for n in graph.values()):
            check_graph(server, client, graph, variant.variant_id, missing)


def as_run(gate: Gate, variant: Variant) -> Variant:
    """The variant as the tier runs it; one whose builder methods do not apply fails here, before any run. On a
    synthetic set, the model files and inputs its graph names are written now."""
    try:
        v = adapt(variant, gate.tier, gate.models)
        v.build()
    except Wan22Error as exc:
        raise Fail(str(exc)) from None
    if gate.models is not None:
        note = write_synthetic(gate.models, v, gate.pool, variant.variant_id)  # named as the test names it
        if note:
            gate.state.synth_notes.append(note)
    return v


def _run_one(gate: Gate, v: Variant, variant: Variant, key: str, extra: tuple[str, ...], plan: RoundPlan,
             first_rounds: Callable[[], FirstRounds | None] | None) -> Ran:
    """The usual run: one server, judged against the stored baseline, rounds until the verdict is decided."""
    state, tier = gate.state, gate.tier
    s = state.settings
    server = gate.pool.get(extra)
    stored = stored_baseline(s, tier, variant.workflow.name, key, server.environment)
    tols = s.tolerances_for(tier)

    def verdict_now(timed: list[RunRecord]) -> Verdict:
        summary = summarise(key, timed, variant.digest)
        if s.update_baselines:
            return Verdict(key, "new")
        if server.environment.emulated_tier:
            return Verdict(key, "insufficient")  # emulated timings are never compared
        found = gate.compare(summary, stored.summary if stored else None)
        if found is not None:
            return found
        if stored is None:
            return compare(summary, None, tols)
        return compare(summary, stored.summary, tols, machine_spread=stored.spread,
                       session_spread=stored.sessions, judge_timings=tier.judges_timings, max_rounds=plan.most)

    if s.update_baselines and not s.allow_neighbours:  # before any GPU time is spent on a baseline
        refuse_neighbours(key, neighbours_now(state, server))
    with gate.pool.client(server.handle.url) as client:
        empty_queue(client)
        side = SideRunner(gate, server, client, v, key, variant.workflow.name)
        side.prepare(s.missing)
        n_warm = side.warmups_needed(plan)
        timer = first_rounds() if first_rounds is not None else None
        if timer is not None:  # pytest-benchmark times the fewest rounds (it allows one call per test)
            timer(lambda: side.round(len(side.records) < n_warm), plan.fewest, n_warm)
        else:
            for _ in range(n_warm):
                side.round(warmup=True)
        while plan.more(len(side.timed), lambda: verdict_now(side.timed) if stored is not None else None):
            side.round(warmup=False)
    records = side.records
    summary = summarise(key, records, variant.digest)
    verdict = with_neighbours(verdict_now(side.timed), records)
    if s.update_baselines:
        if not s.allow_neighbours:
            refuse_neighbours(key, seen_neighbours(records))
        state.summaries[(variant.workflow.name, key)] = summary
    note = ""
    if stored is not None:
        if shifts := drift(stored.history, summary, tols):
            verdict = replace(verdict, notes=(*verdict.notes, *shifts))
        changes = version_changes(stored.machine, server.environment)
        note = f"changed since the baseline: {', '.join(changes)}" if changes else ""
    return Ran(key, variant.workflow.name, tuple(records), summary, verdict, note)


@dataclass(frozen=True)
class StoredBaseline:
    """A variant's stored baseline as a comparison uses it: the summary, the machine it was recorded on, the
    spread added for another GPU of the same model, and the spread of its recorded sessions."""

    summary: Summary
    machine: Environment
    spread: float | Mapping[str, float]
    sessions: Mapping[str, float]
    history: tuple[Any, ...]


def stored_baseline(s: Settings, tier: Tier, workflow: str, key: str, env: Environment) -> StoredBaseline | None:
    """The variant's stored baseline (None when recording or there is none); another GPU model fails the test
    here, before any round runs."""
    if s.update_baselines or env.emulated_tier:
        return None
    stored = BaselineStore(s.baselines_dir).load(tier.name, workflow)
    entry = stored.entries.get(key) if stored else None
    if stored is None or entry is None:
        return None
    machine = stored.machine_of(key)
    why = machine_mismatch(machine, env)
    if why:
        raise Fail(f"{key}: {why}")
    spread = 0.0 if same_gpu(machine, env) else MACHINE_SPREAD  # another GPU of the same model
    return StoredBaseline(entry.summary, machine, spread, session_spread(entry.history, entry.summary),
                          tuple(entry.history))


# --------------------------------------------------------------------------- A/B

def fits_both(state: State, first: list[RunRecord]) -> bool:
    """True when side B can load beside side A's loaded models: the device's free memory now exceeds A's peak
    with a margin (no NVML: nothing to run out of, as on the cpu tier)."""
    if state.nvml is None or state.device is None:
        return True
    peaks = [r.vram.peak_mib for r in first if r.vram and r.vram.available and r.vram.peak_mib is not None]
    if not peaks:
        return True
    _total, _used, free = state.nvml.memory_info(state.nvml.handle(state.device.index))
    return bool(free / 2**20 > 1.1 * max(peaks))


def _run_ab(gate: Gate, v: Variant, variant: Variant, key: str, extra: tuple[str, ...], plan: RoundPlan) -> Ran:
    """A/B: the variant on side A (current) and side B (candidate) of one GPU, rounds interleaved A B A B where
    both fit in VRAM at once, else in blocks with the idle side's models freed; B is judged against A."""
    state, tier = gate.state, gate.tier
    s = state.settings
    assert s.ab is not None
    servers = {name: gate.pool.get(extra, name) for name in ("A", "B")}
    with contextlib.ExitStack() as stack:
        runners: dict[str, SideRunner] = {}
        for name, server in servers.items():
            client = stack.enter_context(gate.pool.client(server.handle.url))
            empty_queue(client)
            runners[name] = SideRunner(gate, server, client, v, key, variant.workflow.name)
            runners[name].prepare(s.missing)
        a, b = runners["A"], runners["B"]

        def verdict_now() -> Verdict:
            return compare(summarise(key, b.timed, variant.digest), summarise(key, a.timed, variant.digest),
                           s.tolerances_for(tier), label="B vs A", judge_timings=tier.judges_timings,
                           max_rounds=plan.most)

        how = ab_rounds(state, a, b, plan, lambda: plan.more(len(b.timed), verdict_now))
    records = [*a.records, *b.records]
    verdict = with_neighbours(verdict_now(), records)
    differs = "; ".join(s.ab.describe(s.comfyui_dir, s.python, s.server_args))
    verdict = replace(verdict, notes=(f"B (candidate) vs A (current), {how}; {differs}", *verdict.notes))
    return Ran(key, variant.workflow.name, tuple(records), summarise(key, b.records, variant.digest), verdict)


def ab_rounds(state: State, a: SideRunner, b: SideRunner, plan: RoundPlan, more: Callable[[], bool]) -> str:
    """The rounds of an A/B: A's warm-ups, then B's beside A's loaded models and timed rounds A B A B while `more()`
    says so, where both fit in VRAM at once (fits_both); else blocks of the fewest rounds, the idle side's models
    freed and the next side warmed again before each. Returns how the rounds ran, in words."""
    for _ in range(a.warmups_needed(plan)):
        a.round(warmup=True)
    if fits_both(state, a.records):
        for _ in range(b.warmups_needed(plan)):
            b.round(warmup=True)
        while more():
            a.round(warmup=False)
            b.round(warmup=False)
        return "rounds interleaved A B A B"
    releases: list[str] = []
    loaded = a
    while more():
        block = min(plan.fewest, plan.most - len(b.timed))
        for this, other in ((a, b), (b, a)):
            if loaded is not this:  # unload the other side and wait for its memory, then warm this one
                releases.append(other.free())
                for _ in range(max(1, plan.warmups)):
                    this.round(warmup=True)
                loaded = this
            for _ in range(block):
                this.round(warmup=False)
    return ("in blocks, the idle side's models freed before each block (" + "; ".join(releases)
            + "): both sides do not fit in VRAM at once, so drift between blocks is not cancelled")


# --------------------------------------------------------------------------- other compute processes

def _names(neighbours: Sequence[Neighbour]) -> str:
    return ", ".join(n.describe() for n in neighbours)


def seen_neighbours(records: Sequence[RunRecord]) -> tuple[Neighbour, ...]:
    """Other compute processes the VRAM monitor saw on the GPU during any of these rounds."""
    from .gpu import merge_neighbours

    return merge_neighbours(r.vram.neighbours for r in records if r.vram is not None)


def neighbours_now(state: State, server: Server) -> tuple[Neighbour, ...]:
    """Other compute processes on the GPU now (none known without NVML or without the server's PID)."""
    if state.nvml is None or state.device is None or server.handle.pid is None:
        return ()
    from .gpu import neighbours
    from .processes import process_tree

    try:
        handle = (state.nvml.handle_by_uuid(state.device.uuid) if state.device.uuid
                  else state.nvml.handle(state.device.index))
        return neighbours(state.nvml, handle, process_tree(server.handle.pid) | own_pids())
    except Exception:  # NVML trouble is the VRAM monitor's to report
        return ()


def with_neighbours(verdict: Verdict, records: Sequence[RunRecord]) -> Verdict:
    """The verdict with a note naming the compute processes that shared the GPU with its rounds."""
    seen = seen_neighbours(records)
    if not seen:
        return verdict
    note = (f"other compute processes shared the GPU during these rounds: {_names(seen)}; their work slows this "
            "run's, so a change may be theirs")
    return replace(verdict, notes=(*verdict.notes, note))


def refuse_neighbours(key: str, seen: Sequence[Neighbour]) -> None:
    """Fail before a baseline is recorded beside other compute processes."""
    if seen:
        raise Fail(f"{key}: not recording a baseline beside other compute processes on the GPU: {_names(seen)}. "
                   "Their work slows this one's and every later comparison would inherit it; stop them, or "
                   "pass --wan22-allow-neighbours (ini wan22_allow_neighbours) to record anyway (the records "
                   "name them)")


# --------------------------------------------------------------------------- records and checks

def save_record(server: Server, record: RunRecord) -> None:
    """A round's record as JSON in the server's records folder."""
    if server.records_dir is None:
        return
    server.records_dir.mkdir(parents=True, exist_ok=True)
    side = f".{record.side}" if record.side else ""
    # The start time keeps sessions that share a log folder from overwriting each other's records.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(record.started_at)) + f"{record.started_at % 1:.3f}"[1:]
    path = server.records_dir / f"{record.variant_id}{side}.{record.round}.{stamp}.json"
    path.write_text(record.to_json(), encoding="utf-8")


def fail_if(message: str | None) -> None:
    """Fail with the message a check gave, if any."""
    if message is not None:
        raise Fail(message)


def check_vram(gate: Gate, records: list[RunRecord], variant_id: str, server: Server, budget_gib: float | None,
               allow_offload: bool | None) -> str | None:
    """fit.check_vram with this session's budget, offload rule and allowance (the server's own argv, else the
    arguments its side launches with)."""
    tier, profile, env = gate.tier, gate.pool.profile_of(server.side), server.environment
    args = env.argv or launch_command(profile, gate.pool.sides[server.side])[0]
    return fit.check_vram(
        records, variant_id, tier.name,
        budget_gib=budget_gib if budget_gib is not None else tier.budget_gib(variant_id),
        allowed=fit.allowance(env.gpu_memory_mib, args, profile.memory_cap_gib),
        allow_offload=tier.allows_offload(variant_id) if allow_offload is None else allow_offload)


def judge(gate: Gate, ran: Ran, budget_gib: float | None = None, allow_offload: bool | None = None) -> None:
    """Fail a variant that does not fit (each side against its own server's allowance) or whose verdict failed;
    the verdict is kept for the summary either way."""
    for name in sorted({r.side for r in ran.records}):
        fail_if(check_vram(gate, [r for r in ran.records if r.side == name], ran.key, gate.pool.servers[name],
                           budget_gib, allow_offload))
    gate.state.verdicts[(ran.workflow, ran.key)] = ran.verdict
    if ran.verdict.failed:
        raise Fail(ran.verdict.message + (f"\n{ran.note}" if ran.note else ""))
