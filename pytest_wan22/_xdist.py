"""pytest-xdist: one GPU and one ComfyUI per worker; the controller gathers records and writes baselines."""

from __future__ import annotations

from typing import Any

import pytest


class XdistHooks:
    """Registered only when pytest-xdist is present."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_auto_num_workers(self, config: pytest.Config) -> int | None:
        """`-n auto` means one worker per GPU."""
        from .plugin import state_of

        state = state_of(config)
        if state.nvml is None or state.tier is None or not state.tier.is_gpu:
            return None
        try:
            return int(state.nvml.device_count()) or None
        except Exception:  # fall back to xdist's own choice
            return None

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Take a finished worker's records."""
        from .plugin import merge_worker_output, state_of

        payload = getattr(node, "workeroutput", {}).get("wan22")
        if payload:
            merge_worker_output(state_of(node.config), payload)
