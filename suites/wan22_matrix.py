"""The variant matrix of each tier, from the tier table's `[tiers.<name>.suite]` rows: what the suites cover, as
data. A row of your own tiers file (--wan22-tiers-file) gets the suite too, with the defaults of
pytest_wan22.tiers.Suite for what it does not say."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from pytest_wan22.tiers import ATTENTION_FLAGS, Suite, Tier, resolution_size
from pytest_wan22.workflows import Variant, load_workflow

WORKFLOW = load_workflow(Path(__file__).resolve().parents[1] / "workflows" / "wan22_i2v_a14b.json")


def base(resolution: str, schedule: str) -> Variant:
    """The official two-pass graph at a resolution and schedule."""
    return Variant(WORKFLOW).resolution(*resolution_size(resolution)).schedule(schedule)


def _first(m: Suite, schedule: str) -> Variant:
    """The extras' variant: the first resolution, pass order and duration of the tier's matrix."""
    return base(m.resolutions[0], schedule).pass_order(m.pass_orders[0]).duration(m.durations[0])


def _param(tier: str, variant: Variant, *extra: object) -> object:
    return pytest.param(variant, *extra, id=f"{tier}-{variant.variant_id}", marks=getattr(pytest.mark, tier))


def matrix(tiers: Mapping[str, Tier]) -> Iterator[object]:
    """Each pass order x duration x interpolation off and on, at each resolution of each tier."""
    for tier in tiers.values():
        m = tier.suite
        for res in m.resolutions:
            for order in m.pass_orders:
                for seconds in m.durations:
                    for rife in m.interpolation:
                        v = base(res, m.schedule).pass_order(order).duration(seconds)
                        yield _param(tier.name, v.interpolate(2) if rife else v)


def schedules(tiers: Mapping[str, Tier]) -> Iterator[object]:
    """The full 20-step schedule next to the tier's fast one (the first resolution, order and duration)."""
    for tier in tiers.values():
        if tier.suite.full_schedule and tier.suite.schedule != "default":
            yield _param(tier.name, _first(tier.suite, "default"))


def compiled(tiers: Mapping[str, Tier]) -> Iterator[object]:
    """torch.compile, paired with the same variant without it."""
    for tier in tiers.values():
        if tier.suite.compile:
            plain = _first(tier.suite, tier.suite.schedule)
            yield _param(tier.name, plain.torch_compile(), plain)


def attention(tiers: Mapping[str, Tier]) -> Iterator[object]:
    """Each attention backend the tier's row names, as launch flags for a server of its own."""
    for tier in tiers.values():
        for name in tier.suite.attention:
            yield _param(tier.name, _first(tier.suite, tier.suite.schedule).label(name), ATTENTION_FLAGS[name])
