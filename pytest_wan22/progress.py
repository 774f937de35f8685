"""Live progress of a variant's rounds: one status line on a terminal, plain lines in CI, a line per round with -q.

Fed by the runner's event stream (``RunContext.on_event``) and by the VRAM monitor; writes through a
:class:`Terminal`, which the pytest layer binds to the real terminal (not to pytest's captured stdout).

Modes:

* ``live``: one status line below pytest's current line, redrawn in place a few times a second and erased when
  the round ends, so pytest's own output is left as it was;
* ``lines``: the same text as a plain line every few seconds (CI logs, no TTY), plus one line per round;
* ``rounds``: one line per round only (``-q``);
* ``off``: nothing.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from .client import Event
from .records import RunRecord
from .workflows import node_titles

Mode = Literal["live", "lines", "rounds", "off"]
MODES: tuple[Mode, ...] = ("live", "lines", "rounds", "off")

LIVE_REFRESH_S = 0.25
PLAIN_INTERVAL_S = 5.0
PREFIX = "wan22"


class Terminal(Protocol):
    """Where progress goes: raw text to the terminal, and the column pytest's own output has reached."""

    def write(self, text: str) -> None: ...
    def column(self) -> int: ...
    def width(self) -> int: ...


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _gib(mib: float | None) -> str:
    return "-" if mib is None else f"{mib / 1024:.1f}"


@dataclass
class _Round:
    """What is known of the round in flight."""

    variant_id: str
    index: int
    rounds: int | None
    warmup: bool
    titles: Mapping[str, tuple[str, str]]
    started: float
    node: str = ""
    step: int = 0
    steps: int = 0
    step_times: tuple[float, ...] = ()  # event times of the current node's progress frames
    vram: Callable[[], tuple[float | None, float | None]] | None = None
    side: str = ""


def round_label(index: int, rounds: int | None, warmup: bool, side: str = "") -> str:
    """'round 2/4' (1-based over the side's runs, as the summary's rounds table numbers them), '(warm-up)' added
    for warm-up rounds, the side first in an A/B session: '[A] round 1 (warm-up)'."""
    total = f"/{rounds}" if rounds else ""
    return f"{f'[{side}] ' if side else ''}round {index + 1}{total}{' (warm-up)' if warmup else ''}"


def _shorten(text: str, most: int, *, middle: bool = False) -> str:
    """`text` in at most `most` characters, '...' where it was cut (at the end, or in the middle)."""
    if len(text) <= most:
        return text
    if most < 6:
        return ""
    if not middle:
        return text[: most - 3] + "..."
    head = (most - 3 + 1) // 2
    return text[:head] + "..." + text[len(text) - (most - 3 - head):]


def fit(width: int, variant: str, label: str, title: str, numbers: Sequence[str],
        compact: Sequence[str] | None = None) -> str:
    """A progress line in `width` columns. The numbers keep every digit: the node title is shortened (or dropped)
    first, then the variant's name (in the middle), then the numbers take their compact form and the variant
    shrinks further, down to nothing (the line then starts with the round); only a line that still does not fit
    (a terminal narrower than about 75 columns) is cut at the end."""
    def line(v: str, t: str, nums: Sequence[str]) -> str:
        return " | ".join(p for p in (f"{PREFIX} {v}" if v else "", label, t, *nums) if p)

    text = ""
    for nums, shortest in ((numbers, 16), (compact or numbers, 0)):
        t, v = title, variant
        over = len(line(v, t, nums)) - width
        if over > 0 and t:
            t = _shorten(t, len(t) - over) if len(t) - over >= 10 else ""
            over = len(line(v, t, nums)) - width
        if over > 0:
            v = _shorten(v, max(shortest, len(v) - over), middle=True)
        text = line(v, t, nums)
        if len(text) <= width:
            return text
    return text[:width]


class Progress:
    """Shows where a session is: variant, round, node, step n/N, s/step, VRAM now and peak, elapsed.

    Event callbacks come from the thread that runs the prompt; a daemon thread redraws between events, so the
    elapsed time moves during a long model load too. Every write goes through one lock.
    """

    def __init__(self, terminal: Terminal | None, mode: Mode = "off", *, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, ticker: bool = True) -> None:
        self.terminal = terminal
        self.mode: Mode = mode if terminal is not None else "off"
        self.interval = interval if interval is not None else (LIVE_REFRESH_S if mode == "live"
                                                              else PLAIN_INTERVAL_S)
        self.clock = clock
        self.ticker = ticker
        self._lock = threading.RLock()
        self._round: _Round | None = None
        self._vram: Callable[[], tuple[float | None, float | None]] | None = None
        self._drawn = ""  # live mode: the text on screen ("" when no line is shown)
        self._column = 0
        self._totals: dict[str, int | None] = {}
        self._own_line = False  # our last plain line ended a line pytest does not know about
        self._last = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def active(self) -> bool:
        """True unless the mode is off."""
        return self.mode != "off"

    # -- what the fixture calls --

    def track(self, factory: Callable[[], Any] | None) -> Callable[[], Any] | None:
        """Wrap a VRAM monitor factory so that the live line can read the monitor's latest sample."""
        if factory is None or not self.active:
            return factory

        def make() -> Any:
            monitor = factory()
            latest = getattr(monitor, "latest", None)
            with self._lock:
                self._vram = latest if callable(latest) else None
                if self._round is not None:
                    self._round.vram = self._vram
            return monitor

        return make

    @contextlib.contextmanager
    def round(self, variant_id: str, index: int, rounds: int | None, *, warmup: bool,
              prompt: Mapping[str, Any], side: str = "") -> Iterator[None]:
        """Show the round while the block runs; the live line is erased at the end whatever happened. `side`
        names the A/B side ('A' or 'B')."""
        if not self.active:
            yield
            return
        with self._lock:
            self._totals[variant_id] = rounds
            self._round = _Round(variant_id, index, rounds, warmup, node_titles(prompt), self.clock(),
                                 vram=self._vram, side=side)
            self._column = 0 if self._own_line else self._safe(lambda t: t.column(), 0)
            self._last = self._round.started  # lines mode: the first line after one interval
        if self.mode in ("live", "lines") and self.ticker:
            self._stop.clear()
            self._thread = threading.Thread(target=self._tick, name="wan22-progress", daemon=True)
            self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=2.0)
                self._thread = None
            with self._lock:
                self._erase()
                self._round = None
                self._vram = None

    def test_started(self) -> None:
        """Pytest wrote a new test's line: the column it reports is right again."""
        with self._lock:
            self._own_line = False

    def on_event(self, event: Event) -> None:
        """Take one websocket event of the running prompt (RunContext.on_event)."""
        with self._lock:
            r = self._round
            if r is None:
                return
            data = event.data
            if event.type == "executing" and data.get("node") is not None:
                node = str(data["node"])
                if node != r.node:
                    r.node, r.step, r.steps, r.step_times = node, 0, 0, ()
            elif event.type == "progress":
                node = str(data.get("node", r.node))
                step, steps = int(data.get("value", 0) or 0), int(data.get("max", 0) or 0)
                if node != r.node or steps != r.steps or step < r.step:  # another node, or a new bar of it
                    r.node, r.step_times = node, ()
                r.step, r.steps = step, steps
                r.step_times = (*r.step_times, event.t)
            else:
                return
            if self.mode == "live":
                self._draw()  # every step shows; _draw skips a text that is already on screen

    def finished(self, record: RunRecord, rounds: int | None = None) -> None:
        """One line for a finished round (lines and rounds modes)."""
        if self.mode not in ("lines", "rounds"):
            return
        with self._lock:
            self._line(round_line(record, rounds or self._totals.get(record.variant_id), self._width()))

    # -- text --

    def status(self, width: int | None = None) -> str:
        """The status line for the round in flight ('' when none), in `width` columns when given (the node title
        and the variant's name are shortened, never the numbers)."""
        r = self._round
        if r is None:
            return ""
        title = r.titles.get(r.node, ("", r.node))[1] if r.node else ""
        full: list[str] = []
        compact: list[str] = []
        if r.steps:
            per = seconds_per_step(r.step_times)
            full.append(f"step {r.step}/{r.steps}")
            if per is not None:
                full.append(f"{per:.2f} s/step")
            compact.append(f"step {r.step}/{r.steps}" + (f" {per:.2f} s/step" if per is not None else ""))
        if r.vram is not None:
            try:
                now, peak = r.vram()
            except Exception:  # a display must never fail a run
                now = peak = None
            if now is not None:
                full.append(f"VRAM {_gib(now)} GiB (peak {_gib(peak)})")
                compact.append(f"VRAM {_gib(now)}/{_gib(peak)} GiB")
        clock = _clock(self.clock() - r.started)
        label = round_label(r.index, r.rounds, r.warmup, r.side)
        if width is None:
            return " | ".join(p for p in (f"{PREFIX} {r.variant_id}", label, title, *full, clock) if p)
        return fit(width, r.variant_id, label, title, [*full, clock], [*compact, clock])

    def _width(self) -> int:
        """The columns a line may take: the terminal's less one (80 columns when it cannot tell)."""
        return max(20, int(self._safe(lambda t: t.width(), 80))) - 1

    # -- drawing --

    def _tick(self) -> None:
        while not self._stop.wait(LIVE_REFRESH_S):
            self.tick()

    def tick(self) -> None:
        """Redraw the live line, or write a plain line when the interval has passed (the redraw thread's step)."""
        with self._lock:
            if self._round is None:
                return
            if self.mode == "live":
                self._draw()
            elif self.mode == "lines" and self.clock() - self._last >= self.interval:
                self._line(self.status(self._width()))

    def _draw(self) -> None:
        """Live mode: the status on the line below pytest's, then the cursor back where pytest left it."""
        text = self.status(self._width())
        self._last = self.clock()
        if text == self._drawn:
            return
        self._drawn = text
        self._write(f"\n\r{text}\x1b[K\x1b[1A\r{self._forward()}")

    def _erase(self) -> None:
        if self.mode == "live" and self._drawn:
            self._write(f"\n\r\x1b[2K\x1b[1A\r{self._forward()}")
            self._drawn = ""

    def _forward(self) -> str:
        return f"\x1b[{self._column}C" if self._column > 0 else ""

    def _line(self, text: str) -> None:
        """A plain line; the first one after pytest's partial line starts on a line of its own."""
        if not text:
            return
        lead = "\n" if not self._own_line and self._safe(lambda t: t.column(), 0) > 0 else ""
        self._own_line = True
        self._last = self.clock()
        self._write(f"{lead}{text}\n")

    def _write(self, text: str) -> None:
        if self.terminal is not None:
            self._safe(lambda t: t.write(text), None)

    def _safe(self, call: Callable[[Terminal], Any], default: Any) -> Any:
        try:
            return call(self.terminal) if self.terminal is not None else default
        except Exception:  # a closed or broken terminal: progress goes quiet, the run goes on
            return default


def seconds_per_step(times: Sequence[float]) -> float | None:
    """Mean gap between consecutive progress frames of one node (None before the second frame)."""
    if len(times) < 2:
        return None
    return (times[-1] - times[0]) / (len(times) - 1)


def round_line(record: RunRecord, rounds: int | None = None, width: int | None = None) -> str:
    """One line for a finished round: outcome, wall time, s/step per pass, peak VRAM (in `width` columns when
    given: the variant's name is shortened, never the numbers)."""
    label = f"{round_label(record.round, rounds, record.warmup, record.side)}: {record.outcome}"
    full: list[str] = []
    compact: list[str] = []
    if record.wall_s is not None:
        full.append(f"{record.wall_s:.2f} s")
        compact.append(full[-1])
    steps = [p.seconds_per_step for p in record.passes if p.seconds_per_step is not None]
    if steps:
        full.append(" / ".join(f"{s:.3f}" for s in steps) + " s/step")
        compact.append("/".join(f"{s:.3f}" for s in steps) + " s/step")
    peak = record.vram.peak_mib if record.vram and record.vram.available else None
    if peak is not None:
        full.append(f"peak {_gib(peak)} GiB")
        compact.append(full[-1])
    if width is None:
        return " | ".join([f"{PREFIX} {record.variant_id}", label, *full])
    return fit(width, record.variant_id, label, "", full, compact)


def choose_mode(requested: str, *, isatty: bool, verbosity: int, xdist_worker: bool, dumb: bool = False) -> Mode:
    """The mode for `--wan22-progress` (auto: live on a terminal, lines without one, rounds with -q)."""
    if xdist_worker:
        return "off"  # a worker has no terminal: its output would interleave with the controller's
    if requested != "auto":
        return next((m for m in MODES if m == requested), "off")
    if verbosity <= -2:
        return "off"
    if verbosity < 0:
        return "rounds"
    return "live" if isatty and not dumb else "lines"
