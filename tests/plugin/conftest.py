"""pytester projects that use the plugin against the fake ComfyUI and a fake NVML."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_DIR = REPO / "tests" / "fake_comfyui"

RTX5090 = {"devices": [{"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607, "uuid": "GPU-5090-0",
                        "used_mib": 900, "processes": [{"pid": "children", "used_mib": 6000}]}]}

CONFTEST = '''
from __future__ import annotations

import json
import sys

sys.path.insert(0, {repo!r})

from tests.fakes.fake_nvml import FakeNvml

SPEC = {spec}


def pytest_wan22_nvml_backend(config):
    return None if SPEC is None else FakeNvml.from_spec(SPEC)
'''

HEADER = '''
from __future__ import annotations

import pytest

from pytest_wan22.workflows import Variant, load_workflow

WF = load_workflow({workflow!r})
BASE = Variant(WF).schedule("lightx2v_4step").duration(5)
'''


@pytest.fixture
def wan22_project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
                  ) -> Callable[..., pytest.Pytester]:
    """A pytester project: an inner conftest with a fake NVML (spec, or None for the real one), an ini that
    points at the fake ComfyUI, and the test code given."""
    for name in list(os.environ):
        if name.startswith(("WAN22_", "FAKE_COMFYUI_", "PYTEST_ADDOPTS", "PYTEST_XDIST")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FAKE_COMFYUI_NODE_SECONDS", "0.002")
    monkeypatch.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.002")

    def make(tests: str, *, spec: Any = RTX5090, ini: str = "", fake_env: dict[str, str] | None = None
             ) -> pytest.Pytester:
        pytester.makeconftest(CONFTEST.format(repo=str(REPO), spec=json.dumps(spec) if spec is not None
                                              else "None").replace(": null", ": None"))
        pytester.makeini(textwrap.dedent(f"""
            [pytest]
            wan22_comfyui_dir = {FAKE_DIR}
            wan22_rounds = 2
            wan22_warmup_rounds = 1
            wan22_startup_timeout = 30
            wan22_baselines_dir = baselines
            {ini}
        """))
        code = HEADER.format(workflow=str(REPO / "workflows" / "wan22_i2v_a14b.json")) + textwrap.dedent(tests)
        pytester.makepyfile(test_suite=code)
        for key, value in (fake_env or {}).items():
            monkeypatch.setenv(key, value)
        return pytester

    return make
