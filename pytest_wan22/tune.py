"""Tuning (--wan22-tune): the fastest launch profile that fits and keeps the output, found with the A/B gate and
kept as a tier row.

The search space is data: a tier row's `[tiers.<name>.tune]` table (tiers.TuneSpace), or the defaults here, one
list per option class (attention backend, --fast features, VRAM policy, --reserve-vram, the allocator's
environment, torch.compile, VAE and diffusion-model dtypes, caching, previews, other flags). An option whose
package does not import in ComfyUI's interpreter is listed as unavailable, with what to install.

The search respects GPU time:

* one variant per class of work (the workflow, the size and length of its latents, the model files it loads)
  stands for the others of its class; the first class searches, later classes confirm what it found;
* each candidate is an A/B against the incumbent on one GPU (rounds.ab_rounds: interleaved where both fit, else
  in blocks), the first timed round of both sides on one seed so that their videos can be compared; its rounds
  are adaptive: a candidate whose wall time is slower beyond doubt stops after two rounds, and the others stop
  as soon as the interval shows a gain of at least `min_gain`, or rules one out;
* a candidate that does not run (OOM, error), does not fit (an offload, a model swap or an OOM retry in the
  server's log, a peak past the profile's allowance) or changes the output (PSNR of its frames against the
  incumbent's below its class's `min_psnr`, a black or one-colour frame the incumbent does not have) is
  rejected, whatever its speed;
* single options first, then the winners combined greedily, fastest first, each combination an A/B against the
  combination before it; where the winner has more than one option it is checked once more against the tier's
  own profile, on every class of work;
* a time budget (--wan22-tune-budget): a candidate whose A/B would not fit in what is left is not started, one
  that runs past it is cut short, and the report lists both.

The result is a tier row for the user's tier file (never the plugin's own tiers.toml) with its evidence in a
comment block, and plain data for the reports (report.tune_rows, report_html).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from . import platforms
from .compare import Check, Verdict, compare, summarise
from .errors import ConfigError, Fail, Skip
from .frames import FrameDiff, compare_videos
from .records import RunRecord
from .rounds import Gate, RoundPlan, SideRunner, VariantResult, ab_rounds, as_run, check_vram, empty_queue
from .runner import fresh_seed
from .servers import Server
from .settings import Settings, Side
from .tiers import (
    TUNE_ATTENTION,
    TUNE_CLASSES,
    TUNE_FAST,
    Profile,
    Tier,
    TuneSpace,
    make_profile,
    merge_args,
    parse_tune_items,
)
from .workflows import Variant

ALLOC = "PYTORCH_CUDA_ALLOC_CONF"

#: What an option needs to import in ComfyUI's interpreter, and what to install for it.
NEEDS: Mapping[tuple[str, str], tuple[str, str]] = {
    ("attention", "sage"): ("sageattention", "pip install sageattention"),
    ("attention", "flash"): ("flash_attn", "pip install flash-attn"),
    ("fast", "cublas_ops"): ("cublas_ops", "pip install git+https://github.com/aredden/torch-cublas-hgemm"),
}

#: The smallest PSNR (dB) of a candidate's frames against the incumbent's, by option class. Options that only
#: move memory or skip work must give the same video; attention backends and compilation must stay close;
#: reduced-precision arithmetic (fp16 accumulation, fp8 matrix multiplication, fp8 weights) is allowed a stated
#: difference. Starting points, set per tier with `min_psnr` in the tune table.
DEFAULT_MIN_PSNR: Mapping[str, float] = {
    "attention": 32.0, "fast": 26.0, "vram": 40.0, "reserve_vram": 40.0, "alloc": 40.0, "env": 32.0, "compile": 32.0,
    "vae": 32.0, "unet": 26.0, "cache": 40.0, "preview": 40.0, "args": 32.0,
}

#: Option classes whose values exclude each other (one attention backend, one VRAM policy, ...); --fast features,
#: other flags and variables combine (two values of one variable do not).
EXCLUSIVE = frozenset(TUNE_CLASSES) - {"fast", "args", "env"}


def clash(a: Option, b: Option) -> bool:
    """True when the two options cannot be one profile's: one class of exclusive values, or one variable."""
    if a.klass != b.klass:
        return False
    if a.klass == "env":
        return a.value.split("=", 1)[0] == b.value.split("=", 1)[0]
    return a.klass in EXCLUSIVE

#: What a row without a tune table tries: on a GPU, the attention backends, every --fast feature, the VRAM
#: policies and allocator settings ComfyUI uses most, torch.compile and the VAE's dtype; without one, nothing
#: (the cpu row names its own).
GPU_SPACE = TuneSpace(attention=("pytorch", "sage", "flash"), fast=TUNE_FAST, vram=("highvram", "normalvram"),
                      alloc=("expandable_segments:True", "backend:cudaMallocAsync"), compile=("inductor",),
                      vae=("bf16", "fp16"))

STAGES = {"single": "one option against the tier's profile",
          "combination": "a winner added to the winners before it",
          "confirmation": "the winner against the tier's profile"}
SEARCH = ("single options against the tier's profile, then the faster ones combined greedily (fastest first, each "
          "combination an A/B against the one before it), the winner confirmed against the tier's profile on every "
          "class of work")
REJECTED = ("oom", "error", "does not fit", "output differs", "output not compared")


# --------------------------------------------------------------------------- the search space

@dataclass(frozen=True)
class Option:
    """One change to a profile: launch flags, environment (None unsets a variable) or torch.compile of the graph."""

    klass: str
    value: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str | None], ...] = ()
    compile: str | None = None

    @property
    def id(self) -> str:
        """'attention=sage', 'alloc=(unset)'."""
        return f"{self.klass}={self.value or '(unset)'}"

    @property
    def label(self) -> str:
        """The option as a file name may hold it: 'attention-sage', 'args-async-offload'."""
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.klass}-{self.value.lstrip('-') or 'unset'}").strip("_")


def option(klass: str, value: str | float) -> Option:
    """The option of a class and value, as the tune table names it."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    if klass == "attention":
        return Option(klass, text, TUNE_ATTENTION[text])
    if klass == "fast":
        return Option(klass, text, ("--fast", text))
    if klass == "vram":
        return Option(klass, text, ("--" + text.replace("_", "-"),))
    if klass == "reserve_vram":
        return Option(klass, text, ("--reserve-vram", text))
    if klass == "alloc":
        return Option(klass, text, env=((ALLOC, text or None),))
    if klass == "env":
        name, _, val = text.partition("=")
        return Option(klass, text, env=((name, val or None),))
    if klass == "compile":
        return Option(klass, text, compile=text)
    if klass in ("vae", "unet"):
        return Option(klass, text, (f"--{text}-{klass}",))
    if klass == "cache":
        name, _, n = text.partition(":")
        return Option(klass, text, (f"--cache-{name}", *([n] if n else [])))
    if klass == "preview":
        return Option(klass, text, ("--preview-method", text))
    if klass == "args":
        return Option(klass, text, tuple(platforms.split_args(text)))
    raise ConfigError(f"unknown option class {klass!r}; known: {', '.join(TUNE_CLASSES)}")


def _class_flags(klass: str) -> set[str]:
    """Every flag an option of this class may set (what an option of the class replaces)."""
    if klass == "attention":
        return {f for flags in TUNE_ATTENTION.values() for f in flags}
    if klass == "vram":
        return {"--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram"}
    if klass == "vae":
        return {"--bf16-vae", "--fp16-vae", "--fp32-vae", "--cpu-vae"}
    if klass == "unet":
        return {f"--{d}-unet" for d in ("fp8_e4m3fn", "fp8_e5m2", "fp8_e8m0fnu", "bf16", "fp16", "fp32", "fp64")}
    if klass == "cache":
        return {"--cache-classic", "--cache-lru", "--cache-none", "--cache-ram"}
    return {"reserve_vram": {"--reserve-vram"}, "preview": {"--preview-method"}}.get(klass, set())


def _drop(args: Sequence[str], flags: set[str]) -> list[str]:
    """args without these flags and the values that follow them."""
    out: list[str] = []
    skipping = False
    for arg in args:
        if skipping and not arg.startswith("--"):
            continue
        skipping = arg in flags
        if not skipping:
            out.append(arg)
    return out


def _with_fast(args: Sequence[str], features: Sequence[str]) -> tuple[str, ...]:
    """args with these --fast features added to the one --fast flag ComfyUI reads (a bare --fast is all of them)."""
    if "--fast" not in args:
        return (*args, "--fast", *features)
    i = list(args).index("--fast")
    end = next((j for j in range(i + 1, len(args)) if args[j].startswith("--")), len(args))
    have = list(args[i + 1:end])
    if not have:
        return tuple(args)
    return (*args[:i + 1], *have, *(f for f in features if f not in have), *args[end:])


def apply_args(base: Sequence[str], options: Iterable[Option]) -> tuple[str, ...]:
    """Launch arguments with the options' flags: a --fast feature joins the --fast list, another flag replaces the
    flags of its class and of its exclusive group (tiers.EXCLUSIVE_FLAGS) and the same flag, values and all."""
    args = tuple(base)
    for o in options:
        if not o.args:
            continue
        if o.args[0] == "--fast":
            args = _with_fast(args, o.args[1:])
        else:
            flags = _class_flags(o.klass) | {a for a in o.args if a.startswith("--")}
            args = merge_args(_drop(args, flags), o.args)
    return args


def apply_env(base: Mapping[str, str], options: Iterable[Option]) -> dict[str, str]:
    """Environment with the options' variables set (or, for None, unset)."""
    env = dict(base)
    for o in options:
        for name, value in o.env:
            if value is None:
                env.pop(name, None)
            else:
                env[name] = value
    return env


@dataclass(frozen=True)
class Candidate:
    """A profile as changes to the tier's own: its options in class order (the tier's profile has none)."""

    options: tuple[Option, ...] = ()

    @classmethod
    def of(cls, options: Iterable[Option]) -> Candidate:
        """The options sorted by class, the way every candidate is named."""
        return cls(tuple(sorted(options, key=lambda o: (TUNE_CLASSES.index(o.klass), o.value))))

    def plus(self, o: Option) -> Candidate:
        """This candidate with one more option."""
        return Candidate.of([*self.options, o])

    @property
    def ids(self) -> tuple[str, ...]:
        """Its options' ids."""
        return tuple(o.id for o in self.options)

    @property
    def name(self) -> str:
        """'attention=sage + fast=fp8_matrix_mult', or 'the tier's profile'."""
        return " + ".join(self.ids) or "the tier's profile"

    @property
    def label(self) -> str:
        """As file names hold it."""
        return "+".join(o.label for o in self.options) or "profile"

    @property
    def compile(self) -> str | None:
        """The torch.compile backend it runs the graph through (None: the tier's)."""
        return next((o.compile for o in reversed(self.options) if o.compile), None)

    def tier(self, tier: Tier) -> Tier:
        """The tier row with these changes: its arguments, environment and torch.compile."""
        return replace(tier, args=apply_args(tier.args, self.options), env=apply_env(tier.env, self.options),
                       torch_compile=self.compile or tier.torch_compile)

    def classes(self) -> set[str]:
        """The option classes it changes."""
        return {o.klass for o in self.options}


def default_space(tier: Tier) -> TuneSpace:
    """The row's tune table, or the defaults: GPU_SPACE on a GPU, nothing without one."""
    if tier.tune is not None:
        return tier.tune
    return GPU_SPACE if tier.is_gpu else TuneSpace()


def space_options(space: TuneSpace, only: Sequence[str] = ()) -> list[Option]:
    """The options of a space (restricted to --wan22-tune-space's entries), class by class."""
    wanted = parse_tune_items(only)
    out: list[Option] = []
    for klass in TUNE_CLASSES:
        values: list[Any] = list(getattr(space, klass))
        if wanted:
            named = [v for k, v in wanted if k == klass]
            if not named:
                continue
            values = values if None in named else [v for v in named if v is not None]
        for value in values:
            o = option(klass, value)
            if o not in out:
                out.append(o)
    return out


def min_psnr(space: TuneSpace, classes: Iterable[str]) -> float:
    """The PSNR a change of these option classes must keep: the most lenient of theirs (a combination of fp8 and
    an attention backend is allowed fp8's difference)."""
    table = {**DEFAULT_MIN_PSNR, **space.min_psnr}
    return min((table[c] for c in classes), default=max(table.values()))


def work_class(graph: Mapping[str, Any], workflow: str) -> str:
    """A variant's class of work: its workflow, the model files it loads and the sizes of its latents. Pass order,
    schedule length, interpolation and compilation do not change it."""
    parts: list[Any] = [workflow]
    for _, node in sorted(graph.items()):
        cls = str(node.get("class_type", ""))
        inputs = node.get("inputs") or {}
        if "Loader" in cls:
            parts.append((cls, sorted((k, v) for k, v in inputs.items() if isinstance(v, str))))
        size = {k: inputs[k] for k in ("width", "height", "length") if k in inputs}
        if size and not any(isinstance(v, list) for v in size.values()):
            parts.append((cls, sorted(size.items())))
    return json.dumps(parts, sort_keys=True, default=str)


def describe_class(graph: Mapping[str, Any], workflow: str) -> str:
    """'wan22_i2v_a14b, 1280x720, 81 frames'."""
    for node in graph.values():
        inputs = node.get("inputs") or {}
        if all(isinstance(inputs.get(k), int) for k in ("width", "height", "length")):
            return f"{workflow}, {inputs['width']}x{inputs['height']}, {inputs['length']} frames"
    return workflow


# --------------------------------------------------------------------------- one A/B

@dataclass(frozen=True)
class Trial:
    """One candidate against an incumbent on one class of work, and how it ended."""

    cls: str  # the class's representative variant
    candidate: Candidate
    incumbent: Candidate
    stage: str  # a key of STAGES
    status: str  # faster, no gain, slower, undecided, cut short, a REJECTED one, unavailable, in profile, not tried
    reason: str = ""
    key: str = ""  # the variant id its records carry
    rounds: tuple[int, int] = (0, 0)  # timed rounds of the incumbent (A) and the candidate (B)
    change: float | None = None  # of wall time, B against A (-0.1: 10% less)
    low: float | None = None
    high: float | None = None
    peak_mib: float | None = None  # the candidate's peak VRAM
    incumbent_peak_mib: float | None = None
    frames: FrameDiff | None = None
    min_psnr: float | None = None
    spent_s: float = 0.0
    how: str = ""

    @property
    def speedup(self) -> float | None:
        """A's wall time over B's: 1.18 is 18% more clips an hour."""
        return None if self.change is None else 1.0 / (1.0 + self.change)

    @property
    def speedup_range(self) -> tuple[float, float] | None:
        """The speed-up's 95% interval."""
        if self.low is None or self.high is None or self.high <= -1.0:
            return None
        return 1.0 / (1.0 + self.high), 1.0 / (1.0 + self.low) if self.low > -1.0 else math.inf

    @property
    def ran(self) -> bool:
        """True when it spent GPU time."""
        return self.spent_s > 0.0 or self.rounds != (0, 0)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the reports."""
        rng = self.speedup_range
        f = self.frames
        return {"class": self.cls, "candidate": self.candidate.name, "options": list(self.candidate.ids),
                "incumbent": self.incumbent.name, "incumbent_options": list(self.incumbent.ids), "stage": self.stage,
                "status": self.status, "reason": self.reason,
                "key": self.key, "rounds": list(self.rounds), "change": self.change, "low": self.low,
                "high": self.high, "speedup": self.speedup, "speedup_low": rng[0] if rng else None,
                "speedup_high": rng[1] if rng and math.isfinite(rng[1]) else None, "peak_mib": self.peak_mib,
                "incumbent_peak_mib": self.incumbent_peak_mib,
                "psnr_db": f.psnr_db if f and not f.error else None, "identical": bool(f and f.identical),
                "worst_db": f.worst_db if f and not f.error else None,
                "output": f.describe() if f else "", "min_psnr": self.min_psnr, "spent_s": round(self.spent_s, 3),
                "how": self.how}


class _Stop(Exception):
    """Ends a candidate's rounds: its status and why."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _peak(records: Sequence[RunRecord]) -> float | None:
    peaks = [r.vram.peak_mib for r in records if r.vram is not None and r.vram.available and r.vram.peak_mib]
    return max(peaks) if peaks else None


def _video(record: RunRecord) -> Path | None:
    for o in record.outputs:
        if o.path and (o.frames is not None or Path(o.path).suffix.lower() in (".mp4", ".webm", ".mov", ".mkv")):
            return Path(o.path)
    return None


def compare_outputs(python: str, a: RunRecord, b: RunRecord) -> FrameDiff:
    """The videos two rounds of one seed saved, compared frame by frame in `python` (ComfyUI's interpreter)."""
    pa, pb = _video(a), _video(b)
    if pa is None or pb is None:
        return FrameDiff(error=f"no saved video to compare (side {'A' if pa is None else 'B'} saved none this "
                         "plugin can read)")
    return compare_videos(python, pa, pb)


def judge_speed(wall: Check | None, gain: float) -> str:
    """A candidate's speed, from the wall-time check of B against A: faster (the interval below zero and a gain
    of at least `gain`), slower (the interval above zero), no gain (even its best case gains less than `gain`),
    else undecided."""
    if wall is None or wall.estimate is None or wall.ci_low is None or wall.ci_high is None:
        return "undecided"
    if wall.ci_high < 0.0 and wall.estimate <= -gain:
        return "faster"
    if wall.ci_low > 0.0:
        return "slower"
    if wall.ci_low >= -gain:
        return "no gain"
    return "undecided"


# --------------------------------------------------------------------------- the tuner

@dataclass
class WorkClass:
    """A class of work and the variant that stands for it."""

    key: str  # the representative's variant id
    shape: str
    describe: str
    variant: Variant  # as written
    test_id: str
    budget_gib: float | None = None
    allow_offload: bool | None = None
    result: VariantResult | None = None


Outputs = Callable[[RunRecord, RunRecord], FrameDiff]
Availability = Callable[[Sequence[str]], Mapping[str, str]]


def tune_sides(settings: Settings) -> dict[str, Side]:
    """The two sides of every A/B of a tuning session: one environment (the session's), A the incumbent profile
    and B the candidate."""
    own = Side(settings.comfyui_dir, settings.python, settings.server_args, settings.python_why)
    return {"A": replace(own, name="A"), "B": replace(own, name="B")}


class Tuner:
    """Searches a tier's space with A/Bs through the gate's pool and rounds, and keeps what it found."""

    def __init__(self, gate: Gate, profile: Profile, plan: RoundPlan, *, outputs: Outputs | None = None,
                 available: Availability | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.gate, self.base, self.plan, self.clock = gate, profile, plan, clock
        s = gate.state.settings
        self.settings, self.tier = s, gate.tier
        self.space = default_space(gate.tier)
        self.options = space_options(self.space, s.tune_space)
        self.budget = s.tune_budget
        self.outputs = outputs or (lambda a, b: compare_outputs(s.python, a, b))
        self.available = available or self._importable
        self.trials: list[Trial] = []
        self.classes: dict[str, WorkClass] = {}
        self.chain: list[Candidate] = [Candidate()]
        self.started: float | None = None
        self.out_of_budget = False
        self.missing: dict[str, str] | None = None  # module -> why it does not import
        self.finished: dict[str, Any] | None = None

    # -- what the tests call
    def tune(self, variant: Variant, *, test_id: str = "", server_args: Sequence[str] = (),
             budget_gib: float | None = None, allow_offload: bool | None = None) -> VariantResult:
        """Tune on this variant when it is the first of its class of work (search, or confirm what an earlier class
        found); Skip when a variant of its class already stood for it. Returns the incumbent's rounds."""
        if server_args:
            raise Skip(f"{variant.variant_id}: a test's own launch flags ({' '.join(server_args)}) are a profile "
                       "variation, which --wan22-tune does not tune; its search space holds the attention backends "
                       "and the other launch options")
        v = as_run(self.gate, variant)
        graph = v.seed(0).build()
        shape = work_class(graph, variant.workflow.name)
        for c in self.classes.values():
            if c.shape == shape:
                raise Skip(f"{variant.variant_id}: tuned as {c.key}, which stands for its class of work "
                           f"({c.describe}): one variant per class")
        c = WorkClass(variant.variant_id, shape, describe_class(graph, variant.workflow.name), variant, test_id,
                      budget_gib, allow_offload)
        first = not self.classes
        self.classes[shape] = c
        if first:
            self._search(c)
        self._settle()
        if c.result is None:
            searched = next(iter(self.classes.values())).key
            why = ("the budget ran out before it" if self.out_of_budget else
                   f"nothing to try on the {self.tier.name} tier" if not self.options else
                   f"nothing to confirm on it, since no candidate beat the tier's profile on {searched}"
                   if len(self.chain) == 1 and not first else "no A/B ran on it")
            raise Skip(f"{variant.variant_id}: not tuned: {why}")
        return c.result

    # -- the search
    def _search(self, c: WorkClass) -> None:
        incumbent = Candidate()
        missing = self._missing()
        singles: list[tuple[Trial, Option]] = []
        for o in self.options:
            need = NEEDS.get((o.klass, o.value))
            cand = Candidate.of([o])
            if need is not None and need[0] in missing:
                self._add(Trial(c.key, cand, incumbent, "single", "unavailable",
                                f"{need[0]} does not import in {self.settings.python} ({missing[need[0]]}): "
                                f"{need[1]}"))
                continue
            if self._same(cand, incumbent):
                self._add(Trial(c.key, cand, incumbent, "single", "in profile",
                                f"the {self.tier.name} profile has it already"))
                continue
            singles.append((self.trial(c, cand, incumbent, "single"), o))
        winners = sorted(((t, o) for t, o in singles if t.status == "faster"), key=lambda to: to[0].change or 0.0)
        head = incumbent
        for t, o in winners:
            if not head.options:
                head = t.candidate
                self.chain.append(head)
                continue
            clashes = [h.id for h in head.options if clash(h, o)]
            if clashes:
                self._add(Trial(c.key, Candidate.of([o]), head, "combination", "exclusive",
                                f"one {o.klass} at a time: the winner so far has {clashes[0]}"))
                continue
            cand = head.plus(o)
            done = self.trial(c, cand, head, "combination")
            if done.status == "faster":
                head = cand
                self.chain.append(head)

    def _settle(self) -> None:
        """Confirm the winner so far on every class of work; where it loses on one, fall back along the chain."""
        while len(self.chain) > 1:
            head = self.chain[-1]
            for c in self.classes.values():
                if self._confirmed(head, c.key):
                    continue
                t = self.trial(c, head, Candidate(), "confirmation")
                if t.status == "not tried":
                    return  # the budget: what is confirmed is kept (finish)
                if t.status != "faster":
                    self.chain.pop()
                    break
            else:
                return

    def _confirmed(self, cand: Candidate, cls: str) -> bool:
        return any(t.cls == cls and t.candidate == cand and not t.incumbent.options and t.status == "faster"
                   for t in self.trials)

    def _same(self, a: Candidate, b: Candidate) -> bool:
        ta, tb = a.tier(self.tier), b.tier(self.tier)
        return (ta.args, dict(ta.env), ta.torch_compile) == (tb.args, dict(tb.env), tb.torch_compile)

    def _missing(self) -> dict[str, str]:
        if self.missing is None:
            modules = sorted({NEEDS[(o.klass, o.value)][0] for o in self.options if (o.klass, o.value) in NEEDS})
            self.missing = dict(self.available(modules)) if modules else {}
        return self.missing

    def _importable(self, modules: Sequence[str]) -> Mapping[str, str]:
        from .interpreter import check

        result = check(self.settings.python, modules, self.settings.comfyui_dir)
        if result.error is not None:
            return dict.fromkeys(modules, result.error)
        return result.missing

    def _add(self, trial: Trial) -> Trial:
        self.trials.append(trial)
        return trial

    def profile(self, cand: Candidate) -> Profile:
        """The launch profile of a candidate on this machine (the platform's rules and the pinned GPU as for the
        tier's own)."""
        if not cand.options:
            return self.base
        return make_profile(cand.tier(self.tier), gpu=self.base.env.get("CUDA_VISIBLE_DEVICES"),
                            device_name=None, device_memory_mib=None)

    def _estimate(self) -> float:
        ran = sorted(t.spent_s for t in self.trials if t.spent_s > 0.0)
        return ran[len(ran) // 2] if ran else 0.0

    def _time_left(self) -> float:
        if self.budget is None:
            return math.inf
        if self.started is None:
            return self.budget
        return self.budget - (self.clock() - self.started)

    # -- one A/B
    def trial(self, c: WorkClass, cand: Candidate, incumbent: Candidate, stage: str) -> Trial:
        """The candidate against the incumbent on this class of work: rounds until its speed is decided, or it is
        rejected, or the budget runs out."""
        gate, state = self.gate, self.gate.state
        base = Trial(c.key, cand, incumbent, stage, "not tried",
                     min_psnr=min_psnr(self.space, {o.klass for o in set(cand.options) ^ set(incumbent.options)}))
        if self.out_of_budget or (self.started is not None and self._estimate() > self._time_left()):
            self.out_of_budget = True
            return self._add(replace(base, reason="the budget would run out during its rounds"))
        if self.started is None:
            self.started = self.clock()
        key = self._key(c, cand, incumbent)
        base = replace(base, key=key)
        state.test_variants.setdefault(c.test_id, []).append((c.variant.workflow.name, key))
        begin = self.clock()
        pool = gate.pool
        pool.use_profile("A", self.profile(incumbent))
        pool.use_profile("B", self.profile(cand))
        runners: dict[str, SideRunner] = {}
        servers: dict[str, Server] = {}
        stop: _Stop | None = None
        diff: list[FrameDiff] = []
        gain = self.space.min_gain
        wf = c.variant.workflow.name

        def verdict() -> Verdict:
            a, b = runners["A"], runners["B"]
            return compare(summarise(key, b.timed, c.variant.digest), summarise(key, a.timed, c.variant.digest),
                           self.settings.tolerances_for(self.tier), label="B vs A", max_rounds=self.plan.most)

        def more() -> bool:
            a, b = runners["A"], runners["B"]
            for name, runner in (("B", b), ("A", a)):
                why = check_vram(gate, runner.records, key, servers[name], c.budget_gib, c.allow_offload)
                if why is not None:
                    raise _Stop("does not fit", why) if name == "B" else _Stop(
                        "error", f"the incumbent ({incumbent.name}) did not fit beside it: {why}")
            if b.timed and a.timed and not diff:
                diff.append(self.outputs(a.timed[0], b.timed[0]))
                self._judge_output(diff[0], base.min_psnr)
            if self._time_left() <= 0.0:
                self.out_of_budget = True
                raise _Stop("cut short", "the budget ran out during its rounds")
            n = len(b.timed)
            if n >= self.plan.most:
                return False
            if n < 2:
                return True
            speed = judge_speed(verdict().check("wall"), gain)
            if speed == "slower":
                return False  # slower beyond doubt: no more rounds for it
            return n < self.plan.fewest or speed == "undecided"

        try:
            with contextlib.ExitStack() as stack:
                for name, v in (("A", incumbent), ("B", cand)):
                    servers[name] = self._server(name, cand)
                    client = stack.enter_context(pool.client(servers[name].handle.url))
                    empty_queue(client)
                    runners[name] = SideRunner(gate, servers[name], client, self._variant(c, v), key, wf)
                    runners[name].prepare(self.settings.missing)
                seed = fresh_seed()
                runners["A"].first_seed = runners["B"].first_seed = seed
                how = ab_rounds(state, runners["A"], runners["B"], self.plan, more)
        except _Stop as exc:
            stop, how = exc, ""
        except Skip as exc:
            stop, how = _Stop("unavailable", exc.reason), ""
        except Fail as exc:
            stop, how = self._failed(runners, exc.message), ""
        spent = self.clock() - begin
        a_runs = runners["A"].records if "A" in runners else []
        b_runs = runners["B"].records if "B" in runners else []
        wall = None
        if "A" in runners and "B" in runners and runners["B"].timed and runners["A"].timed:
            found = verdict()
            wall = found.check("wall")
            state.verdicts[(wf, key)] = replace(found, notes=(
                f"tuning: B ({cand.name}) vs A ({incumbent.name}), {STAGES[stage]}"
                + (f", {how}" if how else ""), *found.notes))
        if stop is not None and not incumbent.options and not b_runs and self._incumbent_failed(stop, a_runs):
            self._add(replace(base, status="error", reason=stop.reason, spent_s=spent))
            raise Fail(f"the {self.tier.name} tier's own profile does not run, so nothing can be tuned against it: "
                       f"{stop.reason}")
        status = stop.status if stop is not None else judge_speed(wall, gain)
        reason = stop.reason if stop is not None else self._speed_words(status, wall, gain)
        trial = replace(base, status=status, reason=reason,
                        rounds=(len([r for r in a_runs if not r.warmup]), len([r for r in b_runs if not r.warmup])),
                        change=wall.estimate if wall else None, low=wall.ci_low if wall else None,
                        high=wall.ci_high if wall else None, peak_mib=_peak(b_runs), incumbent_peak_mib=_peak(a_runs),
                        frames=diff[0] if diff else None, spent_s=spent, how=how)
        timed = any(r.ok and not r.warmup for r in a_runs)
        if a_runs and (c.result is None or (timed and not c.result.summary.rounds)):  # the incumbent's rounds
            c.result = VariantResult(tuple(a_runs), summarise(key, a_runs, c.variant.digest), found_or_new(
                state.verdicts.get((wf, key)), key))
        return self._add(trial)

    @staticmethod
    def _incumbent_failed(stop: _Stop, a_runs: Sequence[RunRecord]) -> bool:
        """True when side A (the tier's profile) did not start or failed a round on its own."""
        return stop.reason.startswith("the incumbent profile did not start") or bool(
            a_runs and not a_runs[-1].ok)

    def _server(self, name: str, cand: Candidate) -> Server:
        try:
            return self.gate.pool.get((), name)
        except Fail as exc:
            if name == "A":
                raise Fail(f"the incumbent profile did not start: {exc.message}") from None
            raise Fail(f"ComfyUI did not start with {cand.name}: {exc.message}") from None

    def _variant(self, c: WorkClass, cand: Candidate) -> Variant:
        v = as_run(self.gate, c.variant)
        return v.torch_compile(cand.compile) if cand.compile else v

    def _key(self, c: WorkClass, cand: Candidate, incumbent: Candidate) -> str:
        key = f"{c.key}~{cand.label}" + (f"~over~{incumbent.label}" if incumbent.options else "")
        taken = {t.key for t in self.trials}
        n = 2
        unique = key
        while unique in taken:
            unique, n = f"{key}~{n}", n + 1
        return unique

    @staticmethod
    def _failed(runners: Mapping[str, SideRunner], message: str) -> _Stop:
        """How a failed A/B ends: the candidate's OOM or error, a video it saved wrong, or the incumbent's failure
        beside it."""
        for name in ("B", "A"):
            runner = runners.get(name)
            last = runner.records[-1] if runner is not None and runner.records else None
            if last is None or last.ok:
                continue
            if name == "A":
                return _Stop("error", f"the incumbent failed beside it: {message}")
            return _Stop("oom" if last.outcome == "oom" else "error", message)
        if "B" in runners and runners["B"].records and "round" in message:  # fit.check_output: a wrong video
            return _Stop("output differs", message)
        return _Stop("error", message)

    @staticmethod
    def _judge_output(diff: FrameDiff, least: float | None) -> None:
        if diff.error:
            raise _Stop("output not compared", f"the videos of one seed were not compared: {diff.error}")
        if diff.new_blank:
            frames = ", ".join(str(i + 1) for i in diff.new_blank[:8])
            raise _Stop("output differs", f"black or one-colour frames (NaNs in the output?) where the incumbent's "
                        f"are not: frame {frames}")
        if diff.psnr_db is not None and least is not None and diff.psnr_db < least:
            raise _Stop("output differs", f"{diff.describe()} against the incumbent's frames of the same seed, "
                        f"below the {least:g} dB its options are allowed")

    @staticmethod
    def _speed_words(status: str, wall: Check | None, gain: float) -> str:
        if wall is None or wall.estimate is None:
            return "no wall time to compare"
        pct = f"wall {wall.estimate * 100:+.1f}% (95% CI {_pct(wall.ci_low)} to {_pct(wall.ci_high)})"
        return {"faster": f"{pct}: faster by at least {gain:.0%} on the estimate",
                "slower": f"{pct}: slower beyond doubt, stopped",
                "no gain": f"{pct}: a gain of {gain:.0%} is ruled out",
                "undecided": f"{pct}: not decided at the most rounds"}.get(status, pct)

    # -- the end
    def winner(self) -> Candidate:
        """The deepest winner confirmed on every class of work that was tuned (the tier's profile when none)."""
        tuned = {t.cls for t in self.trials if t.ran}
        for cand in reversed(self.chain):
            if not cand.options or all(self._confirmed(cand, cls) for cls in tuned):
                return cand
        return Candidate()

    def finish(self, out: Path, machine: Any = None) -> dict[str, Any]:
        """Write the winner's tier row to `out` and return the session's tuning as plain data (once)."""
        if self.finished is not None:
            return self.finished
        for o in self.options:  # what the budget left untried
            if self.out_of_budget and not any(o.id in t.candidate.ids for t in self.trials) and self.classes:
                first = next(iter(self.classes.values()))
                self._add(Trial(first.key, Candidate.of([o]), Candidate(), "single", "not tried",
                                "the budget ran out before it"))
        win = self.winner()
        row = win.tier(self.tier)
        evidence = [t for t in self.trials if t.candidate == win and not t.incumbent.options
                    and t.status == "faster"]
        spent = sum(t.spent_s for t in self.trials)
        data: dict[str, Any] = {
            "tier": self.tier.name, "search": SEARCH, "min_gain": self.space.min_gain, "budget_s": self.budget,
            "spent_s": round(spent, 3), "out_of_budget": self.out_of_budget,
            "profile": {"args": list(self.tier.args), "env": dict(self.tier.env)},
            "classes": [{"key": c.key, "describe": c.describe, "test": c.test_id} for c in self.classes.values()],
            "trials": [t.to_dict() for t in self.trials],
            "winner": {"name": win.name, "options": list(win.ids), "args": list(row.args), "env": dict(row.env),
                       "torch_compile": row.torch_compile, "evidence": [t.to_dict() for t in evidence]},
            "not_tried": [t.candidate.name for t in self.trials if t.status == "not tried"],
            "row_file": str(out),
        }
        text = row_file_text(row, self, win, evidence, machine, spent)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            data["row_error"] = f"{exc.strerror or exc} ({out}); fix --wan22-tune-out"
        data["row"] = text
        self.finished = data
        return data


def found_or_new(verdict: Verdict | None, key: str) -> Verdict:
    """The trial's verdict, or a 'new' one where no rounds were compared."""
    return verdict if verdict is not None else Verdict(key, "new")


def _pct(value: float | None) -> str:
    return "?" if value is None else f"{value * 100:+.1f}%"


def speed_text(t: Mapping[str, Any]) -> str:
    """'1.18x (1.15x to 1.21x)', from a trial's plain data."""
    if t.get("speedup") is None:
        return "-"
    low, high = t.get("speedup_low"), t.get("speedup_high")
    rng = f" ({low:.2f}x to {high:.2f}x)" if low is not None and high is not None else ""
    return f"{t['speedup']:.2f}x{rng}"


# --------------------------------------------------------------------------- the tier row

def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(float(value)) if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()) + " }" \
            if value else "{}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {value!r}")


def _table_lines(obj: Any, where: str) -> list[str]:
    """A dataclass as a TOML table: its values that differ from the defaults, then its sub-tables."""
    plain: list[str] = []
    subs: list[str] = []
    for f in fields(obj):
        if f.name == "name":
            continue
        value = getattr(obj, f.name)
        if value is None:
            continue
        if is_dataclass(value) and not isinstance(value, type):
            subs += ["", f"[{where}.{f.name}]", *_table_lines(value, f"{where}.{f.name}")]
            continue
        if f.default is not MISSING:
            default: Any = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = MISSING
        if value == default:
            continue
        plain.append(f"{f.name} = {_toml_value(value)}")
    return [*plain, *subs]


def tier_toml(tier: Tier) -> str:
    """A tier row as the tier table reads it back (tiers.load_tiers), every key it sets."""
    return "\n".join([f"[tiers.{tier.name}]", *_table_lines(tier, f"tiers.{tier.name}")]) + "\n"


def _gib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f} GiB"


def speedup_text(t: Trial) -> str:
    """'1.18x (95% CI 1.15x to 1.21x)', or '6.15x (95% CI at least 2.52x)' where the interval has no upper end."""
    if t.speedup is None:
        return "?"
    rng = t.speedup_range
    if rng is None:
        return f"{t.speedup:.2f}x"
    if not math.isfinite(rng[1]):
        return f"{t.speedup:.2f}x (95% CI: at least {rng[0]:.2f}x)"
    return f"{t.speedup:.2f}x (95% CI {rng[0]:.2f}x to {rng[1]:.2f}x)"


def evidence_lines(t: Trial) -> list[str]:
    """What one confirming A/B showed, for the row's comment block."""
    out = t.frames.describe() if t.frames is not None else "not compared"
    peak = (f"peak VRAM {_gib(t.peak_mib)} (the tier's profile: {_gib(t.incumbent_peak_mib)}); "
            if t.peak_mib is not None or t.incumbent_peak_mib is not None else "")
    return [f"#   {t.cls}: wall time {speedup_text(t)} faster than the tier's profile over {t.rounds[0]}+"
            f"{t.rounds[1]} rounds ({t.how or 'A/B'});",
            f"#     {peak}output against the tier's profile's of the same seed: {out} (at least {t.min_psnr:g} dB "
            "allowed)"]


def row_file_text(row: Tier, tuner: Tuner, win: Candidate, evidence: Sequence[Trial], machine: Any,
                  spent: float) -> str:
    """The tier file a tuning session writes: a comment block with the evidence, then the row."""
    m = machine
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [f"# The {row.name} tier as tuned by pytest-wan22 --wan22-tune, {when}.",
             f"# Load it with --wan22-tiers-file=<this file> (ini wan22_tiers_file): its row replaces the shipped "
             f"{row.name} row.",
             "# Machine: " + (", ".join(x for x in (
                 f"{m.gpu_name} ({m.gpu_memory_mib:.0f} MiB)" if getattr(m, "gpu_name", None) and m.gpu_memory_mib
                 else getattr(m, "gpu_name", None) or getattr(m, "device", None) or "no GPU",
                 f"driver {m.driver}" if getattr(m, "driver", None) else "",
                 f"CUDA {m.cuda}" if getattr(m, "cuda", None) else "",
                 f"torch {m.torch}" if getattr(m, "torch", None) else "",
                 f"ComfyUI {m.comfyui}" if getattr(m, "comfyui", None) else "",
                 f"Python {m.python}" if getattr(m, "python", None) else "") if x) if m is not None else "unknown"),
             f"# The tier's profile: {platforms.command_text(tuner.tier.args)}"
             + (f"; {' '.join(f'{k}={v}' for k, v in tuner.tier.env.items())}" if tuner.tier.env else "")]
    if win.options:
        lines.append(f"# Winner: {win.name}, faster than the tier's profile on every class of work tuned, fits, "
                     "and keeps the output:")
        for t in evidence:
            lines += evidence_lines(t)
    else:
        lines.append("# No candidate was faster than the tier's profile while fitting and keeping the output: the "
                     "row is the profile as it was.")
    ran = [t for t in tuner.trials if t.ran]
    counts: dict[str, int] = {}
    for t in tuner.trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    budget = f" of a {tuner.budget:g} s budget" if tuner.budget is not None else ""
    lines.append(f"# Search: {SEARCH}; {len(ran)} A/Bs, "
                 + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; GPU time {spent:.1f} s{budget}"
                 + ("; the budget ran out" if tuner.out_of_budget else "") + ".")
    for t in tuner.trials:
        lines.append(f"#   tried {t.candidate.name} against {t.incumbent.name} on {t.cls}: {t.status}"
                     + (f" ({t.reason})" if t.reason else ""))
    wrapped = [w for line in lines for w in textwrap.wrap(line, 116, subsequent_indent="#     ",
                                                           break_long_words=False, break_on_hyphens=False)]
    return "\n".join(wrapped) + "\n\n" + tier_toml(row)


