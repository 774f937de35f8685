"""The fake ComfyUI 0.8.0 server: aiohttp routes, a prompt queue, and a scripted executor."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mimetypes
import os
import random
import re
import signal
import string
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from catalog import FOLDER_ALIASES, MODEL_FOLDERS, Catalog, Validator, is_link
from scenarios import Knobs, NodeFailure, current_inputs, gpu_oom, runtime_error

VERSION = "0.8.0"
SAMPLERS = ("KSampler", "KSamplerAdvanced", "WanVideoSampler")
#: Progress frames WanVideoWrapper's sampler sends for loading the model's weights (one per parameter) before its
#: steps, on the same node
WRAPPER_LOAD_FRAMES = 12
FEATURES = {
    "supports_preview_metadata": True,
    "max_upload_size": 104857600,
    "extension": {"manager": {"supports_v4": True}},
}


def log(*lines: str) -> None:
    """Write lines to stderr at once, as ComfyUI's logging does."""
    sys.stderr.write("".join(f"{line}\n" for line in lines))
    sys.stderr.flush()


def now_ms() -> int:
    """Milliseconds since the epoch (ComfyUI's message timestamps)."""
    return int(time.time() * 1000)


def tiny_png(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A small valid RGB PNG."""
    row = b"\x00" + bytes(rgb) * width
    raw = row * height

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def tiny_mp4() -> bytes:
    """Bytes that start like an MP4 (ftyp box) followed by filler: enough for a size check."""
    ftyp = struct.pack(">I", 24) + b"ftypisom" + struct.pack(">I", 512) + b"isomiso2"
    mdat = b"fake video frames " * 32
    return ftyp + struct.pack(">I", len(mdat) + 8) + b"mdat" + mdat


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I", len(body) + 8) + kind + body


RAW_LIMIT = 2**20  # the most bytes of uncompressed frames the fake writes


def pixels(frames: int, width: int, height: int, seed: int, mode: str = "seeded") -> bytes | None:
    """Uncompressed RGB frames for FAKE_COMFYUI_FRAMES: a pattern moved by the seed (one seed, one video), with
    noise of +-N a value (noise:N), or black; None where they would pass RAW_LIMIT."""
    if frames * width * height * 3 > RAW_LIMIT:
        return None
    if mode == "black":
        return bytes(frames * width * height * 3)
    shift = seed % 251
    row = bytearray()
    out = bytearray()
    for f in range(frames):
        for y in range(height):
            row.clear()
            for x in range(width):
                base = (shift + 3 * f + 2 * y + x) % 200 + 20
                row += bytes((base, (base + 60) % 256, (base * 3) % 256))
            out += row
    if mode.startswith("noise:"):
        amount = int(mode.split(":", 1)[1])
        rng = random.Random()
        out = bytearray(min(255, max(0, v + rng.randint(-amount, amount))) for v in out)
    return bytes(out)


def mp4_file(frames: int, width: int, height: int, fps: float, data: bytes | None = None) -> bytes:
    """An ISO-BMFF MP4 with one video track of `frames` samples at `fps`: the boxes a player (and the
    plugin's reader) take frame count, size and rate from, and one placeholder byte per sample, or with `data`
    (frames * width * height * 3 bytes) an uncompressed RGB ('raw ') track of those frames."""
    timescale = 1000 * max(1, round(fps))
    delta = round(timescale / fps) if fps else timescale
    duration = frames * delta
    full = struct.pack(">I", 0)  # version 0, flags 0
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
    mvhd = _box(b"mvhd", full, struct.pack(">IIII", 0, 0, timescale, duration), struct.pack(">IH10x", 0x10000, 0x100),
                matrix, bytes(24), struct.pack(">I", 2))
    tkhd = _box(b"tkhd", struct.pack(">I", 3), struct.pack(">IIIII", 0, 0, 1, 0, duration), bytes(8),
                struct.pack(">HHHH", 0, 0, 0, 0), matrix, struct.pack(">II", width << 16, height << 16))
    mdhd = _box(b"mdhd", full, struct.pack(">IIII", 0, 0, timescale, duration), struct.pack(">HH", 0x55C4, 0))
    hdlr = _box(b"hdlr", full, struct.pack(">I", 0), b"vide", bytes(12), b"VideoHandler\0")
    sample = width * height * 3 if data is not None else 1
    if data is None:
        stsd = _box(b"stsd", full, struct.pack(">I", 0))
    else:  # a VisualSampleEntry: reserved, data reference, then width and height, resolution, depth 24
        entry = _box(b"raw ", bytes(6), struct.pack(">H", 1), bytes(16), struct.pack(">HH", width, height),
                     struct.pack(">II", 0x480000, 0x480000), bytes(4), struct.pack(">H", 1), bytes(32),
                     struct.pack(">Hh", 24, -1))
        stsd = _box(b"stsd", full, struct.pack(">I", 1), entry)
    stts = _box(b"stts", full, struct.pack(">III", 1, frames, delta))
    stsc = _box(b"stsc", full, struct.pack(">IIII", 1, 1, frames, 1))
    stsz = _box(b"stsz", full, struct.pack(">II", sample, frames))
    ftyp = _box(b"ftyp", b"isom", struct.pack(">I", 512), b"isomiso2mp41")
    mdat = _box(b"mdat", data if data is not None else bytes(frames))

    def moov(offset: int) -> bytes:
        stco = _box(b"stco", full, struct.pack(">II", 1, offset))
        stbl = _box(b"stbl", stsd, stts, stsc, stsz, stco)
        dinf = _box(b"dinf", _box(b"dref", full, struct.pack(">I", 1), _box(b"url ", struct.pack(">I", 1))))
        minf = _box(b"minf", _box(b"vmhd", struct.pack(">I", 1), bytes(8)), dinf, stbl)
        return _box(b"moov", mvhd, _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)))

    head = ftyp + moov(0)
    return ftyp + moov(len(head) + 8) + mdat


def video_of(prompt: Mapping[str, Any], defaults: tuple[int, int, int, float] = (81, 640, 640, 16.0)
             ) -> tuple[int, int, int, float]:
    """(frames, width, height, fps) the graph's video has, as ComfyUI would make it: the Wan latent's length
    rounded to whole latent frames (4 frames each, plus the first), times a frame-interpolation multiplier, at
    CreateVideo's fps."""
    frames, width, height, fps = defaults
    multiplier = 1
    for node in prompt.values():
        inputs = node.get("inputs") or {}
        kind = node.get("class_type")
        if kind in ("WanImageToVideo", "WanFirstLastFrameToVideo", "WanVideoImageToVideoEncode"):
            length = _const_int(prompt, inputs.get("length", inputs.get("num_frames")), frames)
            frames = ((max(1, length) - 1) // 4) * 4 + 1
            width = _const_int(prompt, inputs.get("width"), width)
            height = _const_int(prompt, inputs.get("height"), height)
        elif kind in ("RIFE VFI", "FILM VFI", "FrameInterpolate"):
            multiplier = _const_int(prompt, inputs.get("multiplier"), 2)
        elif kind in ("CreateVideo", "VHS_VideoCombine"):
            value = _const(prompt, inputs.get("fps", inputs.get("frame_rate")))
            fps = float(value) if isinstance(value, (int, float)) else fps
    return (frames - 1) * multiplier + 1, width, height, fps


@dataclass
class Dirs:
    """Where the fake keeps files, like ComfyUI's base/output/input/temp directories."""

    base: Path
    output: Path
    input: Path
    temp: Path

    def by_type(self, kind: str | None) -> Path | None:
        """The directory for a view/upload type."""
        return {"output": self.output, "input": self.input, "temp": self.temp}.get(kind or "output")


@dataclass
class QueueItem:
    """One queued prompt: number, id, graph, extra_data, outputs to execute."""

    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs: list[str]

    def as_list(self) -> list[Any]:
        """The list form /queue and /history use."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs]


class Interrupted(Exception):
    """The interrupt flag was seen at a node boundary or sampler step."""


@dataclass
class Progress:
    """progress_state bookkeeping of one prompt."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    def set(self, node_id: str, value: float, maximum: float, state: str) -> None:
        """Record a node's state."""
        self.nodes[node_id] = {"value": value, "max": maximum, "state": state}

    def finish(self, node_id: str) -> None:
        """Mark a node finished (value = max)."""
        entry = self.nodes.get(node_id, {"value": 0, "max": 1})
        self.set(node_id, entry["max"], entry["max"], "finished")

    def message(self, prompt_id: str) -> dict[str, Any]:
        """The progress_state payload."""
        return {
            "prompt_id": prompt_id,
            "nodes": {
                nid: {
                    **st,
                    "node_id": nid,
                    "prompt_id": prompt_id,
                    "display_node_id": nid,
                    "parent_node_id": None,
                    "real_node_id": nid,
                }
                for nid, st in self.nodes.items()
            },
        }


class FakeComfy:
    """State and behaviour of one fake server process."""

    def __init__(
        self, knobs: Knobs, dirs: Dirs, argv: list[str], cpu: bool, preview: bool = False, probe: bool = False
    ) -> None:
        self.knobs = knobs
        self.dirs = dirs
        self.argv = argv
        self.cpu = cpu
        self.preview = preview
        self.catalog = Catalog(self.list_models, self.list_inputs, knobs.missing_nodes, knobs.custom_nodes)
        self.validator = Validator(self.catalog, self.input_exists)
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.pending: list[QueueItem] = []
        self.running: QueueItem | None = None
        self.history: dict[str, dict[str, Any]] = {}
        self.cache: dict[str, dict[str, Any] | None] = {}
        self.loaded_models: set[str] = set()
        self.flags: dict[str, bool] = {}
        self.number = 0
        self.interrupt = asyncio.Event()
        self.wake = asyncio.Event()
        self.probe = probe
        self.torch_peak = 0

    # ------------------------------------------------------------------ files
    def list_models(self, folder: str) -> list[str]:
        """Files of a model folder: FAKE_COMFYUI_MODELS plus files really present under base/models."""
        names = set(self.knobs.models.get(folder, []))
        for sub in (folder, *FOLDER_ALIASES.get(folder, ())):
            root = self.dirs.base / "models" / sub
            if root.is_dir():
                names.update(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        return sorted(names)

    def list_inputs(self) -> list[str]:
        """Files in input/ (what LoadImage's combo lists)."""
        root = self.dirs.input
        if not root.is_dir():
            return []
        return sorted(
            p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")
        )

    def input_exists(self, name: str) -> bool:
        """LoadImage's check: the file is in input/."""
        name = re.sub(r"\s*\[(input|output|temp)\]$", "", name)
        path = (self.dirs.input / name).resolve()
        return path.is_file() and self.dirs.input.resolve() in path.parents

    # ------------------------------------------------------------------ websocket sending
    async def send(self, event: str, data: Any, sid: str | None = None) -> None:
        """Send a JSON frame to one client, or to every socket when sid is None."""
        message = {"type": event, "data": data}
        targets = list(self.sockets.values()) if sid is None else ([self.sockets[sid]] if sid in self.sockets else [])
        for ws in targets:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_json(message)

    async def send_binary(self, payload: bytes, sid: str | None) -> None:
        """Send a binary frame (legacy preview image)."""
        targets = list(self.sockets.values()) if sid is None else ([self.sockets[sid]] if sid in self.sockets else [])
        for ws in targets:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_bytes(payload)

    def queue_remaining(self) -> int:
        """Pending plus running prompts."""
        return len(self.pending) + (1 if self.running is not None else 0)

    async def queue_updated(self) -> None:
        """Broadcast the status frame."""
        await self.send("status", {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}})

    # ------------------------------------------------------------------ app
    def make_app(self) -> web.Application:
        """The aiohttp application with ComfyUI's routes."""
        app = web.Application(client_max_size=200 * 1024 * 1024)
        r = app.router
        r.add_get("/ws", self.ws_handler)
        r.add_get("/system_stats", self.system_stats)
        r.add_get("/features", self.constant(FEATURES))
        r.add_get("/prompt", self.get_prompt)
        r.add_post("/prompt", self.post_prompt)
        r.add_get("/object_info", self.object_info_all)
        r.add_get("/object_info/{node_class}", self.object_info_one)
        r.add_get("/queue", self.get_queue)
        r.add_post("/queue", self.post_queue)
        r.add_get("/history", self.get_history)
        r.add_get("/history/{prompt_id}", self.get_history_one)
        r.add_post("/history", self.post_history)
        r.add_get("/api/jobs", self.get_jobs)
        r.add_get("/api/jobs/{job_id}", self.get_job)
        r.add_post("/interrupt", self.post_interrupt)
        r.add_post("/free", self.post_free)
        r.add_get("/models", self.constant(list(MODEL_FOLDERS)))
        r.add_get("/models/{folder}", self.get_models)
        r.add_get("/embeddings", self.constant([]))
        r.add_post("/upload/image", self.upload_image)
        r.add_get("/view", self.view)
        r.add_get("/", self.root)
        if self.probe:
            r.add_get("/wan22/memory", self.memory)
            r.add_post("/wan22/memory/reset", self.memory_reset)
        app.on_startup.append(self._start_worker)
        return app

    @staticmethod
    def constant(data: Any) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """A handler that answers the same JSON every time."""

        async def handler(_request: web.Request) -> web.StreamResponse:
            return _json(data)

        return handler

    async def root(self, _request: web.Request) -> web.Response:
        """GET /: a placeholder page (the fake has no front end)."""
        return web.Response(text="<html><body>fake ComfyUI</body></html>", content_type="text/html")

    def memory_stats(self) -> dict[str, Any]:
        """What the wan22 probe node reports: allocator peaks (none on --cpu)."""
        if self.cpu:
            return {"available": False}
        total = int((self.knobs.vram_mib or 32607) * 2**20)
        held = int(len(self.loaded_models) * self.knobs.torch_peak_mib / 3 * 2**20)  # the models kept loaded
        return {
            "available": True,
            "device": 0,
            "allocated": held,
            "reserved": held,
            "max_allocated": self.torch_peak,
            "max_reserved": int(self.torch_peak * 1.08),
            "total": total,
            "cap_gib": None,
        }

    async def memory(self, _request: web.Request) -> web.Response:
        """GET /wan22/memory (only with the probe node installed)."""
        return _json(self.memory_stats())

    async def memory_reset(self, _request: web.Request) -> web.Response:
        """POST /wan22/memory/reset."""
        self.torch_peak = 0
        return _json(self.memory_stats())

    async def object_info_all(self, _request: web.Request) -> web.Response:
        """GET /object_info."""
        return _json(self.catalog.all_info())

    async def _start_worker(self, app: web.Application) -> None:
        app["worker"] = asyncio.get_running_loop().create_task(self.worker())

    async def ws_handler(self, request: web.Request) -> web.WebSocketResponse:
        """GET /ws?clientId=...: status on connect, feature_flags answer, then events."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.rel_url.query.get("clientId", "") or uuid.uuid4().hex
        self.sockets.pop(sid, None)
        self.sockets[sid] = ws
        try:
            await self.send(
                "status",
                {"status": {"exec_info": {"queue_remaining": self.queue_remaining()}}, "sid": sid},
                sid,
            )
            first = True
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    try:
                        data = json.loads(msg.data)
                    except ValueError:
                        continue
                    if first and isinstance(data, dict) and data.get("type") == "feature_flags":
                        await self.send("feature_flags", FEATURES, sid)
                    first = False
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    async def system_stats(self, _request: web.Request) -> web.Response:
        """GET /system_stats: shaped like the capture; a CUDA device unless --cpu."""
        ram = 128 * 1024**3
        vram = int(self.knobs.vram_mib * 1024 * 1024) if self.knobs.vram_mib is not None else None
        if self.cpu:
            device = {
                "name": "cpu",
                "type": "cpu",
                "index": None,
                "vram_total": vram or ram,
                "vram_free": vram or ram,
                "torch_vram_total": vram or ram,
                "torch_vram_free": vram or ram,
            }
        else:
            total = vram if vram is not None else 32607 * 1024 * 1024
            device = {
                "name": f"cuda:0 {self.knobs.gpu_name} : cudaMallocAsync",
                "type": "cuda",
                "index": 0,
                "vram_total": total,
                "vram_free": total - 512 * 1024 * 1024,
                "torch_vram_total": 0,
                "torch_vram_free": 0,
            }
        return _json(
            {
                "system": {
                    "os": sys.platform,
                    "ram_total": ram,
                    "ram_free": ram - 4 * 1024**3,
                    "comfyui_version": VERSION,
                    "required_frontend_version": "1.35.9",
                    "installed_templates_version": "0.7.67",
                    "required_templates_version": "0.7.67",
                    "python_version": sys.version,
                    "pytorch_version": "2.9.1+cu128",
                    "embedded_python": False,
                    "argv": self.argv,
                },
                "devices": [device],
            }
        )

    async def get_prompt(self, _request: web.Request) -> web.Response:
        """GET /prompt: queue_remaining."""
        return _json({"exec_info": {"queue_remaining": self.queue_remaining()}})

    async def object_info_one(self, request: web.Request) -> web.Response:
        """GET /object_info/{cls}: {cls: info} or {}."""
        name = request.match_info["node_class"]
        return _json({name: self.catalog.info(name)} if name in self.catalog else {})

    async def post_prompt(self, request: web.Request) -> web.Response:
        """POST /prompt: validate like ComfyUI, then queue."""
        log("got prompt")
        try:
            body = await request.json()
        except ValueError:
            return web.Response(status=400)
        if not isinstance(body, dict) or "prompt" not in body:
            return _json(
                {
                    "error": {
                        "type": "no_prompt",
                        "message": "No prompt provided",
                        "details": "No prompt provided",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                status=400,
            )
        number = self.number
        self.number += 1
        if "number" in body:
            number = body["number"]
        prompt = body["prompt"]
        if not isinstance(prompt, dict):
            return _json(
                {
                    "error": {
                        "type": "invalid_prompt",
                        "message": "Prompt must be an object",
                        "details": "",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                status=400,
            )
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        ok, error, outputs, node_errors = self.validator.validate(prompt)
        if not ok:
            log(f"invalid prompt: {error}")
            return _json({"error": error, "node_errors": node_errors}, status=400)
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        extra["create_time"] = now_ms()
        self.pending.append(QueueItem(number, prompt_id, prompt, extra, outputs))
        self.pending.sort(key=lambda item: item.number)
        self.wake.set()
        await self.queue_updated()
        return _json({"prompt_id": prompt_id, "number": number, "node_errors": node_errors})

    async def get_queue(self, _request: web.Request) -> web.Response:
        """GET /queue."""
        running = [self.running.as_list()] if self.running is not None else []
        return _json({"queue_running": running, "queue_pending": [i.as_list() for i in self.pending]})

    async def post_queue(self, request: web.Request) -> web.Response:
        """POST /queue {"clear": true} / {"delete": [ids]}."""
        body = await _body(request)
        if body.get("clear"):
            self.pending.clear()
        for prompt_id in body.get("delete") or ():
            self.pending = [i for i in self.pending if i.prompt_id != prompt_id]
        await self.queue_updated()
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        """GET /history[?max_items=N&offset=M]."""
        items = list(self.history.items())
        max_items = request.rel_url.query.get("max_items")
        offset = int(request.rel_url.query.get("offset", "-1"))
        if max_items is not None:
            count = int(max_items)
            start = len(items) - count if offset < 0 else offset
            items = items[max(0, start) : max(0, start) + count]
        return _json(dict(items))

    async def get_history_one(self, request: web.Request) -> web.Response:
        """GET /history/{id}: {id: entry} or {}."""
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return _json({prompt_id: entry} if entry is not None else {})

    async def post_history(self, request: web.Request) -> web.Response:
        """POST /history {"clear": true} / {"delete": [ids]}."""
        body = await _body(request)
        if body.get("clear"):
            self.history.clear()
        for prompt_id in body.get("delete") or ():
            self.history.pop(prompt_id, None)
        return web.Response(status=200)

    def _job(self, prompt_id: str) -> dict[str, Any] | None:
        if prompt_id in self.history:
            return _history_job(prompt_id, self.history[prompt_id], full=True)
        if self.running is not None and self.running.prompt_id == prompt_id:
            return _queue_job(self.running, "in_progress")
        for item in self.pending:
            if item.prompt_id == prompt_id:
                return _queue_job(item, "pending")
        return None

    async def get_job(self, request: web.Request) -> web.Response:
        """GET /api/jobs/{id}."""
        job = self._job(request.match_info["job_id"])
        if job is None:
            return _json({"error": "Job not found"}, status=404)
        return _json(job)

    async def get_jobs(self, request: web.Request) -> web.Response:
        """GET /api/jobs[?status=a,b&limit=N&offset=M]."""
        jobs = [_history_job(pid, entry, full=False) for pid, entry in self.history.items()]
        if self.running is not None:
            jobs.append(_queue_job(self.running, "in_progress"))
        jobs.extend(_queue_job(item, "pending") for item in self.pending)
        wanted = [s.strip() for s in request.rel_url.query.get("status", "").split(",") if s.strip()]
        if wanted:
            jobs = [j for j in jobs if j["status"] in wanted]
        jobs.sort(key=lambda j: j.get("create_time", 0), reverse=True)
        offset = max(0, int(request.rel_url.query.get("offset", "0")))
        limit = int(request.rel_url.query["limit"]) if "limit" in request.rel_url.query else None
        page = jobs[offset : offset + limit if limit is not None else None]
        return _json(
            {
                "jobs": page,
                "pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": len(jobs),
                    "has_more": offset + len(page) < len(jobs),
                },
            }
        )

    async def post_interrupt(self, request: web.Request) -> web.Response:
        """POST /interrupt [{"prompt_id": id}]: only the running prompt is interrupted."""
        body = await _body(request)
        prompt_id = body.get("prompt_id")
        if prompt_id:
            if self.running is not None and self.running.prompt_id == prompt_id:
                log(f"Interrupting prompt {prompt_id}")
                self.interrupt.set()
            else:
                log(f"Prompt {prompt_id} is not currently running, skipping interrupt")
        else:
            log("Global interrupt (no prompt_id specified)")
            self.interrupt.set()
        return web.Response(status=200)

    async def post_free(self, request: web.Request) -> web.Response:
        """POST /free: flags applied when the worker is between prompts."""
        body = await _body(request)
        if body.get("unload_models"):
            self.flags["unload_models"] = True
        if body.get("free_memory"):
            self.flags["free_memory"] = True
        self.wake.set()
        return web.Response(status=200)

    async def get_models(self, request: web.Request) -> web.Response:
        """GET /models/{folder}: file names, 404 for unknown folders."""
        folder = request.match_info["folder"]
        if folder not in MODEL_FOLDERS:
            return web.Response(status=404)
        return _json(self.list_models(folder))

    async def upload_image(self, request: web.Request) -> web.Response:
        """POST /upload/image (multipart: image, subfolder, type, overwrite)."""
        post = await request.post()
        image = post.get("image")
        if image is None or not isinstance(image, web.FileField) or not image.filename:
            return web.Response(status=400)
        kind = str(post.get("type") or "input")
        root = self.dirs.by_type(kind)
        if root is None:
            return web.Response(status=400)
        subfolder = str(post.get("subfolder") or "")
        folder = (root / os.path.normpath(subfolder)) if subfolder else root
        filename = image.filename
        path = (folder / filename).resolve()
        if root.resolve() not in path.parents:
            return web.Response(status=400)
        content = image.file.read()
        overwrite = str(post.get("overwrite") or "") in ("true", "1")
        folder.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            stem, ext = os.path.splitext(filename)
            i = 1
            while path.exists():
                if path.read_bytes() == content:
                    return _json({"name": filename, "subfolder": subfolder, "type": kind})
                filename = f"{stem} ({i}){ext}"
                path = folder / filename
                i += 1
        path.write_bytes(content)
        return _json({"name": filename, "subfolder": subfolder, "type": kind})

    async def view(self, request: web.Request) -> web.StreamResponse:
        """GET /view?filename&subfolder&type: the file, 400/403/404 like ComfyUI."""
        query = request.rel_url.query
        filename = query.get("filename")
        if not filename:
            return web.Response(status=404)
        if filename[0] == "/" or ".." in filename:
            return web.Response(status=400)
        root = self.dirs.by_type(query.get("type", "output"))
        if root is None:
            return web.Response(status=400)
        folder = root
        if "subfolder" in query:
            folder = (root / query["subfolder"]).resolve()
            if folder != root.resolve() and root.resolve() not in folder.parents:
                return web.Response(status=403)
        path = folder / os.path.basename(filename)
        if not path.is_file():
            return web.Response(status=404)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.Response(
            body=path.read_bytes(),
            content_type=content_type,
            headers={"Content-Disposition": f'filename="{path.name}"'},
        )

    # ------------------------------------------------------------------ worker
    async def worker(self) -> None:
        """Run queued prompts one at a time; apply /free flags between prompts."""
        while True:
            if self.pending:
                item = self.pending.pop(0)
                self.running = item
                await self.queue_updated()
                started = time.perf_counter()
                await self.execute(item)
                log(f"Prompt executed in {time.perf_counter() - started:.2f} seconds")
            if self.flags:
                if self.flags.get("unload_models") or self.flags.get("free_memory"):
                    await asyncio.sleep(self.knobs.free_seconds)  # the models move to host memory
                    self.loaded_models.clear()
                    log("wan22-fake: models unloaded")
                if self.flags.get("free_memory"):
                    self.cache.clear()
                self.flags.clear()
            if not self.pending:
                self.wake.clear()
                await self.wake.wait()

    async def execute(self, item: QueueItem) -> None:
        """Execute one prompt, sending ComfyUI's frames."""
        prompt, prompt_id = item.prompt, item.prompt_id
        client = item.extra_data.get("client_id")
        self.interrupt.clear()
        messages: list[list[Any]] = []

        async def add_message(event: str, data: dict[str, Any], broadcast: bool) -> None:
            data = {**data, "timestamp": now_ms()}
            messages.append([event, data])
            if client is not None or broadcast:
                await self.send(event, data, client)

        await add_message("execution_start", {"prompt_id": prompt_id}, False)
        sigs = self.signatures(prompt)
        wanted = set(sigs.values())
        self.cache = {s: v for s, v in self.cache.items() if s in wanted}
        cached_nodes = [nid for nid in prompt if sigs[nid] in self.cache]
        current_outputs = list(cached_nodes)
        await add_message("execution_cached", {"nodes": cached_nodes, "prompt_id": prompt_id}, False)
        order = self.execution_order(prompt, item.outputs, set(cached_nodes))
        to_run = [nid for nid in order if sigs[nid] not in self.cache]
        fail_node = self.pick_fail_node(prompt, to_run) if self.knobs.scenario in ("oom", "error") else None
        trouble_node = self.pick_sampler_or_first(prompt, to_run)
        progress = Progress()
        ui_outputs: dict[str, dict[str, Any]] = {}
        executed: list[str] = []
        success = True
        try:
            for nid in order:
                node = prompt[nid]
                sig = sigs[nid]
                if sig in self.cache:
                    entry = self.cache[sig]
                    if client is not None:
                        await self.send(
                            "executed",
                            {
                                "node": nid,
                                "display_node": nid,
                                "output": (entry or {}).get("output"),
                                "prompt_id": prompt_id,
                            },
                            client,
                        )
                        if entry is not None:
                            ui_outputs[nid] = entry
                    progress.finish(nid)
                    await self.send("progress_state", progress.message(prompt_id), client)
                    continue
                progress.set(nid, 0.0, 1.0, "running")
                await self.send("progress_state", progress.message(prompt_id), client)
                if client is not None:
                    await self.send("executing", {"node": nid, "display_node": nid, "prompt_id": prompt_id}, client)
                if self.interrupt.is_set():
                    raise Interrupted(nid)
                try:
                    await self.run_node(
                        prompt,
                        nid,
                        node,
                        progress,
                        prompt_id,
                        client,
                        fail=nid == fail_node,
                        trouble=nid == trouble_node,
                    )
                except NodeFailure as failure:
                    log(*failure.log_lines)
                    if failure.exception_type == "torch.OutOfMemoryError":
                        self.loaded_models.clear()
                    await add_message(
                        "execution_error",
                        {
                            "prompt_id": prompt_id,
                            "node_id": nid,
                            "node_type": node["class_type"],
                            "executed": list(executed),
                            "exception_message": failure.exception_message,
                            "exception_type": failure.exception_type,
                            "traceback": failure.traceback,
                            "current_inputs": current_inputs(node.get("inputs") or {}),
                            "current_outputs": current_outputs,
                        },
                        False,
                    )
                    success = False
                    break
                ui = self.write_outputs(prompt, nid, node)
                entry = None
                if ui is not None:
                    entry = {
                        "output": ui,
                        "meta": {
                            "node_id": nid,
                            "display_node": nid,
                            "parent_node": None,
                            "real_node_id": nid,
                        },
                    }
                    ui_outputs[nid] = entry
                    if client is not None:
                        await self.send(
                            "executed",
                            {"node": nid, "display_node": nid, "output": ui, "prompt_id": prompt_id},
                            client,
                        )
                self.cache[sig] = entry
                executed.append(nid)
                progress.finish(nid)
                await self.send("progress_state", progress.message(prompt_id), client)
            else:
                await add_message("execution_success", {"prompt_id": prompt_id}, False)
        except Interrupted as stop:
            log("Processing interrupted")
            nid = str(stop.args[0])
            await add_message(
                "execution_interrupted",
                {
                    "prompt_id": prompt_id,
                    "node_id": nid,
                    "node_type": prompt[nid]["class_type"],
                    "executed": list(executed),
                },
                True,
            )
            success = False
        self.history[prompt_id] = {
            "prompt": item.as_list(),
            "outputs": {nid: e["output"] for nid, e in ui_outputs.items()},
            "status": {
                "status_str": "success" if success else "error",
                "completed": success,
                "messages": messages,
            },
            "meta": {nid: e["meta"] for nid, e in ui_outputs.items()},
        }
        self.running = None
        await self.queue_updated()
        if client is not None:
            await self.send("executing", {"node": None, "prompt_id": prompt_id}, client)

    async def run_node(
        self,
        prompt: Mapping[str, Any],
        nid: str,
        node: Mapping[str, Any],
        progress: Progress,
        prompt_id: str,
        client: str | None,
        *,
        fail: bool,
        trouble: bool,
    ) -> None:
        """Spend the node's time; samplers send a progress frame per step; scenarios strike here."""
        class_type = node["class_type"]
        scenario = self.knobs.scenario
        if class_type in SAMPLERS:
            self.load_model(prompt, node)
            self.torch_peak = max(self.torch_peak, int(self.knobs.torch_peak_mib * 2**20))
        if fail:
            await asyncio.sleep(self.knobs.node_seconds)
            raise gpu_oom() if scenario == "oom" else runtime_error()
        if class_type.startswith("VAEDecode") and scenario == "vae_oom_retry":
            log("Warning: Ran out of memory when regular VAE decoding, retrying with tiled VAE decoding.")
        steps = sampler_steps(prompt, node) if class_type in SAMPLERS else 0
        if steps == 0:
            await self.wait(self.knobs.node_seconds)
            if trouble:
                await self.strike(scenario, nid)
            return
        if class_type == "WanVideoSampler":
            for value in range(1, WRAPPER_LOAD_FRAMES + 1):
                progress.set(nid, value, WRAPPER_LOAD_FRAMES, "running")
                await self.send("progress", {"value": value, "max": WRAPPER_LOAD_FRAMES, "prompt_id": prompt_id,
                                             "node": nid}, client)
        for step in range(1, steps + 1):
            await self.wait(self.knobs.step_seconds)
            if self.interrupt.is_set():
                raise Interrupted(nid)
            progress.set(nid, step, steps, "running")
            await self.send("progress_state", progress.message(prompt_id), client)
            await self.send("progress", {"value": step, "max": steps, "prompt_id": prompt_id, "node": nid}, client)
            if self.preview:
                await self.send_binary(struct.pack(">II", 1, 1) + b"\xff\xd8\xff\xe0fake-jpeg", client)
            if trouble and step == 1:
                await self.strike(scenario, nid)
        await self.wait(self.knobs.node_seconds)

    async def wait(self, seconds: float) -> None:
        """Sleep (a node's or a step's work)."""
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def strike(self, scenario: str, nid: str) -> None:
        """crash_during_run kills the process, drop_websockets closes the sockets, hang_during_run goes
        silent until /interrupt."""
        if scenario == "crash_during_run":
            await asyncio.sleep(0.05)  # let the frames already queued leave
            log("FAKE_COMFYUI_SCENARIO=crash_during_run: the process dies now (SIGKILL)")
            if hasattr(signal, "SIGKILL"):
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(137)
        if scenario == "drop_websockets":
            log("FAKE_COMFYUI_SCENARIO=drop_websockets: closing every websocket")
            for ws in list(self.sockets.values()):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.close()
        if scenario == "hang_during_run":
            await self.interrupt.wait()
            raise Interrupted(nid)

    def load_model(self, prompt: Mapping[str, Any], node: Mapping[str, Any]) -> None:
        """Log model loading like ComfyUI the first time a sampler's model is needed."""
        model = node.get("inputs", {}).get("model")
        key = json.dumps(model)
        if key in self.loaded_models:
            return
        self.loaded_models.add(key)
        log("Requested to load WanModel")
        if self.knobs.scenario == "swap" and len(self.loaded_models) > 1:
            log("Unloaded partially: 7012.34 MB freed, 6617.00 MB remains loaded, 0.00 MB buffer reserved, "
                "lowvram patches: 0")
        if self.knobs.scenario == "offload":
            log(
                "loaded partially; 1234.56 MB usable, 1000.00 MB loaded, 2796.10 MB offloaded, "
                "0.00 MB buffer reserved, lowvram patches: 0"
            )
        else:
            log("loaded completely; 30105.38 MB usable, 13629.08 MB loaded, full load: True")

    # ------------------------------------------------------------------ graph helpers
    def signatures(self, prompt: Mapping[str, Any]) -> dict[str, str]:
        """Input signature per node (class, constants, ancestors): equal signature = cached, as in ComfyUI."""
        memo: dict[str, str] = {}

        def sig(nid: str, stack: tuple[str, ...]) -> str:
            if nid in memo:
                return memo[nid]
            node = prompt[nid]
            parts: list[Any] = [node.get("class_type")]
            for name in sorted(node.get("inputs") or {}):
                value = node["inputs"][name]
                if is_link(value) and value[0] in prompt and value[0] not in stack:
                    parts.append([name, "link", sig(value[0], (*stack, nid)), value[1]])
                else:
                    parts.append([name, "const", value])
            if node.get("class_type") == "LoadImage":
                path = self.dirs.input / str((node.get("inputs") or {}).get("image", ""))
                parts.append(path.stat().st_mtime_ns if path.is_file() else None)
            digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
            memo[nid] = digest
            return digest

        return {nid: sig(nid, ()) for nid in prompt}

    def execution_order(self, prompt: Mapping[str, Any], outputs: list[str], cached: set[str]) -> list[str]:
        """ComfyUI's order: dissolve the graph from the outputs, preferring nodes close to an output."""
        pending: dict[str, None] = {}
        blocking: dict[str, set[str]] = {}
        count: dict[str, int] = {}
        for out in outputs:
            stack = [out]
            while stack:
                nid = stack.pop()
                if nid in pending:
                    continue
                pending[nid] = None
                blocking.setdefault(nid, set())
                count.setdefault(nid, 0)
                for value in (prompt[nid].get("inputs") or {}).values():
                    if is_link(value) and value[0] in prompt and value[0] not in cached:
                        stack.append(value[0])
            # links, once every node is known
        for nid in pending:
            for value in (prompt[nid].get("inputs") or {}).values():
                if is_link(value) and value[0] in pending and nid not in blocking[value[0]]:
                    blocking[value[0]].add(nid)
                    count[nid] += 1
        order: list[str] = []
        while pending:
            ready = [n for n in pending if count[n] == 0]
            if not ready:
                break
            pick = self._pick(prompt, ready, blocking)
            order.append(pick)
            del pending[pick]
            for after in blocking[pick]:
                count[after] -= 1
        return order

    def _pick(self, prompt: Mapping[str, Any], ready: list[str], blocking: dict[str, set[str]]) -> str:
        def is_output(nid: str) -> bool:
            return self.catalog.is_output(prompt[nid]["class_type"])

        for nid in ready:
            if is_output(nid):
                return nid
        for nid in ready:
            if any(is_output(b) for b in blocking[nid]):
                return nid
        for nid in ready:
            if any(is_output(b2) for b in blocking[nid] for b2 in blocking.get(b, ())):
                return nid
        return ready[0]

    def pick_fail_node(self, prompt: Mapping[str, Any], to_run: list[str]) -> str | None:
        """FAKE_COMFYUI_FAIL_NODE (id, title or class), else the first KSamplerAdvanced/KSampler/node."""
        wanted = self.knobs.fail_node
        if wanted:
            for nid in to_run:
                node = prompt[nid]
                title = (node.get("_meta") or {}).get("title")
                if wanted in (nid, title, node.get("class_type")):
                    return nid
            return None
        for cls in SAMPLERS[::-1]:
            for nid in to_run:
                if prompt[nid]["class_type"] == cls:
                    return nid
        return to_run[0] if to_run else None

    def pick_sampler_or_first(self, prompt: Mapping[str, Any], to_run: list[str]) -> str | None:
        """Where crash_during_run and hang_during_run strike."""
        for nid in to_run:
            if prompt[nid]["class_type"] in SAMPLERS:
                return nid
        return to_run[0] if to_run else None

    # ------------------------------------------------------------------ outputs
    def write_outputs(self, prompt: Mapping[str, Any], nid: str, node: Mapping[str, Any]) -> dict[str, Any] | None:
        """Write the files of an output node and return its UI output."""
        class_type = node["class_type"]
        inputs = node.get("inputs") or {}
        if class_type == "SaveImage":
            files = self.save(
                str(inputs.get("filename_prefix", "ComfyUI")),
                "png",
                batch_size(prompt, nid),
                self.dirs.output,
                "output",
            )
            return {"images": files}
        if class_type == "PreviewImage":
            prefix = "ComfyUI_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
            return {"images": self.save(prefix, "png", batch_size(prompt, nid), self.dirs.temp, "temp")}
        if class_type == "SaveVideo":
            fmt = str(inputs.get("format", "auto"))
            ext = "mp4" if fmt in ("auto", "mp4") else fmt
            video = self.knobs.video
            if video == "missing":
                return {"images": [], "animated": [True]}
            data = b""
            if ext == "mp4" and video != "empty":
                frames, width, height, fps = video_of(prompt)
                if video.startswith("frames:"):
                    frames = int(video.split(":", 1)[1])
                elif video.startswith("fps:"):
                    fps = float(video.split(":", 1)[1])
                data = mp4_file(frames, width, height, fps, pixels(frames, width, height, seed_of(prompt),
                                                                   self.knobs.frames))
            elif video != "empty":
                data = tiny_mp4()
            files = self.save(str(inputs.get("filename_prefix", "video/ComfyUI")), ext, 1, self.dirs.output, "output",
                              data=data)
            return {"images": files, "animated": [True]}
        if class_type == "VHS_VideoCombine":  # H.264 MP4; to temp/ unless save_output
            frames, width, height, fps = video_of(prompt)
            data = mp4_file(frames, width, height, fps, pixels(frames, width, height, seed_of(prompt),
                                                               self.knobs.frames))
            keep = bool(inputs.get("save_output", True))
            files = self.save(str(inputs.get("filename_prefix", "AnimateDiff")), "mp4", 1,
                              self.dirs.output if keep else self.dirs.temp, "output" if keep else "temp", data=data)
            return {"gifs": [dict(f, format="video/h264-mp4", frame_rate=fps) for f in files]}
        if class_type == "SaveWEBM":
            return {
                "images": self.save(
                    str(inputs.get("filename_prefix", "ComfyUI")), "webm", 1, self.dirs.output, "output"
                ),
                "animated": [True],
            }
        if class_type == "SaveAnimatedWEBP":
            return {
                "images": self.save(
                    str(inputs.get("filename_prefix", "ComfyUI")), "webp", 1, self.dirs.output, "output"
                ),
                "animated": [True],
            }
        if class_type == "PreviewAny":
            return {"text": [str(inputs.get("source", ""))]}
        return None

    def save(
        self, prefix: str, ext: str, count: int, root: Path, kind: str, data: bytes | None = None
    ) -> list[dict[str, str]]:
        """Write `count` files named like ComfyUI's counter scheme: <prefix>_00001_.<ext>."""
        subfolder, _, base = prefix.replace("\\", "/").rpartition("/")
        folder = root / subfolder if subfolder else root
        folder.mkdir(parents=True, exist_ok=True)
        pattern = re.compile(re.escape(base) + r"_(\d{5,})_")
        taken = [int(m.group(1)) for p in folder.iterdir() if (m := pattern.match(p.name))]
        counter = max(taken, default=0) + 1
        files = []
        for i in range(count):
            name = f"{base}_{counter + i:05}_.{ext}"
            if data is None:
                data = tiny_mp4() if ext in ("mp4", "webm") else tiny_png()
            (folder / name).write_bytes(data)
            files.append({"filename": name, "subfolder": subfolder, "type": kind})
        return files


def seed_of(prompt: Mapping[str, Any]) -> int:
    """The samplers' seeds (noise_seed, seed) folded into one number."""
    seeds = [_const(prompt, (node.get("inputs") or {}).get(k)) for node in prompt.values()
             if node.get("class_type") in SAMPLERS for k in ("noise_seed", "seed")]
    return sum(int(s) for s in seeds if isinstance(s, int)) % 2**31


def sampler_steps(prompt: Mapping[str, Any], node: Mapping[str, Any]) -> int:
    """How many progress frames ComfyUI's sampler sends for these inputs."""
    inputs = node.get("inputs") or {}
    steps = _const_int(prompt, inputs.get("steps"), 20)
    if node["class_type"] == "KSampler":
        denoise = _const(prompt, inputs.get("denoise"))
        return 0 if isinstance(denoise, (int, float)) and denoise <= 0 else max(0, steps)
    if node["class_type"] == "WanVideoSampler":  # start_step and end_step (-1: to the end)
        end = _const_int(prompt, inputs.get("end_step"), -1)
        return max(0, (steps if end == -1 else min(end, steps)) - _const_int(prompt, inputs.get("start_step"), 0))
    start = _const_int(prompt, inputs.get("start_at_step"), 0)
    end = _const_int(prompt, inputs.get("end_at_step"), 10000)
    last = min(end, steps)
    return max(0, last - start)


def _const(prompt: Mapping[str, Any], value: Any, depth: int = 0) -> Any:
    """A constant input, following links through primitive nodes."""
    if is_link(value) and value[0] in prompt and depth < 8:
        return _const(prompt, (prompt[value[0]].get("inputs") or {}).get("value"), depth + 1)
    return value


def _const_int(prompt: Mapping[str, Any], value: Any, default: int) -> int:
    value = _const(prompt, value)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def batch_size(prompt: Mapping[str, Any], nid: str) -> int:
    """The batch size of an image chain: the first batch_size upstream (1 if none)."""
    seen: set[str] = set()
    frontier = [nid]
    while frontier:
        current = frontier.pop(0)
        if current in seen or current not in prompt:
            continue
        seen.add(current)
        inputs = prompt[current].get("inputs") or {}
        if isinstance(inputs.get("batch_size"), int):
            return max(1, min(int(inputs["batch_size"]), 16))
        frontier.extend(v[0] for v in inputs.values() if is_link(v))
    return 1


def _history_job(prompt_id: str, entry: Mapping[str, Any], *, full: bool) -> dict[str, Any]:
    number, _, prompt, extra, _ = entry["prompt"]
    status = entry.get("status") or {}
    start = end = error = None
    for name, data in status.get("messages") or ():
        if name == "execution_start":
            start = data.get("timestamp")
        elif name in ("execution_success", "execution_error", "execution_interrupted"):
            end = data.get("timestamp")
            if name == "execution_error":
                error = data
    outputs = entry.get("outputs") or {}
    count, preview = _outputs_summary(outputs)
    job: dict[str, Any] = {
        "id": prompt_id,
        "status": "completed" if status.get("status_str") != "error" else "failed",
        "priority": number,
        "create_time": extra.get("create_time"),
        "execution_start_time": start,
        "execution_end_time": end,
        "execution_error": error,
        "outputs_count": count,
        "preview_output": preview,
    }
    job = {k: v for k, v in job.items() if v is not None}
    if full:
        job["outputs"] = outputs
        job["execution_status"] = status
        job["workflow"] = {"prompt": prompt, "extra_data": extra}
    return job


def _outputs_summary(outputs: Mapping[str, Any]) -> tuple[int, dict[str, Any] | None]:
    count = 0
    preview: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    for node_id, node_outputs in outputs.items():
        if not isinstance(node_outputs, dict):
            continue
        for media, items in node_outputs.items():
            if media == "animated" or not isinstance(items, list):
                continue
            for item in items:
                if not isinstance(item, dict):
                    continue
                count += 1
                if media in ("images", "video", "audio"):
                    enriched = {**item, "nodeId": node_id, "mediaType": media}
                    if item.get("type") == "output" and preview is None:
                        preview = enriched
                    elif fallback is None:
                        fallback = enriched
    return count, preview or fallback


def _queue_job(item: QueueItem, status: str) -> dict[str, Any]:
    return {
        "id": item.prompt_id,
        "status": status,
        "priority": item.number,
        "create_time": item.extra_data.get("create_time"),
        "outputs_count": 0,
    }


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status)


async def _body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def ensure_inputs(dirs: Dirs, names: Iterable[str]) -> None:
    """Put the default start images into input/ (as a prepared server would have them)."""
    dirs.input.mkdir(parents=True, exist_ok=True)
    for name in names:
        path = dirs.input / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(tiny_png(16, 16, (90, 140, 200)))
