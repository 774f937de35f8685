"""Simulated sessions through the project's own `compare` and `more_rounds`: false alarms, power and rounds spent.

A session records a baseline at the maximum rounds, then reruns with a slowdown (0 for an unchanged rerun) and
the adaptive rounds, judged exactly as `wan22_run` judges it. Noise is drawn per round, per metric, relative
(log-normal), with the figures of real H200 sessions (shared/reference/H200.md): round to round step 0.23%,
sampling passes 0.25%, wall 1.25%, decode 0.8%, save 9.6% (disk writes), a GPU-wide part shared by the
GPU-bound metrics of a round. On top of that, per scenario:

* `bursts`: one round in ten (each round with probability 0.1) is 5-10% slower on every GPU-bound metric (a
  neighbour's burst, a pause);
* `drift`: each session carries an offset of its own, sd 0.14% on step and sampling, so that two sessions differ
  by 0.2% (sd) as on one H200; 1% on wall (it moved up to 2.6% between unchanged sessions), 0.5% on decode, 3%
  on save. `drift_scale` multiplies them (2: step sessions 0.28% apart, the pessimistic reading).

A slowdown of s is injected as a GPU stall inside the sampler: step and sampling s slower, wall 0.7 s (sampling is
about 70% of the wall), the other phases unchanged.

`python -m tests.unit.sim_sessions [sessions]` prints the table the docstring of test_compare quotes.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pytest_wan22.compare import Method, Summary, Tolerance, compare, more_rounds, tolerances

# level (s), round-to-round sd, session-to-session sd, slowed by a burst, share of an injected slowdown
METRICS: dict[str, tuple[float, float, float, bool, float]] = {
    "step": (2.68, 0.0023, 0.0014, True, 1.0),
    "sampling:high noise": (5.40, 0.0025, 0.0014, True, 1.0),
    "sampling:low noise": (5.40, 0.0025, 0.0014, True, 1.0),
    "wall": (15.0, 0.0125, 0.01, True, 0.7),
    "decode": (2.0, 0.008, 0.005, True, 0.0),
    "save": (2.6, 0.096, 0.03, False, 0.0),
}
GPU_SHARE = 0.7  # of the step and sampling round noise, the part the GPU-bound metrics of a round share


@dataclass(frozen=True)
class Scenario:
    """What the rounds of a session suffer besides Gaussian round noise."""

    name: str
    bursts: bool = False
    drift: float = 0.0  # times the session-to-session offsets of METRICS


SCENARIOS = (Scenario("gaussian"), Scenario("bursts", bursts=True), Scenario("drift", drift=1.0),
             Scenario("bursts+drift", bursts=True, drift=1.0))
PESSIMISTIC = Scenario("drift x2", drift=2.0)


def rounds_of(rng: np.random.Generator, scenario: Scenario, n: int, shift: float = 0.0
              ) -> dict[str, list[float]]:
    """n rounds of one session: per metric, one value per round."""
    gpu = rng.normal(0.0, 1.0, n)
    session = rng.normal(0.0, 1.0)  # the session's offset, shared by the GPU-bound metrics
    burst = np.where(rng.random(n) < 0.1, rng.uniform(0.05, 0.10, n), 0.0) if scenario.bursts else np.zeros(n)
    out: dict[str, list[float]] = {}
    for name, (level, sd, session_sd, bursty, share) in METRICS.items():
        own = rng.normal(0.0, 1.0, n)
        noise = sd * (GPU_SHARE * gpu + np.sqrt(1.0 - GPU_SHARE**2) * own)
        offset = scenario.drift * session_sd * (session if bursty else rng.normal(0.0, 1.0))
        values = level * (1.0 + shift * share) * np.exp(noise + offset) * (1.0 + (burst if bursty else 0.0))
        out[name] = values.tolist()
    return out


def summary(values: Mapping[str, list[float]], n: int) -> Summary:
    """The first n rounds as a Summary (one value per round per metric)."""
    return Summary("v", n, {k: tuple((v,) for v in vs[:n]) for k, vs in values.items()})


@dataclass(frozen=True)
class Outcome:
    """Share of sessions that failed, that failed on step or sampling, and the mean timed rounds of a session."""

    failed: float
    failed_gated: float
    rounds: float


def simulate(scenario: Scenario, shift: float, sessions: int, seed: int, *, tols: Mapping[str, Tolerance],
             method: Method | None = None, base_rounds: int = 10, min_rounds: int = 3, max_rounds: int = 10,
             steer: Collection[str] | None = None, noisy: bool = True) -> Outcome:
    """Sessions of a baseline (base_rounds) and a rerun (min_rounds..max_rounds, adaptive) each; `method` None is
    compare's default, `noisy` False hides the maximum rounds from compare (every metric then holds rounds)."""
    rng = np.random.default_rng(seed)
    failed = gated = total = 0
    for _ in range(sessions):
        base = summary(rounds_of(rng, scenario, base_rounds), base_rounds)
        new = rounds_of(rng, scenario, max_rounds, shift)
        done = 0
        while True:
            done += 1
            verdict = compare(summary(new, done), base, tols, max_rounds=max_rounds if noisy else None,
                              **({"method": method} if method is not None else {}))
            if not more_rounds(verdict, done, min_rounds, max_rounds, steer):
                break
        total += done
        failed += verdict.failed
        gated += any(c.status == "regressed" and c.metric.split(":")[0] in ("step", "sampling")
                     for c in verdict.checks)
    return Outcome(failed / sessions, gated / sessions, total / sessions)


BEFORE = tolerances(["step:1.3%+5ms", "sampling:2%+20ms", "save:15%+0.3s"])  # the defaults the table replaced


def _tols(step: str) -> dict[str, Tolerance]:
    return tolerances([f"step:{step}", f"sampling:{step}", "save:25%+0.3s"])


CONFIGS: dict[str, dict[str, Any]] = {
    "before: Welch, step 1.3%, every metric holds rounds": dict(method="welch", noisy=False, tols=BEFORE),
    "rank, step 1.3%, noisy metrics hold no rounds": dict(method="rank", tols=BEFORE),
    "rank, step 0.5%": dict(method="rank", tols=_tols("0.5%")),
    "rank, step 0.6%": dict(method="rank", tols=_tols("0.6%")),
    "today: rank, step 0.7%": dict(method="rank", tols=_tols("0.7%")),
    "rank, step 0.8%": dict(method="rank", tols=_tols("0.8%")),
    "rank, step 0.6%, only step and sampling hold rounds": dict(method="rank", tols=_tols("0.6%"),
                                                                steer=("step", "sampling")),
    "Welch, step 0.6%": dict(method="welch", tols=_tols("0.6%")),
    "rank, step 0.6%, 5-round baseline, 3 to 6 rounds": dict(method="rank", tols=_tols("0.6%"), base_rounds=5,
                                                             max_rounds=6),
    "rank, step 1.3%, 5-round baseline, 3 to 6 rounds": dict(method="rank", tols=BEFORE, base_rounds=5,
                                                             max_rounds=6),
}


def _cell(job: tuple[str, Mapping[str, Any], Scenario, float, int]) -> tuple[str, str, float, Outcome]:
    label, kw, scenario, shift, sessions = job
    return label, scenario.name, shift, simulate(scenario, shift, sessions, seed=20261204, **kw)


def table(configs: Mapping[str, Mapping[str, Any]], sessions: int,
          scenarios: Sequence[Scenario] = (*SCENARIOS, PESSIMISTIC),
          shifts: Sequence[float] = (0.0, 0.01, 0.02), processes: int = 1) -> list[str]:
    """One line per configuration and scenario: failed % (of them on step or sampling) and mean rounds, per
    shift."""
    jobs = [(label, kw, sc, shift, sessions) for label, kw in configs.items() for sc in scenarios for shift in shifts]
    if processes > 1:
        import multiprocessing

        with multiprocessing.Pool(processes) as pool:
            results = pool.map(_cell, jobs)
    else:
        results = [_cell(j) for j in jobs]
    cells = {(label, sc, shift): o for label, sc, shift, o in results}
    lines = []
    for label in configs:
        for sc in scenarios:
            out = [cells[label, sc.name, s] for s in shifts]
            row = [f"{o.failed * 100:5.1f}% ({o.failed_gated * 100:4.1f}%) {o.rounds:4.2f} r" for o in out]
            lines.append(f"{label:58s} | {sc.name:13s} | " + " | ".join(row))
    return lines


def main(argv: list[str]) -> None:
    sessions = int(argv[0]) if argv else 1000
    processes = int(argv[1]) if len(argv) > 1 else 1
    print(f"{sessions} sessions per cell; failed % (on step or sampling %) and mean timed rounds, for a slowdown of "
          "0, 1%, 2%")
    for line in table(CONFIGS, sessions, processes=processes):
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
