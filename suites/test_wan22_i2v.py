"""Wan 2.2 14B image-to-video on each tier: every test runs a variant through ComfyUI and fails on an OOM,
an error, a variant that does not fit the card (offload, model swap, OOM retry, a peak past the profile's
allowance or a budget), a wrong video, or a slowdown against the baseline."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from wan22_matrix import attention, compiled, matrix, schedules

from pytest_wan22.fixtures import VariantResult
from pytest_wan22.workflows import Variant

Run = Callable[..., VariantResult]


@pytest.mark.parametrize("variant", list(matrix()))
def test_i2v(wan22_run: Run, variant: Variant) -> None:
    """Both pass orders, 5 s and 10 s clips, with and without 2x frame interpolation."""
    result = wan22_run(variant)
    assert result.last.ok
    assert len(result.last.passes) == 2, "both experts must run a sampling pass"


@pytest.mark.parametrize("variant", list(schedules()))
def test_i2v_full_schedule(wan22_run: Run, variant: Variant) -> None:
    """The official 20-step, cfg 3.5 schedule, split 10/10 between the experts."""
    result = wan22_run(variant)
    assert [p.steps for p in result.last.passes] == [10, 10]


@pytest.mark.parametrize(("variant", "plain"), list(compiled()))
def test_i2v_torch_compile(wan22_run: Run, variant: Variant, plain: Variant) -> None:
    """torch.compile: compilation time kept apart (warm-up round), steady state compared with the plain graph."""
    compiled_result = wan22_run(variant)
    plain_result = wan22_run(plain)
    assert compiled_result.records[0].phases.get("compile") is not None
    assert compiled_result.summary.step_median is not None
    assert plain_result.summary.step_median is not None


@pytest.mark.parametrize(("variant", "server_args"), list(attention()))
def test_i2v_attention(wan22_run: Run, variant: Variant, server_args: tuple[str, ...]) -> None:
    """An attention backend, launched as its own ComfyUI profile."""
    result = wan22_run(variant, server_args=server_args)
    assert result.last.ok
