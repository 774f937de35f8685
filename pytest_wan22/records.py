"""Plain data that flows from a run to a verdict: RunRecord and its parts, with a JSON round trip."""

from __future__ import annotations

import dataclasses
import itertools
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

SCHEMA_VERSION = 1

Outcome = Literal["success", "oom", "error", "interrupted", "timeout", "server_died", "invalid"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


@dataclass(frozen=True)
class NodeTiming:
    """One node's time in a run, from the arrival of its `executing` frame to the next one."""

    node_id: str
    class_type: str
    title: str
    seconds: float
    cached: bool = False


@dataclass(frozen=True)
class SamplerPass:
    """One sampler node's pass: when each step's progress frame arrived (seconds from submit)."""

    node_id: str
    title: str
    steps: int
    step_times: tuple[float, ...]
    seconds: float

    @property
    def seconds_per_step(self) -> float | None:
        """Pass time over steps: the steady figure (progress frames leave GPU work after the last one)."""
        return self.seconds / self.steps if self.steps else None

    @property
    def step_intervals(self) -> tuple[float, ...]:
        """Gaps between consecutive progress frames, from step 2 on."""
        t = self.step_times
        return tuple(b - a for a, b in itertools.pairwise(t))


@dataclass(frozen=True)
class OutputFile:
    """A file the run wrote, as ComfyUI reported it, with what could be read of it."""

    filename: str
    subfolder: str
    type: str
    node_id: str
    path: str | None = None
    bytes: int | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None


@dataclass(frozen=True)
class VramSample:
    """One NVML reading: seconds from the monitor's start, MiB used by the server's processes and the device."""

    t: float
    process_mib: float | None
    device_mib: float


@dataclass(frozen=True)
class Neighbour:
    """Another compute process on the GPU during a run: its PID, its command line (or name) and the most memory
    NVML saw it hold (None when NVML could not tell)."""

    pid: int
    name: str
    used_mib: float | None = None

    def describe(self) -> str:
        """'PID 4242 python3 train.py (7.0 GiB)'."""
        held = f" ({self.used_mib / 1024:.1f} GiB)" if self.used_mib is not None else ""
        return f"PID {self.pid} {self.name}{held}"


#: Where a VramReport's peaks come from (VramReport.source), as the report and the session header say it.
VRAM_PROCESS = "nvml-process"
VRAM_DEVICE = "nvml-device"
VRAM_WDDM = "torch+nvml-device"
VRAM_SOURCES: dict[str, str] = {
    VRAM_PROCESS: "NVML's memory of the server's processes",
    VRAM_DEVICE: "NVML's device-wide memory less what the device held before the run (no per-process figure)",
    VRAM_WDDM: "PyTorch's peak in the server (the probe node) and NVML's device-wide memory: under WDDM NVML "
               "reports no per-process memory",
}


@dataclass(frozen=True)
class VramReport:
    """What the VRAM monitor saw during a run."""

    available: bool
    reason: str = ""
    interval_s: float = 0.0
    peak_process_mib: float | None = None
    peak_device_mib: float | None = None
    baseline_device_mib: float | None = None
    torch_peak_allocated_mib: float | None = None
    torch_peak_reserved_mib: float | None = None
    samples: tuple[VramSample, ...] = ()
    neighbours: tuple[Neighbour, ...] = ()  # other compute processes on the GPU during the run
    source: str = ""  # where the peaks come from: a key of VRAM_SOURCES ('' in records written before it)

    @property
    def peak_mib(self) -> float | None:
        """The figure a budget is checked against: the server's processes; under WDDM, what PyTorch's allocator
        reserved in the server (the closest figure to the process's own); else the whole device's growth."""
        if self.peak_process_mib is not None:
            return self.peak_process_mib
        if self.source == VRAM_WDDM and self.torch_peak_reserved_mib is not None:
            return self.torch_peak_reserved_mib
        if self.peak_device_mib is not None and self.baseline_device_mib is not None:
            return self.peak_device_mib - self.baseline_device_mib
        return self.peak_device_mib

    @property
    def compared_mib(self) -> float | None:
        """The peak a run is compared with its baseline (or side A) on: the most PyTorch's allocator held in live
        tensors (the probe node's figure), else the NVML peak.

        The allocator's reserved memory, and so NVML's figure, moves by about 2 GiB between server processes of
        identical code (the cache's fragmentation; measured on an H200 with a 14B LoRA variant: reserved 75.4 to
        78.1 GiB over four processes while the allocated peak read 63.39 GiB in every one of 26 rounds), which no
        1 GiB tolerance survives. Whether a run fits is still judged on what the allocator reserved
        (fit.judged_peak_mib), and a budget on NVML's figure.
        """
        if self.torch_peak_allocated_mib is not None:
            return self.torch_peak_allocated_mib
        return self.peak_mib if self.available else None

    def describe_source(self) -> str:
        """Where the peaks come from, in words ('' when the record does not say)."""
        return VRAM_SOURCES.get(self.source, self.source)


@dataclass(frozen=True)
class ErrorInfo:
    """The node that failed, from `execution_error` or `execution_interrupted`."""

    node_id: str | None
    node_type: str | None
    exception_type: str
    exception_message: str
    traceback: tuple[str, ...] = ()


@dataclass(frozen=True)
class Environment:
    """What ran the workflow: GPU, driver, CUDA, torch, ComfyUI, Python and the launch arguments."""

    gpu_name: str | None = None
    gpu_uuid: str | None = None
    gpu_memory_mib: float | None = None
    driver: str | None = None
    cuda: str | None = None
    torch: str | None = None
    comfyui: str | None = None
    python: str | None = None
    os: str | None = None
    device: str | None = None
    argv: tuple[str, ...] = ()
    tier: str | None = None
    profile: str | None = None
    emulated_tier: str | None = None
    models: str | None = None
    gpu_state: dict[str, float | None] = field(default_factory=dict)
    scale: str | None = None  # the tier's shrinking of every variant (test ids name the variant as written)


@dataclass(frozen=True)
class RunRecord:
    """Everything one run of one workflow variant produced."""

    variant_id: str
    workflow: str
    tier: str
    outcome: Outcome
    message: str = ""
    prompt_id: str | None = None
    seed: int | None = None
    round: int = 0
    warmup: bool = False
    started_at: float = 0.0
    wall_s: float | None = None
    server_s: float | None = None
    nodes: tuple[NodeTiming, ...] = ()
    passes: tuple[SamplerPass, ...] = ()
    phases: dict[str, float] = field(default_factory=dict)
    outputs: tuple[OutputFile, ...] = ()
    vram: VramReport | None = None
    warnings: tuple[str, ...] = ()
    error: ErrorInfo | None = None
    environment: Environment = field(default_factory=Environment)
    cached_nodes: tuple[str, ...] = ()
    side: str = ""  # A (current) or B (candidate) in an A/B session
    schema_version: int = SCHEMA_VERSION

    @property
    def ok(self) -> bool:
        """True when the run finished successfully."""
        return self.outcome == "success"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return to_jsonable(self)  # type: ignore[no-any-return]

    def to_json(self, indent: int | None = 1) -> str:
        """JSON text."""
        return json.dumps(self.to_dict(), indent=indent, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Rebuild from `to_dict` output."""
        return from_jsonable(cls, data)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        """Rebuild from `to_json` output."""
        return cls.from_dict(json.loads(text))


def round_name(record: RunRecord) -> str:
    """A round as every message, table and live line numbers it: 1-based over its side's runs, warm-ups marked:
    '1 (warm-up)', '2'."""
    return f"{record.round + 1}{' (warm-up)' if record.warmup else ''}"


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples and dicts to plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj


T = TypeVar("T")


def from_jsonable(tp: type[T], data: Any) -> T:
    """Rebuild a dataclass (or a container of them) from `to_jsonable` output; unknown keys are ignored."""
    return typing.cast(T, _build(tp, data))


def _build(tp: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        return _build(args[0], data) if len(args) == 1 else data
    if origin is tuple:
        return tuple(_build(get_args(tp)[0], v) for v in data)
    if origin is dict:
        _, vt = get_args(tp)
        return {k: _build(vt, v) for k, v in data.items()}
    if origin is Literal:
        return data
    if dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp) if f.init}
        return tp(**{k: _build(hints[k], v) for k, v in data.items() if k in names})  # type: ignore[operator]
    if tp is float and isinstance(data, int):
        return float(data)
    return data
