"""VRAM under Windows' WDDM driver model, where NVML lists processes without their memory: the monitor, the record's
figures, the budget and fit checks and the session header's words, against the fake NVML."""

from __future__ import annotations

import time
import types
from collections.abc import Callable
from dataclasses import replace

import pytest

from pytest_wan22.fit import allowance, check_vram, judged_peak_mib
from pytest_wan22.gpu import PynvmlBackend, VramMonitor, probe, vram_source
from pytest_wan22.records import VRAM_DEVICE, VRAM_PROCESS, VRAM_SOURCES, VRAM_WDDM, RunRecord, VramReport
from tests.fakes.fake_nvml import FakeDevice, FakeNvml, FakeProcess

SERVER = 2**22 + 4242  # the server's PID as NVML lists it (no such process here)
NEIGHBOUR = 2**22 + 77


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def wddm(*processes: FakeProcess, used: float = 9000.0) -> FakeNvml:
    return FakeNvml([FakeDevice(name="NVIDIA GeForce RTX 4090", memory_mib=24564, used_mib=used,
                                driver_model="WDDM", processes=list(processes))])


def _report(fake: FakeNvml, pids: Callable[[], set[int]] | None = lambda: {SERVER}) -> VramReport:
    with VramMonitor(fake, 0, pids=pids, interval=0.005) as monitor:
        wait_until(lambda: monitor.samples_taken >= 5)
    return monitor.report()


def test_under_wddm_the_report_says_so_and_has_no_process_figure() -> None:
    rep = _report(wddm(FakeProcess(SERVER, None), FakeProcess(NEIGHBOUR, None)))
    assert rep.available
    assert rep.source == VRAM_WDDM
    assert rep.peak_process_mib is None
    assert rep.peak_device_mib == 9000.0
    assert "WDDM driver model, where NVML reports no per-process memory" in rep.reason
    assert "MIG" not in rep.reason  # not the message for a MIG instance without privileges
    assert [n.pid for n in rep.neighbours] == [NEIGHBOUR]  # still named, with no memory figure
    assert rep.neighbours[0].used_mib is None
    assert "under WDDM NVML reports no per-process memory" in rep.describe_source()


def test_under_wddm_an_empty_process_list_is_not_blamed_on_a_container() -> None:
    rep = _report(wddm())
    assert rep.source == VRAM_WDDM
    assert "container" not in rep.reason
    assert "WDDM" in rep.reason


def test_on_linux_the_same_processes_with_memory_are_measured_per_process() -> None:
    fake = FakeNvml([FakeDevice(used_mib=9000.0, processes=[FakeProcess(SERVER, 5000.0)])])
    rep = _report(fake)
    assert rep.source == VRAM_PROCESS
    assert rep.peak_process_mib == 5000.0
    mig_like = _report(FakeNvml([FakeDevice(used_mib=9000.0, processes=[FakeProcess(SERVER, None)])]))
    assert mig_like.source == VRAM_DEVICE  # no per-process memory, yet not WDDM: the device's figure
    assert "no per-process memory for some samples" in mig_like.reason
    assert _report(wddm(FakeProcess(SERVER, None)), pids=None).source == VRAM_DEVICE  # no PID: device-wide


RUN = RunRecord(variant_id="high_low-5s", workflow="wf", tier="rtx4090", outcome="success")


def _wddm_record(device: float = 22000.0, baseline: float = 1500.0, reserved: float | None = 13271.0,
                 allocated: float | None = 12288.0) -> RunRecord:
    return replace(RUN, vram=VramReport(True, peak_device_mib=device, baseline_device_mib=baseline,
                                        torch_peak_reserved_mib=reserved, torch_peak_allocated_mib=allocated,
                                        source=VRAM_WDDM))


def test_under_wddm_budgets_use_pytorchs_reserved_peak_and_comparisons_its_allocated_peak() -> None:
    record = _wddm_record()
    assert record.vram is not None
    assert record.vram.peak_mib == 13271.0  # not the device's growth (20500 MiB, with the desktop's memory in it)
    assert record.vram.compared_mib == 12288.0
    assert judged_peak_mib(record) == 13271.0
    over = check_vram([record], "high_low-5s", "rtx4090", budget_gib=12.0, allowed=None, allow_offload=False)
    assert over is not None
    assert "peak VRAM 12.96 GiB is over the budget of 12 GiB (rtx4090)" in over
    assert check_vram([record], "high_low-5s", "rtx4090", budget_gib=13.0, allowed=None, allow_offload=False) is None
    room = allowance(24564.0, ["--reserve-vram", "12.5"])  # 11.49 GiB for ComfyUI
    fit = check_vram([record], "high_low-5s", "rtx4090", budget_gib=None, allowed=room, allow_offload=False)
    assert fit is not None
    assert "peaked at 12.96 GiB, past the 11.49 GiB" in fit
    without_probe = _wddm_record(reserved=None, allocated=None)
    assert without_probe.vram is not None
    assert without_probe.vram.peak_mib == 20500.0  # the device's growth is all there is


def test_a_record_written_before_the_source_field_reads_back_unchanged() -> None:
    old = RUN.to_dict()
    assert old["vram"] is None
    record = _wddm_record()
    data = record.to_dict()
    assert data["vram"]["source"] == "torch+nvml-device"
    del data["vram"]["source"]
    back = RunRecord.from_dict(data)
    assert back.vram is not None
    assert back.vram.source == ""
    assert back.vram.peak_mib == 20500.0  # an old record keeps the figure it was judged on
    assert back.vram.describe_source() == ""


def test_the_header_names_the_source_of_the_vram_figures() -> None:
    device = probe(wddm())
    assert device.driver_model == "WDDM"
    text = vram_source(device)
    assert text.startswith("VRAM on NVIDIA GeForce RTX 4090 (WDDM driver model): PyTorch's peak in the server")
    assert "under WDDM NVML reports no per-process memory" in text
    linux = probe(FakeNvml())
    assert linux.driver_model is None
    assert vram_source(linux).startswith(f"VRAM: {VRAM_SOURCES[VRAM_PROCESS]}")


class _NVMLError(Exception):
    pass


class _NotSupported(_NVMLError):
    pass


@pytest.mark.parametrize(("answer", "model"), [([0, 0], "WDDM"), ((1, 1), "TCC"), ([2, 0], "MCDM"), (7, "7"),
                                               (_NotSupported, None)])
def test_pynvml_backend_reads_the_driver_model(answer: object, model: str | None) -> None:
    def call(h: object) -> object:
        if answer is _NotSupported:
            raise _NotSupported
        return answer

    mod = types.SimpleNamespace(NVMLError=_NVMLError, NVMLError_NotSupported=_NotSupported,
                                nvmlDeviceGetDriverModel=call)
    assert PynvmlBackend(mod).driver_model(object()) == model


def test_a_backend_without_driver_models_counts_as_linux() -> None:
    fake = FakeNvml()

    class Older:
        """An NvmlBackend from before driver_model: every call but that one."""

        def __getattr__(self, name: str) -> object:
            if name == "driver_model":
                raise AttributeError(name)
            return getattr(fake, name)

    assert probe(Older()).driver_model is None  # type: ignore[arg-type]


class _Client:
    """What run_prompt asks of a client: a run that succeeds, and the probe node's memory figures (or none)."""

    def __init__(self, memory: dict[str, object]) -> None:
        self.memory = memory

    def reset_memory_stats(self) -> None:
        pass

    def run(self, prompt: object, **kw: object) -> object:
        from pytest_wan22.client import Execution

        return Execution("p", "success", (), 0.0, 1.0, {"outputs": {}}, None, None, ())

    def memory_stats(self) -> dict[str, object]:
        return self.memory


class _Monitor:
    def __init__(self, report: VramReport) -> None:
        self._report = report

    def __enter__(self) -> _Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def report(self) -> VramReport:
        return self._report


@pytest.mark.parametrize(("memory", "source"), [
    ({"available": True, "max_allocated": 12288 * 2**20, "max_reserved": 13312 * 2**20}, VRAM_WDDM),
    ({"available": False}, VRAM_DEVICE)], ids=["probe-answers", "no-probe"])
def test_a_wddm_record_names_the_device_figure_where_no_probe_node_answered(memory: dict[str, object],
                                                                         source: str) -> None:
    from pytest_wan22.runner import RunContext, run_prompt

    seen = VramReport(True, peak_device_mib=22000.0, baseline_device_mib=1500.0, source=VRAM_WDDM)
    ctx = RunContext(client=_Client(memory), tier="rtx4090", timeout=5.0,  # type: ignore[arg-type]
                     monitor=lambda: _Monitor(seen))
    record = run_prompt(ctx, {"1": {"class_type": "EmptyImage", "inputs": {}}}, variant_id="v", workflow="wf",
                        seed=1)
    assert record.vram is not None
    assert record.vram.source == source
    assert record.vram.peak_mib == (13312.0 if source == VRAM_WDDM else 20500.0)
