"""The one module that touches pytest-benchmark: GPU machine info, and rounds reported through its fixture.

The plugin's own RunRecords stay the source of truth (pytest-benchmark turns itself off under xdist);
when it is active, a variant's rounds also go through `benchmark.pedantic`, so its table, `--benchmark-save`
and `--benchmark-compare` work as usual, with the GPU in the machine info.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from .compare import Summary
from .errors import BaselineError


def fixture_for(request: pytest.FixtureRequest) -> Any | None:
    """pytest-benchmark's fixture for this test when it is installed and enabled, else None."""
    if not request.config.pluginmanager.hasplugin("benchmark"):
        return None
    bench = request.getfixturevalue("benchmark")
    return bench if getattr(bench, "enabled", False) else None


def run_rounds(bench: Any, one_round: Callable[[], object], rounds: int, warmup_rounds: int) -> None:
    """Let pytest-benchmark time the rounds: warm-up rounds first, one run per round."""
    bench.pedantic(one_round, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


def describe(bench: Any, summary: Summary, tier: str) -> None:
    """What a benchmark entry carries besides the timings."""
    bench.extra_info.update({
        "wan22_variant": summary.variant_id, "wan22_tier": tier, "wan22_digest": summary.digest,
        "wan22_seconds_per_step": summary.step_median, "wan22_peak_vram_mib": summary.peak_vram_mib,
    })


class BenchmarkHooks:
    """pytest-benchmark hooks, registered only when it is installed."""

    def __init__(self, machine: Callable[[], dict[str, Any]]) -> None:
        self.machine = machine

    def pytest_benchmark_update_machine_info(self, config: pytest.Config, machine_info: dict[str, Any]) -> None:
        """Put the GPU, driver, CUDA, torch and ComfyUI versions and the tier into the machine info."""
        machine_info["wan22"] = self.machine()

    def pytest_benchmark_compare_machine_info(self, config: pytest.Config, benchmarksession: Any,
                                              machine_info: dict[str, Any], compared_benchmark: dict[str, Any]
                                              ) -> None:
        """Refuse to compare across GPUs or tiers; show driver and torch changes, which are what is gated."""
        now = machine_info.get("wan22") or {}
        then = (compared_benchmark.get("machine_info") or {}).get("wan22") or {}
        for key in ("gpu_name", "tier"):
            if now.get(key) and then.get(key) and now[key] != then[key]:
                raise BaselineError(f"pytest-benchmark file was saved on {key} {then[key]!r}, this run is on "
                                    f"{now[key]!r}: compare runs of the same GPU tier only")
        for key in ("driver", "cuda", "torch", "comfyui"):
            if now.get(key) != then.get(key):
                benchmarksession.logger.warning(f"wan22: {key} changed since the compared run: "
                                                f"{then.get(key)} -> {now.get(key)}")
