"""The shipped suites themselves, run against the fake ComfyUI: every variant of a tier's matrix is built,
validated, run, measured and judged."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_DIR = REPO / "tests" / "fake_comfyui"
RTX5090 = {"devices": [{"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607, "uuid": "GPU-5090-0",
                        "used_mib": 900, "processes": [{"pid": "children", "used_mib": 6000}]}]}

GPU_PLUGIN = f'''
import sys
sys.path.insert(0, {str(REPO)!r})
from tests.fakes.fake_nvml import FakeNvml

def pytest_wan22_nvml_backend(config):
    return FakeNvml.from_spec({json.dumps(RTX5090)})
'''


@pytest.fixture
def fake_gpu(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    for name in list(os.environ):
        if name.startswith(("WAN22_", "FAKE_COMFYUI_", "PYTEST_ADDOPTS")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FAKE_COMFYUI_NODE_SECONDS", "0.001")
    monkeypatch.setenv("FAKE_COMFYUI_STEP_SECONDS", "0.001")
    pytester.makepyfile(fake_gpu_plugin=GPU_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(pytester.path), str(REPO)]))
    return pytester


def _run(p: pytest.Pytester, *args: str) -> pytest.RunResult:
    return p.runpytest_subprocess(
        str(REPO / "suites"), "-p", "fake_gpu_plugin", "-p", "no:cacheprovider", f"--wan22-comfyui-dir={FAKE_DIR}",
        f"--wan22-baselines-dir={p.path / 'baselines'}", "--wan22-rounds=1", "--wan22-warmup-rounds=0", "-rs",
        *args)


def test_collect_only_lists_the_matrix_with_readable_ids(fake_gpu: pytest.Pytester) -> None:
    result = _run(fake_gpu, "--collect-only", "-q", "--wan22-tier=rtx4090", "-m", "rtx4090")
    out = result.stdout.str()
    for order in ("high_low", "low_high"):
        for seconds in ("5s", "10s"):
            for res in ("480p", "720p"):
                assert f"test_i2v[rtx4090-{order}-{seconds}-{res}-lightx2v_4step]" in out
                assert f"test_i2v[rtx4090-{order}-{seconds}-{res}-lightx2v_4step-rife2x]" in out
    assert "test_i2v_torch_compile[rtx4090-high_low-5s-480p-lightx2v_4step-compile]" in out
    assert "test_i2v_attention[rtx4090-high_low-5s-480p-lightx2v_4step-sage]" in out
    assert "19/" in out


def test_every_rtx5090_variant_runs_on_the_fake(fake_gpu: pytest.Pytester) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_CUSTOM_NODES", "frame-interpolation")
        mp.setenv("FAKE_COMFYUI_PACKAGES", "sageattention")
        result = _run(fake_gpu, "-m", "rtx5090", "--wan22-update-baselines")
    result.assert_outcomes(passed=11)
    stored = json.loads((fake_gpu.path / "baselines" / "rtx5090" / "wan22_i2v_a14b.json").read_text())
    ids = set(stored["variants"])
    assert "high_low-5s-720p-lightx2v_4step-rife2x" in ids
    assert "low_high-10s-720p-lightx2v_4step" in ids
    assert "high_low-5s-720p-default" in ids
    assert "high_low-5s-720p-lightx2v_4step-compile" in ids
    assert "high_low-5s-720p-lightx2v_4step-sage+use-sage-attention" in ids  # a launch-flag variation
    result.stdout.fnmatch_lines(["*wan22: baselines written under*"])
