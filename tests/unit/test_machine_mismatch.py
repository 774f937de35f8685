"""The GPU-mismatch refusal: a baseline from another GPU or other models is never compared."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_wan22.baselines import machine_mismatch
from pytest_wan22.records import Environment

H200 = Environment(gpu_name="NVIDIA H200", driver="580.159.04", torch="2.11.0", comfyui="0.8.0", models="user")


@pytest.mark.parametrize("current", [
    H200,
    replace(H200, driver="590.1", torch="2.12.0", comfyui="0.9.0", cuda="13.1", python="3.12"),  # what is gated
    replace(H200, gpu_name=None),  # unknown on one side: nothing to refuse on
    replace(H200, models=None),
])
def test_same_gpu_and_models_are_compared(current: Environment) -> None:
    assert machine_mismatch(H200, current) is None
    assert machine_mismatch(current, H200) is None


def test_another_gpu_is_refused_with_the_fix() -> None:
    why = machine_mismatch(H200, replace(H200, gpu_name="NVIDIA GeForce RTX 5090"))
    assert why == ("baseline recorded on NVIDIA H200, this run is on NVIDIA GeForce RTX 5090; record this GPU's own "
                   "baseline with --wan22-update-baselines or point --wan22-baselines-dir elsewhere")
    assert machine_mismatch(H200, replace(H200, gpu_name="NVIDIA H200 NVL")) is not None


def test_other_models_are_refused_with_the_fix() -> None:
    why = machine_mismatch(H200, replace(H200, models="synthetic:a14b"))
    assert why is not None
    assert why.startswith("baseline recorded with user models, this run uses synthetic:a14b")
    assert "--wan22-synthetic" in why


def test_the_gpu_is_named_before_the_models() -> None:
    why = machine_mismatch(H200, replace(H200, gpu_name="NVIDIA A100", models="synthetic:a14b"))
    assert why is not None
    assert why.startswith("baseline recorded on NVIDIA H200")
