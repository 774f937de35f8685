"""The tests against a real ComfyUI on the CPU: they run where WAN22_COMFYUI_DIR and WAN22_PYTHON name one, and
skip with that reason everywhere else (CI included)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COMFYUI = os.environ.get("WAN22_COMFYUI_DIR")
PYTHON = os.environ.get("WAN22_PYTHON")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if COMFYUI and PYTHON:
        return
    skip = pytest.mark.skip(reason="needs a real ComfyUI: set WAN22_COMFYUI_DIR to a ComfyUI 0.8.0 checkout and "
                                   "WAN22_PYTHON to an interpreter with its requirements (torch included)")
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(skip)


def real_project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory, **ini: object) -> pytest.Pytester:
    """An inner project for the real ComfyUI: its interpreter, the tiny models (WAN22_MODELS_DIR keeps them between
    runs), the cpu tier, and the ini keys given (`comfyui_dir`, `rounds`, ... without the wan22_ prefix; a list
    value becomes one line each)."""
    models = os.environ.get("WAN22_MODELS_DIR") or str(tmp_path_factory.getbasetemp() / "models")
    values: dict[str, object] = {"python": PYTHON, "models_dir": models, "tier": "cpu", **ini}
    lines = ["[pytest]"]
    for key, value in values.items():
        if isinstance(value, (list, tuple)):
            lines.append(f"wan22_{key} =")
            lines.extend(f"    {v}" for v in value)
        else:
            lines.append(f"wan22_{key} = {value}")
    pytester.makeini("\n".join(lines) + "\n")
    return pytester
