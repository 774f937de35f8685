"""Statistics only: summarise a variant's rounds per metric and judge them against a baseline.

Metrics. Each has its own noise, so each is judged on its own: `step` (the gaps between progress frames
from step 2 on, every sampler pass), `sampling:<pass title>` (seconds per pass), one metric per phase
(load, text, encode, decode, interpolation, save, compile), `wall`, and `vram` (peak MiB).

Units. Rounds are the statistical units, not steps: the steps of one round share its clocks, heat and
neighbours, so pooling them as independent samples overstates certainty (Kalibera & Jones, "Rigorous
benchmarking in reasonable time"). Each round is first folded to its mean.

Interval. The round means of the two sides are compared by the Hodges-Lehmann shift (the median of all
new - base differences) with its distribution-free 95% interval from the exact Mann-Whitney distribution
(the rank family asv uses): one round slowed 5-10% by a neighbour's burst moves one difference in n*m, not the
mean, so it neither fakes a change nor hides one. With 10 baseline rounds the interval reaches 95% from the
first rerun round on; where the two sides are too few for any rank interval to reach 95% (3 vs 3, the first
pairs of an interleaved A/B) Welch's t interval on the means stands in and the check's note says so: simulated
at 3 vs 3, it is the only interval there is, and the rounds after it switch to the rank interval. Estimates
are relative to the baseline's median (Welch: its mean), and the figures shown are the same statistic on both
sides. Where both sides hold few rounds a slow baseline round still weighs: with 5 baseline rounds the power to
catch a 2% shift beside bursts falls to 61% (10 rounds: 93%), so baselines are recorded at the maximum rounds.

Rule (per metric, `tolerance` = the allowance of the metric's Tolerance at the baseline's mean):
- regressed: the 95% interval excludes zero (the change is real) AND the estimate is beyond the
  tolerance (the change matters): asv's pairing of a factor with a significance test. Asking instead
  for the whole interval beyond the tolerance would need a tolerance well under 1% to catch a 2% step
  shift within ten rounds, inside the session-to-session drift of step times measured on an H200.
- improved: the mirror (interval below zero, estimate below minus the tolerance).
- ok: the interval's upper end is within the tolerance: a slowdown beyond it is ruled out.
- inconclusive: anything else (the interval reaches past the tolerance, the evidence falls short);
  more rounds settle it (Chromium Pinpoint's three outcomes). Rounds are spent deciding slowdowns:
  an interval that only might reach a speed-up beyond the tolerance counts as ok.
- insufficient: fewer than two rounds on a side (no spread to judge by); new: not in the baseline.
- recorded: a timing on a tier that does not judge timings (`judge_timings = false`, the cpu tier): computed
  and shown like the others, never failing; vram is judged there all the same.
- vram is a peak, not a mean: the largest peak of each side, judged against the tolerance alone.

- noisy: inconclusive, and the round noise both sides show (a robust scale, untouched by one slow round) could
  not settle it within the tolerance even at the maximum rounds, 80% of the time: "too noisy to judge at N
  rounds". It passes, visibly, and holds no rounds (the H200's `save`, disk writes moving 9.6% a round).

Adaptive rounds (`more_rounds`, `Verdict.decided`). Every look at the data after a round is another
chance of a false alarm, so early looks stop a session only on a verdict that more rounds could not
overturn: every metric ok, improved, noisy or recorded, or a regression whose whole interval lies beyond the
tolerance. A regression by the rule above whose interval still reaches into the tolerance runs on to the
maximum and is judged there (a slowdown is rare, so confirming it costs little). The simulated sessions of
tests/unit/sim_sessions.py (H200 round noise per metric, one round in ten 5-10% slower, session-to-session
drift) go through this same rule and `more_rounds`; their table is in tests/unit/test_compare.py. With the
defaults (step and sampling 0.7%), a 10-round baseline and 3 to 10 new rounds: an unchanged rerun fails in at
most 0.5% of sessions and stops after 3.4 to 4.6 rounds; a 1% step slowdown is caught in 96% of sessions with
drift, a 2% one in 100% (93% with bursts, where Welch's interval caught 52%). Letting only step and sampling
hold rounds would save a few tenths of a round more while judging the other metrics on fewer rounds, so every
metric that can still be decided holds them (`more_rounds(steer=...)` narrows that).

Sessions. Rounds tell how much one session's rounds scatter, not how far whole sessions wander: a
steady offset between the baseline's session and this one reads as a change. The tolerance is the
first guard against it (it must stay above the drift of the metric between sessions); once the
baseline file's history holds enough sessions of this GPU, their spread (`session_spread`) joins
the interval as a known variance, sessions being units too.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Literal

from .records import Environment, RunRecord

PHASE_METRICS = ("load", "text", "encode", "decode", "interpolation", "save", "compile")
METRICS = ("step", "sampling", "wall", *PHASE_METRICS, "vram")
ALIASES = {"time": "wall"}  # the name wall time had before per-metric tolerances
UNITS_MIB = {"mib": 1.0, "gib": 1024.0, "mb": 1e6 / 2**20, "gb": 1e9 / 2**20}
UNITS_S = {"s": 1.0, "ms": 1e-3}

# Fit to an H200 (README, "Baselines"; shared figures in tests/unit/sim_sessions.py): step times move 0.23% from round
# to round and about 0.2% from session to session on one GPU, sampling passes follow them; 0.7% is the tolerance
# that catches a 1% step slowdown in 96% of simulated sessions with session drift while an unchanged rerun fails
# in 0.5% (the table in tests/unit/test_compare.py). Wall time drifted 4% between two sessions a minute apart,
# the save phase (disk writes) moves 9.6% from round to round; peaks of one job spanned 0.4 GiB. The absolute parts
# only matter for sub-second figures (a cpu tier that judges timings, phases cached to zero) and keep scheduler
# jitter from reading as a change.
DEFAULT_TOLERANCES = (
    "step:0.7%+5ms", "sampling:0.7%+20ms", "wall:8%+0.5s", "load:20%+0.5s", "text:10%+0.2s", "encode:10%+0.2s",
    "decode:5%+0.1s", "interpolation:5%+0.2s", "save:25%+0.3s", "compile:25%+2s", "vram:1GiB",
)

# Machine-to-machine spread of one GPU model, added to the band when a baseline comes from another physical GPU.
# Wall time differed 11% between two H200 leases (host CPU, PCIe and disk included); step times 1% between two,
# so 3% for the GPU-bound metrics leaves room for a slower chip without hiding a 4% regression behind it.
DEFAULT_MACHINE_SPREAD = 0.11
MACHINE_SPREAD: Mapping[str, float] = {"step": 0.03, "sampling": 0.03, "vram": 0.0, "*": DEFAULT_MACHINE_SPREAD}

CONFIDENCE = 0.95  # two-sided interval of the relative change
POWER = 0.80  # the minimal detectable change is the change caught this often at this run's noise
MIN_ROUNDS = 2  # a side needs a spread


def base_metric(metric: str) -> str:
    """The metric a tolerance is set for: `sampling:high noise` -> `sampling`."""
    return metric.split(":", 1)[0]


@dataclass(frozen=True)
class Tolerance:
    """How much a metric may grow before it counts as a regression: a ratio, an absolute amount, or both
    (then the larger allowance holds)."""

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

    def allowance(self, base: float) -> float:
        """How much `base` may grow: limit minus base, never negative."""
        return max(0.0, self.limit(base) - base)

    def __str__(self) -> str:
        """As the user writes it: 'step:1.3%+5ms', 'vram:1GiB'."""
        parts = []
        if self.ratio is not None:
            parts.append(f"{round(self.ratio * 100, 6):g}%")
        if self.absolute is not None:
            a = round(self.absolute, 9)
            if self.metric == "vram":
                parts.append(f"{a / 1024:g}GiB" if a >= 1024 and a % 256 == 0 else f"{a:g}MiB")
            else:
                parts.append(f"{round(a * 1000, 6):g}ms" if 0 < a < 0.1 else f"{a:g}s")
        return f"{self.metric}:{'+'.join(parts)}"


_PART = re.compile(r"^\s*(?P<num>\d+(?:\.\d+)?)\s*(?P<unit>%|[a-zA-Z]+)?\s*$")


def parse_tolerance(text: str) -> Tolerance:
    """Parse METRIC:LIMIT, e.g. 'step:2%', 'wall:10%', 'vram:512MiB', 'save:10%+0.5s' ('time' means wall)."""
    metric, sep, rest = text.partition(":")
    metric = metric.strip().lower()
    metric = ALIASES.get(metric, metric)
    if not sep or metric not in METRICS:
        raise ValueError(f"tolerance {text!r} must look like METRIC:LIMIT with METRIC one of "
                         f"{', '.join(METRICS)}, e.g. step:2% or vram:512MiB")
    ratio = absolute = None
    for part in rest.split("+"):
        m = _PART.match(part)
        if not m:
            raise ValueError(f"tolerance {text!r}: {part!r} is not a number with a unit (10%, 2s, 512MiB)")
        num, unit = float(m["num"]), (m["unit"] or "").lower()
        if not unit:  # a bare number: a ratio or an amount?
            n = m["num"].strip()
            raise ValueError(f"tolerance {text!r}: {n} what: {n}% or {n}{'MiB' if metric == 'vram' else 'ms'}? "
                             "give the unit")
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


Samples = tuple[tuple[float, ...], ...]  # per round, the metric's values in that round


@dataclass(frozen=True)
class Summary:
    """A variant's timed rounds, metric by metric: what a baseline stores and a comparison reads."""

    variant_id: str
    rounds: int
    samples: dict[str, Samples] = field(default_factory=dict)
    digest: str = ""
    outcome: str = "success"
    machine: Environment | None = None  # where the rounds ran, with the GPU's clocks at the last one
    recorded_at: float = 0.0  # when the last timed round started (seconds since the epoch)

    @property
    def metrics(self) -> list[str]:
        """The metrics this summary holds, in report order."""
        return sorted(self.samples, key=_metric_order)

    def round_means(self, metric: str) -> list[float]:
        """One value per round (the mean of the round's values): the units the statistics work on."""
        return [statistics.fmean(r) for r in self.samples.get(metric, ()) if r]

    def median(self, metric: str) -> float | None:
        """Median of the round means (for vram: the largest peak)."""
        means = self.round_means(metric)
        if not means:
            return None
        return max(means) if metric == "vram" else statistics.median(means)

    @property
    def wall_s(self) -> tuple[float, ...]:
        """Wall time per round."""
        return tuple(self.round_means("wall"))

    @property
    def step_s(self) -> tuple[float, ...]:
        """Every seconds-per-step value of every round."""
        return tuple(v for r in self.samples.get("step", ()) for v in r)

    @property
    def wall_median(self) -> float | None:
        """Median wall time."""
        return self.median("wall")

    @property
    def step_median(self) -> float | None:
        """Median of the rounds' mean seconds per step."""
        return self.median("step")

    @property
    def peak_vram_mib(self) -> float | None:
        """The largest peak VRAM of any round."""
        return self.median("vram")


def _metric_order(metric: str) -> tuple[int, str]:
    return METRICS.index(base_metric(metric)), metric


def _pass_keys(record: RunRecord) -> list[str]:
    """`sampling:<title>` per pass; a title that repeats in one run gets the node id too."""
    titles = [p.title for p in record.passes]
    return [f"sampling:{p.title}" if titles.count(p.title) == 1 else f"sampling:{p.title} #{p.node_id}"
            for p in record.passes]


def round_samples(record: RunRecord) -> dict[str, tuple[float, ...]]:
    """One round's values per metric."""
    out: dict[str, tuple[float, ...]] = {}
    steps: list[float] = []
    for key, p in zip(_pass_keys(record), record.passes, strict=True):
        intervals = p.step_intervals
        if intervals:
            steps.extend(intervals)
        elif p.seconds_per_step is not None:  # fewer than two progress frames: the pass's average
            steps.append(p.seconds_per_step)
        out[key] = (p.seconds,)
    if steps:
        out["step"] = tuple(steps)
    for phase in PHASE_METRICS:
        if phase in record.phases:
            out[phase] = (record.phases[phase],)
    if record.wall_s is not None:
        out["wall"] = (record.wall_s,)
    peak = record.vram.compared_mib if record.vram else None
    if peak is not None:
        out["vram"] = (peak,)
    return out


def summarise(variant_id: str, records: Sequence[RunRecord], digest: str = "") -> Summary:
    """Fold a variant's successful rounds into a Summary: timings from the timed rounds, VRAM peaks from
    every round (a warm-up's loading peak counts)."""
    timed = [r for r in records if not r.warmup and r.ok]
    samples: dict[str, list[tuple[float, ...]]] = {}
    for r in timed:
        for metric, values in round_samples(r).items():
            if metric != "vram":
                samples.setdefault(metric, []).append(values)
    peaks = [round_samples(r).get("vram") for r in records if r.ok]
    if any(peaks):
        samples["vram"] = [p for p in peaks if p]
    outcome = "success" if timed else (records[-1].outcome if records else "invalid")
    last = timed[-1] if timed else None
    return Summary(variant_id, len(timed), {k: tuple(v) for k, v in samples.items()}, digest, outcome,
                   last.environment if last else None, last.started_at if last else 0.0)


# --- Student's t, without scipy ---------------------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with df degrees of freedom."""
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return tail if t >= 0 else 1.0 - tail


@lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t (p > 0.5), by bisection on the survival function."""
    if df > 1e6:
        return statistics.NormalDist().inv_cdf(p)
    lo, hi = 0.0, 2.0
    while t_sf(hi, df) > 1.0 - p:
        hi *= 2.0
    for _ in range(100):
        mid = (lo + hi) / 2.0
        if t_sf(mid, df) > 1.0 - p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-9 * hi:
            break
    return (lo + hi) / 2.0


def _t_crit(confidence: float, df: float) -> float:
    # df rounded down (a wider interval, never a narrower one) so the cache serves Welch's fractional df: to 0.01
    # below 10, where the quantile moves fast, to a tenth below 100, to a whole number above
    step = 100.0 if df < 10.0 else 10.0 if df < 100.0 else 1.0
    return t_quantile(0.5 + confidence / 2.0, math.floor(df * step) / step)


@dataclass(frozen=True)
class Interval:
    """Welch's interval of the difference of means new - base, in the metric's unit."""

    diff: float
    low: float
    high: float
    se: float
    df: float
    t: float


def _variance(values: Sequence[float]) -> float:
    """The sample variance in floats (statistics.variance computes in exact fractions, 50 times slower)."""
    mean = math.fsum(values) / len(values)
    return math.fsum((x - mean) ** 2 for x in values) / (len(values) - 1)


def welch(new: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE,
          extra_var: float = 0.0) -> Interval:
    """Welch's t interval of mean(new) - mean(base); each side needs two values or more. `extra_var` adds a
    variance known from elsewhere (the two sessions' own offsets), counted with unlimited degrees of freedom."""
    n1, n2 = len(new), len(base)
    v1, v2 = _variance(new) / n1, _variance(base) / n2
    diff = statistics.fmean(new) - statistics.fmean(base)
    total = v1 + v2 + extra_var
    se = math.sqrt(total)
    # Welch-Satterthwaite degrees of freedom (no spread on either side: the pooled count)
    spread_df = v1 * v1 / (n1 - 1) + v2 * v2 / (n2 - 1)
    df = total * total / spread_df if spread_df > 0.0 else float(n1 + n2 - 2)
    t = _t_crit(confidence, min(df, 1e7))
    return Interval(diff, diff - t * se, diff + t * se, se, df, t)


# --- the rank interval: Hodges-Lehmann shift with its Mann-Whitney confidence interval ---------------------

@lru_cache(maxsize=512)
def mann_whitney_counts(n: int, m: int) -> tuple[int, ...]:
    """How many of the C(n+m, n) orderings of n new and m base values (no ties) give each U = 0 .. n*m, U being
    the number of (new, base) pairs where the new value is the larger: the exact null distribution of U.
    Recurrence on the largest value: a new one beats all m base values (U - m, with n - 1 new left), a base
    one beats none."""
    rows: list[tuple[int, ...]] = [(1,)] * (m + 1)  # i = 0 new values: one ordering, U = 0
    for i in range(1, n + 1):
        cur: list[tuple[int, ...]] = [(1,)]  # no base values: U = 0
        for j in range(1, m + 1):
            out = [0] * (i * j + 1)
            for u, c in enumerate(cur[j - 1]):
                out[u] += c
            for u, c in enumerate(rows[j]):
                out[u + j] += c
            cur.append(tuple(out))
        rows = cur
    return rows[m]


@lru_cache(maxsize=512)
def rank_depth(n: int, m: int, confidence: float = CONFIDENCE) -> int:
    """k of the rank interval [d(k), d(nm+1-k)] over the sorted n*m differences new - base: the largest k with
    P(U <= k - 1) <= (1 - confidence) / 2 under the null. 0 when no k reaches the confidence (3 vs 3 rounds:
    the most extreme ordering alone has probability 1/20 a side, so 90% is the most an interval can claim)."""
    counts = mann_whitney_counts(n, m)
    total = sum(counts)
    alpha = (1.0 - confidence) / 2.0
    k, below = 0, 0
    while k < len(counts) and (below + counts[k]) <= alpha * total * (1.0 + 1e-12):
        below += counts[k]
        k += 1
    return k


@dataclass(frozen=True)
class RankInterval:
    """The Hodges-Lehmann shift new - base (the median of all pairwise differences) with the distribution-free
    interval of a shift from the Mann-Whitney distribution (Hollander & Wolfe, Nonparametric Statistical
    Methods, 4.3): exact at any n, valid for any continuous noise, and one slow round moves it by one
    difference among n*m."""

    diff: float
    low: float
    high: float
    k: int  # the interval's depth into the sorted differences


def hodges_lehmann(new: Sequence[float], base: Sequence[float], confidence: float = CONFIDENCE
                   ) -> RankInterval | None:
    """The rank interval of new - base, or None where the sample sizes cannot reach the confidence."""
    k = rank_depth(len(new), len(base), confidence)
    if k == 0:
        return None
    diffs = sorted(x - y for x in new for y in base)
    return RankInterval(statistics.median(diffs), diffs[k - 1], diffs[len(diffs) - k], k)


# --- verdicts ---------------------------------------------------------------------------------------------

Status = Literal["ok", "regressed", "improved", "inconclusive", "noisy", "recorded", "insufficient", "new"]
# The overall verdict is the first of these that any metric has.
PRECEDENCE: tuple[Status, ...] = ("regressed", "inconclusive", "improved", "ok", "noisy", "recorded", "insufficient",
                                  "new")
# Statuses the interval decided on; `recorded` is one of them computed on a tier that does not judge timings.
JUDGED: tuple[Status, ...] = ("regressed", "inconclusive", "improved", "ok", "noisy")
# Statuses more rounds would not change (a regression settles only once its whole interval is past the tolerance).
SETTLED: tuple[Status, ...] = ("ok", "improved", "noisy", "recorded", "insufficient", "new")
NOT_JUDGED = "not judged on this tier"


def _pct(x: float | None, sign: bool = True) -> str:
    if x is None:
        return "-"
    return f"{x * 100:+.1f}%" if sign else f"{x * 100:.1f}%"


def metric_label(metric: str) -> str:
    """`sampling:high noise` -> `sampling (high noise)`."""
    name, _, rest = metric.partition(":")
    return f"{name} ({rest})" if rest else name


def _value(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v / 1024:.2f} GiB" if metric == "vram" else f"{v:.3f} s"


@dataclass(frozen=True)
class Check:
    """One metric compared against its baseline. Relative figures are fractions of the baseline's mean."""

    metric: str
    status: Status
    estimate: float | None = None  # relative change new/base - 1 (vram: of the peaks)
    ci_low: float | None = None  # 95% interval of the relative change (None for vram)
    ci_high: float | None = None
    mdc: float | None = None  # smallest change this run would catch 80% of the time (relative)
    value: float | None = None  # this run's mean of round means, what the estimate compares (vram: largest peak)
    base: float | None = None  # the baseline's
    tolerance: float | None = None  # the allowance used, relative (machine spread included)
    note: str = ""
    rounds: int = 0  # rounds on the new side
    base_rounds: int = 0
    max_rounds: int = 0  # the most rounds the session may run (0: not known); `noisy` could not be judged there

    @property
    def clear(self) -> bool:
        """A regression whose whole interval lies beyond the tolerance (vram: any regression)."""
        if self.status != "regressed":
            return False
        if self.ci_low is None:
            return True
        return self.tolerance is not None and self.ci_low > self.tolerance

    @property
    def change(self) -> str:
        """'4.3% slower', '2.0% faster', 'unchanged' (vram: 'more' / 'less')."""
        if self.estimate is None:
            return "unchanged" if self.status in ("ok", "recorded") else self.status
        if self.status == "ok" and (self.ci_low is None or self.ci_low <= 0.0 <= (self.ci_high or 0.0)):
            return "unchanged"
        more, less = ("more", "less") if self.metric == "vram" else ("slower", "faster")
        return f"{abs(self.estimate) * 100:.1f}% {more if self.estimate > 0 else less}"

    @property
    def words(self) -> str:
        """The change and what it means for this check's status, the one phrase the verdict's headline and this
        check's detail line both print: 'unchanged', '4.3% slower', '5.0% slower, within tolerance',
        '1.7% slower, inconclusive', '161.7% slower, not judged on this tier'. A change inside the tolerance
        says so, so that no headline reads as a complaint its detail line calls ok."""
        change = self.change
        if self.status == "ok":
            return change if change == "unchanged" else f"{change}, within tolerance"
        if self.status == "inconclusive":
            return f"{change}, inconclusive"
        if self.status == "recorded":
            return f"{change}, {NOT_JUDGED}"
        if self.status == "noisy":
            return f"{change}, too noisy to judge at {max(self.rounds, self.max_rounds)} rounds"
        return change

    def headline(self) -> str:
        """A few words for the verdict's first line: 'step 4.3% slower (95% CI 3.9 to 4.8%)'."""
        head = f"{metric_label(self.metric)} {self.words}"
        if self.status in ("regressed", "improved", "inconclusive", "noisy") and self.ci_low is not None:
            head += f" (95% CI {self.ci_low * 100:.1f} to {_pct(self.ci_high, sign=False)})"
        return head

    def describe(self) -> str:
        """One line: status, change, interval, tolerance, the values and rounds, and what could be seen."""
        name = metric_label(self.metric)
        if self.status in ("insufficient", "new"):
            return f"{name}: {self.status} {self.note}".rstrip()
        unchanged = self.change == "unchanged" and self.estimate is not None
        parts = [self.words.replace("unchanged", f"unchanged ({_pct(self.estimate)})", 1) if unchanged
                 else self.words]
        if self.ci_low is not None:
            parts.append(f"95% CI {_pct(self.ci_low)} to {_pct(self.ci_high)}")
        if self.tolerance is not None:
            parts.append(f"tolerance {_pct(self.tolerance, sign=False)}")
        sides = f"{_value(self.metric, self.value)} vs {_value(self.metric, self.base)}"
        if self.metric != "vram":
            sides += f", {self.rounds} vs {self.base_rounds} rounds"
        parts.append(sides)
        if self.mdc is not None:
            parts.append(f"could detect >= {_pct(self.mdc, sign=False)}")
        return f"{name}: {self.status}, {'; '.join(parts)} {self.note}".rstrip()


@dataclass(frozen=True)
class Verdict:
    """A variant's Summary judged against its baseline (or B against A), metric by metric."""

    variant_id: str
    status: Status
    checks: tuple[Check, ...] = field(default_factory=tuple)
    label: str = "vs baseline"  # what was compared: 'vs baseline', 'B vs A'
    notes: tuple[str, ...] = ()

    @property
    def failed(self) -> bool:
        """True when the test should fail."""
        return self.status == "regressed"

    @property
    def decided(self) -> bool:
        """Whether more rounds are pointless: every metric settled (ok, improved, too noisy to judge at the
        maximum rounds, recorded), or a regression beyond doubt (its whole interval past the tolerance). False
        while a metric is inconclusive, while insufficient or new, and while a regression's interval still
        reaches into the tolerance: the remaining rounds confirm it (see the module's docstring)."""
        return self.decided_on(None)

    def decided_on(self, steer: Collection[str] | None) -> bool:
        """`decided`, looking only at the metrics named in `steer` (`sampling` covers every pass), or all."""
        if any(c.clear for c in self.checks):
            return True
        if self.status in ("insufficient", "new"):
            return False
        if steer is None or not self.checks:
            return self.status in SETTLED
        return all(c.status in SETTLED for c in self.checks if c.metric in steer or base_metric(c.metric) in steer)

    def check(self, metric: str) -> Check | None:
        """The check of one metric, if any."""
        return next((c for c in self.checks if c.metric == metric), None)

    @property
    def headline(self) -> str:
        """'step 4.3% slower (95% CI 3.9 to 4.8%), sampling (high noise) 4.1% slower, 8 others unchanged'."""
        judged = [c for c in self.checks if c.status in JUDGED]
        loud = sorted((c for c in judged if c.words != "unchanged"), key=lambda c: PRECEDENCE.index(c.status))
        quiet = [c for c in judged if c not in loud]
        words = [c.headline() for c in loud]
        if quiet:
            words.append(f"{metric_label(quiet[0].metric)} unchanged" if len(quiet) == 1
                         else f"{len(quiet)} others unchanged" if loud else f"{len(quiet)} metrics unchanged")
        recorded = [c for c in self.checks if c.status == "recorded"]
        if recorded:  # each has its detail line; the headline counts them
            words.append(f"{metric_label(recorded[0].metric)} {recorded[0].words}" if len(recorded) == 1
                         else f"{len(recorded)} timings recorded, {NOT_JUDGED}")
        return ", ".join(words)

    @property
    def detection(self) -> str:
        """What this run could have seen on its steadiest metric: 'could detect >= 1.2% on step with 3 rounds'."""
        c = self.check("step") or next((c for c in self.checks if c.mdc is not None), None)
        if c is None or c.mdc is None:
            return ""
        return f"could detect >= {c.mdc * 100:.1f}% on {metric_label(c.metric)} with {c.rounds} rounds"

    @property
    def message(self) -> str:
        """The verdict and its headline, then one line per metric and the notes."""
        head = f"{self.variant_id}: {self.status} ({self.label})"
        if self.headline:
            head += f": {self.headline}"
        shown = [c for c in self.checks if not (c.value == 0.0 and c.base == 0.0)]  # phases cached on both sides
        lines = [head, *("  " + c.describe() for c in shown), *("  " + n for n in self.notes)]
        if self.detection:
            lines.append("  " + self.detection)
        return "\n".join(lines)


Method = Literal["rank", "welch"]
_Z = statistics.NormalDist().inv_cdf(0.5 + CONFIDENCE / 2.0)
_Z_POWER = statistics.NormalDist().inv_cdf(POWER)


def _interval(new: Sequence[float], base: Sequence[float], extra_var: float, method: Method
              ) -> tuple[Interval, str]:
    """The interval the verdict reads, and a note when it is Welch's where a rank interval was asked for. The rank
    interval's width is widened by the known session variance in quadrature, its se is what a normal interval of
    that width would have."""
    rank = hodges_lehmann(new, base) if method == "rank" else None
    if rank is None:
        note = "" if method == "welch" else (f"(Welch's interval: {len(new)} vs {len(base)} rounds are too few for "
                                             f"a {CONFIDENCE:.0%} rank interval)")
        return welch(new, base, extra_var=extra_var), note
    below = math.hypot(rank.diff - rank.low, _Z * math.sqrt(extra_var))
    above = math.hypot(rank.high - rank.diff, _Z * math.sqrt(extra_var))
    return Interval(rank.diff, rank.diff - below, rank.diff + above, (below + above) / (2.0 * _Z), math.inf, _Z), ""


def robust_scale(*sides: Sequence[float]) -> float:
    """1.4826 times the median absolute deviation of each side from its own median, pooled: the standard
    deviation of round noise, untouched by one slow round."""
    resid = [abs(x - statistics.median(side)) for side in sides if side for x in side]
    return 1.4826 * statistics.median(resid) if resid else 0.0


def resolution(new: Sequence[float], base: Sequence[float], rounds: int, extra_var: float = 0.0) -> float:
    """The smallest allowance an unchanged metric would be judged ok within, 80% of the time, with `rounds` new
    rounds against this baseline, at the round noise both sides show (robust_scale): (z_0.975 + z_0.8) standard
    errors. A metric whose resolution at the maximum rounds exceeds its allowance cannot be decided there."""
    scale = robust_scale(new, base)
    return (_Z + _Z_POWER) * math.sqrt(scale * scale * (1.0 / rounds + 1.0 / len(base)) + extra_var)


def _judge(metric: str, new: Summary, base: Summary, tol: Tolerance, spread: float, session: float,
           method: Method = "rank", max_rounds: int | None = None) -> Check:
    new_means, base_means = new.round_means(metric), base.round_means(metric)
    value, ref = new.median(metric), base.median(metric)
    if not base_means:
        return Check(metric, "new", value=value, note="(not in the baseline)", rounds=len(new_means))
    if not new_means:
        return Check(metric, "insufficient", base=ref, note="(not measured in this run)",
                     base_rounds=len(base_means))
    if metric == "vram":  # a peak: the largest of each side, against the tolerance alone
        assert value is not None
        assert ref is not None
        allowance = tol.allowance(ref) + spread * ref
        rel = allowance / ref if ref else None
        est = value / ref - 1.0 if ref else None
        status: Status = ("regressed" if value - ref > allowance else
                          "improved" if ref - value > allowance else "ok")
        return Check(metric, status, est, value=value, base=ref, tolerance=rel, rounds=len(new_means),
                     base_rounds=len(base_means))
    n, nb = len(new_means), len(base_means)
    if n < MIN_ROUNDS or nb < MIN_ROUNDS:
        return Check(metric, "insufficient", value=value, base=ref, rounds=n, base_rounds=nb,
                     note=f"(rounds {n} vs {nb}: {MIN_ROUNDS} a side are needed for a spread)")
    # The reference level: the baseline's mean for Welch's interval (a difference of means), its median for the
    # rank interval (a shift of the whole distribution).
    center = statistics.fmean if method == "welch" else statistics.median
    level = center(base_means)
    allowance = tol.allowance(level) + spread * level
    extra = 2.0 * (session * level) ** 2
    iv, note = _interval(new_means, base_means, extra, method)
    if iv.low > 0.0 and iv.diff > allowance:
        status = "regressed"
    elif iv.high < 0.0 and iv.diff < -allowance:
        status = "improved"
    elif iv.high <= allowance:
        status = "ok"
    elif max_rounds is not None and resolution(new_means, base_means, max(n, max_rounds), extra) > allowance:
        status = "noisy"  # more rounds, up to the maximum, would not settle it: it passes, visibly
        need = resolution(new_means, base_means, max(n, max_rounds), extra)
        note = (f"(at {max(n, max_rounds)} rounds the round noise needs an allowance of "
                f"{_pct(need / level, sign=False)}) {note}").rstrip() if level > 0.0 else note
    else:
        status = "inconclusive"
    mdc = max(allowance, iv.t * iv.se) + _Z_POWER * iv.se
    if level <= 0.0:  # a phase cached to nothing: no relative figures
        note = f"(mean {statistics.fmean(new_means):.3f} s vs {statistics.fmean(base_means):.3f} s)"
        return Check(metric, status, value=value, base=ref, note=note, rounds=n, base_rounds=nb)
    # 'now' is the baseline's level moved by the estimated change, so that 'baseline', 'now' and 'change' agree
    # (Welch: the new mean; rank: the baseline's median plus the shift, which a bimodal phase can put far from the
    # new rounds' own median)
    return Check(metric, status, iv.diff / level, iv.low / level, iv.high / level, mdc / level,
                 level + iv.diff, level, allowance / level, note=note, rounds=n, base_rounds=nb)


def compare(summary: Summary, baseline: Summary | None, tols: Mapping[str, Tolerance], *,
            machine_spread: float | Mapping[str, float] = 0.0, session_spread: Mapping[str, float] | None = None,
            label: str = "vs baseline", judge_timings: bool = True, method: Method = "rank",
            max_rounds: int | None = None) -> Verdict:
    """Judge a Summary against its baseline, every metric that either holds.

    `machine_spread`: when the baseline comes from another physical GPU of the same model, the
    machine-to-machine spread widens each band: a fraction for every time metric, or one per metric
    with '*' for the rest (MACHINE_SPREAD holds the measured defaults).
    `session_spread`: per metric, the standard deviation of a whole session's mean relative to it, as the
    history of recorded sessions shows it (baselines.session_spread); it widens the intervals, since the
    baseline's session and this one each carry their own offset.
    `label` names the comparison in the message: 'vs baseline', or 'B vs A' for two environments in one
    session (then `baseline` is A's summary).
    `judge_timings=False` (a tier row's `judge_timings = false`, the cpu tier's default): every timing is
    measured and compared as usual but its status is `recorded`, which passes; only vram is judged.
    """
    if baseline is None:
        return Verdict(summary.variant_id, "new", label=label)
    metrics = sorted(set(summary.samples) | set(baseline.samples), key=_metric_order)
    defaults = {t.metric: t for t in map(parse_tolerance, DEFAULT_TOLERANCES)}

    def spread(metric: str) -> float:
        if isinstance(machine_spread, Mapping):
            return machine_spread.get(base_metric(metric), machine_spread.get("*", 0.0))
        return 0.0 if metric == "vram" else machine_spread

    sessions = {m: v for m, v in (session_spread or {}).items() if v > 0.0 and m != "vram"}
    checks = tuple(_judge(m, summary, baseline, tols.get(base_metric(m)) or defaults[base_metric(m)], spread(m),
                          sessions.get(m, 0.0), method, max_rounds) for m in metrics)
    if max_rounds is not None:
        checks = tuple(replace(c, max_rounds=max_rounds) for c in checks)
    if not judge_timings:
        checks = tuple(replace(c, status="recorded", note=c.note if c.status != "noisy" else "")
                       if c.metric != "vram" and c.status in JUDGED else c for c in checks)
    statuses = {c.status for c in checks}
    status: Status = next((s for s in PRECEDENCE if s in statuses), "new")
    notes: tuple[str, ...] = ()
    widened: dict[float, list[str]] = {}
    for m in metrics:
        if spread(m) and not m.startswith("sampling:"):
            widened.setdefault(spread(m), []).append(metric_label(m))
    if widened:
        text = "; ".join(f"{', '.join(names)} {value * 100:g}%" for value, names in widened.items())
        notes = (f"the baseline comes from another GPU of this model: bands widened by the machine-to-machine "
                 f"spread ({text}); record this GPU's own baseline with --wan22-update-baselines",)
    judged = [m for m in metrics if m in sessions and m in baseline.samples]
    if judged:
        text = ", ".join(f"{metric_label(m)} {sessions[m] * 100:.1f}%" for m in judged)
        notes += (f"intervals include the session-to-session spread the recorded sessions show ({text})",)
    return Verdict(summary.variant_id, status, checks, label, notes)


def more_rounds(verdict: Verdict, done: int, min_rounds: int, max_rounds: int,
                steer: Collection[str] | None = None) -> bool:
    """Whether to run another timed round: always up to the minimum, then until the verdict is decided (on the
    metrics in `steer`, or all) or the maximum is reached. A baseline being recorded (`new`) runs to the
    maximum: its precision is what later comparisons can see."""
    if done < min_rounds:
        return True
    return done < max_rounds and not verdict.decided_on(steer)


# --- history ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChangePoint:
    """A level shift in a series: the first index of the new level, the means either side, and its p-value."""

    index: int
    before: float
    after: float
    p_value: float

    @property
    def change(self) -> float:
        """Relative change after/before - 1."""
        return self.after / self.before - 1.0 if self.before else math.inf


def change_points(series: Sequence[float], *, min_size: int = 3, alpha: float = 0.01,
                  min_change: float = 0.0) -> list[ChangePoint]:
    """Level shifts in a series by binary segmentation: in each segment the split with the largest two-sample
    t statistic, kept when its p-value, Bonferroni-corrected for the splits tried, is under alpha and the
    shift is at least `min_change` (relative); then both halves are searched again."""
    found: list[ChangePoint] = []

    def search(lo: int, hi: int) -> None:
        best: tuple[float, int] | None = None
        splits = range(lo + min_size, hi - min_size + 1)
        for k in splits:
            t = _pooled_t(series[lo:k], series[k:hi])
            if best is None or t > best[0]:
                best = (t, k)
        if best is None:
            return
        t, k = best
        p = min(1.0, 2.0 * t_sf(t, hi - lo - 2) * len(splits)) if math.isfinite(t) else 0.0
        before, after = statistics.fmean(series[lo:k]), statistics.fmean(series[k:hi])
        if p < alpha and (not before or abs(after / before - 1.0) >= min_change):
            found.append(ChangePoint(k, before, after, p))
            search(lo, k)
            search(k, hi)

    search(0, len(series))
    return sorted(found, key=lambda c: c.index)


def _pooled_t(a: Sequence[float], b: Sequence[float]) -> float:
    """|t| of the pooled-variance two-sample test (inf for a shift with no spread)."""
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    ss = sum((x - ma) ** 2 for x in a) + sum((x - mb) ** 2 for x in b)
    df = len(a) + len(b) - 2
    se = math.sqrt(ss / df * (1 / len(a) + 1 / len(b))) if df > 0 else 0.0
    if se == 0.0:
        return math.inf if ma != mb else 0.0
    return abs(ma - mb) / se

