"""FakeNvml: a scripted NvmlBackend (devices, used memory over time, processes, failures).

Build it in Python::

    fake = FakeNvml([FakeDevice(used_mib=[1000, 9000, 1000], processes=[FakeProcess(pid, 800)])])

or from a JSON-able spec (what an inner conftest's ``pytest_wan22_nvml_backend`` hook can return)::

    FakeNvml.from_spec({"devices": [{"name": "NVIDIA GeForce RTX 5090", "memory_mib": 32607,
                                     "uuid": "GPU-...", "used_mib": [1000, 9000, 1000],
                                     "processes": [{"pid": "children", "used_mib": 800}]}]})

A memory value (``used_mib`` of a device or of a process) is a number, a list stepped once per
``memory_info`` call of that device (probe() and the monitor's baseline read are calls too; the last value
repeats; process values step with their device), a
callable of the seconds since the fake was made, or a ``Timeline`` (spec: ``{"timeline": [[t, mib], ...]}``,
piecewise constant). A process ``pid`` is an int, ``"self"`` (this process), ``"children"`` (every
descendant of this process, each using ``used_mib``), or a name bound later with ``bind_pid``. A Windows GPU under
the WDDM driver model is ``driver_model="WDDM"`` with processes whose ``used_mib`` is None (NVML's
NVML_VALUE_NOT_AVAILABLE there).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pytest_wan22.errors import NvmlUnavailable
from pytest_wan22.gpu import MIB
from pytest_wan22.processes import process_tree

MemValue = float | None | Sequence[float | None] | Callable[[float], float | None]


@dataclass(frozen=True)
class Timeline:
    """Piecewise-constant memory over time: points are (seconds, MiB), sorted by time."""

    points: tuple[tuple[float, float | None], ...]

    def __call__(self, t: float) -> float | None:
        value = self.points[0][1] if self.points else 0.0
        for at, v in self.points:
            if at > t:
                break
            value = v
        return value


@dataclass
class FakeProcess:
    """A process on a fake device."""

    pid: int | str
    used_mib: MemValue = 0.0


@dataclass
class FakeDevice:
    """A scripted GPU (or MIG instance when listed in another device's ``mig``)."""

    name: str = "NVIDIA GeForce RTX 5090"
    memory_mib: int = 32607
    uuid: str = ""
    pci_bus_id: str = ""
    used_mib: MemValue = 0.0
    processes: list[FakeProcess] = field(default_factory=list)
    power_w: float | None = 75.5
    temperature_c: int | None = 41
    sm_clock_mhz: int | None = 2407
    mem_clock_mhz: int | None = 14001
    pcie_gen: int | None = 5
    pcie_width: int | None = 16
    accounting: bool | None = False
    driver_model: str | None = None  # "WDDM", "TCC" or "MCDM" as on Windows; None as on Linux
    accounting_max_mib: dict[int, float] = field(default_factory=dict)
    mig: list[FakeDevice] = field(default_factory=list)
    index: int = -1
    parent: FakeDevice | None = None
    memory_calls: int = 0


_DEVICE_KEYS = {"name", "memory_mib", "uuid", "pci_bus_id", "used_mib", "processes", "power_w",
                "temperature_c", "sm_clock_mhz", "mem_clock_mhz", "pcie_gen", "pcie_width", "accounting",
                "accounting_max_mib", "mig", "driver_model"}
_TOP_KEYS = {"devices", "driver", "cuda", "fail", "fail_on", "init_error", "allow_settings"}


def _mem_from_spec(value: Any) -> MemValue:
    if isinstance(value, Mapping):
        if set(value) != {"timeline"}:
            raise ValueError(f"a memory value dict needs exactly the key 'timeline', got {sorted(value)}")
        points = tuple(sorted((float(t), None if v is None else float(v)) for t, v in value["timeline"]))
        return Timeline(points)
    if isinstance(value, list):
        return [None if v is None else float(v) for v in value]
    return None if value is None else float(value)


def _device_from_spec(spec: Mapping[str, Any]) -> FakeDevice:
    unknown = set(spec) - _DEVICE_KEYS
    if unknown:
        raise ValueError(f"unknown fake device keys {sorted(unknown)}; known: {sorted(_DEVICE_KEYS)}")
    kw: dict[str, Any] = {k: v for k, v in spec.items() if k not in {"used_mib", "processes", "mig",
                                                                      "accounting_max_mib"}}
    if "used_mib" in spec:
        kw["used_mib"] = _mem_from_spec(spec["used_mib"])
    kw["processes"] = [FakeProcess(p["pid"], _mem_from_spec(p.get("used_mib", 0.0)))
                       for p in spec.get("processes", ())]
    kw["accounting_max_mib"] = {int(k): float(v) for k, v in spec.get("accounting_max_mib", {}).items()}
    kw["mig"] = [_device_from_spec(m) for m in spec.get("mig", ())]
    return FakeDevice(**kw)


class FakeNvml:
    """A scripted, thread-safe NvmlBackend that records every call and every setting change."""

    def __init__(self, devices: Sequence[FakeDevice] | None = None, *, driver: str = "580.95.05",
                 cuda: int = 13000, clock: Callable[[], float] = time.monotonic) -> None:
        self.devices = list(devices) if devices is not None else [FakeDevice()]
        self.driver = driver
        self.cuda = cuda
        self.clock = clock
        self.t0 = clock()
        self.fail: bool | str = False
        self.fail_on: set[str] = set()
        self.init_error: str | None = None
        self.allow_settings = True
        self.calls: Counter[str] = Counter()
        self.setting_calls: list[tuple[str, str, Any]] = []
        self.bound_pids: dict[str, int] = {}
        self._lock = threading.Lock()
        for i, dev in enumerate(self.devices):
            dev.index = i
            dev.uuid = dev.uuid or f"GPU-{i:08x}-0000-4000-8000-{i:012x}"
            dev.pci_bus_id = dev.pci_bus_id or f"00000000:{i + 1:02X}:00.0"
            for j, mig in enumerate(dev.mig):
                mig.parent = dev
                mig.index = i
                mig.uuid = mig.uuid or f"MIG-{i:08x}-{j:04x}-4000-8000-{j:012x}"
                mig.pci_bus_id = mig.pci_bus_id or dev.pci_bus_id

    # -- construction helpers --

    @classmethod
    def single(cls, **device: Any) -> FakeNvml:
        """One device with these FakeDevice fields."""
        return cls([FakeDevice(**device)])

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | str) -> FakeNvml:
        """Build from a dict or JSON text (see the module docstring for the keys)."""
        data: Mapping[str, Any] = json.loads(spec) if isinstance(spec, str) else spec
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise ValueError(f"unknown fake NVML keys {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
        cuda = data.get("cuda", 13000)
        if isinstance(cuda, str):
            major, _, minor = cuda.partition(".")
            cuda = int(major) * 1000 + int(minor or 0) * 10
        fake = cls([_device_from_spec(d) for d in data.get("devices", [{}])],
                   driver=str(data.get("driver", "580.95.05")), cuda=int(cuda))
        fake.fail = data.get("fail", False)
        fake.fail_on = set(data.get("fail_on", ()))
        fake.init_error = data.get("init_error")
        fake.allow_settings = bool(data.get("allow_settings", True))
        return fake

    def bind_pid(self, name: str, pid: int) -> None:
        """Make processes whose pid is `name` report as `pid`."""
        self.bound_pids[name] = pid

    def elapsed(self) -> float:
        """Seconds on the fake's clock (what callable memory values receive)."""
        return self.clock() - self.t0

    def restart_clock(self) -> None:
        """Start the fake's clock from zero again."""
        self.t0 = self.clock()

    # -- internals --

    def _enter(self, call: str) -> None:
        with self._lock:
            self.calls[call] += 1
        if self.fail or call in self.fail_on:
            why = self.fail if isinstance(self.fail, str) else "GPU is lost"
            raise NvmlUnavailable(f"NVML call {call} failed: {why}")

    def _value(self, value: MemValue, step: int) -> float | None:
        if value is None or isinstance(value, (int, float)):
            return value
        if callable(value):
            return value(self.elapsed())
        seq = list(value)
        return seq[min(max(step, 0), len(seq) - 1)] if seq else 0.0

    def _pids(self, pid: int | str) -> list[int]:
        if isinstance(pid, int):
            return [pid]
        if pid == "self":
            return [os.getpid()]
        if pid == "children":
            return sorted(process_tree(os.getpid()) - {os.getpid()})
        return [self.bound_pids[pid]] if pid in self.bound_pids else []

    def _dev(self, h: Any) -> FakeDevice:
        if not isinstance(h, FakeDevice):
            raise NvmlUnavailable(f"NVML: invalid handle {h!r}")
        return h

    # -- NvmlBackend --

    def init(self) -> None:
        """Count the call; raise init_error when set."""
        self._enter("init")
        if self.init_error:
            raise NvmlUnavailable(self.init_error)

    def shutdown(self) -> None:
        """Count the call."""
        self._enter("shutdown")

    def device_count(self) -> int:
        """Number of top-level devices."""
        self._enter("device_count")
        return len(self.devices)

    def handle(self, index: int) -> Any:
        """The device at index."""
        self._enter("handle")
        if not 0 <= index < len(self.devices):
            raise NvmlUnavailable(f"NVML call handle failed: Invalid Argument (index {index})")
        return self.devices[index]

    def handle_by_uuid(self, uuid: str) -> Any:
        """A device or MIG instance by exact UUID."""
        self._enter("handle_by_uuid")
        for dev in self.devices:
            for d in (dev, *dev.mig):
                if d.uuid == uuid:
                    return d
        raise NvmlUnavailable(f"NVML call handle_by_uuid failed: Not Found ({uuid})")

    def index(self, h: Any) -> int:
        """NVML index (the parent's for a MIG instance)."""
        self._enter("index")
        return self._dev(h).index

    def name(self, h: Any) -> str:
        """Device name."""
        self._enter("name")
        return self._dev(h).name

    def uuid(self, h: Any) -> str:
        """Device UUID."""
        self._enter("uuid")
        return self._dev(h).uuid

    def pci_bus_id(self, h: Any) -> str:
        """PCI bus id."""
        self._enter("pci_bus_id")
        return self._dev(h).pci_bus_id

    def memory_info(self, h: Any) -> tuple[int, int, int]:
        """(total, used, free) bytes; steps list-valued memory once per call."""
        self._enter("memory_info")
        dev = self._dev(h)
        with self._lock:
            dev.memory_calls += 1
            step = dev.memory_calls - 1
        total = dev.memory_mib * MIB
        used = int((self._value(dev.used_mib, step) or 0.0) * MIB)
        return total, used, max(0, total - used)

    def driver_version(self) -> str:
        """Driver version."""
        self._enter("driver_version")
        return self.driver

    def cuda_driver_version(self) -> int:
        """CUDA version integer (13000 for 13.0)."""
        self._enter("cuda_driver_version")
        return self.cuda

    def running_processes(self, h: Any) -> list[tuple[int, int | None]]:
        """(pid, used bytes or None) of the scripted processes, at the device's current step."""
        self._enter("running_processes")
        dev = self._dev(h)
        step = dev.memory_calls - 1
        out: list[tuple[int, int | None]] = []
        for proc in dev.processes:
            mib = self._value(proc.used_mib, step)
            used = None if mib is None else int(mib * MIB)
            out.extend((pid, used) for pid in self._pids(proc.pid))
        return out

    def driver_model(self, h: Any) -> str | None:
        """Scripted driver model (None: Linux, where NVML has none)."""
        self._enter("driver_model")
        return self._dev(h).driver_model

    def power_w(self, h: Any) -> float | None:
        """Scripted power (None: unsupported)."""
        self._enter("power_w")
        return self._dev(h).power_w

    def temperature_c(self, h: Any) -> int | None:
        """Scripted temperature (None: unsupported)."""
        self._enter("temperature_c")
        return self._dev(h).temperature_c

    def sm_clock_mhz(self, h: Any) -> int | None:
        """Scripted SM clock (None: unsupported)."""
        self._enter("sm_clock_mhz")
        return self._dev(h).sm_clock_mhz

    def mem_clock_mhz(self, h: Any) -> int | None:
        """Scripted memory clock (None: unsupported)."""
        self._enter("mem_clock_mhz")
        return self._dev(h).mem_clock_mhz

    def pcie_gen(self, h: Any) -> int | None:
        """Scripted PCIe generation (None: unsupported)."""
        self._enter("pcie_gen")
        return self._dev(h).pcie_gen

    def pcie_width(self, h: Any) -> int | None:
        """Scripted PCIe width (None: unsupported)."""
        self._enter("pcie_width")
        return self._dev(h).pcie_width

    def accounting_enabled(self, h: Any) -> bool | None:
        """Scripted accounting mode (None: unsupported)."""
        self._enter("accounting_enabled")
        return self._dev(h).accounting

    def accounting_max_memory(self, h: Any, pid: int) -> int | None:
        """Scripted accounting peak of pid in bytes, when accounting is on."""
        self._enter("accounting_max_memory")
        dev = self._dev(h)
        if not dev.accounting or pid not in dev.accounting_max_mib:
            return None
        return int(dev.accounting_max_mib[pid] * MIB)

    def set_accounting_mode(self, h: Any, enabled: bool) -> None:
        """Record the setting change; refuse it when unsupported or allow_settings is False (no root)."""
        self._enter("set_accounting_mode")
        dev = self._dev(h)
        with self._lock:
            self.setting_calls.append(("set_accounting_mode", dev.uuid, enabled))
        if dev.accounting is None:
            raise NvmlUnavailable("NVML call set_accounting_mode failed: Not Supported")
        if not self.allow_settings:
            raise NvmlUnavailable("NVML call set_accounting_mode failed: Insufficient Permissions")
        dev.accounting = enabled
