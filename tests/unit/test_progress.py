"""Progress: what the status line says, when lines are written, and the mode chosen."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_wan22.client import Event
from pytest_wan22.progress import Progress, choose_mode, round_line, seconds_per_step
from pytest_wan22.records import RunRecord, SamplerPass, VramReport

PROMPT = {"3": {"class_type": "KSamplerAdvanced", "inputs": {}, "_meta": {"title": "KSampler (high noise)"}},
          "8": {"class_type": "VAEDecode", "inputs": {}, "_meta": {"title": "VAE Decode"}}}


class Screen:
    def __init__(self, column: int = 0, width: int = 200) -> None:
        self.out: list[str] = []
        self._column, self._width = column, width

    def write(self, text: str) -> None:
        self.out.append(text)

    def column(self) -> int:
        return self._column

    def width(self) -> int:
        return self._width


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def progress(mode: str, column: int = 0, width: int = 200) -> tuple[Progress, Screen, Clock]:
    screen, clock = Screen(column, width), Clock()
    return Progress(screen, mode, clock=clock, ticker=False), screen, clock  # type: ignore[arg-type]


def step(p: Progress, t: float, value: int, steps: int = 4, node: str = "3") -> None:
    p.on_event(Event(t, "progress", {"value": value, "max": steps, "node": node, "prompt_id": "x"}))


def test_status_names_variant_round_node_step_speed_vram_and_elapsed() -> None:
    p, _, clock = progress("rounds")
    with p.round("v1", 1, 4, warmup=False, prompt=PROMPT):
        p._round.vram = lambda: (3072.0, 4096.0)  # type: ignore[union-attr]
        p.on_event(Event(0.5, "executing", {"node": "3", "prompt_id": "x"}))
        step(p, 1.0, 1)
        step(p, 1.5, 2)
        step(p, 2.5, 3)
        clock.now += 75
        assert p.status() == ("wan22 v1 | round 2/4 | KSampler (high noise) | step 3/4 | 0.75 s/step | "
                              "VRAM 3.0 GiB (peak 4.0) | 1:15")
        p.on_event(Event(3.0, "executing", {"node": "8", "prompt_id": "x"}))
        assert " | VAE Decode | " in p.status()
        assert "step" not in p.status()
    assert p.status() == ""


def test_lines_mode_writes_every_interval_and_per_round() -> None:
    p, screen, clock = progress("lines", column=14)
    with p.round("v1", 0, 2, warmup=True, prompt=PROMPT):
        clock.now += 4
        p.tick()
        assert screen.out == []  # a round shorter than the interval gets its round line only
        clock.now += 1
        p.tick()
        assert screen.out == ["\nwan22 v1 | round 1/2 (warm-up) | 0:05\n"]  # off pytest's partial line first
        clock.now += 3
        p.tick()
        assert len(screen.out) == 1
        clock.now += 2
        p.tick()
        assert screen.out[-1] == "wan22 v1 | round 1/2 (warm-up) | 0:10\n"
    p.finished(RunRecord("v1", "wf", "cpu", "success", round=0, warmup=True, wall_s=1.5))
    assert screen.out[-1] == "wan22 v1 | round 1/2 (warm-up): success | 1.50 s\n"
    assert not any("\x1b" in s for s in screen.out)


def test_live_mode_draws_below_and_returns_to_pytests_column_then_erases() -> None:
    p, screen, _ = progress("live", column=14, width=50)
    with p.round("a-long-variant-name", 0, 1, warmup=False, prompt=PROMPT):
        step(p, 1.0, 1)
        p.tick()  # nothing new: nothing written
        assert len(screen.out) == 1
    draw, erase = screen.out
    text = draw.split("\x1b[K")[0].lstrip("\n\r")
    assert text == "wan22 a-lon...-name | round 1/1 | step 1/4 | 0:00"  # the title went first, then the name
    assert draw.endswith("\x1b[K\x1b[1A\r\x1b[14C")
    assert erase == "\n\r\x1b[2K\x1b[1A\r\x1b[14C"
    p.finished(RunRecord("v1", "wf", "cpu", "success"))
    assert len(screen.out) == 2  # live mode writes no round lines


WIDE = ("wan22 high_low-5s-1280x704-20steps_cfg5 | [A] round 1 (warm-up) | KSampler (high noise) | step 12/20 | "
        "1.23 s/step | VRAM 75.1 GiB (peak 76.3) | 1:23")


@pytest.mark.parametrize(("width", "expected"), [
    (200, WIDE),
    (80, "[A] round 1 (warm-up) | step 12/20 1.23 s/step | VRAM 75.1/76.3 GiB | 1:23"),
    (100, "wan22 high_lo...s_cfg5 | [A] round 1 (warm-up) | step 12/20 1.23 s/step | VRAM 75.1/76.3 GiB | 1:23"),
    (120, "wan22 high_low-5s-...20steps_cfg5 | [A] round 1 (warm-up) | step 12/20 | 1.23 s/step | "
          "VRAM 75.1 GiB (peak 76.3) | 1:23"),
    (140, "wan22 high_low-5s-1280x704-20steps_cfg5 | [A] round 1 (warm-up) | KSampler... | step 12/20 | "
          "1.23 s/step | VRAM 75.1 GiB (peak 76.3) | 1:23"),
])
def test_the_live_line_fits_the_terminal_cutting_the_title_and_name_never_the_numbers(width: int,
                                                                                      expected: str) -> None:
    p, screen, clock = progress("live", width=width)
    with p.round("high_low-5s-1280x704-20steps_cfg5", 0, None, warmup=True, prompt=PROMPT, side="A"):
        p._round.vram = lambda: (75.1 * 1024, 76.3 * 1024)  # type: ignore[union-attr]
        for i in range(1, 13):
            step(p, 1.23 * i, i, steps=20)
        clock.now += 83
        p.tick()
    text = screen.out[-2].split("\x1b[K")[0].lstrip("\n\r")
    assert text == expected
    assert len(text) < width


def test_round_lines_name_the_side_and_fit_80_columns() -> None:
    p, screen, _ = progress("rounds", width=80)
    record = RunRecord("high_low-5s-1280x704-20steps_cfg5", "wf", "h200", "success", round=0, warmup=True,
                       side="A", wall_s=123.45,
                       passes=(SamplerPass("3", "hi", 4, (), 8.0), SamplerPass("4", "lo", 4, (), 8.5)),
                       vram=VramReport(True, peak_process_mib=76 * 1024))
    p.finished(record)
    p.finished(replace(record, side="B", round=3, warmup=False, wall_s=9.5))
    assert [line.rstrip("\n") for line in screen.out] == [
        "[A] round 1 (warm-up): success | 123.45 s | 2.000/2.125 s/step | peak 76.0 GiB",
        "[B] round 4: success | 9.50 s | 2.000/2.125 s/step | peak 76.0 GiB"]
    p.finished(replace(record, variant_id="v-5s", side="", round=3, warmup=False, wall_s=9.5))
    assert screen.out[-1] == "wan22 v-5s | round 4: success | 9.50 s | 2.000 / 2.125 s/step | peak 76.0 GiB\n"


def test_a_broken_terminal_never_fails_the_run() -> None:
    class Broken(Screen):
        def write(self, text: str) -> None:
            raise OSError("EIO")

    p = Progress(Broken(), "live", ticker=False)
    with p.round("v1", 0, 1, warmup=False, prompt=PROMPT):
        step(p, 1.0, 1)


def test_round_line_and_seconds_per_step() -> None:
    record = RunRecord("v1", "wf", "h200", "success", round=2, wall_s=61.25,
                       passes=(SamplerPass("3", "hi", 4, (1.0, 2.0), 8.0), SamplerPass("4", "lo", 4, (), 6.0)),
                       vram=VramReport(True, peak_process_mib=70 * 1024))
    assert round_line(record, 4) == "wan22 v1 | round 3/4: success | 61.25 s | 2.000 / 1.500 s/step | peak 70.0 GiB"
    assert seconds_per_step([1.0]) is None
    assert seconds_per_step([1.0, 2.0, 4.0]) == 1.5


@pytest.mark.parametrize(("requested", "isatty", "verbosity", "worker", "mode"), [
    ("auto", True, 0, False, "live"),
    ("auto", False, 0, False, "lines"),
    ("auto", True, -1, False, "rounds"),
    ("auto", False, -2, False, "off"),
    ("auto", True, 0, True, "off"),
    ("live", False, 0, False, "live"),
    ("lines", True, 0, True, "off"),
])
def test_choose_mode(requested: str, isatty: bool, verbosity: int, worker: bool, mode: str) -> None:
    assert choose_mode(requested, isatty=isatty, verbosity=verbosity, xdist_worker=worker) == mode


def test_the_vram_monitor_gives_its_latest_reading_and_the_peak_so_far() -> None:
    from pytest_wan22.gpu import VramMonitor
    from tests.fakes.fake_nvml import FakeDevice, FakeNvml, FakeProcess

    def fake() -> FakeNvml:
        return FakeNvml([FakeDevice(used_mib=[1000, 9000, 3000], processes=[FakeProcess(4242, [500, 8000, 2000])])])

    ours = VramMonitor(fake(), 0, pids=lambda: [4242], interval=60.0)
    device_only = VramMonitor(fake(), 0, interval=60.0)
    assert ours.latest() == (None, None)
    for monitor in (ours, device_only):
        monitor.start()
        while monitor.samples_taken < 4:
            monitor._sample()
        monitor.stop()
    now, peak = ours.latest()
    assert now == 2000.0  # the last value repeats
    assert peak == 8000.0
    now, peak = device_only.latest()  # no process figures: the whole device
    assert now == 3000.0
    assert peak == 9000.0


def test_a_second_bar_of_the_same_node_starts_its_speed_afresh() -> None:
    """WanVideoWrapper's sampler reports loading the weights (hundreds of quick frames), then its steps."""
    p, _, _ = progress("rounds")
    with p.round("v1", 1, 4, warmup=False, prompt=PROMPT):
        p.on_event(Event(0.5, "executing", {"node": "3", "prompt_id": "x"}))
        for i in range(1, 301):
            step(p, 0.5 + i * 0.001, i, steps=300)
        step(p, 2.0, 1, steps=2)
        step(p, 4.0, 2, steps=2)
        assert " | step 2/2 | 2.00 s/step | " in p.status()
