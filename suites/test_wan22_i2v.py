"""Wan 2.2 14B image-to-video on each tier: every test runs a variant through ComfyUI and fails on an OOM,
an error, a variant that does not fit the card (offload, model swap, OOM retry, a peak past the profile's
allowance or a budget), a wrong video, or a slowdown against the baseline. What each tier runs is its
`[tiers.<name>.suite]` row of the tier table (wan22_matrix.py turns it into variants)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from wan22_matrix import attention, compiled, matrix, schedules

from pytest_wan22.fixtures import VariantResult
from pytest_wan22.plugin import tier_table
from pytest_wan22.workflows import Variant

Run = Callable[..., VariantResult]

# Each test's parameters, made at collection from the tier table this session resolved (the shipped rows and
# those of --wan22-tiers-file).
PARAMETERS = {
    "test_i2v": ("variant", matrix),
    "test_i2v_full_schedule": ("variant", schedules),
    "test_i2v_torch_compile": (("variant", "plain"), compiled),
    "test_i2v_attention": (("variant", "server_args"), attention),
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names, values = PARAMETERS[metafunc.function.__name__]
    metafunc.parametrize(names, list(values(tier_table(metafunc.config))))


def test_i2v(wan22_run: Run, variant: Variant) -> None:
    """Both pass orders, 5 s and 10 s clips, with and without 2x frame interpolation."""
    result = wan22_run(variant)
    assert result.last.ok
    assert len(result.last.passes) == 2, "both experts must run a sampling pass"


def test_i2v_full_schedule(wan22_run: Run, variant: Variant) -> None:
    """The official 20-step, cfg 3.5 schedule, split 10/10 between the experts."""
    result = wan22_run(variant)
    assert [p.steps for p in result.last.passes] == [10, 10]


def test_i2v_torch_compile(wan22_run: Run, variant: Variant, plain: Variant) -> None:
    """torch.compile: compilation time kept apart (warm-up round), steady state compared with the plain graph."""
    compiled_result = wan22_run(variant)
    plain_result = wan22_run(plain)
    assert compiled_result.records[0].phases.get("compile") is not None
    assert compiled_result.summary.step_median is not None
    assert plain_result.summary.step_median is not None


def test_i2v_attention(wan22_run: Run, variant: Variant, server_args: tuple[str, ...]) -> None:
    """An attention backend, launched as its own ComfyUI profile."""
    result = wan22_run(variant, server_args=server_args)
    assert result.last.ok
