"""The fake ComfyUI as a subprocess: start-up knobs, answers shaped like the 0.8.0 captures, event sequences."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from tests.fake_comfyui import harness

TINY: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 16711680}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 32,
                                                 "height": 24, "crop": "disabled"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "wan22probe/ok"}},
}


def _wan(captures: Path) -> dict[str, Any]:
    prompt: dict[str, Any] = json.loads((captures / "wan22_i2v_tiny_api.json").read_text())
    return prompt


class Listener:
    """A raw websocket client that records text frame types and data."""

    def __init__(self, port: int, client_id: str) -> None:
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws?clientId={client_id}", timeout=5)
        self.first = json.loads(self.ws.recv())
        self.frames: list[dict[str, Any]] = []
        self.binary = 0

    def until(self, predicate: Any, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Read frames until predicate(frame) is true; return everything read so far."""
        deadline = time.monotonic() + timeout
        self.ws.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                opcode, payload = self.ws.recv_data()
            except websocket.WebSocketTimeoutException:
                continue
            if opcode == websocket.ABNF.OPCODE_BINARY:
                self.binary += 1
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            frame = json.loads(payload)
            self.frames.append(frame)
            if predicate(frame):
                return self.frames
        raise AssertionError(f"no matching frame within {timeout} s; got {[f['type'] for f in self.frames]}")

    def close(self) -> None:
        self.ws.close()


def _done(prompt_id: str) -> Any:
    return lambda f: f["type"] == "executing" and f["data"].get("node") is None and \
        f["data"].get("prompt_id") == prompt_id


def _post(server: Any, prompt: dict[str, Any], **extra: Any) -> requests.Response:
    return requests.post(server.url + "/prompt", json={"prompt": prompt, **extra}, timeout=10)


def _capture_types(captures: Path, name: str, prefix: str = "") -> list[str]:
    """Types of the text frames the server sent after the recorder's first note (its POST)."""
    types = []
    posted = False
    for line in (captures / name).read_text().splitlines():
        frame = json.loads(line)
        posted = posted or frame["frame"] == "note"
        if frame["frame"] != "text" or not posted:
            continue
        pid = str(frame["message"]["data"].get("prompt_id", ""))
        if prefix and pid and not pid.startswith(prefix):
            continue
        types.append(frame["message"]["type"])
    return types


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Servers with non-default knobs, started together to save time."""
    root = tmp_path_factory.mktemp("special")
    specs = {
        "config": ({"FAKE_COMFYUI_MODELS": json.dumps({"diffusion_models": ["a.safetensors"],
                                                       "text_encoders": ["t.safetensors"],
                                                       "vae": ["v.safetensors"]}),
                    "FAKE_COMFYUI_MISSING_NODES": "SaveWEBM,CreateVideo",
                    "FAKE_COMFYUI_CUSTOM_NODES": "frame-interpolation", "FAKE_COMFYUI_VRAM_MIB": "24564",
                    "FAKE_COMFYUI_GPU_NAME": "NVIDIA GeForce RTX 4090", "FAKE_COMFYUI_SCENARIO": "offload"},
                   ["--lowvram", "--output-directory", str(root / "out"), "--fast", "fp16_accumulation",
                    "--preview-method", "latent2rgb"]),
        "vae": ({"FAKE_COMFYUI_SCENARIO": "vae_oom_retry"}, ["--cpu"]),
        "hang": ({"FAKE_COMFYUI_SCENARIO": "hang_during_run"}, []),
    }
    servers = {name: harness.FakeServer(root / name, env={**harness.FAST, **env}, args=args)
               for name, (env, args) in specs.items()}
    for server in servers.values():
        server.start(wait=False)
    try:
        for server in servers.values():
            server.ensure_ready()
        yield {**servers, "root": root}
    finally:
        for server in servers.values():
            server.stop()


# --------------------------------------------------------------------------- start-up knobs

def test_startup_lines_and_flags(special: dict[str, Any]) -> None:
    server = special["config"]
    log = server.log_text()
    assert "Starting server" in log
    assert f"To see the GUI go to: http://127.0.0.1:{server.port}" in log
    assert "Set vram state to: LOW_VRAM" in log
    stats = requests.get(server.url + "/system_stats", timeout=5).json()
    assert stats["system"]["argv"][0] == "main.py"
    assert "--fast" in stats["system"]["argv"]
    device = stats["devices"][0]
    assert device["name"] == "cuda:0 NVIDIA GeForce RTX 4090 : cudaMallocAsync"
    assert device["vram_total"] == 24564 * 1024 * 1024
    cpu = requests.get(special["vae"].url + "/system_stats", timeout=5).json()["devices"][0]
    assert (cpu["name"], cpu["type"], cpu["index"]) == ("cpu", "cpu", None)
    assert "Set vram state to: DISABLED" in special["vae"].log_text()


def test_crash_on_start(start_fake: Any) -> None:
    server = start_fake({"FAKE_COMFYUI_CRASH_ON_START": "3"}, wait=False)
    assert server.proc.wait(timeout=20) == 3
    log = server.log_text()
    assert "Traceback (most recent call last):" in log
    assert "RuntimeError:" in log
    assert "Starting server" not in log


def test_start_delay(start_fake: Any) -> None:
    started = time.monotonic()
    server = start_fake({"FAKE_COMFYUI_START_DELAY": "1.0"}, wait=False)
    assert server.wait_ready(20)
    assert time.monotonic() - started >= 1.0


def test_hang_accepts_but_never_answers(start_fake: Any) -> None:
    server = start_fake({"FAKE_COMFYUI_HANG": "1"}, wait=False)
    assert server.wait_log("FAKE_COMFYUI_HANG", timeout=20)
    with pytest.raises(requests.ReadTimeout):
        requests.get(server.url + "/system_stats", timeout=0.5)
    assert server.is_alive()


def test_bad_knob_exits_with_a_message(start_fake: Any) -> None:
    server = start_fake({"FAKE_COMFYUI_SCENARIO": "nope"}, wait=False)
    assert server.proc.wait(timeout=20) == 2
    assert "FAKE_COMFYUI_SCENARIO='nope' is not one of" in server.log_text()


def test_runs_by_path_from_any_cwd(tmp_path: Path) -> None:
    """main.py imports its siblings itself: python -m and a foreign cwd both work."""
    import subprocess

    result = subprocess.run([sys.executable, str(harness.MAIN), "--help"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0
    assert "--listen" in result.stdout


# --------------------------------------------------------------------------- answers shaped like the captures

def test_idle_answers_match_captures(fake_server: Any, captures: Path) -> None:
    def get(path: str) -> Any:
        return requests.get(fake_server.url + path, timeout=5)

    def body(name: str) -> Any:
        return json.loads((captures / name).read_text())["body"]

    assert get("/features").json() == body("features.json")
    stats = get("/system_stats").json()
    real = body("system_stats.json")
    assert set(stats["system"]) == set(real["system"])
    assert set(stats["devices"][0]) == set(real["devices"][0])
    assert get("/models").json() == json.loads((captures / "models_endpoints.json").read_text())["/models"]["body"]
    assert get("/models/unet").status_code == 404
    missing = get("/api/jobs/nope")
    assert (missing.status_code, missing.json()) == (404, {"error": "Job not found"})
    assert set(get("/api/jobs").json()) == set(body("api_jobs_empty.json"))
    full = json.loads((captures / "object_info.json").read_text())
    info = get("/object_info").json()
    assert info["KSamplerAdvanced"] == full["KSamplerAdvanced"]
    assert info["SaveVideo"] == full["SaveVideo"]
    unet = info["UNETLoader"]
    assert unet["input"]["required"]["weight_dtype"] == full["UNETLoader"]["input"]["required"]["weight_dtype"]
    assert "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors" in unet["input"]["required"]["unet_name"][0]
    assert "RIFE VFI" not in info
    assert "wan22_tiny_start.png" in info["LoadImage"]["input"]["required"]["image"][0]


def test_models_custom_and_missing_nodes(special: dict[str, Any]) -> None:
    server = special["config"]
    info = requests.get(server.url + "/object_info", timeout=5).json()
    assert info["UNETLoader"]["input"]["required"]["unet_name"][0] == ["a.safetensors"]
    assert info["VAELoader"]["input"]["required"]["vae_name"][0] == ["v.safetensors", "pixel_space"]
    assert info["LoraLoaderModelOnly"]["input"]["required"]["lora_name"][0] == []
    assert "CreateVideo" not in info
    assert "SaveWEBM" not in info
    rife = requests.get(server.url + "/object_info/RIFE VFI", timeout=5).json()["RIFE VFI"]
    assert rife["input"]["required"]["ckpt_name"][0] == ["rife47.pth", "rife49.pth"]
    assert rife["input"]["required"]["multiplier"] == ["INT", {"default": 2, "min": 1}]
    assert rife["output"] == ["IMAGE"]
    assert requests.get(server.url + "/models/diffusion_models", timeout=5).json() == ["a.safetensors"]
    pid = _post(server, TINY).json()["prompt_id"]
    deadline = time.monotonic() + 10
    while not requests.get(f"{server.url}/history/{pid}", timeout=5).json() and time.monotonic() < deadline:
        time.sleep(0.05)
    written = sorted(p.name for p in (special["root"] / "out" / "wan22probe").iterdir())
    assert written == ["ok_00001_.png", "ok_00002_.png"]  # --output-directory is honoured
    answer = _post(server, {"1": {"class_type": "CreateVideo", "inputs": {}}})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Cannot execute because node CreateVideo does not exist."


def test_validation_bodies_match_captures(fake_server: Any, captures: Path) -> None:
    for name in ("c_validation_error", "c_unknown_class", "c_no_outputs", "f_missing_model"):
        request = json.loads((captures / f"{name}.request.json").read_text())
        if name == "f_missing_model":  # the fake serves these official names by default: ask for others
            for node in request["prompt"].values():
                for key in ("unet_name", "clip_name", "vae_name"):
                    if key in node["inputs"]:
                        node["inputs"][key] = "missing_" + node["inputs"][key]
        expected = json.loads((captures / f"{name}.response.json").read_text())
        answer = requests.post(fake_server.url + "/prompt", json=request, timeout=10)
        assert answer.status_code == 400, name
        body = answer.json()
        assert body["error"]["type"] == expected["body"]["error"]["type"], name
        assert set(body["node_errors"]) == set(expected["body"]["node_errors"]), name
        for node_id, entry in expected["body"]["node_errors"].items():
            got = body["node_errors"][node_id]
            assert got["class_type"] == entry["class_type"]
            assert [e["type"] for e in got["errors"]] == [e["type"] for e in entry["errors"]]
            if name != "f_missing_model":  # the fake has other model files than the capture's empty server
                assert got["errors"] == entry["errors"], (name, node_id)
            else:
                assert [e["extra_info"]["received_value"] for e in got["errors"]] == \
                    ["missing_" + e["extra_info"]["received_value"] for e in entry["errors"]]
    no_prompt = requests.post(fake_server.url + "/prompt", json={}, timeout=10)
    assert no_prompt.json() == json.loads((captures / "c_no_prompt.response.json").read_text())["body"]


# --------------------------------------------------------------------------- event sequences

def test_success_and_cached_sequences_match_captures(fake_server: Any, captures: Path) -> None:
    listener = Listener(fake_server.port, "seq-client")
    try:
        assert listener.first["type"] == "status"
        assert listener.first["data"]["sid"] == "seq-client"
        assert set(listener.first["data"]["status"]["exec_info"]) == {"queue_remaining"}
        prompt = json.loads(json.dumps(TINY))
        prompt["1"]["inputs"]["color"] = 77
        first = _post(fake_server, prompt, client_id="seq-client").json()
        frames = listener.until(_done(first["prompt_id"]))
        assert [f["type"] for f in frames] == _capture_types(captures, "a_success.ws.jsonl")
        executed = next(f for f in frames if f["type"] == "executed")["data"]
        assert executed["output"]["images"][0]["subfolder"] == "wan22probe"
        listener.frames.clear()
        second = _post(fake_server, prompt, client_id="seq-client").json()
        frames = listener.until(_done(second["prompt_id"]))
        assert [f["type"] for f in frames] == _capture_types(captures, "b_cached.ws.jsonl")
        assert next(f for f in frames if f["type"] == "execution_cached")["data"]["nodes"] == ["1", "2", "3"]
        assert next(f for f in frames if f["type"] == "executed")["data"] == {**executed,
                                                                              "prompt_id": second["prompt_id"]}
        history = requests.get(f"{fake_server.url}/history/{second['prompt_id']}", timeout=5).json()
        entry = history[second["prompt_id"]]
        real = next(iter(json.loads((captures / "b_cached.history.json").read_text())["body"].values()))
        assert set(entry) == set(real)
        assert [m[0] for m in entry["status"]["messages"]] == [m[0] for m in real["status"]["messages"]]
        assert entry["prompt"][3]["client_id"] == "seq-client"
    finally:
        listener.close()


def test_wan_sequence_and_video_output(fake_server: Any, captures: Path) -> None:
    listener = Listener(fake_server.port, "wan-client")
    try:
        prompt = _wan(captures)
        prompt["11"]["inputs"]["noise_seed"] = 1234
        pid = _post(fake_server, prompt, client_id="wan-client").json()["prompt_id"]
        frames = listener.until(_done(pid))
    finally:
        listener.close()
    assert [f["type"] for f in frames] == _capture_types(captures, "wan22_tiny_cold.ws.jsonl")
    executed = next(f for f in frames if f["type"] == "executed")["data"]["output"]
    assert executed["animated"] == [True]
    item = executed["images"][0]
    assert item["subfolder"] == "video"
    assert item["filename"].startswith("wan22_tiny_")
    video = requests.get(fake_server.url + "/view", params={**item}, timeout=5)
    assert video.status_code == 200
    assert video.content[4:8] == b"ftyp"


def test_no_client_id_gets_only_broadcasts(fake_server: Any, captures: Path) -> None:
    listener = Listener(fake_server.port, "bystander")
    try:
        prompt = json.loads(json.dumps(TINY))
        prompt["1"]["inputs"]["color"] = 78
        answer = _post(fake_server, prompt, prompt_id="my-own-id-0001").json()
        assert answer["prompt_id"] == "my-own-id-0001"
        frames = listener.until(lambda f: f["type"] == "status"
                                and f["data"]["status"]["exec_info"]["queue_remaining"] == 0)
    finally:
        listener.close()
    assert [f["type"] for f in frames] == _capture_types(captures, "no_client_id.ws.jsonl")
    history = requests.get(fake_server.url + "/history/my-own-id-0001", timeout=5).json()
    assert "client_id" not in history["my-own-id-0001"]["prompt"][3]


def test_runtime_error_sequence(start_fake: Any, captures: Path) -> None:
    server = start_fake({"FAKE_COMFYUI_SCENARIO": "error", "FAKE_COMFYUI_FAIL_NODE": "2"})
    listener = Listener(server.port, "err")
    try:
        request = json.loads((captures / "d_runtime_error.request.json").read_text())
        pid = _post(server, request["prompt"], client_id="err").json()["prompt_id"]
        frames = listener.until(_done(pid))
    finally:
        listener.close()
    assert [f["type"] for f in frames] == _capture_types(captures, "d_runtime_error.ws.jsonl")
    error = next(f for f in frames if f["type"] == "execution_error")["data"]
    real = next(json.loads(line)["message"]["data"] for line in
                (captures / "d_runtime_error.ws.jsonl").read_text().splitlines()
                if '"execution_error"' in line)
    assert set(error) == set(real)
    assert (error["node_id"], error["node_type"], error["executed"], error["exception_type"]) == \
        ("2", "ImageToMask", ["1"], "IndexError")
    job = requests.get(f"{server.url}/api/jobs/{pid}", timeout=5).json()
    assert job["status"] == "failed"
    assert job["execution_error"]["node_id"] == "2"
    assert "!!! Exception during processing !!!" in server.log_text()


def test_busy_queue_delete_and_interrupt(special: dict[str, Any], captures: Path) -> None:
    server = special["hang"]
    listener = Listener(server.port, "busy")
    try:
        wan = _wan(captures)
        a = _post(server, wan, client_id="busy").json()["prompt_id"]
        listener.until(lambda f: f["type"] == "progress")  # A now hangs after its first step
        b = _post(server, dict(TINY), client_id="busy").json()["prompt_id"]
        queue = requests.get(server.url + "/queue", timeout=5).json()
        assert [q[1] for q in queue["queue_running"]] == [a]
        assert [q[1] for q in queue["queue_pending"]] == [b]
        assert requests.get(f"{server.url}/api/jobs/{b}", timeout=5).json()["status"] == "pending"
        assert requests.get(f"{server.url}/api/jobs/{a}", timeout=5).json()["status"] == "in_progress"
        assert requests.post(server.url + "/queue", json={"delete": [b]}, timeout=5).status_code == 200
        assert requests.get(f"{server.url}/api/jobs/{b}", timeout=5).status_code == 404
        requests.post(server.url + "/interrupt", json={"prompt_id": "not-running"}, timeout=5)
        assert server.wait_log("Prompt not-running is not currently running, skipping interrupt")
        requests.post(server.url + "/interrupt", json={"prompt_id": a}, timeout=5)
        frames = listener.until(_done(a))
    finally:
        listener.close()
    tail = [f["type"] for f in frames][-3:]
    assert tail == ["execution_interrupted", "status", "executing"]
    interrupted = next(f for f in frames if f["type"] == "execution_interrupted")["data"]
    assert interrupted["node_id"] == "11"
    assert interrupted["node_type"] == "KSamplerAdvanced"
    entry = requests.get(f"{server.url}/history/{a}", timeout=5).json()[a]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    assert requests.get(f"{server.url}/api/jobs/{a}", timeout=5).json()["status"] == "failed"
    assert requests.get(f"{server.url}/history/{b}", timeout=5).json() == {}


def test_offload_and_vae_retry_logs_and_previews(special: dict[str, Any], captures: Path) -> None:
    for name, line in (("config", "loaded partially; 1234.56 MB usable, 1000.00 MB loaded, 2796.10 MB offloaded"),
                       ("vae", "Ran out of memory when regular VAE decoding, retrying with tiled VAE decoding.")):
        server = special[name]
        prompt = _wan(captures)
        if name == "config":  # other model files, and no CreateVideo on this server
            prompt["1"]["inputs"]["unet_name"] = prompt["2"]["inputs"]["unet_name"] = "a.safetensors"
            prompt["5"]["inputs"]["clip_name"] = "t.safetensors"
            prompt["8"]["inputs"]["vae_name"] = "v.safetensors"
            del prompt["14"], prompt["15"]
            prompt["16"] = {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}}
        listener = Listener(server.port, name)
        try:
            answer = _post(server, prompt, client_id=name)
            assert answer.status_code == 200, answer.text
            frames = listener.until(_done(answer.json()["prompt_id"]))
        finally:
            listener.close()
        assert server.wait_log(line), server.log_text()
        assert server.wait_log("Prompt executed in")
        assert "got prompt" in server.log_text()
        steps = sum(f["type"] == "progress" for f in frames)
        assert steps == 4
        assert listener.binary == (steps if name == "config" else 0)  # previews only with --preview-method
