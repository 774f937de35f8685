"""Hooks other plugins and conftest files implement to extend pytest-wan22."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .compare import Summary, Verdict
    from .records import RunRecord
    from .tiers import Tier


@pytest.hookspec(firstresult=True)
def pytest_wan22_nvml_backend(config: pytest.Config) -> Any:
    """Return the NVML backend to use instead of nvidia-ml-py (an object implementing gpu.NvmlBackend).

    Example, in a conftest.py::

        def pytest_wan22_nvml_backend(config):
            return FakeNvml.from_spec({"devices": [{"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607}]})
    """


@pytest.hookspec(firstresult=True)
def pytest_wan22_detect_tier(config: pytest.Config, device_name: str, memory_mib: float) -> str | None:
    """Map a device to a tier name when the tier table's patterns are not enough.

    Example::

        def pytest_wan22_detect_tier(config, device_name, memory_mib):
            return "rtx5090" if "RTX PRO 5000" in device_name else None
    """


def pytest_wan22_server_command(config: pytest.Config, tier: Tier, args: list[str], env: dict[str, str]) -> None:
    """Change the ComfyUI launch arguments (after the tier's) or environment in place before a server starts.

    Example::

        def pytest_wan22_server_command(config, tier, argv, env):
            args.append("--use-sage-attention")
    """


def pytest_wan22_run_finished(config: pytest.Config, record: RunRecord) -> None:
    """Called with every RunRecord as soon as its run ends (warm-up rounds included); observe, export.

    Example::

        def pytest_wan22_run_finished(config, record):
            print(record.variant_id, record.outcome, record.wall_s)
    """


@pytest.hookspec(firstresult=True)
def pytest_wan22_compare(config: pytest.Config, summary: Summary, baseline: Summary | None) -> Verdict | None:
    """Return a Verdict to replace the built-in comparison of a variant with its baseline.

    Example::

        def pytest_wan22_compare(config, summary, baseline):
            return None  # fall back to the built-in rule
    """
