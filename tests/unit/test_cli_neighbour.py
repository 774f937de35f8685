"""The GPU neighbour's duty cycle, on a fake clock, and the tool itself where torch is at hand."""

from __future__ import annotations

import subprocess

import pytest

from pytest_wan22.cli.neighbour import DutyCycle, main


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize(("duty", "burst"), [(0.02, 0.001), (0.04, 0.001), (0.08, 0.003), (0.5, 0.01)])
def test_duty_cycle_spends_its_share_busy(duty: float, burst: float) -> None:
    clock = FakeClock()
    bursts = []

    def work() -> None:
        bursts.append(clock.now)
        clock.now += burst

    cycle = DutyCycle(duty, 0.1, clock=clock, sleep=clock.sleep)
    cycle.run(work, seconds=10.0)
    assert cycle.elapsed == pytest.approx(10.0, abs=0.1)
    # Each period overshoots its share by less than one burst.
    assert duty <= cycle.achieved < duty + burst / 0.1 + 1e-9
    assert len({int(t / 0.1 + 1e-9) for t in bursts}) == pytest.approx(100, abs=1)  # busy in every period


def test_stop_ends_the_cycle_early() -> None:
    clock = FakeClock()
    calls: list[float] = []

    def work() -> None:
        calls.append(clock.now)
        clock.now += 0.001

    DutyCycle(0.1, 0.1, clock=clock, sleep=clock.sleep).run(work, 10.0, stop=lambda: len(calls) >= 5)
    assert len(calls) == 5


def test_duty_outside_zero_to_one_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--duty", "4"])
    assert "share of time" in capsys.readouterr().err


def test_the_tool_runs_and_reports_its_duty(torch_python: str) -> None:
    out = subprocess.run([torch_python, "-m", "pytest_wan22.cli.neighbour", "--duty", "0.2", "--seconds", "0.5",
                          "--device", "cpu", "--size", "64"], capture_output=True, text=True, timeout=120,
                         check=True)
    assert "duty, asked 20%) on cpu" in out.stdout
