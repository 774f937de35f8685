"""wan22-neighbour: a GPU neighbour that keeps the card busy for a set share of the time, to see what the gate catches.

It runs bf16 matrix products for `duty` of every period and sleeps the rest, as another tenant of a shared GPU
(or a desktop compositor, a second job) would. Start it beside a session, e.g. at 4% duty:

    python -m pytest_wan22.cli.neighbour --duty 0.04 --seconds 900 &
    pytest suites -m h200 ...

Run it with an interpreter that has torch (ComfyUI's). It changes no device setting: it only computes.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class DutyCycle:
    """Busy for `duty` of each `period`, by the clock given; counts the busy time it achieved."""

    duty: float
    period: float
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    busy: float = 0.0
    elapsed: float = 0.0

    def run(self, work: Callable[[], None], seconds: float, stop: Callable[[], bool] = lambda: False) -> None:
        """Call `work` (one short, synchronised burst) until this period's share is spent; sleep; repeat."""
        start = self.clock()
        try:
            while self.clock() - start < seconds and not stop():
                period_start = self.clock()
                while self.clock() - period_start < self.duty * self.period and not stop():
                    t = self.clock()
                    work()
                    self.busy += self.clock() - t
                rest = self.period - (self.clock() - period_start)
                if rest > 0:
                    self.sleep(rest)
        finally:
            self.elapsed = self.clock() - start

    @property
    def achieved(self) -> float:
        """The share of time spent busy."""
        return self.busy / self.elapsed if self.elapsed else 0.0


def matmul_burst(device: str, size: int, repeat: int) -> Callable[[], None]:
    """A burst of `repeat` bf16 products of two size x size matrices, waited for."""
    import torch

    a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
    out = torch.empty(size, size, device=device, dtype=torch.bfloat16)
    sync: Callable[[], Any] = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def burst() -> None:
        for _ in range(repeat):
            torch.matmul(a, b, out=out)
        sync()

    return burst


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the duty is a share of time, above 0 and at most 1")
    return value


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="wan22-neighbour", description=__doc__.splitlines()[0])
    parser.add_argument("--duty", type=_share, required=True, help="share of time spent computing, e.g. 0.04")
    parser.add_argument("--seconds", type=float, default=600.0, help="how long to run (default 600)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds per busy+idle cycle (default 0.1)")
    parser.add_argument("--size", type=int, default=4096, help="matrix size (default 4096)")
    parser.add_argument("--repeat", type=int, default=1, help="products per burst (default 1)")
    parser.add_argument("--device", default="cuda", help="torch device (default cuda; cpu for a dry run)")
    args = parser.parse_args(argv)
    try:
        work = matmul_burst(args.device, args.size, args.repeat)
    except ImportError:
        print(f"wan22-neighbour: torch is not importable in {sys.executable}; run it with ComfyUI's interpreter",
              file=sys.stderr)
        return 2
    work()  # the first product pays for kernel selection: not part of the duty
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    cycle = DutyCycle(args.duty, args.period)
    with contextlib.suppress(KeyboardInterrupt):
        cycle.run(work, args.seconds, stop=lambda: bool(stopping))
    print(f"wan22-neighbour: busy {cycle.busy:.1f} s of {cycle.elapsed:.1f} s ({cycle.achieved * 100:.1f}% duty, "
          f"asked {args.duty * 100:g}%) on {args.device}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
