"""The shipped suites themselves, run against the fake ComfyUI: every variant of a tier's matrix is built,
validated, run, measured and judged."""

from __future__ import annotations

import json
import os
import re
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


L40S = {"devices": [{"name": "NVIDIA L40S", "memory_mib": 46068, "uuid": "GPU-L40S-0", "used_mib": 700,
                     "processes": [{"pid": "children", "used_mib": 6000}]}]}


def _tiers_file(p: pytest.Pytester) -> str:
    return f"--wan22-tiers-file={p.path / 'my_tiers.toml'}"


def _readme_tier_example() -> tuple[str, list[str]]:
    """The README's [tiers.l40s] row and the collect-only lines it shows for it."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    found = re.search(r"```toml\n(\[tiers\.l40s\]\n.*?)```\n\n(    pytest suites -m l40s .*?)\n\n", text, re.DOTALL)
    assert found, "README.md lost its [tiers.l40s] example"
    shown = [line.strip() for line in found.group(2).splitlines()[1:] if line.strip() != "..."]
    return found.group(1), shown


def test_the_readme_tier_row_collects_and_runs_the_suite(fake_gpu: pytest.Pytester) -> None:
    row, shown = _readme_tier_example()
    fake_gpu.makefile(".toml", my_tiers=row)
    listed = _run(fake_gpu, "--collect-only", "-q", "-m", "l40s", _tiers_file(fake_gpu))
    assert listed.ret == 0
    listed.stdout.fnmatch_lines([*shown[:-1], shown[-1] + " in *"], consecutive=False)
    # Detected by its `match` through a fake NVML that sees an L40S, and run against the fake ComfyUI.
    fake_gpu.makepyfile(fake_gpu_plugin=GPU_PLUGIN.replace(json.dumps(RTX5090), json.dumps(L40S)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_COMFYUI_CUSTOM_NODES", "frame-interpolation")
        mp.setenv("FAKE_COMFYUI_PACKAGES", "sageattention")
        result = _run(fake_gpu, "-m", "l40s", _tiers_file(fake_gpu), "--wan22-update-baselines")
    result.assert_outcomes(passed=11)
    result.stdout.fnmatch_lines(["wan22: tier l40s (NVIDIA L40S, 46068 MiB)*"])
    stored = json.loads((fake_gpu.path / "baselines" / "l40s" / "wan22_i2v_a14b.json").read_text())
    assert "low_high-10s-720p-lightx2v_4step-rife2x" in stored["variants"]
    assert "high_low-5s-720p-lightx2v_4step-sage+use-sage-attention" in stored["variants"]


def test_a_row_of_your_own_without_a_suite_table_gets_the_default_suite(fake_gpu: pytest.Pytester) -> None:
    fake_gpu.makefile(".toml", my_tiers='[tiers.l40s]\nmatch = ["L40S"]\nargs = ["--highvram"]\n')
    result = _run(fake_gpu, "--collect-only", "-q", "-m", "l40s", _tiers_file(fake_gpu))
    ids = ["test_i2v[l40s-high_low-5s-640p-lightx2v_4step]", "test_i2v[l40s-low_high-10s-640p-lightx2v_4step-rife2x]",
           "test_i2v_full_schedule[l40s-high_low-5s-640p-default]",
           "test_i2v_torch_compile[l40s-high_low-5s-640p-lightx2v_4step-compile]"]
    result.stdout.fnmatch_lines([*(f"suites/test_wan22_i2v.py::{i}" for i in ids), "10/79 tests collected*"])


def test_a_bad_tier_row_stops_the_session_naming_the_file_and_key(fake_gpu: pytest.Pytester) -> None:
    fake_gpu.makefile(".toml", my_tiers='[tiers.l40s]\nmatch = ["L40S"]\nvram_budget_gib = "lots"\n')
    result = _run(fake_gpu, "-m", "l40s", _tiers_file(fake_gpu))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(['*my_tiers.toml: tiers.l40s.vram_budget_gib = "lots" is not a number > 0 (GiB)*'])


def test_the_built_in_tiers_keep_their_test_ids(fake_gpu: pytest.Pytester) -> None:
    """The ids are the baseline keys: a change to how the suite is made must not rename a built-in tier's test
    (tests/data/suite_ids.txt is `pytest suites --collect-only -q` of the shipped table)."""
    result = _run(fake_gpu, "--collect-only", "-q", "--wan22-tier=cpu")
    listed = [line for line in result.stdout.lines if "::" in line]
    assert listed == (REPO / "tests" / "data" / "suite_ids.txt").read_text(encoding="utf-8").splitlines()
