"""Preflight: a prompt checked against /object_info names every missing node, model, bad value and link."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.errors import PreflightError
from pytest_wan22.preflight import Problem, find_problems, format_problems, model_folder, node_pack, raise_if_problems
from pytest_wan22.workflows import Variant, load_workflow
from tests.fake_comfyui.harness import CAPTURES, OWN_WORKFLOWS, needs_real_workflows, real_workflows_dir

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
WORKFLOW = REPO / "workflows" / "wan22_i2v_a14b.json"

HIGH = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
LOW = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
TE = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
VAE = "wan_2.1_vae.safetensors"
IMAGE = "wan22_i2v_start.png"
LORAS = ["wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
         "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"]

# Fannovel16/ComfyUI-Frame-Interpolation's RIFE VFI as a server lists it (its INPUT_TYPES).
RIFE_VFI = {
    "input": {"required": {
        "ckpt_name": [["rife40.pth", "rife41.pth", "rife42.pth", "rife43.pth", "rife44.pth", "rife45.pth",
                       "rife46.pth", "rife47.pth", "sudo_rife4_269.662_testV1_scale1.pth"],
                      {"default": "rife47.pth"}],
        "frames": ["IMAGE"],
        "clear_cache_after_n_frames": ["INT", {"default": 10, "min": 1, "max": 1000}],
        "multiplier": ["INT", {"default": 2, "min": 1}],
        "fast_mode": ["BOOLEAN", {"default": True}],
        "ensemble": ["BOOLEAN", {"default": True}],
        "scale_factor": [[0.25, 0.5, 1.0, 2.0, 4.0], {"default": 1.0}]},
        "optional": {"optional_interpolation_states": ["INTERPOLATION_STATES"]}},
    "output": ["IMAGE"], "output_node": False, "name": "RIFE VFI",
}


@pytest.fixture(scope="module")
def info() -> dict[str, Any]:
    """ComfyUI 0.8.0's /object_info for the Wan nodes, with no model files installed."""
    return json.loads((DATA / "object_info_wan.json").read_text())  # type: ignore[no-any-return]


def with_files(info: dict[str, Any], **files: list[str]) -> dict[str, Any]:
    """The same object_info as a server that has these files (input name -> list)."""
    out = copy.deepcopy(info)
    where = {"unet_name": "UNETLoader", "clip_name": "CLIPLoader", "vae_name": "VAELoader",
             "image": "LoadImage", "lora_name": "LoraLoaderModelOnly"}
    for name, names in files.items():
        out[where[name]]["input"]["required"][name][0] = list(names)
    return out


@pytest.fixture(scope="module")
def full(info: dict[str, Any]) -> dict[str, Any]:
    return with_files(info, unet_name=[HIGH, LOW], clip_name=[TE], vae_name=["pixel_space", VAE],
                      image=[IMAGE], lora_name=LORAS)


@pytest.fixture(scope="module")
def base() -> Variant:
    return Variant(load_workflow(WORKFLOW))


def kinds(problems: list[Problem]) -> list[tuple[str, str, str | None]]:
    return [(p.kind, p.node_id, p.input) for p in problems]


# --------------------------------------------------------------------------- the shipped workflow


def test_empty_server_lacks_exactly_the_model_files(base: Variant, info: dict[str, Any]) -> None:
    problems = find_problems(base.build(), info)
    assert kinds(problems) == [("model", "1", "unet_name"), ("model", "2", "unet_name"),
                               ("model", "5", "clip_name"), ("model", "8", "vae_name"),
                               ("model", "9", "image")]
    by_node = {p.node_id: p for p in problems}
    assert by_node["1"].message.startswith(f"model file '{HIGH}' not in models/diffusion_models")
    assert by_node["1"].fix == ("put it in <comfyui>/models/diffusion_models/ or point "
                                "extra_model_paths.yaml at it")
    assert "models/text_encoders" in by_node["5"].message
    assert "models/vae" in by_node["8"].message
    assert "'pixel_space'" in by_node["8"].message
    assert by_node["9"].message.startswith(f"input image '{IMAGE}' not in input/")
    assert "POST /upload/image" in by_node["9"].fix
    assert by_node["1"].title == "Load Diffusion Model (high noise)"
    assert by_node["1"].class_type == "UNETLoader"
    assert by_node["1"].value == HIGH


def test_server_with_the_files_accepts_every_core_variant(base: Variant, full: dict[str, Any]) -> None:
    variants = [base, base.pass_order("low_high"), base.duration(10), base.resolution(1280, 720),
                base.schedule("lightx2v_4step"), base.schedule(steps=8, cfg=1.0, split=4),
                base.torch_compile(), base.torch_compile("cudagraphs"), base.seed(2**64 - 1),
                base.schedule("lightx2v_4step").pass_order("low_high").torch_compile().duration(10)]
    for v in variants:
        assert find_problems(v.build(), full) == [], v.variant_id


def test_precomputed_conditioning_needs_no_text_encoder(base: Variant, info: dict[str, Any]) -> None:
    problems = find_problems(base.precomputed_conditioning("wan22_tiny_cond").build(), info)
    assert kinds(problems) == [("model", "1", "unet_name"), ("model", "2", "unet_name"),
                               ("model", "8", "vae_name"), ("model", "9", "image")]


def test_lightx2v_loras_are_model_problems_in_loras(base: Variant, info: dict[str, Any]) -> None:
    lora = [p for p in find_problems(base.schedule("lightx2v_4step").build(), info) if p.input == "lora_name"]
    assert [p.title for p in lora] == ["LoRA (high noise)", "LoRA (low noise)"]
    assert all(p.kind == "model" and "not in models/loras" in p.message for p in lora)


# --------------------------------------------------------------------------- node classes and packs


def test_rife_missing_names_its_pack(base: Variant, full: dict[str, Any]) -> None:
    [problem] = find_problems(base.interpolate().build(), full)
    assert (problem.kind, problem.class_type, problem.title) == ("node", "RIFE VFI", "Interpolate Frames")
    assert "Fannovel16/ComfyUI-Frame-Interpolation" in problem.fix
    assert "custom_nodes" in problem.fix


def test_rife_installed_and_its_checkpoint_folder(base: Variant, full: dict[str, Any]) -> None:
    server = {**full, "RIFE VFI": RIFE_VFI}
    assert find_problems(base.interpolate(3).build(), server) == []
    [problem] = find_problems(base.interpolate(ckpt="rife99.pth").build(), server)
    assert (problem.kind, problem.input, problem.value) == ("model", "ckpt_name", "rife99.pth")
    assert "custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife/" in problem.message
    assert problem.fix.startswith("put it in <comfyui>/custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife/")


def test_core_interpolation_needs_a_newer_comfyui(base: Variant, full: dict[str, Any]) -> None:
    problems = find_problems(base.interpolate(node="core").build(), full)
    assert [(p.kind, p.class_type) for p in problems] == [("node", "FrameInterpolationModelLoader"),
                                                          ("node", "FrameInterpolate")]
    assert all("newer than 0.8.0" in p.fix for p in problems)


@pytest.mark.parametrize(("cls", "pack"), [
    ("RIFE VFI", "Fannovel16/ComfyUI-Frame-Interpolation"),
    ("FILM VFI", "Fannovel16/ComfyUI-Frame-Interpolation"),
    ("WanVideoSampler", "kijai/ComfyUI-WanVideoWrapper"),
    ("LoadWanVideoT5TextEncoder", "kijai/ComfyUI-WanVideoWrapper"),
    ("VHS_VideoCombine", "Kosinkadink/ComfyUI-VideoHelperSuite"),
    ("ImageResizeKJv2", "kijai/ComfyUI-KJNodes"),
    ("INTConstant", "kijai/ComfyUI-KJNodes"),
    ("easy forLoopStart", "yolain/ComfyUI-Easy-Use"),
    ("SomethingElse", None),
])
def test_node_pack(cls: str, pack: str | None) -> None:
    assert node_pack(cls) == pack


def test_unknown_class_without_a_known_pack(full: dict[str, Any]) -> None:
    prompt = {"1": {"class_type": "MysteryNode", "inputs": {}},
              "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "filename_prefix": "v",
                                                          "format": "auto", "codec": "auto"}}}
    [problem] = find_problems(prompt, full)
    assert (problem.kind, problem.node_id, problem.value) == ("node", "1", "MysteryNode")
    assert "ComfyUI-Manager" in problem.fix


def test_prompt_without_an_output_node(full: dict[str, Any]) -> None:
    prompt = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}}}
    [problem] = find_problems(prompt, full)
    assert problem.kind == "node"
    assert "no output node" in problem.message


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize(("title", "name", "value", "expected"), [
    ("KSampler (high noise)", "sampler_name", "eulr", r"'eulr' is not one of .*did you mean 'euler'"),
    ("KSampler (high noise)", "add_noise", "yes", r"'yes' is not one of"),
    ("Save Video", "format", "mkv", r"'mkv' is not one of"),           # v3 ["COMBO", {"options"}]
    ("Load Text Encoder", "type", "wan22", r"did you mean 'wan'"),     # old [[options], {...}]
    ("KSampler (high noise)", "steps", 0, r"outside the allowed range"),
    ("KSampler (high noise)", "cfg", 100.5, r"outside the allowed range"),
    ("KSampler (high noise)", "noise_seed", -1, r"outside the allowed range"),
    ("Wan Image To Video", "width", 8, r"outside the allowed range"),
    ("Create Video", "fps", 121.0, r"outside the allowed range"),
    ("Model Sampling (high noise)", "shift", "five", r"not a valid FLOAT"),
    ("KSampler (low noise)", "steps", "many", r"not a valid INT"),
    ("KSampler (low noise)", "steps", True, r"not a valid INT"),
])
def test_bad_values(base: Variant, full: dict[str, Any], title: str, name: str, value: Any,
                    expected: str) -> None:
    [problem] = find_problems(base.set(title, name, value).build(), full)
    assert (problem.kind, problem.title, problem.input, problem.value) == ("value", title, name, value)
    assert re.search(expected, problem.message), problem.message
    assert problem.fix


def test_value_fix_names_the_range(base: Variant, full: dict[str, Any]) -> None:
    [problem] = find_problems(base.set("KSampler (high noise)", "steps", 0).build(), full)
    assert problem.fix == "set it between 1 and 10000"
    [problem] = find_problems(base.set("Save Video", "codec", "vp9").build(), full)
    assert problem.fix == "use one of 'auto', 'h264'"


def test_numbers_as_strings_pass_like_comfyui_converts_them(base: Variant, full: dict[str, Any]) -> None:
    assert find_problems(base.set("KSampler (high noise)", "steps", "20").build(), full) == []


def test_missing_required_inputs(base: Variant, full: dict[str, Any]) -> None:
    prompt = base.build()
    del prompt["11"]["inputs"]["steps"]
    del prompt["13"]["inputs"]["vae"]
    problems = find_problems(prompt, full)
    assert kinds(problems) == [("value", "11", "steps"), ("link", "13", "vae")]
    assert all(p.message == "required input is missing" for p in problems)
    assert "a link to a node with a VAE output" in problems[1].fix
    optional = base.build()
    del optional["10"]["inputs"]["start_image"]
    del optional["5"]["inputs"]["device"]
    assert find_problems(optional, full) == []


# --------------------------------------------------------------------------- links


def test_link_problems(base: Variant, full: dict[str, Any]) -> None:
    prompt = base.build()
    prompt["13"]["inputs"]["vae"] = ["99", 0]           # no such node
    prompt["12"]["inputs"]["latent_image"] = ["10", 3]  # WanImageToVideo has 3 outputs
    prompt["11"]["inputs"]["model"] = ["8", 0]          # a VAE where a MODEL goes
    problems = find_problems(prompt, full)
    assert kinds(problems) == [("link", "11", "model"), ("link", "12", "latent_image"), ("link", "13", "vae")]
    assert problems[0].message == "gets VAE from node 8 (VAELoader) but wants MODEL"
    assert "which has 3 outputs" in problems[1].message
    assert problems[1].fix == "use an output index from 0 to 2"
    assert "not in the prompt" in problems[2].message


def test_link_from_an_unknown_class_is_reported_once(base: Variant, full: dict[str, Any]) -> None:
    prompt = base.build()
    prompt["8"]["class_type"] = "WanVideoVAELoader"
    problems = find_problems(prompt, full)
    assert kinds(problems) == [("node", "8", None)]
    assert "kijai/ComfyUI-WanVideoWrapper" in problems[0].fix


# --------------------------------------------------------------------------- model folders


@pytest.mark.parametrize(("cls", "name", "folder"), [
    ("UNETLoader", "unet_name", "models/diffusion_models"),
    ("CLIPLoader", "clip_name", "models/text_encoders"),
    ("DualCLIPLoader", "clip_name2", "models/text_encoders"),
    ("CLIPVisionLoader", "clip_name", "models/clip_vision"),
    ("VAELoader", "vae_name", "models/vae"),
    ("LoraLoaderModelOnly", "lora_name", "models/loras"),
    ("CheckpointLoaderSimple", "ckpt_name", "models/checkpoints"),
    ("RIFE VFI", "ckpt_name", "custom_nodes/ComfyUI-Frame-Interpolation/ckpts/rife"),
    ("FILM VFI", "ckpt_name", "custom_nodes/ComfyUI-Frame-Interpolation/ckpts/film"),
    ("FrameInterpolationModelLoader", "model_name", "models/frame_interpolation"),
    ("LoadImage", "image", "input"),
    ("KSampler", "sampler_name", None),
])
def test_model_folder(cls: str, name: str, folder: str | None) -> None:
    assert model_folder(cls, name) == folder


def test_clip_vision_loader_reports_clip_vision(info: dict[str, Any]) -> None:
    prompt = {"1": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}}}
    problems = [p for p in find_problems(prompt, info) if p.kind == "model"]
    assert problems[0].message.startswith("model file 'clip_vision_h.safetensors' not in models/clip_vision")


def test_same_file_in_a_subfolder_is_pointed_out(base: Variant, info: dict[str, Any]) -> None:
    server = with_files(info, unet_name=["WAN2.2/" + HIGH, "WAN2.2/" + LOW, "other.safetensors", "x.gguf"])
    problems = [p for p in find_problems(base.build(), server) if p.input == "unet_name"]
    assert f"'WAN2.2/{HIGH}' has the same file name, use that name" in problems[0].message
    assert "4 others there" in problems[0].message


# --------------------------------------------------------------------------- reporting


def test_format_and_raise(base: Variant, info: dict[str, Any]) -> None:
    problems = find_problems(base.build(), info)
    text = format_problems(problems)
    assert len(text.splitlines()) == len(problems) == 5
    assert text.splitlines()[0].startswith("[model] node 1 'Load Diffusion Model (high noise)' (UNETLoader) "
                                           "input 'unet_name': model file")
    assert "; fix: put it in <comfyui>/models/diffusion_models/" in text
    assert format_problems([]) == "no problems"
    with pytest.raises(PreflightError, match=r"5 problem\(s\) in wan22 \(5 model\)") as err:
        raise_if_problems(problems, where="wan22")
    assert err.value.problems == tuple(str(p) for p in problems)
    raise_if_problems([])


def test_problem_is_frozen(base: Variant, info: dict[str, Any]) -> None:
    problem = find_problems(base.build(), info)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        problem.kind = "value"  # type: ignore[misc]


def test_prompt_wrapper_is_unwrapped(base: Variant, info: dict[str, Any]) -> None:
    assert find_problems({"prompt": base.build(), "client_id": "c"}, info) == find_problems(base.build(), info)


# --------------------------------------------------------------------------- real workflows


def test_api_workflows_against_core_080() -> None:
    core = json.loads((CAPTURES / "object_info.json").read_text())
    ours = find_problems(load_workflow(OWN_WORKFLOWS / "flattened_api.json").graph, core)
    assert sorted(p.class_type for p in ours if p.kind == "node") == [
        "ComfyMathExpression", "Int", "RIFE VFI", "easy forLoopStart", "easy int"]
    assert sorted({p.input for p in ours if p.kind == "model"}) == ["clip_name", "lora_name", "unet_name",
                                                                    "vae_name"]
    project = find_problems(
        load_workflow(Path(__file__).resolve().parents[2] / "workflows" / "wan22_i2v_a14b.json").graph, core)
    assert {p.kind for p in project} == {"model"}  # core nodes only; the capture's server had no models


@needs_real_workflows
def test_real_api_workflows_against_core_080() -> None:
    core = json.loads((CAPTURES / "object_info.json").read_text())
    real = real_workflows_dir()
    assert real is not None
    erik_file = real / "gh-eriktrk-wan2.2_14b_i2v_4step_runpod_worker__wan22_14B_i2v_lightning.json"
    erik = find_problems(load_workflow(erik_file).graph, core)
    assert {p.kind for p in erik} == {"model"}
    assert sorted({p.input for p in erik if p.input}) == ["clip_name", "image", "lora_name", "unet_name",
                                                          "vae_name"]
    reggie = find_problems(load_workflow(real / "gh-Reggie-sun-AI-VIDEO__wan22_i2v_api.json").graph, core)
    missing = {p.class_type for p in reggie if p.kind == "node"}
    assert {"WanVideoSampler", "VHS_VideoCombine", "Textbox"} <= missing
    assert {p.kind for p in reggie} <= {"node", "model"}
    zeezz = find_problems(load_workflow(real / "gh-zeezz7-runkarobar-gpu__wan22_i2v_14B.api.json").graph, core)
    assert [p.class_type for p in zeezz if p.kind == "node"] == ["ComfyMathExpression"]


# --------------------------------------------------------------------------- a live ComfyUI (opt-in)

COMFYUI_DIR = os.environ.get("WAN22_COMFYUI_DIR")


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@pytest.mark.skipif(not COMFYUI_DIR, reason="WAN22_COMFYUI_DIR is unset: set it to a ComfyUI checkout (and "
                    "WAN22_PYTHON to its interpreter) to check the workflow against a live /object_info")
def test_live_comfyui_rejects_only_the_missing_files(tmp_path: Path, base: Variant) -> None:
    port = int(os.environ.get("WAN22_PORT") or 0)  # the plugin's --wan22-port; 0 picks a free one
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    (tmp_path / "base" / "custom_nodes").mkdir(parents=True)
    (tmp_path / "frontend").mkdir()
    url = f"http://127.0.0.1:{port}"
    argv = [os.environ.get("WAN22_PYTHON") or sys.executable, str(Path(str(COMFYUI_DIR)) / "main.py"), "--cpu",
            "--listen", "127.0.0.1", "--port", str(port), "--disable-auto-launch",
            "--base-directory", str(tmp_path / "base"), "--database-url", "sqlite:///:memory:",
            "--front-end-root", str(tmp_path / "frontend"), "--disable-api-nodes"]
    with (tmp_path / "comfyui.log").open("wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (tmp_path / "comfyui.log").read_text(errors="replace")[-3000:]
            try:
                _get(url + "/system_stats")
                break
            except OSError:
                assert time.monotonic() < deadline, "ComfyUI did not answer /system_stats within 180 s"
                time.sleep(0.5)
        info = _get(url + "/object_info", timeout=60)
        for v in (base, base.pass_order("low_high").duration(10), base.schedule("lightx2v_4step").torch_compile(),
                  base.precomputed_conditioning("cond")):
            assert {p.kind for p in find_problems(v.build(), info)} == {"model"}, v.variant_id
        prompt = base.schedule("lightx2v_4step").build()
        body = json.dumps({"prompt": prompt, "client_id": "wan22-preflight"}).encode()
        request = urllib.request.Request(url + "/prompt", data=body,
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as rejected:
            urllib.request.urlopen(request, timeout=30)
        assert rejected.value.code == 400
        node_errors = json.loads(rejected.value.read())["node_errors"]
        rejected.value.close()
        rejected_inputs = sorted((node_id, e["extra_info"]["input_name"])
                                 for node_id, entry in node_errors.items() for e in entry["errors"])
        assert rejected_inputs == sorted((p.node_id, p.input) for p in find_problems(prompt, info))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def test_missing_input_video_names_the_input_folder() -> None:
    from pytest_wan22.preflight import find_problems

    info = {"LoadVideo": {"input": {"required": {"file": [[], {"video_upload": True}]}}, "output": ["VIDEO"],
                          "output_node": False},
            "SaveVideo": {"input": {"required": {"video": ["VIDEO"]}}, "output": [], "output_node": True}}
    prompt = {"1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
              "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0]}}}
    (problem,) = find_problems(prompt, info)
    assert (problem.kind, problem.input) == ("model", "file")
    assert problem.message.startswith("input video 'clip.mp4' not in input/")
    assert problem.fix == "put it in <comfyui>/input/"


def test_a_launched_servers_hints_name_the_folders_it_reads(tmp_path: Path) -> None:
    from pytest_wan22.preflight import find_problems, launched_places

    info = {"LoadVideo": {"input": {"required": {"file": ["COMBO", {"options": []}]}}, "output": ["VIDEO"]},
            "LoraLoaderModelOnly": {"input": {"required": {"model": ["MODEL"], "lora_name": [[]]}},
                                    "output": ["MODEL"]},
            "UNETLoader": {"input": {"required": {"unet_name": [[]]}}, "output": ["MODEL"]},
            "SaveVideo": {"input": {"required": {"video": ["VIDEO"]}}, "output": [], "output_node": True}}
    prompt = {"1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
              "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0]}},
              "3": {"class_type": "UNETLoader", "inputs": {"unet_name": "x.safetensors"}},
              "4": {"class_type": "LoraLoaderModelOnly",
                    "inputs": {"model": ["3", 0], "lora_name": "style.safetensors"}},
              "5": {"class_type": "RIFE VFI", "inputs": {}}}
    comfyui, own, root = tmp_path / "ComfyUI", tmp_path / "work" / "input", tmp_path / "models" / "tiny"

    user = {p.node_id: p.fix for p in find_problems(prompt, info, launched_places(comfyui, own))}
    assert user["1"] == (f"put it in {comfyui}/input/ (before each test the plugin copies the files a workflow "
                         f"names from there into the server's own input folder, {own})")
    assert user["4"] == (f"put it in {comfyui}/models/loras/ or point {comfyui}/extra_model_paths.yaml at it")
    assert user["5"].startswith(f"install Fannovel16/ComfyUI-Frame-Interpolation into {comfyui}/custom_nodes/ ")

    synthetic = {p.node_id: p.fix for p in find_problems(prompt, info, launched_places(comfyui, own, ("tiny", root)))}
    assert synthetic["4"].startswith(f"put it in {root}/models/loras/ or point {comfyui}/extra_model_paths.yaml "
                                     f"at it; the server reads models from the synthetic set 'tiny' ({root}), "
                                     "which has no such file")
    assert synthetic["1"] == user["1"]  # inputs come from the user's folder on every tier


def test_a_gguf_graph_without_comfyui_gguf_names_the_pack_and_its_requirement(full: dict[str, Any]) -> None:
    graph = load_workflow(REPO / "workflows" / "wan22_i2v_a14b_gguf.json").graph
    problems = [p for p in find_problems(graph, full) if p.kind == "node"]
    assert [(p.node_id, p.class_type) for p in problems] == [("1", "UnetLoaderGGUF"), ("2", "UnetLoaderGGUF")]
    for p in problems:
        assert "install city96/ComfyUI-GGUF into <comfyui>/custom_nodes/" in p.fix
        assert "git clone https://github.com/city96/ComfyUI-GGUF" in p.fix
        assert "pip install -r custom_nodes/ComfyUI-GGUF/requirements.txt" in p.fix
