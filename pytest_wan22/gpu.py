"""NVML access: device probing, CUDA_VISIBLE_DEVICES mapping and a sampling VRAM monitor (no pytest here)."""

from __future__ import annotations

import contextlib
import threading
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, TypeAlias, runtime_checkable

from pytest_wan22.errors import ConfigError, NvmlUnavailable
from pytest_wan22.processes import process_name
from pytest_wan22.records import (
    VRAM_DEVICE,
    VRAM_PROCESS,
    VRAM_SOURCES,
    VRAM_WDDM,
    Neighbour,
    VramReport,
    VramSample,
)

MIB = 1024 * 1024
DEFAULT_INTERVAL_S = 0.02
MAX_REPORT_SAMPLES = 2000
DEFAULT_PIDS_REFRESH_S = 0.5
# VramSample.process_mib is a float: this value marks a sample whose process memory could not be measured.
PROCESS_MIB_UNKNOWN = -1.0

Handle: TypeAlias = Any
"""An opaque device handle, as the backend hands it out."""

#: nvmlDeviceGetDriverModel's values (Windows only): WDDM is Windows' default for GeForce cards; TCC and MCDM are
#: the compute-only models of data-centre and workstation cards.
DRIVER_MODELS = {0: "WDDM", 1: "TCC", 2: "MCDM"}

_NO_NVML_HINT = "pass --wan22-tier (ini wan22_tier) to run without NVML; VRAM is then not measured"


@runtime_checkable
class NvmlBackend(Protocol):
    """The NVML calls pytest-wan22 makes; failing calls raise errors.NvmlUnavailable."""

    def init(self) -> None:
        """Initialise NVML."""

    def shutdown(self) -> None:
        """Release NVML."""

    def device_count(self) -> int:
        """Number of GPUs NVML sees (in PCI bus order)."""

    def handle(self, index: int) -> Handle:
        """The device with this NVML index."""

    def handle_by_uuid(self, uuid: str) -> Handle:
        """The device (GPU or MIG instance) with exactly this UUID."""

    def index(self, h: Handle) -> int:
        """NVML index of the device; of its parent GPU for a MIG instance."""

    def name(self, h: Handle) -> str:
        """Product name, e.g. 'NVIDIA H200'."""

    def uuid(self, h: Handle) -> str:
        """'GPU-…' or 'MIG-…'."""

    def pci_bus_id(self, h: Handle) -> str:
        """PCI bus id, e.g. '00000000:01:00.0'."""

    def memory_info(self, h: Handle) -> tuple[int, int, int]:
        """(total, used, free) in bytes."""

    def driver_version(self) -> str:
        """Driver version, e.g. '580.95.05'."""

    def cuda_driver_version(self) -> int:
        """CUDA version the driver supports, as NVML encodes it (13000 for 13.0)."""

    def running_processes(self, h: Handle) -> list[tuple[int, int | None]]:
        """(pid, used bytes or None when NVML cannot tell) of compute and graphics processes."""

    def driver_model(self, h: Handle) -> str | None:
        """'WDDM', 'TCC' or 'MCDM' on Windows; None where NVML has no driver model (Linux)."""

    def power_w(self, h: Handle) -> float | None:
        """Board power draw in watts; None when unsupported."""

    def temperature_c(self, h: Handle) -> int | None:
        """GPU temperature in °C; None when unsupported."""

    def sm_clock_mhz(self, h: Handle) -> int | None:
        """Current SM clock; None when unsupported."""

    def mem_clock_mhz(self, h: Handle) -> int | None:
        """Current memory clock; None when unsupported."""

    def pcie_gen(self, h: Handle) -> int | None:
        """Current PCIe link generation; None when unsupported."""

    def pcie_width(self, h: Handle) -> int | None:
        """Current PCIe link width; None when unsupported."""

    def accounting_enabled(self, h: Handle) -> bool | None:
        """Whether accounting mode is on (read only); None when unsupported."""

    def accounting_max_memory(self, h: Handle, pid: int) -> int | None:
        """Peak bytes of pid from accounting stats (read only); None when accounting is off or unknown."""

    def set_accounting_mode(self, h: Handle, enabled: bool) -> None:
        """Change the device's accounting mode (needs root); only enable_accounting calls it."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class PynvmlBackend:
    """NvmlBackend over nvidia-ml-py's `pynvml` module."""

    def __init__(self, module: Any = None) -> None:
        if module is None:
            import pynvml as module  # type: ignore[import-untyped,no-redef,unused-ignore]
        self._nv: Any = module
        self._process_fns: dict[str, str | None] = {}

    def _call(self, fname: str, *args: Any) -> Any:
        try:
            return getattr(self._nv, fname)(*args)
        except self._nv.NVMLError as exc:
            raise NvmlUnavailable(
                f"NVML call {fname} failed: {exc}; check the GPU with `nvidia-smi` (a lost GPU or a "
                f"driver update needs a reboot), or {_NO_NVML_HINT}") from exc

    def _optional_int(self, fname: str, *args: Any) -> int | None:
        value = self._optional(fname, *args)
        return None if value is None else int(value)

    def _optional(self, fname: str, *args: Any) -> Any:
        fn = getattr(self._nv, fname, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except self._nv.NVMLError:
            return None

    def init(self) -> None:
        """nvmlInit; see load_backend for the error translation."""
        self._nv.nvmlInit()

    def shutdown(self) -> None:
        """nvmlShutdown."""
        self._call("nvmlShutdown")

    def device_count(self) -> int:
        """nvmlDeviceGetCount."""
        return int(self._call("nvmlDeviceGetCount"))

    def handle(self, index: int) -> Handle:
        """nvmlDeviceGetHandleByIndex."""
        return self._call("nvmlDeviceGetHandleByIndex", index)

    def handle_by_uuid(self, uuid: str) -> Handle:
        """nvmlDeviceGetHandleByUUID (accepts MIG UUIDs too)."""
        return self._call("nvmlDeviceGetHandleByUUID", uuid)

    def index(self, h: Handle) -> int:
        """nvmlDeviceGetIndex, through the parent for a MIG handle."""
        if self._optional("nvmlDeviceIsMigDeviceHandle", h):
            h = self._call("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", h)
        return int(self._call("nvmlDeviceGetIndex", h))

    def name(self, h: Handle) -> str:
        """nvmlDeviceGetName."""
        return _text(self._call("nvmlDeviceGetName", h))

    def uuid(self, h: Handle) -> str:
        """nvmlDeviceGetUUID."""
        return _text(self._call("nvmlDeviceGetUUID", h))

    def pci_bus_id(self, h: Handle) -> str:
        """nvmlDeviceGetPciInfo().busId."""
        info = self._call("nvmlDeviceGetPciInfo", h)
        bus = getattr(info, "busId", b"") or getattr(info, "busIdLegacy", b"")
        return _text(bus)

    def memory_info(self, h: Handle) -> tuple[int, int, int]:
        """nvmlDeviceGetMemoryInfo."""
        m = self._call("nvmlDeviceGetMemoryInfo", h)
        return int(m.total), int(m.used), int(m.free)

    def driver_version(self) -> str:
        """nvmlSystemGetDriverVersion."""
        return _text(self._call("nvmlSystemGetDriverVersion"))

    def cuda_driver_version(self) -> int:
        """nvmlSystemGetCudaDriverVersion_v2, else the unversioned call."""
        value = self._optional("nvmlSystemGetCudaDriverVersion_v2")
        if value is None:
            value = self._call("nvmlSystemGetCudaDriverVersion")
        return int(value)

    def _errors(self, *names: str) -> tuple[type[BaseException], ...]:
        found = (getattr(self._nv, n, None) for n in names)
        return tuple(c for c in found if isinstance(c, type) and issubclass(c, BaseException))

    def _processes(self, h: Handle, kind: str) -> list[Any]:
        """Compute or graphics processes, through the newest entry point the driver has (v3, v2, v1)."""
        base = f"nvmlDeviceGet{kind}RunningProcesses"
        cached = self._process_fns.get(kind, "")
        candidates = [cached] if cached else [f"{base}_v3", f"{base}_v2", base]
        if cached is None:
            return []
        missing = self._errors("NVMLLibraryMismatchError", "NVMLError_FunctionNotFound")
        unsupported = self._errors("NVMLError_NotSupported")
        for fname in candidates:
            fn = getattr(self._nv, fname, None)
            if fn is None:
                continue
            try:
                result = list(fn(h))
            except missing:
                continue
            except unsupported:
                self._process_fns[kind] = None
                return []
            except self._nv.NVMLError as exc:
                if kind == "Graphics":
                    return []
                raise NvmlUnavailable(
                    f"NVML call {fname} failed: {exc}; per-process VRAM needs access to the GPU's process "
                    "list (in MIG mode put the MIG instance's UUID in CUDA_VISIBLE_DEVICES)") from exc
            self._process_fns[kind] = fname
            return result
        self._process_fns[kind] = None
        return []

    def running_processes(self, h: Handle) -> list[tuple[int, int | None]]:
        """Compute and graphics processes merged by pid (the larger reading wins)."""
        merged: dict[int, int | None] = {}
        for kind in ("Compute", "Graphics"):
            for p in self._processes(h, kind):
                pid = int(p.pid)
                raw = getattr(p, "usedGpuMemory", None)
                used = None if raw is None else int(raw)
                old = merged.get(pid)
                merged[pid] = used if old is None else old if used is None else max(old, used)
        return list(merged.items())

    def driver_model(self, h: Handle) -> str | None:
        """nvmlDeviceGetDriverModel's current model (Windows only; NotSupported elsewhere gives None)."""
        value = self._optional("nvmlDeviceGetDriverModel", h)
        if value is None:
            return None
        current = value[0] if isinstance(value, (list, tuple)) else value
        return DRIVER_MODELS.get(int(current), str(current))

    def power_w(self, h: Handle) -> float | None:
        """nvmlDeviceGetPowerUsage (milliwatts) in watts."""
        mw = self._optional("nvmlDeviceGetPowerUsage", h)
        return None if mw is None else mw / 1000.0

    def temperature_c(self, h: Handle) -> int | None:
        """nvmlDeviceGetTemperature(GPU sensor)."""
        return self._optional_int("nvmlDeviceGetTemperature", h, getattr(self._nv, "NVML_TEMPERATURE_GPU", 0))

    def sm_clock_mhz(self, h: Handle) -> int | None:
        """nvmlDeviceGetClockInfo(SM)."""
        return self._optional_int("nvmlDeviceGetClockInfo", h, getattr(self._nv, "NVML_CLOCK_SM", 1))

    def mem_clock_mhz(self, h: Handle) -> int | None:
        """nvmlDeviceGetClockInfo(MEM)."""
        return self._optional_int("nvmlDeviceGetClockInfo", h, getattr(self._nv, "NVML_CLOCK_MEM", 2))

    def pcie_gen(self, h: Handle) -> int | None:
        """nvmlDeviceGetCurrPcieLinkGeneration."""
        return self._optional_int("nvmlDeviceGetCurrPcieLinkGeneration", h)

    def pcie_width(self, h: Handle) -> int | None:
        """nvmlDeviceGetCurrPcieLinkWidth."""
        return self._optional_int("nvmlDeviceGetCurrPcieLinkWidth", h)

    def accounting_enabled(self, h: Handle) -> bool | None:
        """nvmlDeviceGetAccountingMode."""
        mode = self._optional("nvmlDeviceGetAccountingMode", h)
        return None if mode is None else mode == getattr(self._nv, "NVML_FEATURE_ENABLED", 1)

    def accounting_max_memory(self, h: Handle, pid: int) -> int | None:
        """nvmlDeviceGetAccountingStats(pid).maxMemoryUsage when accounting is on."""
        if not self.accounting_enabled(h):
            return None
        stats = self._optional("nvmlDeviceGetAccountingStats", h, pid)
        value = getattr(stats, "maxMemoryUsage", None)
        return None if value is None else int(value)

    def set_accounting_mode(self, h: Handle, enabled: bool) -> None:
        """nvmlDeviceSetAccountingMode (changes the device's settings)."""
        flag = "NVML_FEATURE_ENABLED" if enabled else "NVML_FEATURE_DISABLED"
        self._call("nvmlDeviceSetAccountingMode", h, getattr(self._nv, flag, int(enabled)))


def _init_failure(exc: Exception, nv: Any) -> NvmlUnavailable:
    """Explain why nvmlInit failed and what to do about it."""
    def is_(name: str) -> bool:
        cls = getattr(nv, name, None)
        return isinstance(cls, type) and isinstance(exc, cls)

    if is_("NVMLError_LibraryNotFound"):
        cause = ("libnvidia-ml.so.1, the NVIDIA driver's NVML library, was not found "
                 "(NVMLError_LibraryNotFound): install the NVIDIA driver or put its library folder on "
                 "LD_LIBRARY_PATH; in a container start it with the NVIDIA container toolkit (--gpus all)")
    elif is_("NVMLError_DriverNotLoaded"):
        cause = ("the NVIDIA kernel driver is not loaded (NVMLError_DriverNotLoaded): check `nvidia-smi`, "
                 "load the driver (modprobe nvidia) or reboot after a driver install")
    elif is_("NVMLError_LibRmVersionMismatch"):
        cause = ("the NVML library and the loaded kernel driver have different versions "
                 "(NVMLError_LibRmVersionMismatch): reboot after the driver update")
    elif is_("NVMLError_NoPermission"):
        cause = ("no permission to open the GPU device files (NVMLError_NoPermission): give this user "
                 "access to /dev/nvidia* (e.g. the video group)")
    else:
        cause = f"nvmlInit failed: {type(exc).__name__}: {exc}; check the GPU with `nvidia-smi`"
    return NvmlUnavailable(f"NVML is unavailable: {cause}; or {_NO_NVML_HINT}")


def load_backend() -> NvmlBackend:
    """An initialised PynvmlBackend, or NvmlUnavailable naming the cause and the fix."""
    try:
        import pynvml  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise NvmlUnavailable(
            f"NVML is unavailable: nvidia-ml-py is not installed (import pynvml failed: {exc}); "
            f"install it with `pip install nvidia-ml-py`, or {_NO_NVML_HINT}") from exc
    backend = PynvmlBackend(pynvml)
    try:
        backend.init()
    except pynvml.NVMLError as exc:
        raise _init_failure(exc, pynvml) from exc
    return backend


@dataclass(frozen=True)
class DeviceInfo:
    """One GPU (or MIG instance) as NVML describes it."""

    index: int
    name: str
    uuid: str
    pci_bus_id: str
    memory_total_mib: int
    driver: str
    cuda: str
    driver_model: str | None = None  # WDDM, TCC or MCDM on Windows


def format_cuda_version(value: int) -> str:
    """NVML's CUDA version integer as text: 13000 -> '13.0', 12080 -> '12.8'."""
    return f"{value // 1000}.{(value % 1000) // 10}"


def describe(backend: NvmlBackend, h: Handle) -> DeviceInfo:
    """DeviceInfo of a handle."""
    total, _, _ = backend.memory_info(h)
    return DeviceInfo(
        index=backend.index(h), name=backend.name(h), uuid=backend.uuid(h),
        pci_bus_id=backend.pci_bus_id(h), memory_total_mib=total // MIB,
        driver=backend.driver_version(), cuda=format_cuda_version(backend.cuda_driver_version()),
        driver_model=driver_model(backend, h))


def driver_model(backend: NvmlBackend, h: Handle) -> str | None:
    """The device's driver model; None on Linux, or from a backend that does not tell."""
    read = getattr(backend, "driver_model", None)
    try:
        return None if read is None else read(h)
    except Exception:
        return None


def vram_source(device: DeviceInfo) -> str:
    """How VRAM is measured on this device, for the session header."""
    if device.driver_model == "WDDM":
        return (f"VRAM on {device.name} (WDDM driver model): {VRAM_SOURCES[VRAM_WDDM]}; a run's peak is PyTorch's "
                "(reserved for budgets and the fit check, allocated for comparisons), the device-wide figure is "
                "recorded beside it")
    return f"VRAM: {VRAM_SOURCES[VRAM_PROCESS]} (device-wide where they cannot be told apart), and PyTorch's peak " \
           "from the probe node"


def list_devices(backend: NvmlBackend) -> list[DeviceInfo]:
    """Every GPU NVML sees, by NVML index."""
    return [describe(backend, backend.handle(i)) for i in range(backend.device_count())]


def _no_gpu() -> NvmlUnavailable:
    return NvmlUnavailable(
        f"NVML sees no GPU: check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or {_NO_NVML_HINT}")


def probe(backend: NvmlBackend, index: int | None = None, uuid: str | None = None) -> DeviceInfo:
    """The GPU with this NVML index or UUID (a GPU-… or MIG-… UUID); index 0 when neither is given."""
    count = backend.device_count()
    if count == 0:
        raise _no_gpu()
    if uuid is not None:
        for i in range(count):
            h = backend.handle(i)
            if backend.uuid(h) == uuid:
                return describe(backend, h)
        if uuid.startswith("MIG-"):
            try:
                return describe(backend, backend.handle_by_uuid(uuid))
            except NvmlUnavailable as exc:
                raise ConfigError(f"no MIG instance with UUID {uuid} ({exc}); list them with "
                                  "`nvidia-smi -L` and fix CUDA_VISIBLE_DEVICES") from exc
        raise ConfigError(f"no GPU with UUID {uuid}; `nvidia-smi -L` lists the UUIDs, fix "
                          "CUDA_VISIBLE_DEVICES or --wan22-gpu-index (ini wan22_gpu_index)")
    i = 0 if index is None else index
    if not 0 <= i < count:
        raise ConfigError(f"GPU index {i} does not exist: NVML sees {count} GPU(s), indices 0..{count - 1}; "
                          "fix --wan22-gpu-index (ini wan22_gpu_index)")
    return describe(backend, backend.handle(i))


def _pci_key(bus_id: str) -> tuple[int, ...]:
    """Sort key for a PCI bus id 'DDDDDDDD:BB:DD.F' (hex fields)."""
    parts = bus_id.replace(".", ":").split(":")
    try:
        return tuple(int(p, 16) for p in parts)
    except ValueError:
        return (1 << 62,)


def resolve_visible_device(backend: NvmlBackend, visible: str | None, index: int) -> DeviceInfo:
    """The NVML device behind CUDA device `index` of a server run with CUDA_VISIBLE_DEVICES=`visible`.

    With CUDA_DEVICE_ORDER=PCI_BUS_ID (the launcher sets it) an integer entry counts GPUs in PCI bus order,
    as NVML indices do. Entries may also be a GPU UUID or a unique prefix of one ('GPU-8932f937'), a MIG
    UUID ('MIG-…'), or a legacy 'MIG-GPU-<uuid>/<gi>/<ci>' (mapped to its parent GPU).
    """
    devices = list_devices(backend)
    if not devices:
        raise _no_gpu()
    fix = "fix CUDA_VISIBLE_DEVICES or --wan22-gpu-index (ini wan22_gpu_index)"
    if visible is None:
        entry = str(index)
    else:
        entries = [e.strip() for e in visible.split(",")]
        entries = entries[: next((k for k, e in enumerate(entries) if not e), len(entries))]
        if not 0 <= index < len(entries):
            raise ConfigError(f"CUDA device {index} is not visible: CUDA_VISIBLE_DEVICES={visible!r} "
                              f"makes {len(entries)} device(s) visible; {fix}")
        entry = entries[index]
    if entry.lstrip("-").isdigit():
        k = int(entry)
        by_pci = sorted(devices, key=lambda d: _pci_key(d.pci_bus_id))
        if not 0 <= k < len(by_pci):
            raise ConfigError(f"GPU {k} (from CUDA_VISIBLE_DEVICES={visible!r}, device {index}) does not "
                              f"exist: NVML sees {len(by_pci)} GPU(s); {fix}")
        return by_pci[k]
    if entry.startswith("MIG-GPU-"):
        entry = entry[len("MIG-"):].split("/", 1)[0]
    elif entry.startswith("MIG-"):
        return probe(backend, uuid=entry)
    if entry.startswith("GPU-"):
        matches = [d for d in devices if d.uuid.lower().startswith(entry.lower())]
        if len(matches) == 1:
            return matches[0]
        known = ", ".join(d.uuid for d in devices)
        what = "matches several GPUs" if matches else "matches no GPU"
        raise ConfigError(f"CUDA_VISIBLE_DEVICES entry {entry!r} {what} (NVML sees {known}); {fix}")
    raise ConfigError(f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither an index, a GPU-… UUID nor a "
                      f"MIG-… UUID; {fix}")


# --- neighbours ----------------------------------------------------------------------------------


def neighbours(backend: NvmlBackend, h: Handle, ours: Iterable[int]) -> tuple[Neighbour, ...]:
    """The compute processes on the GPU now that are not among `ours` (the session's processes: pytest's process
    tree and the servers it launched)."""
    mine = set(ours)
    return merge_neighbours([[Neighbour(pid, process_name(pid), None if used is None else used / MIB)
                              for pid, used in backend.running_processes(h) if pid not in mine]])


def merge_neighbours(groups: Iterable[Iterable[Neighbour]]) -> tuple[Neighbour, ...]:
    """One entry per PID over several runs: the name first seen, the most memory any run saw."""
    seen: dict[int, Neighbour] = {}
    for group in groups:
        for n in group:
            old = seen.setdefault(n.pid, n)
            if n.used_mib is not None and (old.used_mib is None or n.used_mib > old.used_mib):
                seen[n.pid] = Neighbour(n.pid, old.name, n.used_mib)
    return tuple(seen[p] for p in sorted(seen))


# --- readings and accounting ---------------------------------------------------------------------


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def environment_readings(backend: NvmlBackend, h: Handle) -> dict[str, Any]:
    """Driver, CUDA, power, temperature, clocks and PCIe link now; None for what cannot be read."""
    cuda = _safe(backend.cuda_driver_version)
    return {
        "driver": _safe(backend.driver_version),
        "cuda": None if cuda is None else format_cuda_version(cuda),
        "power_w": _safe(lambda: backend.power_w(h)),
        "temperature_c": _safe(lambda: backend.temperature_c(h)),
        "sm_clock_mhz": _safe(lambda: backend.sm_clock_mhz(h)),
        "mem_clock_mhz": _safe(lambda: backend.mem_clock_mhz(h)),
        "pcie_gen": _safe(lambda: backend.pcie_gen(h)),
        "pcie_width": _safe(lambda: backend.pcie_width(h)),
    }


def accounting_peak_mib(backend: NvmlBackend, h: Handle, pids: Iterable[int]) -> float | None:
    """Sum of the accounting peaks of pids (read only); None when accounting knows none of them.

    Accounting keeps each process's peak over its whole life, so for a long-lived server this is the
    session's peak, not one run's.
    """
    total = 0
    found = False
    for pid in pids:
        value = backend.accounting_max_memory(h, pid)
        if value is not None:
            total += value
            found = True
    return total / MIB if found else None


def enable_accounting(backend: NvmlBackend, h: Handle) -> bool:
    """Switch accounting mode on (changes device settings; only behind --wan22-nvml-accounting).

    Returns whether it was already on, so the caller can restore the setting with disable_accounting.
    """
    state = backend.accounting_enabled(h)
    if state is None:
        raise NvmlUnavailable("this GPU does not support NVML accounting mode; drop --wan22-nvml-accounting "
                              "(ini wan22_nvml_accounting)")
    if state:
        return True
    try:
        backend.set_accounting_mode(h, True)
    except NvmlUnavailable as exc:
        raise NvmlUnavailable(
            f"could not switch on NVML accounting mode ({exc}); it needs root: run `nvidia-smi -am 1` as "
            "root once, or drop --wan22-nvml-accounting (ini wan22_nvml_accounting)") from exc
    return False


def disable_accounting(backend: NvmlBackend, h: Handle) -> None:
    """Switch accounting mode off again (changes device settings)."""
    backend.set_accounting_mode(h, False)


# --- VRAM monitor ----------------------------------------------------------------------------------


def _keep_indices(process: Sequence[float], device: Sequence[float], max_points: int) -> list[int]:
    """Indices to keep so that at most max_points remain: first, last, both peaks, and bucket maxima."""
    n = len(device)
    if n <= max_points:
        return list(range(n))
    keep = {0, n - 1, max(range(n), key=device.__getitem__), max(range(n), key=process.__getitem__)}
    buckets = max(0, (max_points - 4) // 2)
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        if lo < hi:
            keep.add(max(range(lo, hi), key=device.__getitem__))
            keep.add(max(range(lo, hi), key=process.__getitem__))
    return sorted(keep)


def downsample(samples: Sequence[VramSample], max_points: int = MAX_REPORT_SAMPLES) -> tuple[VramSample, ...]:
    """At most max_points samples (max_points >= 4), always keeping first, last and both peak samples."""
    if max_points < 4:
        raise ValueError("max_points must be at least 4")
    procs = [PROCESS_MIB_UNKNOWN if s.process_mib is None else s.process_mib for s in samples]
    idx = _keep_indices(procs, [s.device_mib for s in samples], max_points)
    return tuple(samples[i] for i in idx)


class VramMonitor:
    """Samples one GPU's used memory and the server processes' memory on a daemon thread.

    Use as a context manager (or start()/stop()); report() gives a records.VramReport. Nothing raises
    from sampling: NVML failures end up in the report's reason. `device` is a DeviceInfo (found again by
    its UUID, MIG-safe), an NVML index or a UUID; `pids` returns the server's PIDs (e.g.
    ``lambda: process_tree(server_pid)``) and is called again every `pids_refresh_s` seconds and whenever
    NVML lists a PID not seen before; `interval` is the sampling period in seconds. Other processes on the GPU
    are named in the report's `neighbours`, except those `own` returns (the session's other processes: pytest's
    process tree, the other side of an A/B session), read at the same times as `pids`.
    """

    def __init__(self, backend: NvmlBackend, device: DeviceInfo | int | str = 0, *,
                 pids: Callable[[], Iterable[int]] | None = None,
                 interval: float = DEFAULT_INTERVAL_S, max_samples: int = MAX_REPORT_SAMPLES,
                 pids_refresh_s: float = DEFAULT_PIDS_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic,
                 own: Callable[[], Iterable[int]] | None = None) -> None:
        if not interval > 0:
            raise ConfigError(f"VRAM sampling interval must be > 0 s, got {interval!r}; fix "
                              "--wan22-vram-interval (ini wan22_vram_interval)")
        if max_samples < 4:
            raise ConfigError("a VRAM report needs room for at least 4 samples, got "
                              f"max_samples={max_samples}; pass 4 or more")
        self._backend = backend
        self._device = device
        self._pids_fn = pids
        self.interval_s = float(interval)
        self.max_samples = max_samples
        self._pids_refresh_s = pids_refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle: Handle = None
        self._t0 = clock()
        self._t: array[float] = array("d")
        self._proc: array[float] = array("d")
        self._dev: array[float] = array("d")
        self._marks: list[tuple[str, float]] = []
        self._baseline: float | None = None
        self._reasons: list[str] = []
        self._fatal: str | None = None
        self._started = False
        self._stopped = False
        self._report: VramReport | None = None
        # process bookkeeping
        self._ours: set[int] = set()
        self._foreign: set[int] = set()
        self._last_refresh = float("-inf")
        self._matched_any = False
        self._unknown_usage = False
        self._proc_error: str | None = None
        self._pids_error: str | None = None
        self._neighbours: dict[int, Neighbour] = {}
        self._own_fn = own
        self._own: set[int] = set()
        self._wddm = False  # the driver model reports no per-process memory

    # -- lifecycle --

    def __enter__(self) -> VramMonitor:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True while the sampling thread runs."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def samples_taken(self) -> int:
        """Number of samples recorded so far."""
        return len(self._t)

    @property
    def marks(self) -> tuple[tuple[str, float], ...]:
        """Named time marks as (name, seconds from start), in the order they were made."""
        with self._lock:
            return tuple((name, t - self._t0) for name, t in self._marks)

    def mark(self, name: str) -> float:
        """Record a named time mark (e.g. 'submit', 'done'); returns its seconds from start."""
        now = self._clock()
        with self._lock:
            self._marks.append((name, now))
        return now - self._t0

    def latest(self) -> tuple[float | None, float | None]:
        """(now, peak) MiB so far: the server's processes where known, else the whole device (live display)."""
        with self._lock:
            if not self._t:
                return None, None
            procs = [p for p in self._proc if p != PROCESS_MIB_UNKNOWN]
            if procs and self._proc[-1] != PROCESS_MIB_UNKNOWN:
                return self._proc[-1], max(procs)
            return self._dev[-1], max(self._dev)

    def peak_between(self, start: float, end: float) -> tuple[float | None, float | None]:
        """(process, device) peak MiB of the full-rate samples with start <= t <= end (seconds from start).

        Pair it with marks to get one phase's peak; None where no sample (or no process figure) falls in.
        """
        with self._lock:
            rows = [(p, d) for t, p, d in zip(self._t, self._proc, self._dev, strict=True)
                    if start <= t <= end]
        procs = [p for p, _ in rows if p != PROCESS_MIB_UNKNOWN]
        return (max(procs) if procs else None), (max(d for _, d in rows) if rows else None)

    def start(self) -> VramMonitor:
        """Read the baseline and start sampling; never raises for NVML trouble (see report())."""
        if self._started:
            raise RuntimeError("a VramMonitor runs once; make a new one")
        self._started = True
        try:
            dev = self._device
            if isinstance(dev, DeviceInfo):
                self._handle = self._backend.handle_by_uuid(dev.uuid)
            elif isinstance(dev, str):
                self._handle = self._backend.handle_by_uuid(dev)
            else:
                self._handle = self._backend.handle(dev)
            self._baseline = self._backend.memory_info(self._handle)[1] / MIB
            self._wddm = driver_model(self._backend, self._handle) == "WDDM"
        except Exception as exc:
            self._fatal = f"VRAM not measured: reading GPU {self._device_label()} failed: {exc}"
            self._stopped = True
            return self
        self._t0 = self._clock()
        self._thread = threading.Thread(target=self._run, name="wan22-vram-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> VramReport:
        """Stop sampling (after one last sample) and return the report."""
        if self._thread is not None and not self._stopped:
            self._stop.set()
            self._thread.join(timeout=max(2.0, 20 * self.interval_s))
            if self._thread.is_alive():
                self._reasons.append("the sampling thread did not stop (an NVML call hung)")
        self._stopped = True
        self._report = None
        return self.report()

    # -- sampling --

    def _device_label(self) -> str:
        dev = self._device
        return dev.uuid if isinstance(dev, DeviceInfo) else repr(dev)

    def _run(self) -> None:
        next_at = self._clock()
        while True:
            stopping = self._stop.is_set()
            try:
                self._sample()
            except Exception as exc:
                self._reasons.append(f"sampling stopped after {len(self._t)} sample(s): "
                                     f"{type(exc).__name__}: {exc}")
                return
            if stopping:
                return
            next_at += self.interval_s
            delay = next_at - self._clock()
            if delay < 0:
                next_at = self._clock()
                delay = 0.0
            self._stop.wait(delay)

    def _refresh_pids(self, now: float, nvml_pids: set[int]) -> None:
        assert self._pids_fn is not None
        try:
            ours = {int(p) for p in self._pids_fn()}
        except Exception as exc:
            if self._pids_error is None:
                self._pids_error = f"listing the server's processes failed: {type(exc).__name__}: {exc}"
            self._last_refresh = now
            return
        self._ours = ours
        self._foreign = nvml_pids - ours
        self._last_refresh = now
        if self._own_fn is not None:
            with contextlib.suppress(Exception):  # no neighbours named is better than the session's own
                self._own = {int(p) for p in self._own_fn()}

    def _sample(self) -> None:
        backend, h = self._backend, self._handle
        used = backend.memory_info(h)[1]
        now = self._clock()
        proc = PROCESS_MIB_UNKNOWN
        if self._pids_fn is not None:
            try:
                procs = backend.running_processes(h)
            except Exception as exc:
                if self._proc_error is None:
                    self._proc_error = f"reading the GPU's process list failed: {type(exc).__name__}: {exc}"
            else:
                nvml_pids = {p for p, _ in procs}
                if (now - self._last_refresh >= self._pids_refresh_s
                        or not nvml_pids <= (self._ours | self._foreign)):
                    self._refresh_pids(now, nvml_pids)
                total = 0
                known = True
                ours = self._ours
                for pid, mem in procs:
                    if pid in ours:
                        self._matched_any = True
                        if mem is None:
                            known = False
                        else:
                            total += mem
                    elif pid in self._foreign and pid not in self._own:
                        self._saw_neighbour(pid, mem)
                if known:
                    proc = total / MIB
                else:
                    self._unknown_usage = True
        with self._lock:
            self._t.append(now - self._t0)
            self._proc.append(proc)
            self._dev.append(used / MIB)

    def _saw_neighbour(self, pid: int, used: int | None) -> None:
        old = self._neighbours.get(pid)
        mib = None if used is None else used / MIB
        if old is None:
            self._neighbours[pid] = Neighbour(pid, process_name(pid), mib)
        elif mib is not None and (old.used_mib is None or mib > old.used_mib):
            self._neighbours[pid] = Neighbour(pid, old.name, mib)

    # -- report --

    def report(self) -> VramReport:
        """What was seen so far (final after stop())."""
        if self._report is not None:
            return self._report
        if self._fatal is not None:
            rep = VramReport(available=False, reason=self._fatal, interval_s=self.interval_s)
        elif not self._started:
            rep = VramReport(available=False, reason="the VRAM monitor was not started",
                             interval_s=self.interval_s)
        else:
            rep = self._build_report()
        if self._stopped and (self._thread is None or not self._thread.is_alive()):
            self._report = rep
        return rep

    def _build_report(self) -> VramReport:
        with self._lock:
            t, proc, dev = list(self._t), list(self._proc), list(self._dev)
        reasons = list(self._reasons)
        if not t:
            return VramReport(available=False, interval_s=self.interval_s,
                              baseline_device_mib=self._baseline,
                              reason="; ".join(reasons) or "no VRAM sample was taken")
        peak_dev = max(dev)
        known = [p for p in proc if p != PROCESS_MIB_UNKNOWN]
        if self._pids_fn is None:
            reasons.append("no server PID given: only device-wide memory was measured")
        elif self._wddm and (not self._matched_any or self._unknown_usage):
            reasons.append("the GPU runs the WDDM driver model, where NVML reports no per-process memory: the peak is "
                           "PyTorch's in the server (the probe node), the device-wide figure is recorded beside it")
            proc = [PROCESS_MIB_UNKNOWN] * len(proc)
            known = []
        elif not self._matched_any and peak_dev > 0 and (self._proc_error is None or known):
            reasons.append(
                "NVML listed none of the server's processes (PIDs "
                f"{sorted(self._ours) or 'unknown'}) while the device used up to {peak_dev:.0f} MiB: "
                "inside a container NVML reports host PIDs (run it with --pid=host), or another process "
                "holds the memory; process VRAM not measured, use the device-wide figures")
            proc = [PROCESS_MIB_UNKNOWN] * len(proc)
            known = []
        if self._unknown_usage and not self._wddm:
            reasons.append("NVML gave no per-process memory for some samples (e.g. MIG without privileges); "
                           "those samples have process_mib = -1")
        for extra in (self._proc_error, self._pids_error):
            if extra:
                reasons.append(extra)
        keep = _keep_indices(proc, dev, self.max_samples)
        samples = tuple(VramSample(t=t[i], process_mib=proc[i], device_mib=dev[i]) for i in keep)
        # Neighbours only where the server's own processes were told apart (NVML matched one of them at least):
        # otherwise every process, the server's included, would look like one.
        near = tuple(self._neighbours[p] for p in sorted(self._neighbours)) if self._matched_any else ()
        source = VRAM_PROCESS if known else VRAM_WDDM if self._wddm and self._pids_fn is not None else VRAM_DEVICE
        return VramReport(
            available=True, reason="; ".join(reasons), interval_s=self.interval_s,
            peak_process_mib=max(known) if known else None, peak_device_mib=peak_dev,
            baseline_device_mib=self._baseline, samples=samples, neighbours=near, source=source)
