"""Fixtures of the integration tests: the fake ComfyUI started as a subprocess (tests/fake_comfyui/harness.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _load_harness() -> ModuleType:
    name = "wan22_fake_comfyui_harness"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "fake_comfyui" / "harness.py"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


harness = _load_harness()
fake_server = harness.fake_server
start_fake = harness.start_fake
captures = harness.captures
