"""The runner's reading of real ComfyUI 0.8.0 event streams (the captures), OOM rules and log signs."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.client import Event, Execution
from pytest_wan22.records import RunRecord, VramReport
from pytest_wan22.runner import build_record, classify_error, png_bytes, scan_log, warnings_of


def _execution(folder: Path, stem: str, status: str, prompt: dict[str, Any]) -> Execution:
    lines = [json.loads(x) for x in (folder / f"{stem}.ws.jsonl").read_text().splitlines() if x.strip()]
    post = next(x["t"] for x in lines if x.get("frame") == "note")
    events = [Event(x["t"] - post, x["message"]["type"], x["message"]["data"]) for x in lines
              if x.get("frame") == "text" and x["t"] >= post and x["message"]["type"] != "status"]
    pid = next(e.data["prompt_id"] for e in events if "prompt_id" in e.data)
    history_path = folder / f"{stem}.history.json"
    history = json.loads(history_path.read_text())["body"][pid] if history_path.is_file() else None
    error = next((e.data for e in events if e.type == "execution_error"), None)
    cached = next((tuple(e.data["nodes"]) for e in events if e.type == "execution_cached"), ())
    return Execution(pid, status, tuple(events), 0.0, events[-1].t, history, None, error, cached)  # type: ignore[arg-type]


def rec_history(folder: Path, stem: str) -> dict[str, Any]:
    """The one history entry of a capture."""
    body: dict[str, Any] = json.loads((folder / f"{stem}.history.json").read_text())["body"]
    return next(iter(body.values()))  # type: ignore[no-any-return]


def _prompt(folder: Path, name: str) -> dict[str, Any]:
    data = json.loads((folder / name).read_text())
    return data.get("prompt", data)


BASE = RunRecord("high_low-5s", "wan22_i2v_a14b", "cpu", "invalid")


def test_tiny_wan_run_gives_node_times_and_seconds_per_step(captures: Path) -> None:
    prompt = _prompt(captures, "wan22_i2v_tiny_api.json")
    rec = build_record(BASE, _execution(captures, "wan22_tiny_cold", "success", prompt), prompt, None, "", None)
    assert rec.outcome == "success"
    by_id = {n.node_id: n for n in rec.nodes}
    assert set(by_id) == set(prompt)
    assert by_id["7"].class_type == "CLIPTextEncode"
    assert by_id["7"].title == "negative"
    # The full-size UMT5 forward of the stub text encoder dominates on a CPU; the tiny samplers take little.
    assert by_id["7"].seconds > by_id["11"].seconds + by_id["12"].seconds
    assert [p.title for p in rec.passes] == ["KSampler (high noise)", "KSampler (low noise)"]
    assert [p.steps for p in rec.passes] == [2, 2]
    assert all(len(p.step_times) == 2 and p.seconds_per_step for p in rec.passes)
    assert rec.phases["text"] > rec.phases["sampling"] > 0
    assert sum(n.seconds for n in rec.nodes) == pytest.approx(sum(rec.phases.values()), abs=1e-3)
    stamps = {m[0]: m[1]["timestamp"] for m in rec_history(captures, "wan22_tiny_cold")["status"]["messages"]}
    assert rec.server_s == pytest.approx((stamps["execution_success"] - stamps["execution_start"]) / 1000)
    assert [o.filename for o in rec.outputs] == ["wan22_tiny_00001_.mp4"]


def test_fully_cached_rerun_is_never_a_timing(captures: Path) -> None:
    prompt = _prompt(captures, "wan22_i2v_tiny_api.json")
    rec = build_record(BASE, _execution(captures, "wan22_tiny_repeat_all_cached", "success", prompt), prompt,
                       None, "", None)
    assert rec.outcome == "invalid"
    assert "cached" in rec.message
    assert rec.passes == ()


def test_runtime_error_names_node_and_exception(captures: Path) -> None:
    prompt = _prompt(captures, "d_runtime_error.request.json")
    rec = build_record(BASE, _execution(captures, "d_runtime_error", "error", prompt), prompt, None, "", None)
    assert rec.outcome == "error"
    assert rec.error is not None
    assert rec.error.node_id == "2"
    assert rec.message.startswith("IndexError in ImageToMask")
    assert "(node 2)" in rec.message


def test_host_ram_exhaustion_is_an_error_not_a_gpu_oom(captures: Path) -> None:
    prompt = _prompt(captures, "d2_cpu_oom.request.json")
    rec = build_record(BASE, _execution(captures, "d2_cpu_oom", "error", prompt), prompt, None, "", None)
    assert rec.outcome == "error"
    assert "DefaultCPUAllocator" in rec.message


GPU_OOM = ("Allocation on device 0 would exceed allowed memory. (out of memory)\nCurrently allocated     : 30.12 GiB\n"
           "This error means you ran out of memory on your GPU.\n\nTIPS: ...")


@pytest.mark.parametrize(
    ("etype", "message", "outcome"),
    [
        ("torch.OutOfMemoryError", GPU_OOM, "oom"),
        ("torch.cuda.OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        ("RuntimeError", "CUDA error: out of memory", "oom"),
        ("RuntimeError", "CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)", "oom"),
        ("RuntimeError", "DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes", "error"),
        ("IndexError", "index 3 is out of bounds", "error"),
    ],
)
def test_oom_rules(etype: str, message: str, outcome: str) -> None:
    assert classify_error(etype, message) == outcome


@pytest.mark.parametrize(
    ("etype", "message", "outcome"),
    [
        # The exception type decides first: any OutOfMemoryError is the GPU's, whatever the message says.
        ("torch.OutOfMemoryError", "", "oom"),
        ("OutOfMemoryError", "boom", "oom"),
        ("torch.OutOfMemoryError", "DefaultCPUAllocator: can't allocate memory", "oom"),
        ("some.pack.OutOfMemoryError", "boom", "oom"),  # a custom node's own OOM type
        ("OutOfMemoryErrorX", "boom", "error"),
        ("MemoryError", "boom", "error"),
        # By the message: each GPU wording, in any case.
        ("RuntimeError", "Allocation on device 0 would exceed allowed memory.", "oom"),
        ("RuntimeError", "allocation ON DEVICE 1", "oom"),
        ("RuntimeError", "CUDA error: OUT OF MEMORY", "oom"),
        ("RuntimeError", "cublas_status_alloc_failed", "oom"),
        ("ValueError", "HIP out of memory. Tried to allocate 2.00 GiB", "oom"),
        # Host RAM: the CPU allocator's failure is never a GPU OOM, even when its text says "out of memory".
        ("RuntimeError", "DefaultCPUAllocator: not enough memory: you tried to allocate 8 GB (out of memory)", "error"),
        ("RuntimeError", "[enforce fail at alloc_cpu.cpp:114] DefaultCPUAllocator: Allocation on device cpu", "error"),
        ("RuntimeError", "", "error"),
        ("RuntimeError", "outofmemory", "error"),
    ],
)
def test_oom_rule_boundaries(etype: str, message: str, outcome: str) -> None:
    assert classify_error(etype, message) == outcome


def test_a_failed_run_is_classified_from_its_error_and_an_unknown_status_stays_what_it_is() -> None:
    prompt = {"11": {"class_type": "KSamplerAdvanced", "inputs": {}, "_meta": {"title": "KSampler (high noise)"}}}
    host = {"node_id": "11", "node_type": "KSamplerAdvanced", "exception_type": "RuntimeError",
            "exception_message": "DefaultCPUAllocator: can't allocate memory (out of memory)", "traceback": []}
    ex = Execution("p", "error", (), 0, 1.0, None, None, host, ())
    assert build_record(BASE, ex, prompt, None, "", None).outcome == "error"
    assert build_record(BASE, replace(ex, error=None), prompt, None, "", None).outcome == "error"
    for status in ("timeout", "interrupted", "server_died"):
        rec = build_record(BASE, replace(ex, status=status, error=None), prompt, None, "", None)  # type: ignore[arg-type]
        assert rec.outcome == status
        assert not rec.ok


def test_oom_message_names_node_title_and_peak() -> None:
    prompt = {"11": {"class_type": "KSamplerAdvanced", "inputs": {}, "_meta": {"title": "KSampler (high noise)"}}}
    err = {"node_id": "11", "node_type": "KSamplerAdvanced", "exception_type": "torch.OutOfMemoryError",
           "exception_message": GPU_OOM, "traceback": []}
    ex = Execution("p", "error", (Event(0.1, "executing", {"node": "11"}),), 0, 1.0, None, None, err, ())
    vram = VramReport(True, peak_process_mib=31.2 * 1024)
    rec = build_record(BASE, ex, prompt, vram, "", None)
    assert rec.outcome == "oom"
    assert rec.message.startswith("out of memory in KSamplerAdvanced 'KSampler (high noise)' (node 11) at 31.2 GiB")


def test_log_signs_of_what_comfyui_absorbs() -> None:
    log = "\n".join([
        "loaded partially; 1234.56 MB usable, 1000.00 MB loaded, 2796.10 MB offloaded, lowvram patches: 0",
        "Ran out of memory when regular VAE decoding, retrying with tiled VAE decoding.",
        "Unloaded partially: 5000.00 MB freed, 8000.00 MB remains loaded",
        "Prompt executed in 12.00 seconds",
    ])
    found = scan_log(log)
    rec = RunRecord("v", "w", "cpu", "success", warnings=tuple(found))
    assert warnings_of(rec, "offload") == ["offload: model loaded partially, 2796.10 MB offloaded"]
    assert warnings_of(rec, "oom_retry") == ["oom_retry: VAE decoding ran out of memory and fell back to tiled"]
    assert len(warnings_of(rec, "swap")) == 1
    assert scan_log("Prompt executed in 1.00 seconds") == []


def test_start_image_is_a_valid_png() -> None:
    data = png_bytes(16, 8)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (16, 8)
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4:idat])[0]
    raw = zlib.decompress(data[idat + 4:idat + 4 + length])
    assert len(raw) == 8 * (1 + 16 * 3)


def test_a_partly_cached_run_is_a_timing(captures: Path) -> None:
    prompt = _prompt(captures, "wan22_i2v_tiny_api.json")
    prompt["11"]["inputs"]["noise_seed"] = 43
    ex = _execution(captures, "wan22_tiny_new_seed_partial_cache", "success", prompt)
    assert ex.cached_nodes
    assert set(ex.cached_nodes) < set(prompt)
    rec = build_record(BASE, ex, prompt, None, "", None)
    assert (rec.outcome, rec.message, rec.error) == ("success", "", None)
    assert [p.steps for p in rec.passes] == [2, 2]
    all_cached = build_record(BASE, replace(ex, cached_nodes=tuple(prompt)), prompt, None, "", None)
    assert all_cached.outcome == "invalid"
    assert all_cached.message == (
        "every node was cached, so nothing ran and no timing exists; give the workflow a seed input the runner can "
        "change, or start ComfyUI with --cache-none (--wan22-server-args)")


def test_a_record_carries_what_the_run_gave(captures: Path, tmp_path: Path) -> None:
    prompt = _prompt(captures, "wan22_i2v_tiny_api.json")
    ex = _execution(captures, "wan22_tiny_cold", "success", prompt)
    out = tmp_path / "output"
    video = out / "video" / "wan22_tiny_00001_.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"\0" * 10)
    ex = replace(ex, cached_nodes=("9",), wall_s=12.5)
    vram = VramReport(True, peak_process_mib=100.0)
    log = "loaded partially; 1.00 MB usable, 1.00 MB loaded, 2.00 MB offloaded\n"
    rec = build_record(BASE, ex, prompt, vram, log, out)
    assert (rec.prompt_id, rec.wall_s, rec.vram, rec.cached_nodes) == (ex.prompt_id, 12.5, vram, ("9",))
    assert rec.server_s == ex.server_s
    assert rec.warnings == ("offload: model loaded partially, 2.00 MB offloaded",)
    assert [(o.path, o.bytes) for o in rec.outputs] == [(str(video), 10)]
    assert (rec.outcome, rec.message) == ("success", "")


def test_a_record_carries_the_error_as_comfyui_gave_it(captures: Path) -> None:
    prompt = _prompt(captures, "d_runtime_error.request.json")
    rec = build_record(BASE, _execution(captures, "d_runtime_error", "error", prompt), prompt, None, "", None)
    assert rec.error is not None
    assert (rec.error.node_id, rec.error.node_type, rec.error.exception_type) == ("2", "ImageToMask", "IndexError")
    assert rec.error.traceback
    assert all(isinstance(line, str) for line in rec.error.traceback)
    bare = Execution("p", "error", (), 0, 1.0, None, None, {"node_id": "2"}, ())
    rec = build_record(BASE, bare, prompt, None, "", None)
    assert rec.error is not None
    assert (rec.error.node_type, rec.error.exception_type, rec.error.exception_message, rec.error.traceback) == (
        None, "", "", ())
    assert rec.outcome == "error"


def test_a_timeout_keeps_the_clients_words_and_a_dead_server_its_last_log_lines() -> None:
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {}}}
    ex = Execution("p", "timeout", (), 0, 5.0, None, None, None, (), message="no result within 5 s")
    assert build_record(BASE, ex, prompt, None, "", None).message == "no result within 5 s"
    log = "".join(f"line {i}\n" for i in range(25))
    died = build_record(BASE, replace(ex, status="server_died", message="gone"), prompt, None, log, None)
    assert died.message == "gone\nlast log lines:\n" + "\n".join(f"line {i}" for i in range(5, 25))
    assert build_record(BASE, replace(ex, status="server_died", message="gone"), prompt, None, "", None
                        ).message == "gone"
    assert build_record(BASE, replace(ex, message="x"), prompt, None, log, None).message == "x"  # only when it died


class _Server:
    """What ensure_inputs asks of a client: a class's file list, and image uploads (kept here)."""

    def __init__(self, listed: dict[str, list[str]]) -> None:
        self.listed = listed
        self.uploads: dict[str, bytes] = {}
        self.asked: list[str] = []

    def object_info(self, cls: str) -> dict[str, Any]:
        self.asked.append(cls)
        name = "file" if cls == "LoadVideo" else "image"
        spec = ["COMBO", {"options": self.listed[cls]}] if cls == "LoadVideo" else [self.listed[cls]]
        return {cls: {"input": {"required": {name: spec}}}}

    def upload_image_bytes(self, name: str, data: bytes) -> str:
        self.uploads[name] = data
        return name


def _inputs_ctx(tmp_path: Path, server: _Server, launched: bool = True) -> Any:
    from pytest_wan22.runner import RunContext

    user = tmp_path / "ComfyUI" / "input"
    user.mkdir(parents=True)
    (user / "clip.mp4").write_bytes(b"user clip")
    (user / "start.png").write_bytes(b"user png")
    (tmp_path / "secret.mp4").write_bytes(b"outside")
    own = tmp_path / "a" / "work" / "input"
    return RunContext(client=server, tier="t", timeout=1.0,  # type: ignore[arg-type]
                      input_dir=own if launched else None, user_input_dir=user if launched else None)


def _loads(**names: str) -> dict[str, Any]:
    return {str(i): {"class_type": cls, "inputs": {"file" if cls == "LoadVideo" else "image": value}}
            for i, (value, cls) in enumerate((v, k.split("_")[0]) for k, v in names.items())}


def test_input_files_come_from_the_users_input_folder_else_a_start_image_is_made(tmp_path: Path) -> None:
    from pytest_wan22.runner import ensure_inputs

    server = _Server({"LoadImage": ["listed.png"], "LoadVideo": []})
    ctx = _inputs_ctx(tmp_path, server)
    prompt = _loads(LoadVideo_a="clip.mp4", LoadImage_b="start.png", LoadImage_c="listed.png",
                    LoadImage_d="nowhere.png", LoadVideo_e="nowhere.mp4", LoadVideo_f="../../secret.mp4",
                    LoadImage_g="shot.png [output]")
    assert ensure_inputs(ctx, prompt, (32, 16)) == {"LoadImage", "LoadVideo"}
    own = tmp_path / "a" / "work" / "input"
    assert (own / "clip.mp4").read_bytes() == b"user clip"
    assert (own / "start.png").read_bytes() == b"user png"
    user = tmp_path / "ComfyUI" / "input"
    assert not (own / "clip.mp4").samefile(user / "clip.mp4")  # a copy: the server never writes the user's file
    assert sorted(p.name for p in own.iterdir()) == ["clip.mp4", "start.png"]
    assert not (tmp_path / "a" / "secret.mp4").exists()  # a name never leads out of the server's input folder
    assert list(server.uploads) == ["nowhere.png"]  # made only where the user has none
    assert server.uploads["nowhere.png"] == png_bytes(32, 16)
    assert sorted(server.asked) == ["LoadImage", "LoadVideo"]  # one listing per class
    assert ensure_inputs(ctx, prompt, (32, 16)) == set()  # done once per run context


def test_an_attached_server_gets_generated_start_images_only(tmp_path: Path) -> None:
    from pytest_wan22.runner import ensure_inputs

    server = _Server({"LoadImage": [], "LoadVideo": []})
    ctx = _inputs_ctx(tmp_path, server, launched=False)
    assert ensure_inputs(ctx, _loads(LoadVideo_a="clip.mp4", LoadImage_b="start.png"), (16, 16)) == {"LoadImage"}
    assert list(server.uploads) == ["start.png"]


def test_inputs_the_user_lacks_come_from_the_synthetic_set_and_are_said_in_the_record(tmp_path: Path) -> None:
    import json

    from pytest_wan22 import synth
    from pytest_wan22.runner import ensure_inputs, run_prompt

    server = _Server({"LoadImage": [], "LoadVideo": []})
    ctx = _inputs_ctx(tmp_path, server)
    root = tmp_path / "set"
    (root / "input").mkdir(parents=True)
    (root / "input" / "control.mp4").write_bytes(b"synthetic clip")
    (root / "input" / "clip.mp4").write_bytes(b"synthetic, but the user has one")
    stamp = synth.media_stamp_path(root, "control.mp4")
    stamp.parent.mkdir(parents=True)
    stamp.write_text(json.dumps({"spec": {}, "describe": "video 64x64, 9 frames at 16 fps"}))
    ctx.synthetic_input_dir = root / "input"
    prompt = _loads(LoadVideo_a="control.mp4", LoadVideo_b="clip.mp4", LoadImage_c="start.png",
                    LoadImage_d="nowhere.png")
    assert ensure_inputs(ctx, prompt, (16, 16)) == {"LoadImage", "LoadVideo"}
    own = tmp_path / "a" / "work" / "input"
    assert (own / "control.mp4").read_bytes() == b"synthetic clip"
    assert (own / "clip.mp4").read_bytes() == b"user clip"  # the user's own file first
    user = tmp_path / "ComfyUI" / "input"
    assert ctx.notes == [
        f"input: control.mp4 generated by the synthetic set (video 64x64, 9 frames at 16 fps): no such file in {user}",
        f"input: nowhere.png generated (image 16x16): no such file in {user}"]
    done = Execution("p", "success", (), 0.0, 1.0, None, None, None, ())  # type: ignore[arg-type]

    class _Runs:
        def reset_memory_stats(self) -> None:
            pass

        def memory_stats(self) -> dict[str, Any]:
            return {}

        def run(self, prompt: Any, **kw: Any) -> Execution:
            return done

    record = run_prompt(replace(ctx, client=_Runs()), prompt, variant_id="v", workflow="w", seed=1)
    assert record.warnings == tuple(ctx.notes)  # every record of the variant says so
    record = build_record(replace(BASE, warnings=tuple(ctx.notes)), done, {}, None,
                          "loaded partially; 12.5 MB offloaded", None)
    assert record.warnings == (*ctx.notes, "offload: model loaded partially, 12.5 MB offloaded")

    again = _inputs_ctx(tmp_path / "next", _Server({"LoadImage": [], "LoadVideo": ["control.mp4"]}))
    again.synthetic_input_dir = root / "input"
    ensure_inputs(again, _loads(LoadVideo_a="control.mp4"), (16, 16))  # the server has it from an earlier variant
    assert again.notes
    assert "control.mp4 generated by the synthetic set" in again.notes[0]
