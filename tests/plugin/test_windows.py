"""A session as on a Windows workstation, end to end against the fake ComfyUI: a GPU under the WDDM driver model."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

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
