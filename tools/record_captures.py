"""Record the protocol captures the tests replay, from a real ComfyUI on this machine's CPU.

    python tools/record_captures.py --comfyui-dir ~/ComfyUI --python ~/ComfyUI/venv/bin/python

starts that ComfyUI (``--cpu``, a private base directory, an in-memory database), generates the tiny synthetic
Wan 2.2 models with the plugin's own generator, plays every scenario the tests read (idle answers, a run, a
cached rerun, validation errors, runtime errors, host-RAM exhaustion, a busy queue with interrupts, a prompt
without client_id, model files that are no model, the tiny two-pass Wan 2.2 i2v graph) and writes what the
server answered into ``tests/data/comfyui-<version>/`` (``--out`` to choose). Re-run it for a new ComfyUI
version and point the tests at the new folder (``CAPTURES`` in tests/fake_comfyui/harness.py).

File conventions (also in the folder's README.md): ``*.request.json`` is the POSTed body; ``*.response.json``
and ``*.http.json`` hold ``{"http_status", "body"}``; ``*.history.json`` and ``*.api_job.json`` are
``/history/{id}`` and ``/api/jobs/{id}`` after the run; ``*.ws.jsonl`` has one websocket frame a line,
``{"t": seconds since the socket opened, "frame": "text", "message": ...}`` (binary frames as
``{"frame": "binary", "length", "event_type"}``, and the recorder's own ``{"frame": "note"}`` markers). Absolute
paths are shortened to ``<comfyui>``, ``<base>`` and ``<venv>``. Prompt ids are chosen by the recorder
(``uuid5`` of the scenario name), so they stay the same from one recording to the next.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import websocket

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pytest_wan22.launcher import ComfyServer, ServerSpec  # noqa: E402
from pytest_wan22.synth import ensure_models  # noqa: E402

NAMESPACE = uuid.UUID("6f1d4a52-5a3b-4c8e-9d57-2f0b8e3c1a77")


def prompt_id(scenario: str) -> str:
    """The prompt id a scenario's run gets: the same in every recording."""
    return str(uuid.uuid5(NAMESPACE, scenario))


def link(node: str, slot: int = 0) -> list[Any]:
    """An API-format link to a node's output."""
    return [node, slot]


SIMPLE = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 16711680}},
    "2": {"class_type": "ImageScale", "inputs": {"image": link("1"), "upscale_method": "bilinear", "width": 32,
                                                 "height": 24, "crop": "disabled"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": link("2"), "filename_prefix": "wan22probe/ok"}},
}
VALIDATION_ERROR = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 0, "height": 48, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageScale", "inputs": {"image": link("1"), "upscale_method": "not-a-method", "width": 32,
                                                 "height": 24, "crop": "disabled"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": link("2")}},
}
MISSING_MODEL = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
                                                 "weight_dtype": "default"}},
    "2": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan",
                                                 "device": "default"}},
    "3": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("2"), "text": "a cat"}},
    "4": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                              "batch_size": 1}},
    "5": {"class_type": "KSampler", "inputs": {"model": link("1"), "positive": link("3"), "negative": link("3"),
                                               "latent_image": link("4"), "seed": 1, "steps": 2, "cfg": 1.0,
                                               "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0}},
    "6": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}},
    "7": {"class_type": "VAEDecode", "inputs": {"samples": link("5"), "vae": link("6")}},
    "8": {"class_type": "SaveImage", "inputs": {"images": link("7"), "filename_prefix": "x"}},
}
RUNTIME_ERROR = {  # ImageToMask(alpha) on an RGB image: IndexError at run time
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16, "height": 16, "batch_size": 1, "color": 0}},
    "2": {"class_type": "ImageToMask", "inputs": {"image": link("1"), "channel": "alpha"}},
    "3": {"class_type": "MaskToImage", "inputs": {"mask": link("2")}},
    "4": {"class_type": "PreviewImage", "inputs": {"images": link("3")}},
}
CPU_OOM = {  # 16384 x 16384 x 4096 RGB float32: host RAM, never a GPU OOM
    "1": {"class_type": "EmptyImage", "inputs": {"width": 16384, "height": 16384, "batch_size": 4096, "color": 0}},
    "2": {"class_type": "PreviewImage", "inputs": {"images": link("1")}},
}


def slow(color: int) -> dict[str, Any]:
    """Three large blurs: long enough to queue, list and interrupt around."""
    blur = {"blur_radius": 31, "sigma": 10.0}
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 1536, "height": 1536, "batch_size": 1, "color": color}},
        "2": {"class_type": "ImageBlur", "inputs": {"image": link("1"), **blur}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": link("2"), **blur}},
        "4": {"class_type": "ImageBlur", "inputs": {"image": link("3"), **blur}},
        "5": {"class_type": "ImageScale", "inputs": {"image": link("4"), "upscale_method": "bilinear", "width": 32,
                                                     "height": 32, "crop": "disabled"}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": link("5")}},
    }


def model_probe(unet: str) -> dict[str, Any]:
    """A UNETLoader of `unet` feeding a two-step sampler on precomputed conditioning."""
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
        "2": {"class_type": "ModelSamplingSD3", "inputs": {"model": link("1"), "shift": 8.0}},
        "3": {"class_type": "EmptyHunyuanLatentVideo", "inputs": {"width": 64, "height": 64, "length": 5,
                                                                  "batch_size": 1}},
        "4": {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": "wan22_tiny_cond"}},
        "5": {"class_type": "KSampler", "inputs": {"model": link("2"), "positive": link("4", 1),
                                                   "negative": link("4", 1), "latent_image": link("3"), "seed": 1,
                                                   "steps": 2, "cfg": 1.0, "sampler_name": "euler",
                                                   "scheduler": "simple", "denoise": 1.0}},
        "6": {"class_type": "SaveLatent", "inputs": {"samples": link("5"), "filename_prefix": "latents/probe"}},
    }


def wan_tiny(precomputed: bool) -> dict[str, Any]:
    """The tiny two-pass Wan 2.2 i2v graph (64x64, 9 frames, 4 steps split 2/2), with the stub text encoder or
    with a precomputed (zero) conditioning."""
    def sampler(model: str, latent: list[Any], first: bool) -> dict[str, Any]:
        return {"model": link(model), "add_noise": "enable" if first else "disable", "noise_seed": 42, "steps": 4,
                "cfg": 3.5, "sampler_name": "euler", "scheduler": "simple", "positive": link("10"),
                "negative": link("10", 1), "latent_image": latent, "start_at_step": 0 if first else 2,
                "end_at_step": 2 if first else 10000,
                "return_with_leftover_noise": "enable" if first else "disable"}

    text: dict[str, Any] = {
        "5": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_tiny_stub.safetensors", "type": "wan",
                                                     "device": "default"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("5"),
                                                         "text": "a cat walks slowly across a sunny garden"},
              "_meta": {"title": "positive"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("5"), "text": "low quality blurry static"},
              "_meta": {"title": "negative"}},
    }
    if precomputed:
        text = {
            "5": {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": "wan22_tiny_cond"}},
            "6": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": link("5", 1)}},
            "7": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": link("5", 1)}},
        }
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan22_tiny_i2v_high_noise.safetensors",
                                                     "weight_dtype": "default"},
              "_meta": {"title": "Load Diffusion Model (high noise)"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan22_tiny_i2v_low_noise.safetensors",
                                                     "weight_dtype": "default"},
              "_meta": {"title": "Load Diffusion Model (low noise)"}},
        "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": link("1"), "shift": 8.0}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": link("2"), "shift": 8.0}},
        **text,
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": "wan21_tiny_vae.safetensors"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "wan22_tiny_start.png"}},
        "10": {"class_type": "WanImageToVideo", "inputs": {"positive": link("6"), "negative": link("7"),
                                                          "vae": link("8"), "width": 64, "height": 64, "length": 9,
                                                          "batch_size": 1, "start_image": link("9")}},
        "11": {"class_type": "KSamplerAdvanced", "inputs": sampler("3", link("10", 2), True),
               "_meta": {"title": "KSampler (high noise)"}},
        "12": {"class_type": "KSamplerAdvanced", "inputs": sampler("4", link("11"), False),
               "_meta": {"title": "KSampler (low noise)"}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": link("12"), "vae": link("8")}},
        "14": {"class_type": "CreateVideo", "inputs": {"images": link("13"), "fps": 16.0}},
        "15": {"class_type": "SaveVideo", "inputs": {"video": link("14"), "filename_prefix": "video/wan22_tiny",
                                                     "format": "auto", "codec": "auto"}},
    }


class Socket:
    """A websocket that records every frame with its arrival time, on a thread."""

    def __init__(self, url: str, client_id: str) -> None:
        self.t0 = time.monotonic()
        self.frames: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.ws = websocket.create_connection(f"{url.replace('http', 'ws', 1)}/ws?clientId={client_id}", timeout=1)
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.closed:
            try:
                opcode, data = self.ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            except (OSError, websocket.WebSocketException):
                return
            t = round(time.monotonic() - self.t0, 4)
            if opcode == websocket.ABNF.OPCODE_TEXT:
                frame = {"t": t, "frame": "text", "message": json.loads(data)}
            elif opcode == websocket.ABNF.OPCODE_BINARY:
                frame = {"t": t, "frame": "binary", "length": len(data), "event_type": int.from_bytes(data[:4], "big")}
            else:
                continue
            with self.lock:
                self.frames.append(frame)

    def note(self, text: str) -> None:
        """A marker of the recorder's own (not server data)."""
        with self.lock:
            self.frames.append({"t": round(time.monotonic() - self.t0, 4), "frame": "note", "note": text})

    def wait(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 600.0) -> None:
        """Until a text frame's message satisfies predicate."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if any(f["frame"] == "text" and predicate(f["message"]) for f in self.frames):
                    return
            time.sleep(0.02)
        raise TimeoutError("the expected websocket frame did not come")

    def close(self, grace: float = 0.3) -> list[dict[str, Any]]:
        """Stop after `grace` seconds more; the frames."""
        time.sleep(grace)
        self.closed = True
        self.thread.join(timeout=3)
        self.ws.close()
        return self.frames


def done(pid: str) -> Callable[[dict[str, Any]], bool]:
    """The frame that ends a prompt: `executing` with node None."""
    return lambda m: (m.get("type") == "executing" and m["data"].get("node") is None
                      and m["data"].get("prompt_id") == pid)


class Recorder:
    """Plays scenarios against one server and writes what it answered."""

    def __init__(self, url: str, out: Path, replacements: dict[str, str]) -> None:
        self.url, self.out, self.replacements = url, out, replacements
        self.http = requests.Session()

    def clean(self, data: Any) -> Any:
        """Absolute paths shortened to their placeholders."""
        text = json.dumps(data)
        for path, name in sorted(self.replacements.items(), key=lambda kv: -len(kv[0])):
            text = text.replace(json.dumps(path)[1:-1], name)
        return json.loads(text)

    def write(self, name: str, data: Any) -> None:
        """One capture file: JSON, or JSON lines for a list under a .jsonl name."""
        path = self.out / name
        data = self.clean(data)
        if name.endswith(".jsonl"):
            path.write_text("".join(json.dumps(x) + "\n" for x in data), encoding="utf-8")
        else:
            path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")

    def call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """{"http_status", "body"} of one request."""
        response = self.http.request(method, self.url + path, timeout=60, **kw)
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text
        return {"http_status": response.status_code, "body": body}

    def post(self, prompt: dict[str, Any], pid: str | None, client_id: str | None) -> dict[str, Any]:
        """POST /prompt with our prompt id and client id (either may be left out)."""
        body: dict[str, Any] = {"prompt": prompt}
        if client_id is not None:
            body["client_id"] = client_id
        if pid is not None:
            body["prompt_id"] = pid
        return self.call("POST", "/prompt", json=body)

    def run(self, stem: str, prompt: dict[str, Any], *, scenario: str | None = None, request: bool = True,
            note: str = "POST /prompt", extra: tuple[str, ...] = ("history", "api_job")) -> str:
        """One prompt with a socket open: request, response, frames, history and job."""
        pid = prompt_id(scenario or stem)
        client = uuid.uuid5(NAMESPACE, "client").hex
        sock = Socket(self.url, client)
        sock.wait(lambda m: m.get("type") == "status", timeout=10)
        sock.note(note)
        response = self.post(prompt, pid, client)
        if response["http_status"] != 200:
            raise RuntimeError(f"{stem}: POST /prompt answered {response}")
        sock.wait(done(pid))
        self.write(f"{stem}.ws.jsonl", sock.close())
        if request:
            self.write(f"{stem}.request.json", {"prompt": prompt, "client_id": client, "prompt_id": pid})
        self.write(f"{stem}.response.json", response)
        if "history" in extra:
            self.write(f"{stem}.history.json", self.call("GET", f"/history/{pid}"))
        if "api_job" in extra:
            self.write(f"{stem}.api_job.json", self.call("GET", f"/api/jobs/{pid}"))
        return pid

    def rejected(self, stem: str, prompt: dict[str, Any] | None) -> None:
        """A prompt the server refuses (HTTP 400)."""
        response = self.call("POST", "/prompt", json={} if prompt is None else {"prompt": prompt})
        if response["http_status"] != 400:
            raise RuntimeError(f"{stem}: expected HTTP 400, got {response}")
        if prompt is not None:
            self.write(f"{stem}.request.json", {"prompt": prompt})
        self.write(f"{stem}.response.json", response)


def idle(rec: Recorder) -> None:
    """The answers of a server with nothing queued and no models installed."""
    for name, path in (("features", "/features"), ("system_stats", "/system_stats"), ("queue_idle", "/queue"),
                       ("history_empty", "/history"), ("get_prompt_idle", "/prompt"),
                       ("api_jobs_empty", "/api/jobs")):
        rec.write(f"{name}.json", rec.call("GET", path))
    rec.write("object_info.json", rec.call("GET", "/object_info")["body"])
    rec.write("models_endpoints.json", {p: rec.call("GET", p) for p in (
        "/models", "/models/diffusion_models", "/models/text_encoders", "/models/vae", "/models/clip",
        "/models/unet", "/models/nosuchfolder", "/embeddings", "/experiment/models")})


def rejections(rec: Recorder) -> None:
    """Validation errors: HTTP 400 bodies, nothing runs."""
    rec.rejected("c_validation_error", VALIDATION_ERROR)
    rec.rejected("c_unknown_class", {"1": {"class_type": "NoSuchNode", "inputs": {}}})
    rec.rejected("c_no_outputs", {"1": {"class_type": "EmptyImage",
                                        "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}}})
    rec.rejected("c_no_prompt", None)
    rec.rejected("f_missing_model", MISSING_MODEL)


def runs(rec: Recorder) -> None:
    """A run, the identical rerun, runtime errors, host-RAM exhaustion, a prompt without client_id."""
    rec.run("a_success", SIMPLE)
    rec.run("b_cached", SIMPLE, request=False, note="POST /prompt (identical prompt again)", extra=("history",))
    rec.run("d_runtime_error", RUNTIME_ERROR)
    rec.run("d2_cpu_oom", CPU_OOM)
    # Without client_id: a bystander's socket sees only the broadcasts.
    sock = Socket(rec.url, "bystander")
    sock.wait(lambda m: m.get("type") == "status", timeout=10)
    sock.note("POST /prompt with client-chosen prompt_id and WITHOUT client_id")
    tiny = json.loads(json.dumps(SIMPLE))
    tiny["1"]["inputs"]["color"] = 78
    pid = "my-own-id-0001"
    rec.post(tiny, pid, None)
    deadline = time.monotonic() + 60
    while not rec.call("GET", f"/history/{pid}")["body"] and time.monotonic() < deadline:
        time.sleep(0.05)
    rec.write("no_client_id.ws.jsonl", sock.close(grace=0.5))


def busy_queue(rec: Recorder) -> None:
    """A slow prompt A, B and C queued behind it; C deleted, B interrupted while pending (no effect), A
    interrupted while it runs its second blur."""
    client = uuid.uuid5(NAMESPACE, "client").hex
    ids = {k: prompt_id(f"e_interrupt_and_busy_queue/{k}") for k in "ABC"}
    sock = Socket(rec.url, client)
    sock.wait(lambda m: m.get("type") == "status", timeout=10)
    http: dict[str, Any] = {}
    tiny = {"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 77}},
            "2": {"class_type": "PreviewImage", "inputs": {"images": link("1")}}}
    sock.note("POST /prompt A (slow)")
    http["post_A"] = rec.post(slow(2), ids["A"], client)
    sock.note("POST /prompt B (slow) while A runs")
    http["post_B_while_busy"] = rec.post(slow(3), ids["B"], client)
    sock.note("POST /prompt C (tiny) while A runs")
    http["post_C_while_busy"] = rec.post(tiny, ids["C"], client)
    http["GET_queue_busy"] = rec.call("GET", "/queue")
    http["GET_prompt_busy"] = rec.call("GET", "/prompt")
    http["GET_api_jobs_busy"] = rec.call("GET", "/api/jobs")
    sock.note("POST /queue delete C")
    http["POST_queue_delete_C"] = rec.call("POST", "/queue", json={"delete": [ids["C"]]})
    sock.note("POST /interrupt {prompt_id: B} (B is pending, not running)")
    http["POST_interrupt_pending_B"] = rec.call("POST", "/interrupt", json={"prompt_id": ids["B"]})
    sock.wait(lambda m: m.get("type") == "executing" and m["data"].get("node") == "3"
              and m["data"].get("prompt_id") == ids["A"])
    sock.note("POST /interrupt {prompt_id: A} (A is running)")
    http["POST_interrupt_running_A"] = rec.call("POST", "/interrupt", json={"prompt_id": ids["A"]})
    sock.wait(done(ids["B"]))
    for k in "ABC":
        http[f"history_{k}"] = rec.call("GET", f"/history/{ids[k]}")
        http[f"api_job_{k}"] = rec.call("GET", f"/api/jobs/{ids[k]}")
    rec.write("e_interrupt_and_busy_queue.ws.jsonl", sock.close())
    rec.write("e_interrupt_and_busy_queue.http.json", http)


def model_files(rec: Recorder, base: Path) -> None:
    """A file that is no diffusion model, then a truncated one (the first run leaves nodes 3 and 4 cached)."""
    folder = base / "models" / "diffusion_models"
    good = (folder / "wan22_tiny_i2v_high_noise.safetensors").read_bytes()
    header = json.dumps({"not_a_wan.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    (folder / "not_a_wan.safetensors").write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    (folder / "truncated.safetensors").write_bytes(good[: len(good) // 2])
    rec.run("f2_unrecognized_model_file", model_probe("not_a_wan.safetensors"))
    rec.run("f3_corrupt_model_file", model_probe("truncated.safetensors"))


def wan(rec: Recorder) -> None:
    """The tiny Wan 2.2 i2v graph cold, again (all cached), with a new seed, and on precomputed conditioning."""
    graph = wan_tiny(precomputed=False)
    rec.write("wan22_i2v_tiny_api.json", graph)
    rec.run("wan22_tiny_cold", graph, request=False)
    rec.run("wan22_tiny_repeat_all_cached", graph, request=False, extra=())
    reseeded = json.loads(json.dumps(graph))
    reseeded["11"]["inputs"]["noise_seed"] = 43
    rec.run("wan22_tiny_new_seed_partial_cache", reseeded, request=False, extra=())
    pre = wan_tiny(precomputed=True)
    rec.write("wan22_i2v_tiny_precomputed_cond_api.json", pre)
    rec.run("wan22_tiny_precomputed_cond", pre, request=False, extra=())


def main(argv: list[str] | None = None) -> int:
    """Start the ComfyUI, play every scenario, write the folder."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--comfyui-dir", type=Path, required=True, help="the ComfyUI checkout to record")
    ap.add_argument("--python", default=sys.executable, help="ComfyUI's interpreter (needs torch)")
    ap.add_argument("--out", type=Path, help="default: tests/data/comfyui-<version the server reports>")
    ap.add_argument("--models", type=Path, default=Path.home() / ".cache" / "pytest-wan22" / "capture-models",
                    help="where the tiny models (with the stub text encoder) are generated and kept")
    args = ap.parse_args(argv)
    comfyui = args.comfyui_dir.resolve()
    models = ensure_models(args.python, args.models, "tiny", text_encoder="stub", timeout=1200)
    with tempfile.TemporaryDirectory(prefix="wan22-captures-") as tmp:
        base = Path(tmp) / "base"
        for sub in ("models", "output", "input", "temp", "user", "custom_nodes"):
            (base / sub).mkdir(parents=True)
        own = ("--output-directory", str(base / "output"), "--temp-directory", str(base / "temp"),
               "--input-directory", str(base / "input"), "--user-directory", str(base / "user"),
               "--front-end-root", str(base / "frontend"), "--database-url", "sqlite:///:memory:")
        (base / "frontend").mkdir()
        spec = ServerSpec(comfyui_dir=comfyui, work_dir=Path(tmp), python=args.python, base_directory=base,
                          install_probe=False, startup_timeout=300, args=("--cpu", *own))
        server = ComfyServer(spec)
        handle = server.start()
        try:
            version = requests.get(handle.url + "/system_stats", timeout=10).json()["system"]["comfyui_version"]
            out = args.out or REPO / "tests" / "data" / f"comfyui-{version}"
            out.mkdir(parents=True, exist_ok=True)
            python = str(Path(args.python).parent.parent) if "/bin/" in args.python else args.python
            rec = Recorder(handle.url, out, {str(comfyui): "<comfyui>", str(base): "<base>", python: "<venv>"})
            idle(rec)
            rejections(rec)
            for role, rel in models.files.items():  # now the tiny models are installed
                target = base / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                source = args.models / rel
                if source.is_dir():
                    shutil.copytree(source, target, dirs_exist_ok=True)
                else:
                    shutil.copyfile(source, target)
                print(f"installed {role}: {rel}")
            runs(rec)
            busy_queue(rec)
            model_files(rec, base)
            wan(rec)
            (out / "recording.json").write_text(json.dumps({
                "comfyui": version, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "system_stats": rec.clean(rec.call("GET", "/system_stats")["body"]),
                "command": "python tools/record_captures.py --comfyui-dir <comfyui> --python <python>"},
                indent=1) + "\n", encoding="utf-8")
            print(f"captures written to {out}")
        finally:
            server.stop()
            log = spec.log_path
            if log.is_file():
                print("server log tail:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
