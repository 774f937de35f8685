"""Run a workflow variant on a server and turn what happened into RunRecords: the one place the parts meet."""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import struct
import time
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from .client import ComfyClient, Event, Execution
from .errors import ComfyAPIError, PromptRejected
from .preflight import INPUT_MEDIA, split_spec
from .records import (
    VRAM_DEVICE,
    VRAM_WDDM,
    Environment,
    ErrorInfo,
    NodeTiming,
    Outcome,
    OutputFile,
    RunRecord,
    SamplerPass,
    VramReport,
)
from .video import mp4_info
from .workflows import SAMPLER_CLASSES, node_titles

# Node classes grouped into the phases a report shows side by side.
PHASES: Mapping[str, frozenset[str]] = {
    "load": frozenset({"UNETLoader", "CLIPLoader", "VAELoader", "LoraLoaderModelOnly", "LoraLoader", "LoadImage",
                       "CheckpointLoaderSimple", "CLIPVisionLoader", "LoadTrainingDataset", "ModelSamplingSD3",
                       "UnetLoaderGGUF", "UnetLoaderGGUFAdvanced", "CLIPLoaderGGUF",
                       # WanVideoWrapper (which loads an expert's weights inside its sampler's node)
                       "WanVideoModelLoader", "WanVideoVAELoader", "LoadWanVideoT5TextEncoder",
                       "WanVideoLoraSelect", "WanVideoSetLoRAs", "WanVideoSetBlockSwap"}),
    "text": frozenset({"CLIPTextEncode", "ConditioningZeroOut", "CLIPVisionEncode", "WanVideoTextEncode",
                       "WanVideoTextEmbedBridge"}),
    "encode": frozenset({"WanImageToVideo", "WanFirstLastFrameToVideo", "WanVideoImageToVideoEncode"}),
    "compile": frozenset({"TorchCompileModel"}),
    "sampling": SAMPLER_CLASSES,
    "decode": frozenset({"VAEDecode", "VAEDecodeTiled", "WanVideoDecode"}),
    "interpolation": frozenset({"RIFE VFI", "FILM VFI", "FrameInterpolate"}),
    "save": frozenset({"CreateVideo", "SaveVideo", "SaveWEBM", "SaveAnimatedWEBP", "SaveImage", "VHS_VideoCombine"}),
}

_ANNOTATED = re.compile(r"\s\[(input|output|temp)\]$")  # ComfyUI's folder annotation of a file name

OOM_TYPES = frozenset({"torch.OutOfMemoryError", "torch.cuda.OutOfMemoryError", "OutOfMemoryError"})
OOM_TEXT = re.compile(r"out of memory|Allocation on device|CUBLAS_STATUS_ALLOC_FAILED", re.IGNORECASE)

# What ComfyUI absorbs without failing the prompt, found in its log: (kind, pattern, what it means).
LOG_SIGNS: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("offload", re.compile(r"loaded partially.*?([\d.]+) MB offloaded"), "model loaded partially, {0} MB offloaded"),
    ("swap", re.compile(r"Unloaded partially: ([\d.]+) MB freed"), "model unloaded partially to make room "
     "({0} MB freed)"),
    ("oom_retry", re.compile(r"Ran out of memory when regular VAE (\w+)"), "VAE {0} ran out of memory and fell back "
     "to tiled"),
    ("oom_retry", re.compile(r"out of memory error, increasing steps and trying again"), "attention ran out of "
     "memory and retried in more steps"),
    ("oom_retry", re.compile(r"scaled_dot_product_attention OOMed"), "SDPA ran out of memory and switched to "
     "slice attention"),
    ("oom_retry", re.compile(r"Got an OOM, unloading all loaded models"), "an OOM unloaded all models"),
    ("recompile", re.compile(r"recompile_limit|Recompiling function"), "torch.compile recompiled"),
)


def classify_error(exception_type: str, message: str) -> Outcome:
    """GPU out-of-memory or another error, by ComfyUI's execution_error fields."""
    if exception_type in OOM_TYPES or exception_type.endswith("OutOfMemoryError"):
        return "oom"
    if "DefaultCPUAllocator" in message:  # host RAM, not the GPU
        return "error"
    return "oom" if OOM_TEXT.search(message) else "error"


def scan_log(text: str) -> list[str]:
    """Warnings for what ComfyUI absorbed during a run: offloads, OOM retries, recompiles ('kind: text')."""
    found: list[str] = []
    for line in text.splitlines():
        for kind, pattern, meaning in LOG_SIGNS:
            m = pattern.search(line)
            if m:
                note = f"{kind}: {meaning.format(*m.groups())}"
                if note not in found:
                    found.append(note)
    return found


def warnings_of(record: RunRecord, kind: str) -> list[str]:
    """The record's warnings of one kind ('offload', 'swap', 'oom_retry', 'recompile')."""
    return [w for w in record.warnings if w.startswith(kind + ":")]


def node_timings(events: Sequence[Event], prompt: Mapping[str, Any], cached: Sequence[str]) -> list[NodeTiming]:
    """Per-node durations from the arrival times of `executing` frames (the next frame ends a node)."""
    titles = node_titles(prompt)
    marks = [(e.t, e.data.get("node")) for e in events if e.type == "executing"]
    end_types = ("execution_success", "execution_error", "execution_interrupted")
    end = next((e.t for e in events if e.type in end_types), marks[-1][0] if marks else 0.0)
    out = [NodeTiming(n, *titles.get(n, ("?", n)), 0.0, True) for n in cached]
    for i, (t, node) in enumerate(marks):
        if node is None:
            continue
        nxt = marks[i + 1][0] if i + 1 < len(marks) else end
        out.append(NodeTiming(str(node), *titles.get(str(node), ("?", str(node))), max(0.0, min(nxt, end) - t)))
    return out


def sampler_passes(events: Sequence[Event], nodes: Sequence[NodeTiming]) -> list[SamplerPass]:
    """Each sampler node's pass, in execution order, with the arrival time of every step's progress frame."""
    passes = []
    for n in nodes:
        if n.class_type not in SAMPLER_CLASSES or n.cached:
            continue
        frames = [e for e in events if e.type == "progress" and str(e.data.get("node")) == n.node_id]
        frames, before = last_bar(frames)
        steps = int(frames[-1].data.get("max", len(frames))) if frames else 0
        seconds = n.seconds
        start = next((e.t for e in events if e.type == "executing" and str(e.data.get("node")) == n.node_id), None)
        if before is not None and start is not None:  # the pass starts where the node's earlier bar ended
            seconds = max(0.0, start + n.seconds - before)
        passes.append(SamplerPass(n.node_id, n.title, steps, tuple(e.t for e in frames), seconds))
    return passes


def last_bar(frames: Sequence[Event]) -> tuple[list[Event], float | None]:
    """A node's last progress bar (its sampling steps), and when the bar before it ended (None without one).

    A bar starts over where `max` changes or `value` falls: WanVideoWrapper's sampler first reports loading the
    model's weights (one frame per parameter) and then its steps, on the same node."""
    start = 0
    for i in range(1, len(frames)):
        a, b = frames[i - 1].data, frames[i].data
        if b.get("max") != a.get("max") or int(b.get("value") or 0) < int(a.get("value") or 0):
            start = i
    return list(frames[start:]), (frames[start - 1].t if start else None)


def phases(nodes: Sequence[NodeTiming]) -> dict[str, float]:
    """Seconds per phase (load, text, encode, compile, sampling, decode, interpolation, save)."""
    out: dict[str, float] = {}
    for n in nodes:
        phase = next((p for p, classes in PHASES.items() if n.class_type in classes), "other")
        out[phase] = round(out.get(phase, 0.0) + n.seconds, 6)
    return out


def outputs(history: Mapping[str, Any] | None, output_dir: Path | None) -> list[OutputFile]:
    """Files the run wrote, with frame count, size and fps read from each MP4 found on disk."""
    found: list[OutputFile] = []
    for node_id, out in ((history or {}).get("outputs") or {}).items():
        for key in ("images", "gifs", "videos", "video"):
            for item in out.get(key) or []:
                if not isinstance(item, dict) or "filename" not in item:
                    continue
                f = OutputFile(item["filename"], item.get("subfolder", ""), item.get("type", "output"), node_id)
                # a temp file (a preview, VHS_VideoCombine with save_output off) is in ComfyUI's temp folder: a
                # launched server's --temp-directory beside its output folder (which gets a temp/ of its own), or
                # the base directory's temp/
                folders: list[Path] = []
                if output_dir is not None:
                    folders = [output_dir] if f.type == "output" else [
                        output_dir.parent / "temp" / "temp", output_dir.parent / "temp"] if f.type == "temp" else []
                path = next((p for d in folders if (p := d / f.subfolder / f.filename).is_file()), None)
                if path is not None:
                        f = replace(f, path=str(path), bytes=path.stat().st_size)
                        info = mp4_info(path) if path.suffix.lower() in (".mp4", ".mov", ".m4v") else None
                        if info:
                            f = replace(f, frames=info.frames, width=info.width, height=info.height, fps=info.fps)
                found.append(f)
    return found


def _gib(mib: float | None) -> str:
    return f"{mib / 1024:.1f} GiB" if mib is not None else "unknown VRAM"


def describe_failure(outcome: Outcome, error: ErrorInfo | None, vram: VramReport | None, execution_message: str,
                     titles: Mapping[str, tuple[str, str]]) -> str:
    """One readable sentence for a failed run."""
    where = ""
    if error and error.node_id:
        cls, title = titles.get(error.node_id, (error.node_type or "?", error.node_id))
        where = f" in {error.node_type or cls} '{title}' (node {error.node_id})"
    if outcome == "oom":
        peak = vram.peak_mib if vram and vram.available else None
        first = (error.exception_message.strip().splitlines() or [""])[0] if error else ""
        return f"out of memory{where} at {_gib(peak)}: {error.exception_type if error else ''}: {first}".rstrip()
    if outcome == "error" and error:
        msg = error.exception_message.strip()
        return f"{error.exception_type}{where}: {msg}"
    if outcome == "interrupted":
        return f"interrupted{where}: {execution_message}".rstrip(": ")
    return execution_message or outcome


class Monitor(Protocol):
    """What the runner needs of a VRAM monitor: a context manager that reports afterwards."""

    def __enter__(self) -> Any: ...
    def __exit__(self, *exc: object) -> Any: ...
    def report(self) -> VramReport: ...


@dataclass
class RunContext:
    """Everything a run needs from the session: the server, how to tell it is alive, and where output lands."""

    client: ComfyClient
    tier: str
    timeout: float
    environment: Environment = field(default_factory=Environment)
    is_alive: Callable[[], bool] | None = None
    log_size: Callable[[], int] | None = None
    log_since: Callable[[int], str] | None = None
    output_dir: Path | None = None
    monitor: Callable[[], Monitor] | None = None
    gpu_state: Callable[[], dict[str, float | None]] | None = None
    uploaded: set[str] = field(default_factory=set)
    on_event: Callable[[Event], None] | None = None  # every websocket event of a run, as it arrives
    input_dir: Path | None = None  # the folder a launched server reads inputs from (its own, private one)
    user_input_dir: Path | None = None  # the user's <comfyui>/input, where the files a workflow names are
    synthetic_input_dir: Path | None = None  # the synthetic set's input/, the inputs it wrote for the graph
    notes: list[str] = field(default_factory=list)  # said in every record of these runs (synthetic inputs)


@contextlib.contextmanager
def _maybe(monitor: Monitor | None) -> Iterator[None]:
    if monitor is None:
        yield
    else:
        with monitor:
            yield


def png_bytes(width: int, height: int) -> bytes:
    """A start image: a colour ramp as an RGB PNG, written with the standard library."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        g = y * 255 // max(1, height - 1)
        for x in range(width):
            rows += bytes((x * 255 // max(1, width - 1), g, 128))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows), 6))
            + chunk(b"IEND", b""))


def _options(info: Mapping[str, Any], name: str) -> set[str]:
    """The values a combo input lists (old or v3 encoding)."""
    _kind, options, _extra = split_spec(info.get("input", {}).get("required", {}).get(name))
    return {str(o) for o in options or ()}


def _inside(folder: Path, name: str) -> Path | None:
    """folder/name, unless the name leads out of the folder."""
    target = (folder / name).resolve()
    return target if folder.resolve() in target.parents else None


def _copy(source: Path, target: Path) -> None:
    """A copy, never a link: a write into the server's input folder must not reach the user's file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    shutil.copy2(source, target)


def ensure_inputs(ctx: RunContext, prompt: Mapping[str, Any], size: tuple[int, int]) -> set[str]:
    """Make the input files the prompt names (LoadImage, LoadVideo, LoadAudio, ...) present on the server before
    the preflight: one the server does not list is copied from the user's ComfyUI input folder into the server's
    own, else (on a synthetic set) from the inputs the set wrote for this graph; a start image found in none is
    generated. An input the plugin made is said in ctx.notes, and so in the run records. Returns the node classes
    whose file lists changed."""
    lists: dict[str, set[str]] = {}
    changed: set[str] = set()
    for node in prompt.values():
        cls = str(node.get("class_type"))
        for (media_cls, name), media in INPUT_MEDIA.items():
            value = (node.get("inputs") or {}).get(name)
            if media_cls != cls or not isinstance(value, str) or value in ctx.uploaded:
                continue
            if cls not in lists:
                lists[cls] = _options(ctx.client.object_info(cls).get(cls, {}), name)
            plain = value.removesuffix(" [input]")
            if value in lists[cls] or _ANNOTATED.search(plain):  # listed, or in the output or temp folder
                user = _inside(ctx.user_input_dir, plain) if ctx.user_input_dir is not None else None
                if ctx.synthetic_input_dir is not None and not (user is not None and user.is_file()):
                    _note_synthetic(ctx, plain)  # copied for an earlier variant
                continue
            sources = [_inside(folder, plain) for folder in (ctx.user_input_dir, ctx.synthetic_input_dir)
                       if folder is not None]
            source = next((p for p in sources if p is not None and p.is_file()), None)
            target = _inside(ctx.input_dir, plain) if ctx.input_dir is not None else None
            if source is not None and (target is not None or ctx.input_dir is None):
                if target is not None:
                    _copy(source, target)
                else:  # a server whose input folder is not ours (attached): upload
                    ctx.client.upload_image_bytes(plain, source.read_bytes())
                if ctx.synthetic_input_dir is not None and source.parent == ctx.synthetic_input_dir.resolve():
                    _note_synthetic(ctx, plain)
            elif media == "image":
                ctx.client.upload_image_bytes(plain, png_bytes(*size))
                ctx.notes.append(f"input: {plain} generated (image {size[0]}x{size[1]}): no such file in "
                                 f"{ctx.user_input_dir or 'the server input folder'}")
            else:
                continue  # the preflight names the file and where to put it
            ctx.uploaded.add(value)
            changed.add(cls)
    return changed


def _note_synthetic(ctx: RunContext, name: str) -> None:
    from .synth import media_note

    assert ctx.synthetic_input_dir is not None
    what = media_note(ctx.synthetic_input_dir.parent, name)
    if what is None:
        return
    note = (f"input: {name} generated by the synthetic set ({what}): no such file in "
            f"{ctx.user_input_dir or 'the user input folder'}")
    if note not in ctx.notes:
        ctx.notes.append(note)


def run_prompt(ctx: RunContext, prompt: Mapping[str, Any], *, variant_id: str, workflow: str, seed: int | None,
               round_index: int = 0, warmup: bool = False) -> RunRecord:
    """Submit one prompt, follow it to the end, and describe the result as a RunRecord."""
    environment = ctx.environment
    if ctx.gpu_state is not None:  # power, temperature, clocks: the noise a timing carries
        environment = replace(environment, gpu_state=ctx.gpu_state())
    base = RunRecord(variant_id=variant_id, workflow=workflow, tier=ctx.tier, outcome="invalid", seed=seed,
                     round=round_index, warmup=warmup, started_at=time.time(), environment=environment,
                     warnings=tuple(ctx.notes))
    offset = ctx.log_size() if ctx.log_size else 0
    ctx.client.reset_memory_stats()
    monitor = ctx.monitor() if ctx.monitor else None
    try:
        with _maybe(monitor):
            execution = ctx.client.run(prompt, timeout=ctx.timeout, is_alive=ctx.is_alive, on_event=ctx.on_event)
    except PromptRejected as exc:
        return replace(base, message=f"ComfyUI rejected the workflow:\n{exc}")
    except ComfyAPIError as exc:
        alive = ctx.is_alive() if ctx.is_alive else True
        return replace(base, outcome="error" if alive else "server_died", message=str(exc))
    vram = monitor.report() if monitor else None
    torch_mem = ctx.client.memory_stats() if execution.status != "server_died" else {}
    if vram is not None and torch_mem.get("available"):
        vram = replace(vram, torch_peak_allocated_mib=torch_mem["max_allocated"] / 2**20,
                       torch_peak_reserved_mib=torch_mem["max_reserved"] / 2**20)
    elif vram is not None and vram.source == VRAM_WDDM:  # no probe node answered: the device's figure is all there is
        vram = replace(vram, source=VRAM_DEVICE)
    log_text = ctx.log_since(offset) if ctx.log_since else ""
    return build_record(base, execution, prompt, vram, log_text, ctx.output_dir)


def build_record(base: RunRecord, execution: Execution, prompt: Mapping[str, Any], vram: VramReport | None,
                 log_text: str, output_dir: Path | None) -> RunRecord:
    """Fold an Execution (and the log written meanwhile) into a RunRecord."""
    titles = node_titles(prompt)
    nodes = node_timings(execution.events, prompt, execution.cached_nodes)
    error = None
    if execution.error:
        e = execution.error
        error = ErrorInfo(e.get("node_id"), e.get("node_type"), str(e.get("exception_type", "")),
                          str(e.get("exception_message", "")), tuple(e.get("traceback") or ()))
    outcome: Outcome = execution.status
    if execution.status == "error":
        outcome = classify_error(error.exception_type, error.exception_message) if error else "error"
    message = ""
    if outcome != "success":
        message = describe_failure(outcome, error, vram, execution.message, titles)
    elif execution.cached_nodes and set(execution.cached_nodes) >= set(prompt):
        outcome = "invalid"
        message = ("every node was cached, so nothing ran and no timing exists; give the workflow a seed input "
                   "the runner can change, or start ComfyUI with --cache-none (--wan22-server-args)")
    if outcome == "server_died" and log_text:
        message += "\nlast log lines:\n" + "\n".join(log_text.splitlines()[-20:])
    return replace(base, outcome=outcome, message=message, prompt_id=execution.prompt_id,
                   wall_s=execution.wall_s, server_s=execution.server_s, nodes=tuple(nodes),
                   passes=tuple(sampler_passes(execution.events, nodes)), phases=phases(nodes),
                   outputs=tuple(outputs(execution.history, output_dir)), vram=vram,
                   warnings=(*base.warnings, *scan_log(log_text)), error=error,
                   cached_nodes=tuple(execution.cached_nodes))


def fresh_seed() -> int:
    """A seed no earlier round used, so ComfyUI's cache cannot answer for the samplers."""
    return secrets.randbits(48)
