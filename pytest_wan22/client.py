"""ComfyClient: a plain HTTP + websocket client for ComfyUI's API (no pytest here).

It composes a ``requests.Session`` for HTTP and opens one ``websocket-client`` socket per
:meth:`ComfyClient.run`. Every HTTP call has an explicit timeout, every URL is built by
:meth:`ComfyClient.url`, and HTTP failures become the domain errors of :mod:`pytest_wan22.errors`.
"""

from __future__ import annotations

import contextlib
import json
import mimetypes
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast
from urllib.parse import quote, urlsplit, urlunsplit

import requests
import websocket

from .errors import ComfyAPIError, PromptRejected
from .preflight import VFI_MODEL_TYPES, model_folder

__all__ = [
    "ComfyClient",
    "Event",
    "Execution",
    "ExecutionStatus",
    "Release",
    "format_node_error",
    "format_rejection",
]

ExecutionStatus = Literal["success", "error", "interrupted", "timeout", "server_died"]

_POLL_S = 0.25
_WS_TICK_S = 0.25


@dataclass(frozen=True)
class Event:
    """One websocket text frame that concerns our prompt, with its arrival time."""

    t: float
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Release:
    """What :meth:`ComfyClient.free_and_wait` saw: whether the server let its device memory go, how long that
    took, and what its allocator still held (None: the server cannot tell, as without the probe node or a GPU)."""

    released: bool
    waited_s: float
    reserved_mib: float | None

    def describe(self) -> str:
        """One phrase for a message."""
        if self.reserved_mib is None:
            return "not waited for: the server does not report its device memory"
        held = f"{self.reserved_mib / 1024:.2f} GiB still held"
        if self.released:
            return f"released in {self.waited_s:.1f} s ({held})"
        return f"NOT released after {self.waited_s:.0f} s ({held})"


@dataclass(frozen=True)
class Execution:
    """What one :meth:`ComfyClient.run` saw: status, events, history and job entries."""

    prompt_id: str
    status: ExecutionStatus
    events: tuple[Event, ...]
    submitted_at: float
    wall_s: float
    history: dict[str, Any] | None
    job: dict[str, Any] | None
    error: dict[str, Any] | None
    cached_nodes: tuple[str, ...]
    message: str = ""

    @property
    def ok(self) -> bool:
        """True when the prompt finished successfully."""
        return self.status == "success"

    @property
    def outputs(self) -> dict[str, Any]:
        """The history's UI outputs per node (``{}`` when there is no history)."""
        outputs = (self.history or {}).get("outputs")
        return outputs if isinstance(outputs, dict) else {}

    @property
    def server_s(self) -> float | None:
        """Server execution time: the job's end - start, else the history (or event) timestamps."""
        job = self.job or {}
        start, end = job.get("execution_start_time"), job.get("execution_end_time")
        if isinstance(start, (int, float)) and isinstance(end, (int, float)):
            return float(end - start) / 1000.0
        status = (self.history or {}).get("status") or {}
        span = _timestamp_span((m[0], m[1]) for m in status.get("messages") or ()
                               if isinstance(m, (list, tuple)) and len(m) >= 2)
        if span is None:
            span = _timestamp_span((e.type, e.data) for e in self.events)
        return span


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _timestamp_span(messages: Iterable[tuple[Any, Any]]) -> float | None:
    """Seconds from execution_start to success/error/interrupted, from their ms timestamps."""
    start = end = None
    for name, data in messages:
        if not isinstance(data, dict) or not _is_number(data.get("timestamp")):
            continue
        if name == "execution_start":
            start = data["timestamp"]
        elif name in ("execution_success", "execution_error", "execution_interrupted"):
            end = data["timestamp"]
    if start is None or end is None:
        return None
    return float(end - start) / 1000.0


# --------------------------------------------------------------------------- 400 formatting

def _node_label(node_id: str, class_type: str | None, prompt: Mapping[str, Any] | None) -> str:
    node = prompt.get(node_id) if prompt is not None else None
    if class_type is None and isinstance(node, Mapping):
        class_type = node.get("class_type")
    title = None
    if isinstance(node, Mapping):
        meta = node.get("_meta")
        if isinstance(meta, Mapping) and meta.get("title"):
            title = str(meta["title"])
    inner = " ".join(p for p in (class_type or "?", f"'{title}'" if title else "") if p)
    return f"node {node_id} ({inner})"


def format_node_error(error: Mapping[str, Any], class_type: str | None = None) -> str:
    """One validation error of ``node_errors`` as readable text (without the node label)."""
    etype = str(error.get("type") or "error")
    message = str(error.get("message") or "").strip()
    details = str(error.get("details") or "").strip()
    extra = error.get("extra_info")
    extra = extra if isinstance(extra, Mapping) else {}
    input_name = str(extra.get("input_name") or "")
    if etype == "value_not_in_list" and input_name:
        received = extra.get("received_value")
        # A VFI node's checkpoint list is fixed by its pack: a value outside it is an unknown name, not a file.
        folder = None if class_type in VFI_MODEL_TYPES else model_folder(class_type or "", input_name)
        if folder is not None and folder != "input":
            return (f"{input_name}: model file '{received}' not in {folder} (value_not_in_list); "
                    f"put the file in {folder} on the server or change the workflow")
        return f"{details or f'{input_name}: {received!r} not in list'} ({etype})"
    if etype == "custom_validation_failed" and class_type == "LoadImage" and input_name == "image":
        return (f"{details} ({etype}); the image is not in the server's input/ folder: upload it first "
                "(ComfyClient.upload_image)")
    if input_name and (not details or details == input_name):
        text = f"{input_name}: {message}" if message else input_name
    elif details and message:
        text = f"{message}: {details}"
    else:
        text = message or details or etype
    return f"{text} ({etype})"


def format_rejection(body: Any, prompt: Mapping[str, Any] | None = None) -> list[str]:
    """The lines of a 400 answer to POST /prompt: one per node with errors, else the top-level error."""
    if not isinstance(body, Mapping):
        text = str(body).strip() if body not in (None, "") else "(empty body)"
        return [f"HTTP 400: {text}"]
    node_errors = body.get("node_errors")
    lines: list[str] = []
    if isinstance(node_errors, Mapping) and node_errors:
        for node_id in sorted(node_errors, key=_node_sort_key):
            entry = node_errors[node_id]
            if not isinstance(entry, Mapping):
                continue
            class_type = entry.get("class_type")
            if class_type is None and prompt is not None and isinstance(prompt.get(node_id), Mapping):
                class_type = prompt[node_id].get("class_type")
            errors = [e for e in entry.get("errors") or () if isinstance(e, Mapping)]
            texts = [format_node_error(e, class_type) for e in errors] or ["invalid (no details)"]
            lines.append(f"{_node_label(str(node_id), class_type, prompt)}: " + "; ".join(texts))
        if lines:
            return lines
    error = body.get("error")
    if isinstance(error, Mapping):
        etype = str(error.get("type") or "error")
        message = str(error.get("message") or "").strip()
        details = str(error.get("details") or "").strip()
        line = f"{etype}: {message}" if message else etype
        if details and details != message:
            line += f" ({details})"
        return [line]
    if error:
        return [str(error)]
    return [f"HTTP 400: {json.dumps(body)[:500]}"]


def _node_sort_key(node_id: Any) -> tuple[int, str]:
    text = str(node_id)
    head = text.split(":")[0]
    return (int(head) if head.isdigit() else 1 << 62, text)


def _rejection_hint(body: Any) -> str:
    error = body.get("error") if isinstance(body, Mapping) else None
    etype = error.get("type") if isinstance(error, Mapping) else None
    if etype == "invalid_prompt":
        return ("fix: install the custom node package that provides the class (custom_nodes/) or correct "
                "class_type in the workflow file; the workflow must be in API format")
    if etype == "prompt_no_outputs":
        return "fix: add an output node (SaveVideo, SaveImage, PreviewImage...) to the workflow"
    if etype == "no_prompt":
        return "fix: send the workflow under the 'prompt' key"
    return "fix: correct the inputs named above in the workflow (or the files on the server)"


def _rejected(response: requests.Response, prompt: Mapping[str, Any] | None) -> PromptRejected:
    body = _body(response)
    lines = format_rejection(body, prompt)
    node_errors = body.get("node_errors") if isinstance(body, Mapping) else None
    error = body.get("error") if isinstance(body, Mapping) else None
    head = "ComfyUI rejected the prompt (HTTP 400"
    if isinstance(error, Mapping) and error.get("type"):
        head += f", {error['type']}"
    head += ")"
    message = head + ":\n" + "\n".join("  " + line for line in lines) + "\n" + _rejection_hint(body)
    return PromptRejected(message, status=response.status_code, body=body,
                          node_errors=node_errors if isinstance(node_errors, Mapping) else None)


def _body(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


# --------------------------------------------------------------------------- run state

class _RunState:
    """Folds websocket frames of one prompt into events, outcome and error (fed by run())."""

    def __init__(self, prompt_id: str, t0: float, on_event: Callable[[Event], None] | None) -> None:
        self.prompt_id = prompt_id
        self.t0 = t0
        self.on_event = on_event
        self.events: list[Event] = []
        self.outcome: ExecutionStatus | None = None
        self.error: dict[str, Any] | None = None
        self.cached_nodes: tuple[str, ...] = ()
        self.done = False

    def feed(self, message: Any, arrived: float) -> Event | None:
        """Take one parsed text frame; keep it when it belongs to our prompt."""
        if not isinstance(message, Mapping):
            return None
        data = message.get("data")
        etype = message.get("type")
        if not isinstance(data, dict) or not isinstance(etype, str):
            return None
        if data.get("prompt_id") != self.prompt_id:
            return None
        event = Event(t=arrived - self.t0, type=etype, data=data)
        self.events.append(event)
        if etype == "execution_cached":
            self.cached_nodes = tuple(str(n) for n in data.get("nodes") or ())
        elif etype == "execution_error":
            self.outcome, self.error = "error", data
        elif etype == "execution_interrupted":
            self.outcome, self.error = "interrupted", data
        elif etype == "execution_success":
            self.outcome = "success"
        elif etype == "executing" and data.get("node") is None:
            self.done = True
        if self.on_event is not None:
            self.on_event(event)
        return event

    def take_history(self, entry: Mapping[str, Any]) -> None:
        """Fill what the websocket did not deliver from a finished history entry."""
        status = entry.get("status")
        status = status if isinstance(status, Mapping) else {}
        messages = [m for m in status.get("messages") or () if isinstance(m, (list, tuple)) and len(m) >= 2]
        for name, data in messages:
            if not isinstance(data, dict):
                continue
            if name == "execution_cached" and not self.cached_nodes:
                self.cached_nodes = tuple(str(n) for n in data.get("nodes") or ())
            elif name == "execution_error" and self.outcome is None:
                self.outcome, self.error = "error", data
            elif name == "execution_interrupted" and self.outcome is None:
                self.outcome, self.error = "interrupted", data
        if self.outcome is None:  # only a plain "success" is success: another word is never taken for it
            word = status.get("status_str")
            if word == "error":
                self.outcome = "error"
            elif word == "success" or (word is None and status.get("completed") is True):
                self.outcome = "success"
        self.done = True


def _describe_failure(status: ExecutionStatus, error: Mapping[str, Any] | None) -> str:
    if error is None:
        return f"the prompt ended with status {status}"
    node = f"node {error.get('node_id')} ({error.get('node_type')})"
    if status == "interrupted":
        return f"interrupted at {node}"
    first = str(error.get("exception_message") or "").strip().splitlines()
    return f"{node} raised {error.get('exception_type')}: {first[0] if first else ''}".rstrip(": ")


# --------------------------------------------------------------------------- client

class ComfyClient:
    """A client for one ComfyUI server: HTTP calls, prompt submission, and followed runs."""

    def __init__(self, base_url: str, *, client_id: str | None = None, timeout: float = 30.0,
                 interrupt_grace: float = 10.0) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ComfyAPIError(
                f"bad ComfyUI URL {base_url!r}: expected http://HOST:PORT; fix --wan22-url (ini wan22_url)")
        self.base_url: str = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        self.client_id: str = client_id or uuid.uuid4().hex
        self.timeout = float(timeout)
        self.interrupt_grace = float(interrupt_grace)
        self._session = requests.Session()
        self._session.headers["User-Agent"] = "pytest-wan22"

    def __repr__(self) -> str:
        return f"ComfyClient({self.base_url!r}, client_id={self.client_id!r})"

    # ------------------------------------------------------------------ plumbing
    def url(self, *segments: str, ws: bool = False, query: str = "") -> str:
        """The URL of an API path (each segment is percent-quoted); ``ws=True`` gives ws:// or wss://."""
        path = "/".join(quote(s, safe="") for s in segments if s)
        url = f"{self.base_url}/{path}"
        if ws:
            url = "ws" + url[len("http"):]
        return f"{url}?{query}" if query else url

    def _request(self, method: str, *segments: str, timeout: float | None = None,
                 **kwargs: Any) -> requests.Response:
        url = self.url(*segments)
        limit = self.timeout if timeout is None else timeout
        try:
            return self._session.request(method, url, timeout=limit, **kwargs)
        except requests.Timeout as exc:
            raise ComfyAPIError(
                f"{method} {url} got no answer within {limit:g} s ({exc.__class__.__name__}); the server is "
                "hung or overloaded: read its log, or raise the timeout") from exc
        except requests.ConnectionError as exc:
            raise ComfyAPIError(
                f"{method} {url} failed: cannot connect to ComfyUI ({exc.__class__.__name__}); start it, or "
                "point --wan22-url (ini wan22_url) at a running server") from exc

    @staticmethod
    def _raise_for_status(response: requests.Response) -> None:
        if response.status_code < 400:
            return
        body = _body(response)
        shown = body if isinstance(body, str) else json.dumps(body)
        request = response.request
        raise ComfyAPIError(
            f"{request.method} {request.url} answered HTTP {response.status_code}: "
            f"{shown[:500] or '(empty)'}; check the request and the server log",
            status=response.status_code, body=body)

    def _get_json(self, *segments: str, timeout: float | None = None, **kwargs: Any) -> Any:
        response = self._request("GET", *segments, timeout=timeout, **kwargs)
        self._raise_for_status(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ComfyAPIError(
                f"GET {response.url} answered non-JSON ({response.text[:200]!r}); is this a ComfyUI server? "
                "check --wan22-url (ini wan22_url)", status=response.status_code, body=response.text) from exc

    def _post(self, *segments: str, payload: Any = None, timeout: float | None = None) -> requests.Response:
        body = payload if payload is not None else {}
        response = self._request("POST", *segments, json=body, timeout=timeout)
        self._raise_for_status(response)
        return response

    # ------------------------------------------------------------------ simple endpoints
    def system_stats(self) -> dict[str, Any]:
        """GET /system_stats: versions, argv and devices."""
        return cast(dict[str, Any], self._get_json("system_stats"))

    def object_info(self, node_class: str | None = None) -> dict[str, Any]:
        """GET /object_info (every class) or /object_info/{cls}: ``{class: info}``, ``{}`` if unknown."""
        if node_class is None:
            return cast(dict[str, Any], self._get_json("object_info"))
        return cast(dict[str, Any], self._get_json("object_info", node_class))

    def queue(self) -> dict[str, Any]:
        """GET /queue: ``queue_running`` and ``queue_pending`` lists."""
        return cast(dict[str, Any], self._get_json("queue"))

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /history/{id}: the entry for this prompt, or None when it has none (yet)."""
        body = self._get_json("history", prompt_id)
        entry = body.get(prompt_id) if isinstance(body, dict) else None
        return entry if isinstance(entry, dict) else None

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        """GET /api/jobs/{id}: status and execution times in ms; None when unknown (404)."""
        response = self._request("GET", "api", "jobs", prompt_id)
        if response.status_code == 404:
            return None
        self._raise_for_status(response)
        body = _body(response)
        return body if isinstance(body, dict) else None

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt, for one running prompt or (no id) whatever runs."""
        self._post("interrupt", payload={"prompt_id": prompt_id} if prompt_id else {})

    def delete_from_queue(self, *prompt_ids: str) -> None:
        """POST /queue {"delete": [...]}: drop pending prompts."""
        self._post("queue", payload={"delete": list(prompt_ids)})

    def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free: unload models and (free_memory) drop the node cache; applied when the queue idles."""
        self._post("free", payload={"unload_models": unload_models, "free_memory": free_memory})

    def free_and_wait(self, *, settle_mib: float = 1024.0, timeout: float = 300.0, poll: float = 0.5,
                      clock: Callable[[], float] = time.monotonic,
                      sleep: Callable[[float], None] = time.sleep) -> Release:
        """POST /free, then wait until the server's allocator holds at most `settle_mib` (read through the probe
        node's GET /wan22/memory) and its queue is idle.

        ComfyUI applies /free in its prompt worker between prompts and then moves the models to host memory,
        which takes tens of seconds for a 14B pair; a second server that loads meanwhile starts beside memory
        that is still taken, so its allocator, and the peak it reports, can differ from a start on an idle card.
        """
        start = clock()
        self.free()
        reserved: float | None = None
        while True:
            stats = self.memory_stats()
            if not stats.get("available") or not _is_number(stats.get("reserved")):
                return Release(True, clock() - start, None)
            reserved = float(stats["reserved"]) / 2**20
            queue = self.queue()
            idle = not queue.get("queue_running") and not queue.get("queue_pending")
            if reserved <= settle_mib and idle:
                return Release(True, clock() - start, reserved)
            if clock() - start >= timeout:
                return Release(False, clock() - start, reserved)
            sleep(poll)

    def clear_queue(self) -> None:
        """POST /queue {"clear": true}: drop every pending prompt (the running one is not touched)."""
        self._post("queue", payload={"clear": True})

    def upload_image(self, path: Path, *, overwrite: bool = True) -> str:
        """POST /upload/image into input/; returns the name to use in LoadImage."""
        path = Path(path)
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise ComfyAPIError(f"cannot read image {path} to upload ({exc}); fix the path") from exc
        return self.upload_image_bytes(path.name, content, overwrite=overwrite)

    def upload_image_bytes(self, name: str, data: bytes, *, overwrite: bool = True) -> str:
        """POST /upload/image of in-memory bytes under `name`; returns the name to use in LoadImage."""
        mime = mimetypes.guess_type(name)[0] or "application/octet-stream"
        response = self._request(
            "POST", "upload", "image", files={"image": (name, data, mime)},
            data={"overwrite": "true" if overwrite else "false", "type": "input"})
        self._raise_for_status(response)
        body = _body(response)
        if not isinstance(body, dict) or "name" not in body:
            raise ComfyAPIError(
                f"POST /upload/image answered {body!r}, expected a name; check the server log",
                status=response.status_code, body=body)
        subfolder = str(body.get("subfolder") or "")
        return f"{subfolder}/{body['name']}" if subfolder else str(body["name"])

    def memory_stats(self) -> dict[str, Any]:
        """GET /wan22/memory (the probe node): torch allocator peaks; ``{"available": False}`` without it."""
        try:
            response = self._request("GET", "wan22", "memory")
        except ComfyAPIError as exc:
            return {"available": False, "reason": str(exc)}
        if response.status_code == 404:
            return {"available": False, "reason": "the wan22 probe node is not installed on this server"}
        body = _body(response)
        if response.status_code >= 400 or not isinstance(body, dict):
            return {"available": False, "reason": f"GET /wan22/memory answered HTTP {response.status_code}"}
        return body

    def reset_memory_stats(self) -> None:
        """POST /wan22/memory/reset (best effort: nothing happens without the probe node)."""
        with contextlib.suppress(ComfyAPIError):
            self._request("POST", "wan22", "memory", "reset", json={})

    def view(self, filename: str, *, subfolder: str = "", type: str = "output") -> bytes:
        """GET /view: the bytes of an output (or input/temp) file."""
        response = self._request("GET", "view", params={"filename": filename, "subfolder": subfolder,
                                                        "type": type})
        self._raise_for_status(response)
        return response.content

    # ------------------------------------------------------------------ submit
    def submit(self, prompt: Mapping[str, Any], *, prompt_id: str | None = None) -> str:
        """POST /prompt with our client_id; returns the prompt id. HTTP 400 raises PromptRejected."""
        payload: dict[str, Any] = {"prompt": dict(prompt), "client_id": self.client_id}
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        response = self._request("POST", "prompt", json=payload)
        if response.status_code == 400:
            raise _rejected(response, prompt)
        self._raise_for_status(response)
        body = _body(response)
        if not isinstance(body, dict) or not body.get("prompt_id"):
            raise ComfyAPIError(f"POST /prompt answered {body!r} without a prompt_id; check the server log",
                                status=response.status_code, body=body)
        return str(body["prompt_id"])

    # ------------------------------------------------------------------ run
    def _open_ws(self) -> websocket.WebSocket | None:
        url = self.url("ws", ws=True, query=f"clientId={quote(self.client_id)}")
        try:
            ws = websocket.create_connection(url, timeout=min(self.timeout, 10.0),
                                             enable_multithread=False)
        except (OSError, websocket.WebSocketException):
            return None
        # The server registers the socket before it sends the first status frame: wait for it, so that
        # no event of the prompt can be sent before this socket is known.
        ws.settimeout(min(self.timeout, 5.0))
        with contextlib.suppress(OSError, websocket.WebSocketException):
            ws.recv_data()
        ws.settimeout(_WS_TICK_S)
        return ws

    def _server_answers(self, is_alive: Callable[[], bool] | None) -> bool:
        """False when the process is gone or the port refuses connections."""
        if is_alive is not None and not is_alive():
            return False
        try:
            self._session.get(self.url("system_stats"), timeout=min(self.timeout, 5.0))
        except requests.Timeout:
            return True
        except requests.RequestException:
            return False
        return True

    def _follow_ws(self, ws: websocket.WebSocket, state: _RunState, deadline: float,
                   is_alive: Callable[[], bool] | None) -> str:
        """Read frames until done ('done'), the deadline ('deadline'), a dead server or a closed socket."""
        while not state.done:
            now = time.monotonic()
            if now >= deadline:
                return "deadline"
            if is_alive is not None and not is_alive():
                return "died"
            ws.settimeout(max(0.01, min(_WS_TICK_S, deadline - now)))
            try:
                opcode, payload = ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                return "closed"
            arrived = time.monotonic()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return "closed"
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue  # binary previews and control frames
            try:
                message = json.loads(payload)
            except ValueError:
                continue
            state.feed(message, arrived)
        return "done"

    def _follow_history(self, state: _RunState, deadline: float,
                        is_alive: Callable[[], bool] | None) -> str:
        """Poll /history/{id} until the entry appears ('done'), the deadline, or a dead server."""
        while True:
            if is_alive is not None and not is_alive():
                return "died"
            try:
                entry = self.history(state.prompt_id)
            except ComfyAPIError:
                if not self._server_answers(is_alive):
                    return "died"
                entry = None
            if entry is not None and entry.get("status") is not None:
                state.take_history(entry)
                return "done"
            if time.monotonic() >= deadline:
                return "deadline"
            time.sleep(max(0.0, min(_POLL_S, deadline - time.monotonic())))

    def _follow(self, ws: websocket.WebSocket | None, state: _RunState, deadline: float,
                is_alive: Callable[[], bool] | None) -> tuple[str, websocket.WebSocket | None]:
        if ws is not None:
            reason = self._follow_ws(ws, state, deadline, is_alive)
            if reason != "closed":
                return reason, ws
            _close_ws(ws)
            if not self._server_answers(is_alive):
                return "died", None
        return self._follow_history(state, deadline, is_alive), None

    def run(self, prompt: Mapping[str, Any], *, timeout: float,
            is_alive: Callable[[], bool] | None = None,
            on_event: Callable[[Event], None] | None = None) -> Execution:
        """Submit a prompt and follow it to the end; returns an Execution whatever happened.

        Opens the websocket first, then submits with a prompt id chosen here. Ends at the `executing`
        frame with node None (or the history entry, when the socket drops but the server lives).
        On timeout it interrupts the prompt (and drops it from the queue) and waits
        ``interrupt_grace`` seconds for that to land. Validation errors raise PromptRejected.
        """
        prompt_id = str(uuid.uuid4())
        ws = self._open_ws()
        submitted_at = time.time()
        t0 = time.monotonic()
        state = _RunState(prompt_id, t0, on_event)
        try:
            if ws is None and not self._server_answers(is_alive):
                return self._died(state, submitted_at, "the websocket could not connect")
            try:
                self.submit(prompt, prompt_id=prompt_id)
            except PromptRejected:
                raise
            except ComfyAPIError as exc:
                if exc.status is None and not self._server_answers(is_alive):
                    return self._died(state, submitted_at, str(exc))
                raise
            deadline = t0 + float(timeout)
            reason, ws = self._follow(ws, state, deadline, is_alive)
            if reason == "died":
                return self._died(state, submitted_at, "the connection dropped and the server is gone")
            message = ""
            status: ExecutionStatus
            wall_s = time.monotonic() - t0
            if reason == "deadline":
                status = "timeout"
                message = self._give_up(ws, state, timeout, is_alive)
            else:
                status = state.outcome or "error"
            if ws is not None:
                _close_ws(ws)
                ws = None
            history, job = self._fetch_records(prompt_id, status)
            if history is not None and status != "timeout" and state.outcome is None:
                state.take_history(history)
                status = state.outcome or status
            if status in ("error", "interrupted") and not message:
                message = _describe_failure(status, state.error)
            return Execution(
                prompt_id=prompt_id, status=status, events=tuple(state.events), submitted_at=submitted_at,
                wall_s=wall_s, history=history, job=job, error=state.error,
                cached_nodes=state.cached_nodes, message=message)
        finally:
            if ws is not None:
                _close_ws(ws)

    def _give_up(self, ws: websocket.WebSocket | None, state: _RunState, timeout: float,
                 is_alive: Callable[[], bool] | None) -> str:
        """Interrupt a prompt that ran past its timeout and wait briefly for that to land."""
        with contextlib.suppress(ComfyAPIError):
            self.interrupt(state.prompt_id)
        with contextlib.suppress(ComfyAPIError):
            self.delete_from_queue(state.prompt_id)
        landed = "done"
        with contextlib.suppress(ComfyAPIError):
            if self.job(state.prompt_id) is None:
                return self._timeout_message(timeout, "it never started and was dropped from the queue")
        if self.interrupt_grace > 0:
            landed, ws = self._follow(ws, state, time.monotonic() + self.interrupt_grace, is_alive)
        if landed != "done":
            return self._timeout_message(
                timeout, f"it was interrupted, but that had not landed after {self.interrupt_grace:g} s")
        return self._timeout_message(timeout, "it was interrupted")

    @staticmethod
    def _timeout_message(timeout: float, what: str) -> str:
        return (f"no result within {timeout:g} s; {what}. Raise --wan22-run-timeout (ini wan22_run_timeout) "
                "if the workflow is only slow")

    def _fetch_records(self, prompt_id: str,
                       status: ExecutionStatus) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        history: dict[str, Any] | None = None
        job: dict[str, Any] | None = None
        tries = 1 if status == "timeout" else 4
        for attempt in range(tries):
            try:
                history = self.history(prompt_id)
            except ComfyAPIError:
                history = None
                break
            if history is not None:
                break
            if attempt + 1 < tries:
                time.sleep(0.05 * (attempt + 1))
        with contextlib.suppress(ComfyAPIError):
            job = self.job(prompt_id)
        return history, job

    def _died(self, state: _RunState, submitted_at: float, cause: str) -> Execution:
        return Execution(
            prompt_id=state.prompt_id, status="server_died", events=tuple(state.events),
            submitted_at=submitted_at, wall_s=time.monotonic() - state.t0, history=None, job=None,
            error=state.error, cached_nodes=state.cached_nodes,
            message=f"ComfyUI stopped answering during the run ({cause}); read the server log for the cause "
                    "(--wan22-log-dir, ini wan22_log_dir)")

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the HTTP session."""
        self._session.close()

    def __enter__(self) -> ComfyClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _close_ws(ws: websocket.WebSocket) -> None:
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.send_close()
    with contextlib.suppress(OSError, websocket.WebSocketException):
        ws.shutdown()  # type: ignore[no-untyped-call]
