"""A session as on a Windows workstation, end to end against the fake ComfyUI: a GPU under the WDDM driver model,
and the header of a session with the platform switch forced to Windows."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_wan22 import platforms

Project = Callable[..., pytest.Pytester]

# An RTX 4090 under WDDM: NVML lists the server's processes without their memory.
RTX4090_WDDM = {"devices": [{"name": "NVIDIA GeForce RTX 4090", "memory_mib": 24564, "uuid": "GPU-4090-0",
                             "used_mib": 900, "driver_model": "WDDM",
                             "processes": [{"pid": "children", "used_mib": None}]}]}


def test_under_wddm_vram_is_pytorchs_peak_and_the_header_and_records_say_so(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx4090
        def test_fits(wan22_run):
            result = wan22_run(BASE)
            assert result.last.vram.peak_process_mib is None

        @pytest.mark.rtx4090
        @pytest.mark.wan22_budget(12)
        def test_over_budget(wan22_run):
            wan22_run(BASE)
    """, spec=RTX4090_WDDM)
    result = p.runpytest("--wan22-log-dir", "logs")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "wan22: tier rtx4090 (NVIDIA GeForce RTX 4090, 24564 MiB)*",
        "wan22: VRAM on NVIDIA GeForce RTX 4090 (WDDM driver model): PyTorch's peak in the server*",
    ])
    result.stdout.fnmatch_lines(["*peak VRAM 12.96 GiB is over the budget of 12 GiB (rtx4090)*"])
    records = [json.loads(f.read_text()) for f in sorted(p.path.glob("logs/*/records/*.json"))]
    assert records
    for record in records:
        vram = record["vram"]
        assert vram["source"] == "torch+nvml-device"
        assert vram["peak_process_mib"] is None
        assert vram["torch_peak_reserved_mib"] == pytest.approx(12288 * 1.08, abs=1)
        assert "WDDM" in vram["reason"]


def test_on_windows_the_header_names_the_portable_build_and_the_settings_left_out(
        wan22_project: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = tmp_path / "AI tools" / "ComfyUI_windows_portable"
    (root / "ComfyUI").mkdir(parents=True)
    (root / "ComfyUI" / "main.py").write_text("")
    (root / "python_embeded").mkdir()
    (root / "python_embeded" / "python.exe").write_text("")
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            wan22_run(BASE)
    """)
    monkeypatch.setattr(platforms, "PLATFORM", "win32")
    result = p.runpytest("--collect-only", f"--wan22-comfyui-dir={root / 'ComfyUI'}")
    result.stdout.fnmatch_lines([
        "wan22: tier rtx5090 (NVIDIA GeForce RTX 5090, 32607 MiB)*",
        f"wan22: ComfyUI's interpreter: {root / 'python_embeded' / 'python.exe'} (found in the ComfyUI folder)",
        "wan22: the Windows portable build: ComfyUI starts as its run_nvidia_gpu.bat starts it, with "
        "python_embeded?python.exe -s and --windows-standalone-build",
        "wan22: PYTORCH_CUDA_ALLOC_CONF option expandable_segments:True is not passed on windows: PyTorch on Windows "
        "does not support expandable segments",
    ])
    monkeypatch.setattr(platforms, "PLATFORM", "linux")
    result = p.runpytest("--collect-only")
    assert "expandable" not in result.stdout.str()
    assert "wan22: the Windows portable build" not in result.stdout.str()
