"""The variant matrix of each tier: what the suites cover, as data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_wan22.workflows import Variant, load_workflow

WORKFLOW = load_workflow(Path(__file__).resolve().parents[1] / "workflows" / "wan22_i2v_a14b.json")

RESOLUTIONS = {"480p": (832, 480), "640p": (640, 640), "720p": (1280, 720)}


@dataclass(frozen=True)
class TierMatrix:
    """What one tier covers: resolutions, schedule, and the extras the card supports."""

    resolutions: tuple[str, ...]
    schedule: str = "lightx2v_4step"
    compile: bool = True
    attention: tuple[str, ...] = ()


MATRIX: dict[str, TierMatrix] = {
    "rtx5090": TierMatrix(("720p",), attention=("sage",)),
    "rtx4090": TierMatrix(("480p", "720p"), attention=("sage",)),
    "a100": TierMatrix(("720p",), attention=("flash",)),
    "h200": TierMatrix(("640p", "720p"), attention=("flash", "sage")),
    "cpu": TierMatrix(("640p",), schedule="default", compile=False),
}

# Launch flags of each attention backend (a profile variation: it needs its own server).
ATTENTION = {
    "sage": ("--use-sage-attention",),
    "flash": ("--use-flash-attention",),
    "split": ("--use-split-cross-attention",),
}


def base(resolution: str, schedule: str) -> Variant:
    """The official two-pass graph at a resolution and schedule."""
    return Variant(WORKFLOW).resolution(*RESOLUTIONS[resolution]).schedule(schedule)


def _param(tier: str, variant: Variant, *extra: object) -> object:
    return pytest.param(variant, *extra, id=f"{tier}-{variant.variant_id}", marks=getattr(pytest.mark, tier))


def matrix() -> Iterator[object]:
    """Both pass orders x 5 s and 10 s x interpolation off and on, at each resolution of each tier."""
    for tier, m in MATRIX.items():
        for res in m.resolutions:
            for order in ("high_low", "low_high"):
                for seconds in (5, 10):
                    for rife in (False, True):
                        v = base(res, m.schedule).pass_order(order).duration(seconds)
                        yield _param(tier, v.interpolate(2) if rife else v)


def schedules() -> Iterator[object]:
    """The full 20-step schedule next to the tier's fast one (high-noise first, 5 s)."""
    for tier, m in MATRIX.items():
        if m.schedule != "default":
            yield _param(tier, base(m.resolutions[0], "default").duration(5))


def compiled() -> Iterator[object]:
    """torch.compile, paired with the same variant without it."""
    for tier, m in MATRIX.items():
        if m.compile:
            plain = base(m.resolutions[0], m.schedule).duration(5)
            yield _param(tier, plain.torch_compile(), plain)


def attention() -> Iterator[object]:
    """Each attention backend the tier supports, as launch flags for a server of its own."""
    for tier, m in MATRIX.items():
        for name in m.attention:
            v = base(m.resolutions[0], m.schedule).duration(5).label(name)
            yield _param(tier, v, ATTENTION[name])
