"""pytest-xdist: one GPU and one ComfyUI per worker; the controller gathers records and writes baselines."""

from __future__ import annotations

from typing import Any

import pytest

from .session import merge_worker_output
from .stash import state_of


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """`-n auto` means one worker per GPU (xdist's own choice without one). xdist asks before
    pytest_configure, so this is a module-level hook of the plugin and counts the GPUs itself."""
    from .gpu import load_backend

    nvml = config.hook.pytest_wan22_nvml_backend(config=config)
    try:
        nvml = nvml if nvml is not None else load_backend()
        return int(nvml.device_count()) or None
    except Exception:  # no NVML (NvmlUnavailable) or a broken one: xdist's own choice
        return None


class XdistHooks:
    """Registered only when pytest-xdist is present."""

    def pytest_configure_node(self, node: Any) -> None:
        """Workers write their server logs and run records into the controller's session folder."""
        run_dir = state_of(node.config).run_dir
        if run_dir is not None:
            node.workerinput["wan22_run_dir"] = str(run_dir)

    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """Take a finished worker's records."""
        payload = getattr(node, "workeroutput", {}).get("wan22")
        if payload:
            merge_worker_output(state_of(node.config), payload)
