"""Tests for pytest_wan22.gpu against FakeNvml and a stand-in pynvml module (no GPU needed)."""

from __future__ import annotations

import ast
import contextlib
import inspect
import json
import os
import re
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22 import gpu
from pytest_wan22.errors import ConfigError, NvmlUnavailable
from pytest_wan22.gpu import (
    MIB,
    PROCESS_MIB_UNKNOWN,
    DeviceInfo,
    NvmlBackend,
    PynvmlBackend,
    VramMonitor,
    accounting_peak_mib,
    downsample,
    enable_accounting,
    environment_readings,
    format_cuda_version,
    list_devices,
    load_backend,
    probe,
    resolve_visible_device,
)
from pytest_wan22.processes import process_name, process_tree
from pytest_wan22.records import Neighbour, VramSample
from tests.fakes.fake_nvml import FakeDevice, FakeNvml, FakeProcess, Timeline
from tests.posix import posix_only

UUIDS = ["GPU-8932f937-d72c-4106-c12f-20bd9faed9f6",
         "GPU-1c0e5a7b-0f3d-4c9e-9a4e-4b8c2d1e0f11",
         "GPU-1c0f0000-aaaa-bbbb-cccc-ddddeeeeffff"]
MIG_UUID = "MIG-2e4a1f6c-5b7d-5e3a-9c1b-7d8e9f0a1b2c"


def wait_until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until pred() is true; fail the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.005)


def three_gpus() -> FakeNvml:
    return FakeNvml([
        FakeDevice(name="NVIDIA GeForce RTX 5090", uuid=UUIDS[0], pci_bus_id="00000000:01:00.0"),
        FakeDevice(name="NVIDIA GeForce RTX 4090", memory_mib=24564, uuid=UUIDS[1],
                   pci_bus_id="00000000:41:00.0"),
        FakeDevice(name="NVIDIA H200", memory_mib=143771, uuid=UUIDS[2], pci_bus_id="00000000:81:00.0",
                   mig=[FakeDevice(name="NVIDIA H200 MIG 3g.71gb", memory_mib=71424, uuid=MIG_UUID)]),
    ])


# ----------------------------------------------------------------------------- probing


def test_probe_describes_the_device() -> None:
    fake = FakeNvml.single(uuid=UUIDS[0], pci_bus_id="00000000:01:00.0")
    info = probe(fake)
    assert info == DeviceInfo(index=0, name="NVIDIA GeForce RTX 5090", uuid=UUIDS[0],
                              pci_bus_id="00000000:01:00.0", memory_total_mib=32607,
                              driver="580.95.05", cuda="13.0")


def test_probe_by_index_and_uuid() -> None:
    fake = three_gpus()
    assert probe(fake, index=1).name == "NVIDIA GeForce RTX 4090"
    assert probe(fake, uuid=UUIDS[2]).index == 2
    mig = probe(fake, uuid=MIG_UUID)
    assert (mig.index, mig.memory_total_mib, mig.uuid) == (2, 71424, MIG_UUID)
    assert [d.index for d in list_devices(fake)] == [0, 1, 2]


def test_probe_errors_name_cause_and_fix() -> None:
    fake = three_gpus()
    with pytest.raises(ConfigError, match=r"GPU index 3 does not exist.*--wan22-gpu-index"):
        probe(fake, index=3)
    with pytest.raises(ConfigError, match="no GPU with UUID GPU-nope"):
        probe(fake, uuid="GPU-nope")
    with pytest.raises(NvmlUnavailable, match="NVML sees no GPU"):
        probe(FakeNvml([]))


@pytest.mark.parametrize(("value", "text"), [(13000, "13.0"), (12080, "12.8"), (12040, "12.4"),
                                             (11020, "11.2")])
def test_format_cuda_version(value: int, text: str) -> None:
    assert format_cuda_version(value) == text


# ----------------------------------------------------------------------------- CUDA_VISIBLE_DEVICES


@pytest.mark.parametrize(("visible", "index", "expected"), [
    (None, 0, 0),
    (None, 2, 2),
    ("1", 0, 1),
    ("2,0", 0, 2),
    ("2,0", 1, 0),
    (" 1 , 2 ", 1, 2),
    (UUIDS[1], 0, 1),
    ("GPU-8932f937", 0, 0),          # unique prefix, as CUDA accepts
    ("GPU-1C0E", 0, 1),              # prefixes are case-insensitive
    (f"0,{UUIDS[2]}", 1, 2),
    (f"MIG-{UUIDS[1]}/1/0", 0, 1),   # legacy MIG form maps to its parent GPU
])
def test_resolve_visible_device(visible: str | None, index: int, expected: int) -> None:
    assert resolve_visible_device(three_gpus(), visible, index).index == expected


def test_resolve_visible_mig_uuid() -> None:
    info = resolve_visible_device(three_gpus(), MIG_UUID, 0)
    assert (info.index, info.uuid, info.name) == (2, MIG_UUID, "NVIDIA H200 MIG 3g.71gb")


def test_resolve_integer_follows_pci_bus_order() -> None:
    fake = FakeNvml([FakeDevice(uuid=UUIDS[0], pci_bus_id="00000000:81:00.0"),
                     FakeDevice(uuid=UUIDS[1], pci_bus_id="00000000:01:00.0")])
    assert resolve_visible_device(fake, "0", 0).uuid == UUIDS[1]
    assert resolve_visible_device(fake, None, 1).uuid == UUIDS[0]


@pytest.mark.parametrize(("visible", "index", "message"), [
    ("GPU-1c0", 0, "matches several GPUs"),
    ("GPU-ffff", 0, "matches no GPU"),
    ("7", 0, "GPU 7 .* does not exist"),
    ("0", 1, "CUDA device 1 is not visible"),
    ("1,,0", 1, "CUDA device 1 is not visible"),
    ("", 0, "CUDA device 0 is not visible"),
    ("bogus", 0, "neither an index"),
    ("MIG-00000000-dead-beef-0000-000000000000", 0, "no MIG instance"),
])
def test_resolve_visible_device_errors(visible: str, index: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        resolve_visible_device(three_gpus(), visible, index)
    assert "CUDA_VISIBLE_DEVICES" in str(info.value)


# ----------------------------------------------------------------------------- load_backend


def _nvml_works() -> bool:
    try:
        import pynvml  # type: ignore[import-untyped,unused-ignore]

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
    except Exception:
        return False
    return True


def test_load_backend_without_gpu_names_the_cause() -> None:
    if _nvml_works():
        pytest.skip("NVML works on this machine, so load_backend cannot fail here")
    with pytest.raises(NvmlUnavailable) as info:
        load_backend()
    msg = str(info.value)
    assert "NVMLError_" in msg or "nvidia-ml-py is not installed" in msg
    assert "--wan22-tier" in msg


def fake_pynvml(**functions: Any) -> types.ModuleType:
    """A stand-in for nvidia-ml-py's pynvml module with its error classes and the given functions."""
    mod = types.ModuleType("pynvml")

    class NVMLError(Exception):
        def __init__(self, value: int = 999) -> None:
            super().__init__(value)
            self.value = value

    mod.NVMLError = NVMLError  # type: ignore[attr-defined]
    for name in ("LibraryNotFound", "DriverNotLoaded", "NoPermission", "FunctionNotFound", "NotSupported",
                 "NotFound", "GpuIsLost", "LibRmVersionMismatch"):
        setattr(mod, f"NVMLError_{name}", type(f"NVMLError_{name}", (NVMLError,), {}))
    mod.NVMLLibraryMismatchError = type("NVMLLibraryMismatchError", (Exception,), {})  # type: ignore[attr-defined]
    mod.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    mod.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    mod.NVML_CLOCK_MEM = 2  # type: ignore[attr-defined]
    mod.NVML_FEATURE_ENABLED = 1  # type: ignore[attr-defined]
    mod.NVML_FEATURE_DISABLED = 0  # type: ignore[attr-defined]
    for name, fn in functions.items():
        setattr(mod, name, fn(mod) if getattr(fn, "needs_module", False) else fn)
    return mod


def raising(error: str) -> Callable[..., Any]:
    def build(mod: types.ModuleType) -> Callable[..., Any]:
        def fn(*args: Any) -> Any:
            raise getattr(mod, error)()
        return fn
    build.needs_module = True  # type: ignore[attr-defined]
    return build


@pytest.mark.parametrize(("error", "cause", "fix"), [
    ("NVMLError_LibraryNotFound", "libnvidia-ml.so.1", "LD_LIBRARY_PATH"),
    ("NVMLError_DriverNotLoaded", "kernel driver is not loaded", "modprobe nvidia"),
    ("NVMLError_NoPermission", "no permission", "/dev/nvidia"),
    ("NVMLError_GpuIsLost", "nvmlInit failed", "nvidia-smi"),
])
def test_load_backend_init_failures(monkeypatch: pytest.MonkeyPatch, error: str, cause: str,
                                    fix: str) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(nvmlInit=raising(error)))
    with pytest.raises(NvmlUnavailable) as info:
        load_backend()
    msg = str(info.value)
    assert cause in msg
    assert fix in msg
    assert "--wan22-tier" in msg


def test_load_backend_without_nvidia_ml_py(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(NvmlUnavailable, match=r"nvidia-ml-py is not installed.*pip install nvidia-ml-py"):
        load_backend()


def test_load_backend_returns_an_initialised_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    inits: list[int] = []
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(nvmlInit=lambda: inits.append(1)))
    backend = load_backend()
    assert isinstance(backend, PynvmlBackend)
    assert inits == [1]


# ----------------------------------------------------------------------------- PynvmlBackend adapter


def test_pynvml_backend_adapts_the_module() -> None:
    handle = object()
    procs_v2 = [types.SimpleNamespace(pid=10, usedGpuMemory=2 * MIB),
                types.SimpleNamespace(pid=11),                            # old struct: no memory field
                types.SimpleNamespace(pid=12, usedGpuMemory=None)]
    graphics = [types.SimpleNamespace(pid=10, usedGpuMemory=3 * MIB),
                types.SimpleNamespace(pid=13, usedGpuMemory=MIB)]
    mod = fake_pynvml(
        nvmlDeviceGetCount=lambda: 1,
        nvmlDeviceGetHandleByIndex=lambda i: handle,
        nvmlDeviceGetIndex=lambda h: 0,
        nvmlDeviceGetName=lambda h: b"NVIDIA H200",
        nvmlDeviceGetUUID=lambda h: "GPU-x",
        nvmlDeviceGetPciInfo=lambda h: types.SimpleNamespace(busId=b"00000000:19:00.0"),
        nvmlDeviceGetMemoryInfo=lambda h: types.SimpleNamespace(total=143771 * MIB, used=600 * MIB,
                                                                free=143171 * MIB),
        nvmlSystemGetDriverVersion=lambda: b"580.95.05",
        nvmlSystemGetCudaDriverVersion=lambda: 13000,                     # no _v2 in this module
        nvmlDeviceGetComputeRunningProcesses_v3=raising("NVMLError_FunctionNotFound"),
        nvmlDeviceGetComputeRunningProcesses_v2=lambda h: procs_v2,
        nvmlDeviceGetGraphicsRunningProcesses_v3=lambda h: graphics,
        nvmlDeviceGetPowerUsage=lambda h: 251_500,
        nvmlDeviceGetTemperature=raising("NVMLError_NotSupported"),
        nvmlDeviceGetClockInfo=lambda h, kind: {1: 1980, 2: 3201}[kind],
        nvmlDeviceGetCurrPcieLinkGeneration=lambda h: 5,
        # nvmlDeviceGetCurrPcieLinkWidth missing: an older nvidia-ml-py
        nvmlDeviceGetAccountingMode=lambda h: 0,
        nvmlDeviceGetAccountingStats=lambda h, pid: types.SimpleNamespace(maxMemoryUsage=7 * MIB),
    )
    backend = PynvmlBackend(mod)
    assert isinstance(backend, NvmlBackend)
    info = probe(backend)
    assert info == DeviceInfo(index=0, name="NVIDIA H200", uuid="GPU-x", pci_bus_id="00000000:19:00.0",
                              memory_total_mib=143771, driver="580.95.05", cuda="13.0")
    assert sorted(backend.running_processes(handle), key=lambda p: p[0]) == [
        (10, 3 * MIB), (11, None), (12, None), (13, MIB)]
    assert backend.running_processes(handle)  # the working entry points are remembered
    readings = environment_readings(backend, handle)
    assert readings == {"driver": "580.95.05", "cuda": "13.0", "power_w": 251.5, "temperature_c": None,
                        "sm_clock_mhz": 1980, "mem_clock_mhz": 3201, "pcie_gen": 5, "pcie_width": None}
    assert backend.accounting_enabled(handle) is False
    assert backend.accounting_max_memory(handle, 10) is None      # accounting off: stats are not read


def test_pynvml_backend_turns_nvml_errors_into_nvml_unavailable() -> None:
    mod = fake_pynvml(nvmlDeviceGetMemoryInfo=raising("NVMLError_GpuIsLost"),
                      nvmlDeviceGetComputeRunningProcesses_v3=raising("NVMLError_NoPermission"))
    backend = PynvmlBackend(mod)
    with pytest.raises(NvmlUnavailable, match=r"nvmlDeviceGetMemoryInfo failed.*nvidia-smi"):
        backend.memory_info(object())
    with pytest.raises(NvmlUnavailable, match="process list"):
        backend.running_processes(object())


def test_pynvml_backend_unversioned_process_call_mismatch_falls_back() -> None:
    mod = fake_pynvml(
        nvmlDeviceGetComputeRunningProcesses=raising("NVMLLibraryMismatchError"),
        nvmlDeviceGetComputeRunningProcesses_v2=lambda h: [types.SimpleNamespace(pid=5, usedGpuMemory=MIB)],
        nvmlDeviceGetGraphicsRunningProcesses_v3=raising("NVMLError_NotSupported"))
    assert PynvmlBackend(mod).running_processes(object()) == [(5, MIB)]


# ----------------------------------------------------------------------------- VRAM monitor


def test_monitor_default_interval_is_at_least_20_hz() -> None:
    assert VramMonitor(FakeNvml()).interval_s == gpu.DEFAULT_INTERVAL_S <= 0.05


def test_monitor_catches_a_100ms_spike_at_the_default_interval() -> None:
    fake = FakeNvml.single(used_mib=lambda t: 9000.0 if 0.2 <= t < 0.3 else 1000.0)
    monitor = VramMonitor(fake, 0)
    fake.restart_clock()
    with monitor:
        wait_until(lambda: fake.elapsed() > 0.4)
        taken = monitor.samples_taken
        wait_until(lambda: monitor.samples_taken > taken)
    rep = monitor.report()
    assert rep.available
    assert rep.baseline_device_mib == 1000.0
    assert rep.peak_device_mib == 9000.0
    assert any(s.device_mib == 9000.0 for s in rep.samples)
    assert rep.interval_s == 0.02
    assert [s.t for s in rep.samples] == sorted(s.t for s in rep.samples)


def test_monitor_interval_is_a_parameter() -> None:
    with VramMonitor(FakeNvml(), interval=0.005) as monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
    assert monitor.report().interval_s == 0.005
    with pytest.raises(ConfigError, match="--wan22-vram-interval"):
        VramMonitor(FakeNvml(), interval=0)


@pytest.fixture
def process_chain() -> Iterator[list[int]]:
    """A real process, its child and its grandchild (pids, root first); killed afterwards."""
    script = ("import os, subprocess, sys, time\n"
              "print(os.getpid(), flush=True)\n"
              "n = int(sys.argv[1])\n"
              "if n > 0:\n"
              "    subprocess.Popen([sys.executable, '-c', sys.argv[2], str(n - 1), sys.argv[2]])\n"
              "time.sleep(60)\n")
    root = subprocess.Popen([sys.executable, "-c", script, "2", script], stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        assert root.stdout is not None
        for _ in range(3):
            pids.append(int(root.stdout.readline()))
        yield pids
    finally:
        for pid in reversed(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
        root.kill()
        root.wait(timeout=10)
        if root.stdout is not None:
            root.stdout.close()


def test_process_tree_walks_children(process_chain: list[int]) -> None:
    root, child, grandchild = process_chain
    tree = process_tree(root)
    assert tree == {root, child, grandchild}
    assert process_tree(child) == {child, grandchild}
    assert os.getpid() not in tree


def test_process_tree_of_unknown_pid_is_just_the_pid() -> None:
    assert process_tree(2**22 + 12345) == {2**22 + 12345}


def test_monitor_sums_the_server_process_tree(process_chain: list[int]) -> None:
    root, _child, grandchild = process_chain
    fake = FakeNvml.single(used_mib=8000.0, processes=[
        FakeProcess(root, 3000.0), FakeProcess(grandchild, 500.0),
        FakeProcess(os.getpid(), 4000.0)])                       # not in the server's tree
    with VramMonitor(fake, 0, pids=lambda: process_tree(root)) as monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
    rep = monitor.report()
    assert rep.peak_process_mib == 3500.0
    assert rep.peak_device_mib == 8000.0
    assert rep.reason == ""
    assert all(s.process_mib == 3500.0 for s in rep.samples)


def test_monitor_refreshes_pids_when_a_new_process_appears() -> None:
    tree = {100}
    fake = FakeNvml.single(used_mib=5000.0, processes=[FakeProcess(100, 1000.0)])
    monitor = VramMonitor(fake, 0, pids=lambda: set(tree), pids_refresh_s=3600)
    with monitor:
        wait_until(lambda: monitor.samples_taken >= 2)
        tree.add(200)
        fake.devices[0].processes.append(FakeProcess(200, 700.0))
        wait_until(lambda: monitor.report().peak_process_mib == 1700.0)
    assert monitor.report().peak_process_mib == 1700.0


def test_downsampling_keeps_the_peak() -> None:
    values = [1000.0] * 200
    values[57] = 7000.0
    fake = FakeNvml.single(used_mib=values, processes=[FakeProcess(1, [v / 2 for v in values])])
    monitor = VramMonitor(fake, 0, pids=lambda: {1}, interval=0.001, max_samples=10)
    with monitor:
        wait_until(lambda: monitor.samples_taken >= 150)
    rep = monitor.report()
    assert len(rep.samples) <= 10
    assert rep.peak_device_mib == 7000.0
    assert rep.peak_process_mib == 3500.0
    assert any(s.device_mib == 7000.0 and s.process_mib == 3500.0 for s in rep.samples)


def test_downsample_function_keeps_first_last_and_both_peaks() -> None:
    samples = [VramSample(t=i * 0.02, process_mib=100.0, device_mib=1000.0 + (i % 7)) for i in range(10_000)]
    samples[1234] = VramSample(t=1234 * 0.02, process_mib=100.0, device_mib=9999.0)
    samples[8765] = VramSample(t=8765 * 0.02, process_mib=5555.0, device_mib=1000.0)
    out = downsample(samples, 2000)
    assert len(out) <= 2000
    assert samples[0] in out
    assert samples[-1] in out
    assert samples[1234] in out
    assert samples[8765] in out
    assert list(out) == sorted(out, key=lambda s: s.t)
    assert downsample(samples[:50], 2000) == tuple(samples[:50])
    with pytest.raises(ValueError, match="at least 4"):
        downsample(samples, 3)


def test_monitor_marks() -> None:
    with VramMonitor(FakeNvml()) as monitor:
        monitor.mark("submit")
        wait_until(lambda: monitor.samples_taken >= 1)
        monitor.mark("done")
    names = [name for name, _ in monitor.marks]
    times = [t for _, t in monitor.marks]
    assert names == ["submit", "done"]
    assert 0 <= times[0] <= times[1]


def test_monitor_peak_between_marks() -> None:
    fake = FakeNvml.single(used_mib=[1000.0] * 5 + [6000.0] + [2000.0] * 1000,
                           processes=[FakeProcess(1, [500.0] * 5 + [5500.0] + [1500.0] * 1000)])
    with VramMonitor(fake, 0, pids=lambda: {1}, interval=0.002) as monitor:
        wait_until(lambda: monitor.samples_taken >= 10)
        after = monitor.mark("after-peak")
        taken = monitor.samples_taken
        wait_until(lambda: monitor.samples_taken >= taken + 3)
    assert monitor.peak_between(0.0, after + 1e9) == (5500.0, 6000.0)
    assert monitor.peak_between(after, after + 1e9) == (1500.0, 2000.0)
    assert monitor.peak_between(-2.0, -1.0) == (None, None)


def test_monitor_failure_at_start_becomes_the_reason() -> None:
    fake = FakeNvml()
    fake.fail = "GPU is lost"
    monitor = VramMonitor(fake, 0)
    with monitor:
        pass
    rep = monitor.report()
    assert not rep.available
    assert "VRAM not measured" in rep.reason
    assert "GPU is lost" in rep.reason
    assert rep.samples == ()


def test_monitor_unknown_device_becomes_the_reason() -> None:
    rep = VramMonitor(FakeNvml(), "GPU-does-not-exist").start().stop()
    assert not rep.available
    assert "GPU-does-not-exist" in rep.reason


def test_monitor_failure_midway_keeps_samples_and_gives_a_reason() -> None:
    fake = FakeNvml.single(used_mib=2000.0)
    monitor = VramMonitor(fake, 0)
    with monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
        fake.fail = "GPU has fallen off the bus"
        wait_until(lambda: not monitor.running)
    rep = monitor.report()
    assert rep.available
    assert rep.peak_device_mib == 2000.0
    assert "sampling stopped after" in rep.reason
    assert "GPU has fallen off the bus" in rep.reason


def test_monitor_process_list_failure_keeps_device_figures() -> None:
    fake = FakeNvml.single(used_mib=2000.0, processes=[FakeProcess(1, 500.0)])
    fake.fail_on = {"running_processes"}
    with VramMonitor(fake, 0, pids=lambda: {1}) as monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
    rep = monitor.report()
    assert rep.available
    assert rep.peak_device_mib == 2000.0
    assert rep.peak_process_mib is None
    assert "process list failed" in rep.reason


def test_monitor_pids_callable_failure_is_reported() -> None:
    def broken() -> set[int]:
        raise PermissionError("/proc is hidden")
    fake = FakeNvml.single(used_mib=2000.0, processes=[FakeProcess(1, 500.0)])
    with VramMonitor(fake, 0, pids=broken) as monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
    rep = monitor.report()
    assert "listing the server's processes failed" in rep.reason
    assert "/proc is hidden" in rep.reason


def test_monitor_container_pid_mismatch_reports_process_unknown() -> None:
    fake = FakeNvml.single(used_mib=[1000.0, 6000.0], processes=[FakeProcess(424242, 5000.0)])
    with VramMonitor(fake, 0, pids=lambda: {os.getpid()}) as monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
    rep = monitor.report()
    assert rep.available
    assert rep.peak_process_mib is None
    assert rep.peak_device_mib == 6000.0
    assert rep.peak_mib == 5000.0                               # falls back to device minus baseline
    assert "container" in rep.reason
    assert all(s.process_mib == PROCESS_MIB_UNKNOWN for s in rep.samples)


def test_monitor_without_pids_measures_the_device_only() -> None:
    with VramMonitor(FakeNvml.single(used_mib=3000.0)) as monitor:
        wait_until(lambda: monitor.samples_taken >= 2)
    rep = monitor.report()
    assert rep.peak_process_mib is None
    assert rep.peak_device_mib == 3000.0
    assert "no server PID" in rep.reason


def test_monitor_process_without_memory_figure_is_unknown() -> None:
    fake = FakeNvml.single(used_mib=3000.0, processes=[FakeProcess(1, None)])
    with VramMonitor(fake, 0, pids=lambda: {1}) as monitor:
        wait_until(lambda: monitor.samples_taken >= 2)
    rep = monitor.report()
    assert rep.peak_process_mib is None
    assert "no per-process memory" in rep.reason


def test_monitor_by_device_info_uses_its_uuid() -> None:
    fake = three_gpus()
    fake.devices[1].used_mib = 4321.0
    with VramMonitor(fake, probe(fake, index=1)) as monitor:
        wait_until(lambda: monitor.samples_taken >= 1)
    assert monitor.report().peak_device_mib == 4321.0


def test_monitor_runs_once() -> None:
    monitor = VramMonitor(FakeNvml())
    monitor.start()
    monitor.stop()
    with pytest.raises(RuntimeError, match="runs once"):
        monitor.start()


# ----------------------------------------------------------------------------- settings and accounting


def test_nothing_changes_device_settings_by_default() -> None:
    fake = FakeNvml.single(accounting=False, processes=[FakeProcess(1, 500.0)])
    h = fake.handle(0)
    probe(fake)
    list_devices(fake)
    resolve_visible_device(fake, None, 0)
    environment_readings(fake, h)
    accounting_peak_mib(fake, h, [1])
    with VramMonitor(fake, 0, pids=lambda: {1}) as monitor:
        wait_until(lambda: monitor.samples_taken >= 2)
    assert fake.setting_calls == []
    assert fake.calls["set_accounting_mode"] == 0
    assert fake.devices[0].accounting is False


def test_only_the_opt_in_functions_call_setters() -> None:
    """Any call of a setting-changing backend method in gpu.py sits in an opt-in function."""
    tree = ast.parse(Path(inspect.getfile(gpu)).read_text())
    callers: set[str] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr.startswith("set_")):
                    callers.add(fn.name)
    assert callers == {"enable_accounting", "disable_accounting"}
    nvml_setters: set[tuple[str, str]] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef):
            for node in ast.walk(fn):
                if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                        and re.fullmatch(r"nvml\w*(Set|Clear|Reset)\w*", node.value)):
                    nvml_setters.add((fn.name, node.value))
    assert nvml_setters == {("set_accounting_mode", "nvmlDeviceSetAccountingMode")}


def test_enable_accounting_is_recorded_and_idempotent() -> None:
    fake = FakeNvml.single(accounting=False)
    h = fake.handle(0)
    assert enable_accounting(fake, h) is False
    assert fake.setting_calls == [("set_accounting_mode", fake.devices[0].uuid, True)]
    assert enable_accounting(fake, h) is True
    assert len(fake.setting_calls) == 1
    gpu.disable_accounting(fake, h)
    assert fake.setting_calls[-1][2] is False
    assert fake.devices[0].accounting is False


def test_enable_accounting_without_root_names_the_fix() -> None:
    fake = FakeNvml.single(accounting=False)
    fake.allow_settings = False
    with pytest.raises(NvmlUnavailable, match=r"needs root.*nvidia-smi -am 1.*--wan22-nvml-accounting"):
        enable_accounting(fake, fake.handle(0))


def test_enable_accounting_unsupported() -> None:
    fake = FakeNvml.single(accounting=None)
    with pytest.raises(NvmlUnavailable, match="does not support NVML accounting"):
        enable_accounting(fake, fake.handle(0))
    assert fake.setting_calls == []


def test_accounting_read_path() -> None:
    fake = FakeNvml.single(accounting=False, accounting_max_mib={10: 1500.0, 11: 250.0})
    h = fake.handle(0)
    assert fake.accounting_max_memory(h, 10) is None            # accounting off
    assert accounting_peak_mib(fake, h, [10, 11]) is None
    fake.devices[0].accounting = True
    assert fake.accounting_max_memory(h, 10) == 1500 * MIB
    assert fake.accounting_max_memory(h, 99) is None            # pid unknown to accounting
    assert accounting_peak_mib(fake, h, [10, 11, 99]) == 1750.0
    fake.devices[0].accounting = None                           # unsupported
    assert accounting_peak_mib(fake, h, [10]) is None
    assert fake.setting_calls == []


# ----------------------------------------------------------------------------- environment readings


def test_environment_readings() -> None:
    fake = FakeNvml.single(power_w=312.5, temperature_c=None, pcie_width=None)
    readings = environment_readings(fake, fake.handle(0))
    assert readings == {"driver": "580.95.05", "cuda": "13.0", "power_w": 312.5, "temperature_c": None,
                        "sm_clock_mhz": 2407, "mem_clock_mhz": 14001, "pcie_gen": 5, "pcie_width": None}


def test_environment_readings_never_raise() -> None:
    fake = FakeNvml()
    h = fake.handle(0)
    fake.fail = True
    assert set(environment_readings(fake, h).values()) == {None}


# ----------------------------------------------------------------------------- the fake itself


def test_fake_from_spec() -> None:
    spec = {"devices": [{"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607,
                         "uuid": UUIDS[0], "used_mib": [1000, 9000, 1000],
                         "processes": [{"pid": "self", "used_mib": [500, 8000, 500]},
                                       {"pid": "server", "used_mib": 100}]},
                        {"name": "NVIDIA H200", "memory_mib": 143771,
                         "used_mib": {"timeline": [[0, 600], [3600, 90000]]}}],
            "driver": "575.57.08", "cuda": "12.9"}
    fake = FakeNvml.from_spec(json.dumps(spec))
    assert isinstance(fake, NvmlBackend)
    first = probe(fake)
    assert (first.name, first.uuid, first.memory_total_mib, first.driver, first.cuda) == (
        "NVIDIA GeForce RTX 5090", UUIDS[0], 32607, "575.57.08", "12.9")
    h = fake.handle(0)                      # probe() read memory once: that was step 0
    assert [fake.memory_info(h)[1] // MIB for _ in range(3)] == [9000, 1000, 1000]
    assert fake.running_processes(h) == [(os.getpid(), 500 * MIB)]   # 'server' is not bound yet
    fake.bind_pid("server", 4242)
    assert (4242, 100 * MIB) in fake.running_processes(h)
    assert fake.memory_info(fake.handle(1))[1] // MIB == 600
    assert isinstance(fake.devices[1].used_mib, Timeline)
    with pytest.raises(ValueError, match="unknown fake device keys"):
        FakeNvml.from_spec({"devices": [{"memroy_mib": 1}]})


def test_fake_children_pid_matches_spawned_processes(process_chain: list[int]) -> None:
    fake = FakeNvml.from_spec({"devices": [{"processes": [{"pid": "children", "used_mib": 10}]}]})
    pids = {pid for pid, _ in fake.running_processes(fake.handle(0))}
    assert set(process_chain) <= pids


def test_gpu_module_does_not_import_pytest() -> None:
    code = "import sys, pytest_wan22.gpu; sys.exit('pytest' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


# --- other compute processes on the GPU ---------------------------------------------------------------------


def test_monitor_names_the_other_compute_processes_with_their_most_memory(process_chain: list[int]) -> None:
    root, child, grandchild = process_chain
    neighbour = os.getpid()  # this test's own process stands for a training job beside the server
    fake = FakeNvml.single(used_mib=20000.0, processes=[
        FakeProcess(root, 3000.0), FakeProcess(neighbour, [4000.0, 9000.0, 6000.0])])
    with VramMonitor(fake, 0, pids=lambda: {root, child}) as monitor:
        wait_until(lambda: monitor.samples_taken >= 5)
    rep = monitor.report()
    assert rep.peak_process_mib == 3000.0
    (n,) = rep.neighbours
    assert (n.pid, n.used_mib) == (neighbour, 9000.0)
    assert n.name == process_name(neighbour)
    assert "python" in n.name or "pytest" in n.name
    assert n.describe() == f"PID {neighbour} {n.name} (8.8 GiB)"
    assert grandchild not in {x.pid for x in rep.neighbours}


def test_no_neighbours_are_named_where_the_servers_own_processes_were_not_told_apart() -> None:
    # NVML lists none of the server's PIDs (a container without --pid=host): every PID would look foreign
    fake = FakeNvml.single(used_mib=9000.0, processes=[FakeProcess(os.getpid(), 5000.0)])
    with VramMonitor(fake, 0, pids=lambda: {2**22 + 1}) as monitor:
        wait_until(lambda: monitor.samples_taken >= 3)
    rep = monitor.report()
    assert rep.neighbours == ()
    assert "listed none of the server's processes" in rep.reason
    with VramMonitor(fake, 0) as monitor:  # no server PID at all
        wait_until(lambda: monitor.samples_taken >= 3)
    assert monitor.report().neighbours == ()


def test_neighbours_now_and_merged_over_rounds() -> None:
    fake = FakeNvml.single(processes=[FakeProcess(os.getpid(), 2048.0), FakeProcess(1, None),
                                      FakeProcess(2**22 + 7, 100.0)])
    h = fake.handle(0)
    now = gpu.neighbours(fake, h, {2**22 + 7})
    assert [(n.pid, n.used_mib) for n in now] == [(1, None), (os.getpid(), 2048.0)]
    assert now[1].name == process_name(os.getpid())
    assert process_name(2**22 + 12345) == "(not visible here)"
    assert len(process_name(os.getpid(), width=12)) == 12


@posix_only("a symlink names the program")
def test_a_neighbours_name_leaves_its_programs_folder_out(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / "bin"
    deep.mkdir(parents=True)
    (deep / "trainer").symlink_to(sys.executable)
    proc = subprocess.Popen([str(deep / "trainer"), "-c", "import time; time.sleep(30)", "--lr", "3e-4"])
    try:
        wait_until(lambda: "--lr" in process_name(proc.pid))
        assert process_name(proc.pid) == "trainer -c import time; time.sleep(30) --lr 3e-4"
    finally:
        proc.kill()
        proc.wait()
    merged = gpu.merge_neighbours([[Neighbour(5, "a", 100.0), Neighbour(3, "c", None)],
                                   [Neighbour(5, "b", 300.0), Neighbour(3, "c", 50.0)], [Neighbour(5, "a", 200.0)]])
    assert merged == (Neighbour(3, "c", 50.0), Neighbour(5, "a", 300.0))  # first name, most memory, by PID
