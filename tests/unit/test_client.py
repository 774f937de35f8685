"""ComfyClient against the captures of a real ComfyUI 0.8.0 and against the fake server (a subprocess)."""

from __future__ import annotations

import copy
import json
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from pytest_wan22.client import (
    ComfyClient,
    Event,
    Execution,
    _RunState,
    format_node_error,
    format_rejection,
)
from pytest_wan22.errors import ComfyAPIError, PromptRejected
from tests.fake_comfyui import harness

SUCCESS_PROMPT: dict[str, Any] = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 48, "batch_size": 2, "color": 16711680}},
    "2": {"class_type": "ImageScale", "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "width": 32,
                                                 "height": 24, "crop": "disabled"}, "_meta": {"title": "shrink"}},
    "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "wan22probe/ok"}},
}


def _wan_prompt() -> dict[str, Any]:
    """The tiny two-pass Wan 2.2 i2v graph (same shape as wan22_i2v_tiny_api.json)."""
    def link(node: str, slot: int = 0) -> list[Any]:
        return [node, slot]

    sampler = {"add_noise": "enable", "noise_seed": 42, "steps": 4, "cfg": 3.5, "sampler_name": "euler",
               "scheduler": "simple", "positive": link("10"), "negative": link("10", 1)}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan22_tiny_i2v_high_noise.safetensors",
                                                     "weight_dtype": "default"}},
        "2": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan22_tiny_i2v_low_noise.safetensors",
                                                     "weight_dtype": "default"}},
        "3": {"class_type": "ModelSamplingSD3", "inputs": {"model": link("1"), "shift": 8.0}},
        "4": {"class_type": "ModelSamplingSD3", "inputs": {"model": link("2"), "shift": 8.0}},
        "5": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_tiny_stub.safetensors", "type": "wan",
                                                     "device": "default"}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("5"), "text": "a cat"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"clip": link("5"), "text": "blurry"}},
        "8": {"class_type": "VAELoader", "inputs": {"vae_name": "wan21_tiny_vae.safetensors"}},
        "9": {"class_type": "LoadImage", "inputs": {"image": "wan22_tiny_start.png"}},
        "10": {"class_type": "WanImageToVideo", "inputs": {"positive": link("6"), "negative": link("7"),
                                                          "vae": link("8"), "width": 64, "height": 64, "length": 9,
                                                          "batch_size": 1, "start_image": link("9")}},
        "11": {"class_type": "KSamplerAdvanced", "_meta": {"title": "KSampler (high noise)"},
               "inputs": {**sampler, "model": link("3"), "latent_image": link("10", 2), "start_at_step": 0,
                          "end_at_step": 2, "return_with_leftover_noise": "enable"}},
        "12": {"class_type": "KSamplerAdvanced", "_meta": {"title": "KSampler (low noise)"},
               "inputs": {**sampler, "add_noise": "disable", "model": link("4"), "latent_image": link("11"),
                          "start_at_step": 2, "end_at_step": 10000, "return_with_leftover_noise": "disable"}},
        "13": {"class_type": "VAEDecode", "inputs": {"samples": link("12"), "vae": link("8")}},
        "14": {"class_type": "CreateVideo", "inputs": {"images": link("13"), "fps": 16.0}},
        "15": {"class_type": "SaveVideo", "inputs": {"video": link("14"), "filename_prefix": "video/wan22_tiny",
                                                     "format": "auto", "codec": "auto"}},
    }


def _types(execution: Execution) -> list[str]:
    return [e.type for e in execution.events]


def _executing(execution: Execution) -> list[str | None]:
    return [e.data["node"] for e in execution.events if e.type == "executing"]


# --------------------------------------------------------------------------- pure parts

def test_url_quotes_segments_and_maps_ws() -> None:
    client = ComfyClient("http://127.0.0.1:8188/")
    assert client.url("object_info", "RIFE VFI") == "http://127.0.0.1:8188/object_info/RIFE%20VFI"
    assert client.url("ws", ws=True, query="clientId=x") == "ws://127.0.0.1:8188/ws?clientId=x"
    assert ComfyClient("https://h:1/base").url("ws", ws=True) == "wss://h:1/base/ws"
    assert len(client.client_id) == 32
    client.close()


def test_bad_base_url_names_the_flag() -> None:
    with pytest.raises(ComfyAPIError, match="--wan22-url"):
        ComfyClient("localhost:8188")


def test_unreachable_server_is_an_api_error_with_no_status() -> None:
    with ComfyClient("http://127.0.0.1:9", timeout=2) as client, pytest.raises(ComfyAPIError) as info:
        client.system_stats()
    assert info.value.status is None
    assert "cannot connect" in str(info.value)


def test_node_error_formats() -> None:
    assert format_node_error({"type": "required_input_missing", "message": "Required input is missing",
                              "details": "filename_prefix", "extra_info": {"input_name": "filename_prefix"}}) \
        == "filename_prefix: Required input is missing (required_input_missing)"
    lora = format_node_error({"type": "value_not_in_list", "message": "Value not in list",
                              "details": "lora_name: 'x.safetensors' not in []",
                              "extra_info": {"input_name": "lora_name", "received_value": "x.safetensors"}},
                             "LoraLoaderModelOnly")
    assert "model file 'x.safetensors' not in models/loras" in lora
    vision = format_node_error({"type": "value_not_in_list", "details": "clip_name: 'v' not in []",
                                "extra_info": {"input_name": "clip_name", "received_value": "v"}},
                               "CLIPVisionLoader")
    assert "models/clip_vision" in vision
    rife = format_node_error({"type": "value_not_in_list", "details": "ckpt_name: 'r.pth' not in ['rife47.pth']",
                              "extra_info": {"input_name": "ckpt_name", "received_value": "r.pth"}}, "RIFE VFI")
    assert "model file" not in rife
    assert "rife47.pth" in rife


def test_rejection_lines_use_titles_from_the_prompt() -> None:
    body = {"error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                      "details": "", "extra_info": {}},
            "node_errors": {"2": {"class_type": "ImageScale", "dependent_outputs": ["3"], "errors": [
                {"type": "value_not_in_list", "message": "Value not in list",
                 "details": "upscale_method: 'x' not in ['bilinear']",
                 "extra_info": {"input_name": "upscale_method", "received_value": "x"}}]}}}
    assert format_rejection(body, SUCCESS_PROMPT) == [
        "node 2 (ImageScale 'shrink'): upscale_method: 'x' not in ['bilinear'] (value_not_in_list)"]
    assert format_rejection("", None) == ["HTTP 400: (empty body)"]


def test_rejection_formatting_of_captured_400_bodies(captures: Path) -> None:
    def body(name: str) -> Any:
        answer = json.loads((captures / name).read_text())
        assert answer["http_status"] == 400
        return answer["body"]

    request = json.loads((captures / "c_validation_error.request.json").read_text())["prompt"]
    lines = format_rejection(body("c_validation_error.response.json"), request)
    assert lines == [
        "node 1 (EmptyImage): width: Value 0 smaller than min of 1 (value_smaller_than_min)",
        "node 2 (ImageScale): upscale_method: 'not-a-method' not in ['nearest-exact', 'bilinear', 'area', "
        "'bicubic', 'lanczos'] (value_not_in_list)",
        "node 3 (SaveImage): filename_prefix: Required input is missing (required_input_missing)",
    ]
    models = format_rejection(body("f_missing_model.response.json"))
    assert len(models) == 3
    assert models[0].startswith("node 1 (UNETLoader): unet_name: model file "
                                "'wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors' not in models/diffusion_models")
    assert "'umt5_xxl_fp8_e4m3fn_scaled.safetensors' not in models/text_encoders" in models[1]
    assert "'wan_2.1_vae.safetensors' not in models/vae" in models[2]
    assert format_rejection(body("c_unknown_class.response.json")) == [
        "invalid_prompt: Cannot execute because node NoSuchNode does not exist. (Node ID '#1')"]
    assert format_rejection(body("c_no_outputs.response.json")) == ["prompt_no_outputs: Prompt has no outputs"]
    assert format_rejection(body("c_no_prompt.response.json")) == ["no_prompt: No prompt provided"]


_CAPTURED_RUNS = [
    # (ws capture, prompt id prefix, outcome, cached nodes, executing frames (node ids, None = done))
    ("a_success.ws.jsonl", "58cfa559", "success", (), ["1", "2", "3", None]),
    ("b_cached.ws.jsonl", "60c3e769", "success", ("1", "2", "3"), [None]),
    ("d_runtime_error.ws.jsonl", "d470b5ae", "error", (), ["1", "2", None]),
    ("d2_cpu_oom.ws.jsonl", "feb0f637", "error", (), ["1", None]),
    ("e_interrupt_and_busy_queue.ws.jsonl", "55df3593", "interrupted", (), ["1", "2", "3", "4", None]),
    ("e_interrupt_and_busy_queue.ws.jsonl", "9016b6b6", "success", (), ["1", "2", "3", "4", "5", "6", None]),
    ("f3_corrupt_model_file.ws.jsonl", "d9e1e2c6", "error", ("3", "4"), ["1", None]),
    ("wan22_tiny_new_seed_partial_cache.ws.jsonl", "a8864452", "success", tuple(str(i) for i in range(1, 11)),
     ["11", "12", "13", "14", "15", None]),
]


@pytest.mark.parametrize(("name", "prefix", "outcome", "cached", "executing"), _CAPTURED_RUNS,
                         ids=[f"{r[0].split('.')[0]}-{r[1]}" for r in _CAPTURED_RUNS])
def test_run_state_folds_captured_frames(captures: Path, name: str, prefix: str, outcome: str,
                                         cached: tuple[str, ...], executing: list[str | None]) -> None:
    frames = [json.loads(line) for line in (captures / name).read_text().splitlines() if line.strip()]
    texts = [f for f in frames if f["frame"] == "text"]
    prompt_id = next(f["message"]["data"]["prompt_id"] for f in texts
                     if str(f["message"]["data"].get("prompt_id", "")).startswith(prefix))
    seen: list[Event] = []
    state = _RunState(prompt_id, 0.0, seen.append)
    for frame in texts:
        state.feed(frame["message"], frame["t"])
    assert state.done
    assert state.outcome == outcome
    assert state.cached_nodes == cached
    assert [e.data["node"] for e in state.events if e.type == "executing"] == executing
    assert seen == state.events
    assert all(e.data["prompt_id"] == prompt_id for e in state.events)
    assert "status" not in {e.type for e in state.events}
    if outcome == "success":
        assert state.error is None
    else:
        assert state.error is not None
        assert state.error["prompt_id"] == prompt_id


def test_run_state_keeps_sampler_progress_frames(captures: Path) -> None:
    frames = [json.loads(line) for line in (captures / "wan22_tiny_cold.ws.jsonl").read_text().splitlines()]
    texts = [f for f in frames if f.get("frame") == "text"]
    prompt_id = next(f["message"]["data"]["prompt_id"] for f in texts if f["message"]["type"] == "execution_start")
    state = _RunState(prompt_id, 0.0, None)
    for frame in texts:
        state.feed(frame["message"], frame["t"])
    progress = [(e.data["node"], e.data["value"], e.data["max"]) for e in state.events if e.type == "progress"]
    assert progress == [("11", 1, 2), ("11", 2, 2), ("12", 1, 2), ("12", 2, 2)]
    assert state.outcome == "success"


def test_run_state_without_client_id_never_finishes(captures: Path) -> None:
    frames = [json.loads(line) for line in (captures / "no_client_id.ws.jsonl").read_text().splitlines()]
    state = _RunState("my-own-id-0001", 0.0, None)
    for frame in frames:
        if frame["frame"] == "text":
            state.feed(frame["message"], frame["t"])
    assert not state.done
    assert {e.type for e in state.events} == {"progress_state"}


def test_history_fills_what_the_socket_missed(captures: Path) -> None:
    http = json.loads((captures / "e_interrupt_and_busy_queue.http.json").read_text())
    entry = next(iter(http["history_A"]["body"].values()))
    state = _RunState(http["post_A"]["body"]["prompt_id"], 0.0, None)
    state.take_history(entry)
    assert state.done
    assert state.outcome == "interrupted"
    assert state.error is not None
    assert state.error["node_type"] == "ImageBlur"
    ok = next(iter(json.loads((captures / "b_cached.history.json").read_text())["body"].values()))
    state = _RunState("x", 0.0, None)
    state.take_history(ok)
    assert state.outcome == "success"
    assert state.cached_nodes == ("1", "2", "3")


def test_server_s_prefers_job_then_history(captures: Path) -> None:
    job = json.loads((captures / "a_success.api_job.json").read_text())["body"]
    history = next(iter(json.loads((captures / "a_success.history.json").read_text())["body"].values()))
    base = Execution(prompt_id=job["id"], status="success", events=(), submitted_at=0.0, wall_s=0.1,
                     history=history, job=job, error=None, cached_nodes=())
    assert base.server_s == pytest.approx((job["execution_end_time"] - job["execution_start_time"]) / 1000)
    stamps = {m[0]: m[1]["timestamp"] for m in history["status"]["messages"]}
    no_job = Execution(**{**base.__dict__, "job": None})
    assert no_job.server_s == pytest.approx((stamps["execution_success"] - stamps["execution_start"]) / 1000)
    odd = Execution(**{**base.__dict__, "job": {**job, "execution_end_time": job["execution_start_time"] + 1234}})
    assert odd.server_s == pytest.approx(1.234)  # the job's figure wins over the history's
    nothing = Execution(**{**base.__dict__, "job": None, "history": None})
    assert nothing.server_s is None


# --------------------------------------------------------------------------- against the fake

@pytest.fixture
def client(fake_server: Any) -> Any:
    with ComfyClient(fake_server.url, timeout=10) as c:
        yield c


def test_simple_endpoints(client: ComfyClient) -> None:
    stats = client.system_stats()
    assert stats["system"]["comfyui_version"] == "0.8.0"
    assert stats["devices"][0]["type"] == "cuda"
    assert stats["devices"][0]["name"].endswith(" : cudaMallocAsync")
    assert client.queue() == {"queue_running": [], "queue_pending": []}
    assert "UNETLoader" in client.object_info()
    one = client.object_info("UNETLoader")
    assert "wan22_tiny_i2v_high_noise.safetensors" in one["UNETLoader"]["input"]["required"]["unet_name"][0]
    assert client.object_info("NoSuchNode") == {}
    assert client.history("no-such-prompt") is None
    assert client.job("no-such-prompt") is None


def test_success_events_outputs_and_timings(client: ComfyClient, fake_server: Any) -> None:
    prompt = copy.deepcopy(SUCCESS_PROMPT)
    prompt["1"]["inputs"]["color"] = 1  # a signature no other test uses: nothing cached
    seen: list[Event] = []
    execution = client.run(prompt, timeout=20, is_alive=fake_server.is_alive, on_event=seen.append)
    assert execution.status == "success", execution.message
    assert execution.message == ""
    assert list(execution.events) == seen
    types = _types(execution)
    assert types[:2] == ["execution_start", "execution_cached"]
    assert types[-2:] == ["execution_success", "executing"]
    assert _executing(execution) == ["1", "2", "3", None]
    times = [e.t for e in execution.events]
    assert times == sorted(times)
    assert times[0] >= 0
    assert times[-1] <= execution.wall_s
    assert execution.cached_nodes == ()
    images = execution.outputs["3"]["images"]
    assert [i["subfolder"] for i in images] == ["wan22probe", "wan22probe"]
    assert execution.history is not None
    assert execution.history["status"]["status_str"] == "success"
    assert execution.job is not None
    assert execution.job["status"] == "completed"
    assert execution.server_s is not None
    assert 0 <= execution.server_s <= execution.wall_s + 0.05
    saved = client.view(images[0]["filename"], subfolder="wan22probe")
    assert saved.startswith(b"\x89PNG")


def test_identical_rerun_is_all_cached(client: ComfyClient) -> None:
    prompt = copy.deepcopy(SUCCESS_PROMPT)
    prompt["1"]["inputs"]["color"] = 2
    first = client.run(prompt, timeout=20)
    second = client.run(prompt, timeout=20)
    assert first.status == second.status == "success"
    assert first.cached_nodes == ()
    assert second.cached_nodes == ("1", "2", "3")
    assert _executing(second) == [None]
    assert second.outputs == first.outputs  # no new file: the cached UI output is repeated


def test_wan_graph_progress_frames_per_step_and_partial_cache(client: ComfyClient) -> None:
    prompt = _wan_prompt()
    prompt["11"]["inputs"]["noise_seed"] = 7
    cold = client.run(prompt, timeout=20)
    assert cold.status == "success", cold.message
    assert _executing(cold) == ["8", "9", "5", "7", "6", "10", "1", "3", "11", "2", "4", "12", "13", "14", "15",
                                None]
    progress = [(e.data["node"], e.data["value"], e.data["max"]) for e in cold.events if e.type == "progress"]
    assert progress == [("11", 1, 2), ("11", 2, 2), ("12", 1, 2), ("12", 2, 2)]
    video = cold.outputs["15"]
    assert video["animated"] == [True]
    assert video["images"][0]["filename"].endswith(".mp4")
    prompt["11"]["inputs"]["noise_seed"] = 8
    prompt["12"]["inputs"]["noise_seed"] = 8
    reseeded = client.run(prompt, timeout=20)
    assert reseeded.cached_nodes == tuple(str(i) for i in range(1, 11))
    assert _executing(reseeded) == ["11", "12", "13", "14", "15", None]


def test_free_makes_everything_run_again(client: ComfyClient) -> None:
    prompt = copy.deepcopy(SUCCESS_PROMPT)
    prompt["1"]["inputs"]["color"] = 3
    client.run(prompt, timeout=20)
    client.free()
    again = client.run(prompt, timeout=20)
    assert again.cached_nodes == ()
    assert _executing(again) == ["1", "2", "3", None]


def test_validation_error_one_line_per_node(client: ComfyClient) -> None:
    prompt = copy.deepcopy(SUCCESS_PROMPT)
    prompt["1"]["inputs"]["width"] = 0
    prompt["2"]["inputs"]["upscale_method"] = "not-a-method"
    del prompt["3"]["inputs"]["filename_prefix"]
    with pytest.raises(PromptRejected) as info:
        client.run(prompt, timeout=20)
    text = str(info.value)
    assert info.value.status == 400
    assert set(info.value.node_errors) == {"1", "2", "3"}
    lines = [line.strip() for line in text.splitlines()]
    assert "node 1 (EmptyImage): width: Value 0 smaller than min of 1 (value_smaller_than_min)" in lines
    assert any(line.startswith("node 2 (ImageScale 'shrink'): upscale_method: 'not-a-method' not in")
               for line in lines)
    assert "node 3 (SaveImage): filename_prefix: Required input is missing (required_input_missing)" in lines
    assert client.queue()["queue_pending"] == []


def test_missing_model_file_names_file_and_folder(client: ComfyClient) -> None:
    prompt = _wan_prompt()
    prompt["1"]["inputs"]["unet_name"] = "wan2.2_missing.safetensors"
    prompt["8"]["inputs"]["vae_name"] = "nope_vae.safetensors"
    with pytest.raises(PromptRejected) as info:
        client.submit(prompt)
    text = str(info.value)
    assert "node 1 (UNETLoader): unet_name: model file 'wan2.2_missing.safetensors' not in " \
           "models/diffusion_models" in text
    assert "node 8 (VAELoader): vae_name: model file 'nope_vae.safetensors' not in models/vae" in text


def test_unknown_class_and_no_outputs(client: ComfyClient) -> None:
    with pytest.raises(PromptRejected, match=r"invalid_prompt: Cannot execute because node NoSuchNode does not "
                                             r"exist\. \(Node ID '#1'\)"):
        client.submit({"1": {"class_type": "NoSuchNode", "inputs": {}}})
    with pytest.raises(PromptRejected, match="prompt_no_outputs") as info:
        client.submit({"1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                                    "color": 0}}})
    assert "add an output node" in str(info.value)


def test_other_http_errors_carry_status_and_body(client: ComfyClient) -> None:
    with pytest.raises(ComfyAPIError) as info:
        client.view("missing.png")
    assert info.value.status == 404


def test_memory_stats_from_the_probe_node(client: ComfyClient) -> None:
    client.reset_memory_stats()
    assert client.memory_stats()["max_allocated"] == 0
    prompt = _wan_prompt()
    prompt["11"]["inputs"]["noise_seed"] = 99
    assert client.run(prompt, timeout=20).status == "success"
    stats = client.memory_stats()
    assert stats["available"] is True
    assert stats["max_allocated"] == 12288 * 2**20  # FAKE_COMFYUI_TORCH_PEAK_MIB's default
    client.reset_memory_stats()
    assert client.memory_stats()["max_allocated"] == 0


def test_memory_stats_without_the_probe_node(hanging_server: Any) -> None:
    with ComfyClient(hanging_server.url) as client:
        client.reset_memory_stats()  # a 404 is ignored
        stats = client.memory_stats()
    assert stats["available"] is False
    assert "probe node is not installed" in stats["reason"]


def test_clear_queue_and_upload_bytes(client: ComfyClient) -> None:
    client.clear_queue()
    assert client.queue()["queue_pending"] == []
    assert client.upload_image_bytes("from_bytes.png", b"\x89PNG\r\n\x1a\nbytes") == "from_bytes.png"
    assert "from_bytes.png" in client.object_info("LoadImage")["LoadImage"]["input"]["required"]["image"][0]


def test_upload_image(client: ComfyClient, tmp_path: Path) -> None:
    image = tmp_path / "start_frame.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    assert client.upload_image(image) == "start_frame.png"
    info = client.object_info("LoadImage")["LoadImage"]["input"]["required"]["image"][0]
    assert "start_frame.png" in info


def test_no_events_without_client_id(fake_server: Any) -> None:
    listener = websocket.create_connection(f"ws://127.0.0.1:{fake_server.port}/ws?clientId=listener", timeout=5)
    try:
        prompt = copy.deepcopy(SUCCESS_PROMPT)
        prompt["1"]["inputs"]["color"] = 4
        answer = requests.post(fake_server.url + "/prompt", json={"prompt": prompt}, timeout=10)
        prompt_id = answer.json()["prompt_id"]
        listener.settimeout(0.2)
        types: list[str] = []
        deadline = time.monotonic() + 10
        done = False
        while time.monotonic() < deadline and not done:
            try:
                types.append(json.loads(listener.recv())["type"])
            except websocket.WebSocketTimeoutException:
                done = bool(requests.get(f"{fake_server.url}/history/{prompt_id}", timeout=5).json())
        assert done
        assert "progress_state" in types
        assert set(types) <= {"status", "progress_state", "progress"}
    finally:
        listener.close()


def test_runtime_error(start_fake: Any) -> None:
    server = start_fake({"FAKE_COMFYUI_SCENARIO": "error", "FAKE_COMFYUI_FAIL_NODE": "ImageScale"})
    with ComfyClient(server.url) as client:
        execution = client.run(SUCCESS_PROMPT, timeout=20, is_alive=server.is_alive)
    assert execution.status == "error"
    assert execution.error is not None
    assert execution.error["node_id"] == "2"
    assert execution.error["executed"] == ["1"]
    assert execution.error["exception_type"] == "IndexError"
    assert execution.message.startswith("node 2 (ImageScale) raised IndexError: index 3 is out of bounds")
    assert _types(execution)[-1] == "executing"
    assert execution.history is not None
    assert execution.history["status"]["status_str"] == "error"
    assert execution.job is not None
    assert execution.job["status"] == "failed"
    assert execution.server_s is not None


def test_gpu_oom_error_data(start_fake: Any) -> None:
    server = start_fake({"FAKE_COMFYUI_SCENARIO": "oom"})
    with ComfyClient(server.url) as client:
        execution = client.run(_wan_prompt(), timeout=20, is_alive=server.is_alive)
    assert execution.status == "error"
    error = execution.error or {}
    assert error["node_id"] == "11"
    assert error["node_type"] == "KSamplerAdvanced"
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"].startswith("Allocation on device 0 would exceed allowed memory. "
                                                 "(out of memory)\nCurrently allocated")
    assert "This error means you ran out of memory on your GPU." in error["exception_message"]
    assert server.wait_log("Got an OOM, unloading all loaded models.")


@pytest.fixture(scope="module")
def hanging_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A fake that goes silent after the first sampler step until it is interrupted."""
    server = harness.FakeServer(tmp_path_factory.mktemp("hang"), env={**harness.FAST,
                                                                      "FAKE_COMFYUI_SCENARIO": "hang_during_run"})
    with server.start():
        yield server


def test_interrupt_lands_at_next_step(hanging_server: Any) -> None:
    server = hanging_server
    with ComfyClient(server.url) as client, ComfyClient(server.url) as other:
        def on_event(event: Event) -> None:
            if event.type == "progress":
                other.interrupt(event.data["prompt_id"])

        execution = client.run(_wan_prompt(), timeout=20, is_alive=server.is_alive, on_event=on_event)
    assert execution.status == "interrupted"
    assert execution.error is not None
    assert execution.error["node_id"] == "11"
    assert execution.message == "interrupted at node 11 (KSamplerAdvanced)"
    assert execution.history is not None
    assert execution.history["status"]["status_str"] == "error"


def test_timeout_interrupts_and_reports_timeout(hanging_server: Any) -> None:
    server = hanging_server
    with ComfyClient(server.url, interrupt_grace=5) as client:
        execution = client.run(_wan_prompt(), timeout=1.0, is_alive=server.is_alive)
        assert execution.status == "timeout"
        assert "--wan22-run-timeout" in execution.message
        assert execution.error is not None
        assert execution.error["node_id"] == "11"
        assert "execution_interrupted" in _types(execution)
        assert client.queue() == {"queue_running": [], "queue_pending": []}
    assert server.wait_log(f"Interrupting prompt {execution.prompt_id}")


@pytest.mark.parametrize("watch_process", [True, False], ids=["is_alive", "socket-only"])
def test_server_dying_mid_run(start_fake: Any, watch_process: bool) -> None:
    server = start_fake({"FAKE_COMFYUI_SCENARIO": "crash_during_run"})
    with ComfyClient(server.url, timeout=5) as client:
        execution = client.run(_wan_prompt(), timeout=20, is_alive=server.is_alive if watch_process else None)
    assert execution.status == "server_died"
    assert "progress" in _types(execution)  # it died after the first sampler step
    assert execution.history is None
    assert "server log" in execution.message
    assert server.proc.wait(timeout=5) != 0


def test_dropped_websocket_falls_back_to_history(start_fake: Any) -> None:
    server = start_fake({"FAKE_COMFYUI_SCENARIO": "drop_websockets"})
    with ComfyClient(server.url) as client:
        execution = client.run(_wan_prompt(), timeout=20, is_alive=server.is_alive)
    assert execution.status == "success", execution.message
    assert "progress" in _types(execution)
    assert "execution_success" not in _types(execution)  # that came after the socket closed
    assert execution.cached_nodes == ()
    assert execution.outputs["15"]["animated"] == [True]
    assert execution.server_s is not None


@pytest.mark.parametrize("is_alive", [None, lambda: False], ids=["no-watch", "watched"])
def test_run_against_a_dead_server_is_server_died(is_alive: Any) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with ComfyClient(f"http://127.0.0.1:{port}", timeout=2) as client:
        execution = client.run(SUCCESS_PROMPT, timeout=5, is_alive=is_alive)
    assert execution.status == "server_died"
    assert execution.events == ()
    assert execution.message.startswith("ComfyUI stopped answering during the run")


# --------------------------------------------------------------------------- outcomes: only success is success


@pytest.mark.parametrize(("status", "outcome"), [
    ({"status_str": "success", "completed": True}, "success"),
    ({"status_str": "success", "completed": False}, "success"),
    ({"completed": True}, "success"),
    ({"status_str": "error", "completed": False}, "error"),
    ({"status_str": "error", "completed": True}, "error"),
    ({"status_str": "cancelled", "completed": False}, None),
    ({"status_str": "cancelled", "completed": True}, None),
    ({"status_str": "", "completed": True}, None),
    ({"completed": "yes"}, None),
    ({"completed": False}, None),
    ({}, None),
])
def test_history_status_only_success_is_success(status: dict[str, Any], outcome: str | None) -> None:
    state = _RunState("p", 0.0, None)
    state.take_history({"status": {**status, "messages": []}})
    assert state.done
    assert state.outcome == outcome


def test_history_messages_decide_before_the_status_string() -> None:
    error = {"prompt_id": "p", "node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError"}
    state = _RunState("p", 0.0, None)
    state.take_history({"status": {"status_str": "success", "completed": True,
                                   "messages": [["execution_start", {}], ["execution_error", error]]}})
    assert (state.outcome, state.error) == ("error", error)
    state = _RunState("p", 0.0, None)
    state.take_history({"status": {"status_str": "success", "messages": [["execution_interrupted", error]]}})
    assert state.outcome == "interrupted"
    state = _RunState("p", 0.0, None)  # what the socket already said stands
    state.feed({"type": "execution_error", "data": {**error, "prompt_id": "p"}}, 1.0)
    state.take_history({"status": {"status_str": "success", "completed": True, "messages": []}})
    assert state.outcome == "error"


def test_socket_frames_of_other_prompts_or_unknown_types_decide_nothing() -> None:
    state = _RunState("p", 0.0, None)
    for message in ({"type": "execution_success", "data": {"prompt_id": "other"}},
                    {"type": "execution_done", "data": {"prompt_id": "p"}},
                    {"type": "execution_success", "data": "p"}, ["execution_success"]):
        state.feed(message, 0.5)
    assert state.outcome is None
    assert not state.done
    state.feed({"type": "executing", "data": {"prompt_id": "p", "node": None}}, 0.6)
    assert state.done
    assert state.outcome is None


class _Scripted(ComfyClient):
    """A client whose server is a script: no websocket, a history entry, no job."""

    def __init__(self, entry: dict[str, Any] | None) -> None:
        super().__init__("http://127.0.0.1:9", timeout=1)
        self.entry = entry

    def _open_ws(self) -> None:  # type: ignore[override]
        return None

    def _server_answers(self, is_alive: Any) -> bool:
        return True

    def submit(self, prompt: Any, *, prompt_id: str | None = None) -> str:
        return prompt_id or "p"

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        return self.entry

    def job(self, prompt_id: str) -> dict[str, Any] | None:
        return None


@pytest.mark.parametrize(("status", "outcome"), [
    ({"status_str": "success", "completed": True, "messages": []}, "success"),
    ({"status_str": "cancelled", "completed": False, "messages": []}, "error"),
    ({"status_str": "", "messages": []}, "error"),
])
def test_run_never_counts_an_unknown_outcome_as_success(status: dict[str, Any], outcome: str) -> None:
    with _Scripted({"status": status, "outputs": {}}) as client:
        execution = client.run(SUCCESS_PROMPT, timeout=5)
    assert execution.status == outcome
    if outcome != "success":
        assert execution.message == "the prompt ended with status error"


def test_history_entries_of_odd_shape_decide_nothing_wrong() -> None:
    error = {"prompt_id": "p", "node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError"}
    for status in (None, "success", ["success"]):
        state = _RunState("p", 0.0, None)
        state.take_history({"status": status})
        assert (state.done, state.outcome) == (True, None)
    state = _RunState("p", 0.0, None)  # malformed messages are skipped, the ones after them still count
    state.take_history({"status": {"status_str": "success", "messages": [
        "abc", ["execution_start"], ["execution_start", None], ["execution_cached", "3"], ["execution_error", error]]}})
    assert (state.outcome, state.error) == ("error", error)


def test_failure_words_of_an_execution() -> None:
    from pytest_wan22.client import _describe_failure

    error = {"node_id": "3", "node_type": "KSampler", "exception_type": "RuntimeError", "exception_message": ""}
    assert _describe_failure("error", error) == "node 3 (KSampler) raised RuntimeError"
    assert _describe_failure("error", {**error, "exception_message": "  boom: x\nmore"}) == (
        "node 3 (KSampler) raised RuntimeError: boom: x")
    assert _describe_failure("error", {**error, "exception_message": "no axis X"}) == (
        "node 3 (KSampler) raised RuntimeError: no axis X")
    assert _describe_failure("interrupted", error) == "interrupted at node 3 (KSampler)"
    assert _describe_failure("error", None) == "the prompt ended with status error"


class _Memory:
    """A server whose allocator lets go of `held` MiB over a few polls after /free."""

    def __init__(self, readings: list[float] | None, *, busy_polls: int = 0) -> None:
        self.readings, self.busy_polls, self.freed, self.t = readings, busy_polls, 0, 0.0

    def install(self, client: ComfyClient, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(client, "free", lambda: setattr(self, "freed", self.freed + 1))
        monkeypatch.setattr(client, "memory_stats", self.stats)
        monkeypatch.setattr(client, "queue", self.queue)

    def stats(self) -> dict[str, object]:
        if self.readings is None:
            return {"available": False}
        mib = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        return {"available": True, "reserved": mib * 2**20}

    def queue(self) -> dict[str, object]:
        busy = self.busy_polls > 0
        self.busy_polls -= 1
        return {"queue_running": [["x"]] if busy else [], "queue_pending": []}

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_free_and_wait_waits_until_the_allocator_has_let_go(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _Memory([40_000, 40_000, 22_000, 900])
    with ComfyClient("http://127.0.0.1:9") as c:
        server.install(c, monkeypatch)
        release = c.free_and_wait(poll=0.5, clock=server.clock, sleep=server.sleep)
    assert server.freed == 1
    assert release.released
    assert release.waited_s == pytest.approx(1.5)
    assert release.reserved_mib == pytest.approx(900)
    assert release.describe() == "released in 1.5 s (0.88 GiB still held)"


def test_free_and_wait_waits_for_a_busy_queue_too(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _Memory([100], busy_polls=2)
    with ComfyClient("http://127.0.0.1:9") as c:
        server.install(c, monkeypatch)
        release = c.free_and_wait(poll=1.0, clock=server.clock, sleep=server.sleep)
    assert release.released
    assert release.waited_s == pytest.approx(2.0)


def test_free_and_wait_gives_up_at_its_timeout_and_says_what_is_held(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _Memory([40_960])
    with ComfyClient("http://127.0.0.1:9") as c:
        server.install(c, monkeypatch)
        release = c.free_and_wait(timeout=10, poll=1.0, clock=server.clock, sleep=server.sleep)
    assert not release.released
    assert release.waited_s == pytest.approx(10)
    assert release.describe() == "NOT released after 10 s (40.00 GiB still held)"


def test_free_and_wait_without_the_probe_does_not_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    server = _Memory(None)
    with ComfyClient("http://127.0.0.1:9") as c:
        server.install(c, monkeypatch)
        release = c.free_and_wait(clock=server.clock, sleep=server.sleep)
    assert server.freed == 1
    assert release.reserved_mib is None
    assert release.waited_s == 0
    assert "not waited for" in release.describe()
