"""The plugin's own tests: every warning is an error here (the GPU suites keep the user's warning filters)."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from tests.fake_comfyui.harness import captures, fake_server, start_fake  # noqa: F401 - fixtures for all tests

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.filterwarnings("error"), append=False)


@pytest.fixture(autouse=True)
def _inner_sessions_are_not_xdist_workers(request: pytest.FixtureRequest) -> None:
    """A pytester session inside an xdist worker must not believe it is one (pytest-benchmark and the
    plugin read PYTEST_XDIST_WORKER from the environment)."""
    if "pytester" in request.fixturenames:
        mp = request.getfixturevalue("monkeypatch")
        for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID"):
            mp.delenv(name, raising=False)


@pytest.fixture
def torch_python() -> str:
    """An interpreter with torch: this one, or WAN22_PYTHON (ComfyUI's); skip without either."""
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    python = os.environ.get("WAN22_PYTHON")
    if not python:
        pytest.skip("needs torch: it is not importable here and WAN22_PYTHON (ComfyUI's interpreter) is unset")
    return python
