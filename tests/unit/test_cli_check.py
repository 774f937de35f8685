"""wan22-check on workflows made for these tests, the official templates, third-party workflows (opt-in), the
project's workflow against the fake ComfyUI, and bad input."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.cli.check import main
from tests.fake_comfyui.harness import (
    OWN_WORKFLOWS,
    REAL_WORKFLOWS_ENV,
    FakeServer,
    official_template,
    real_workflows_dir,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT_WORKFLOW = ROOT / "workflows" / "wan22_i2v_a14b.json"
INFO_FILE = ROOT / "tests" / "data" / "object_info_packs.json"
FAKE_INFO = ROOT / "tests" / "fake_comfyui" / "data" / "object_info.json"
KIJAI = "gh-kijai-ComfyUI-WanVideoWrapper__wanvideo_2_2_I2V_A14B_example_WIP.json"
ZEEZZ7 = "gh-zeezz7-runkarobar-gpu__wan22_i2v_14B.api.json"
REGGIE_UI = "gh-Reggie-sun-AI-VIDEO__wan22_i2v_ui.json"
REGGIE_API = "gh-Reggie-sun-AI-VIDEO__wan22_i2v_api.json"
PT_NEXTGEN = "gh-PT-Nextgen-video_ai_creator__wan22_i2v_4steps_api.json"
EXAMPLE_14B = "gh-comfyanonymous-ComfyUI_examples__image_to_video_wan22_14B.json"
EXAMPLE_5B = "gh-comfyanonymous-ComfyUI_examples__image_to_video_wan22_5B.json"
ERIKTRK = "gh-eriktrk-wan2.2_14b_i2v_4step_runpod_worker__wan22_14B_i2v_lightning.json"
#: file -> (format, node count, number of model files the active nodes load)
EXPECTED = {
    KIJAI: ("ui", 30, 5), ZEEZZ7: ("api", 32, 6), REGGIE_UI: ("ui", 27, 6), REGGIE_API: ("api", 25, 6),
    PT_NEXTGEN: ("api", 43, 7), EXAMPLE_14B: ("ui", 17, 4), EXAMPLE_5B: ("ui", 13, 3), ERIKTRK: ("api", 17, 6),
}
OFFICIAL_FILES = ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
                  "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors")


WRAPPER_UI = OWN_WORKFLOWS / "wrapper_ui.json"
FLATTENED_API = OWN_WORKFLOWS / "flattened_api.json"


@pytest.fixture(scope="module")
def real() -> Path:
    """The folder of third-party workflows (opt-in), or a skip naming the variable that gives it."""
    folder = real_workflows_dir()
    if folder is None or not (folder / KIJAI).is_file():
        pytest.skip(f"third-party workflows are not in the repository (their authors' licences); set "
                    f"{REAL_WORKFLOWS_ENV} to a folder of them to run this check")
    return folder


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out, _ = run(capsys, *args, "--json")
    return code, json.loads(out)


def line_of(out: str, start: str) -> str:
    lines = [line for line in out.splitlines() if line.startswith(start)]
    assert len(lines) == 1, f"expected one line starting {start!r} in:\n{out}"
    return lines[0]


# --------------------------------------------------------------------------- workflows of our own, no server


def test_ui_export_lists_packs_windows_paths_inactive_nodes_subgraphs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(WRAPPER_UI))
    assert (code, err) == (0, "")
    assert line_of(out, "format:") == "format: UI, 24 nodes, 22 node classes"
    wrapper = line_of(out, "  kijai/ComfyUI-WanVideoWrapper: ")
    for cls in ("WanVideoModelLoader x2", "WanVideoSampler x2", "WanVideoBlockSwap", "LoadWanVideoT5TextEncoder"):
        assert cls in wrapper
    assert "WanVideoTextEmbedBridge" not in wrapper  # only a muted node uses it
    assert "WanVideoTorchCompileSettings" not in wrapper  # only a bypassed one
    assert line_of(out, "  kijai/ComfyUI-KJNodes: ") == "  kijai/ComfyUI-KJNodes: INTConstant x2, ImageResizeKJv2"
    assert line_of(out, "  Kosinkadink/ComfyUI-VideoHelperSuite: ").endswith("VHS_VideoCombine")
    assert line_of(out, "  pythongosssss/ComfyUI-Custom-Scripts: ").endswith("PlaySound|pysssss")
    high = line_of(out, "  WanVideo\\2_2\\Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors")
    assert "->  models/diffusion_models/" in high
    assert "22 WanVideoModelLoader" in high
    assert "lists it as 'WanVideo/2_2/Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors'" in out
    assert "->  models/vae/" in line_of(out, "  wanvideo\\Wan2_1_VAE_bf16.safetensors")
    assert "->  models/loras/" in line_of(out, "  WanVideo\\Lightx2v\\lightx2v_I2V_14B_480p")
    assert "->  models/text_encoders/" in line_of(out, "  umt5-xxl-enc-bf16.safetensors")
    assert "->  models/upscale_models/" in line_of(out, "  4x-UltraSharp.pth")  # inside the subgraph
    muted = sorted(line for line in out.splitlines() if line.startswith("  muted: "))
    assert muted == ["  muted: node 46 WanVideoTextEmbedBridge", "  muted: node 48 CLIPLoader",
                     "  muted: node 49 CLIPTextEncode", "  muted: node 50 CLIPTextEncode"]
    assert line_of(out, "  bypassed: ") == "  bypassed: node 52 WanVideoTorchCompileSettings"
    needs = line_of(out, "  they would also need: ")
    assert "WanVideoTextEmbedBridge (kijai/ComfyUI-WanVideoWrapper)" in needs
    assert "WanVideoTorchCompileSettings (kijai/ComfyUI-WanVideoWrapper)" in needs
    assert "umt5_xxl_fp16.safetensors (models/text_encoders)" in needs
    assert not any(line.startswith("  umt5_xxl_fp16") for line in out.splitlines())  # not among active models
    assert line_of(out, "frontend-only").endswith(": Anything Everywhere, GetNode, Note, SetNode")
    assert line_of(out, "subgraphs:") == "subgraphs: 1 definitions, 1 instances, 3 inner nodes"
    assert "add --url" in out  # a UI file is converted against a server and checked


def test_api_export_with_a_flattened_subgraph_and_unknown_packs(capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, str(FLATTENED_API))
    assert code == 0
    assert report["node_count"] == 12
    assert sum(report["class_counts"].values()) == 12
    code, out, _ = run(capsys, str(FLATTENED_API))
    assert "ComfyMathExpression  (core nodes of a newer ComfyUI: update ComfyUI)" in out
    assert line_of(out, "  yolain/ComfyUI-Easy-Use: ") == "  yolain/ComfyUI-Easy-Use: easy forLoopStart, easy int"
    assert line_of(out, "  unknown pack: ").startswith("  unknown pack: Int")
    assert "(node 129:95 UNETLoader)" in line_of(out, "  wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors")
    assert "->  models/clip_vision/" in line_of(out, "  clip_vision_h.safetensors")
    assert line_of(out, "subgraphs:") == "subgraphs: 1 instance(s) flattened into 5 nodes (ids 'instance:inner')"
    assert "add --url" in out


@pytest.mark.parametrize(("name", "folders"), [
    ("video_wan2_2_14B_i2v.json", ("models/diffusion_models", "models/vae", "models/text_encoders",
                                   "models/loras")),
    ("video_wan2_2_5B_ti2v.json", ("models/diffusion_models", "models/vae", "models/text_encoders")),
])
def test_official_templates_need_no_custom_pack(capsys: pytest.CaptureFixture[str], name: str,
                                                folders: tuple[str, ...]) -> None:
    code, report = run_json(capsys, str(official_template(name)))
    assert code == 0
    assert report["format"] == "ui"
    assert set(report["packs"]) <= {"comfyanonymous/ComfyUI (core, newer than 0.8.0)"}
    assert {m["folder"] for m in report["models"] if m["active"]} >= set(folders)
    code, out, _ = run(capsys, str(official_template(name)))
    assert "git clone" not in out


# --------------------------------------------------------------------------- third-party workflows (opt-in)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_real_workflow_reports_format_nodes_and_a_folder_for_each_model(
        real: Path, capsys: pytest.CaptureFixture[str], name: str) -> None:
    fmt, nodes, models = EXPECTED[name]
    code, report = run_json(capsys, str(real / name))
    assert code == 0
    assert (report["format"], report["node_count"]) == (fmt, nodes)
    active = [m for m in report["models"] if m["active"]]
    assert len(active) == models
    assert all(m["folder"] and m["folder"].startswith("models/") for m in report["models"]), report["models"]
    assert "server" not in report
    code, out, err = run(capsys, str(real / name))
    assert (code, err) == (0, "")
    assert line_of(out, "format:").startswith(f"format: {fmt.upper()}, {nodes} nodes")


def test_kijai_wrapper_lists_its_packs_windows_paths_and_muted_nodes(
        real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(real / KIJAI))
    assert code == 0
    wrapper = line_of(out, "  kijai/ComfyUI-WanVideoWrapper: ")
    for cls in ("WanVideoModelLoader x2", "WanVideoSampler x2", "WanVideoBlockSwap", "CreateCFGScheduleFloatList",
                "LoadWanVideoT5TextEncoder"):
        assert cls in wrapper
    assert "WanVideoTextEmbedBridge" not in wrapper  # only a muted node uses it
    assert line_of(out, "  kijai/ComfyUI-KJNodes: ") == (
        "  kijai/ComfyUI-KJNodes: GetImageSizeAndCount, INTConstant x2, ImageResizeKJv2")
    assert line_of(out, "  Kosinkadink/ComfyUI-VideoHelperSuite: ").endswith("VHS_VideoCombine")
    high = line_of(out, "  WanVideo\\2_2\\Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors")
    assert "->  models/diffusion_models/" in high
    assert "22 WanVideoModelLoader" in high
    assert "lists it as 'WanVideo/2_2/Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors'" in out
    assert "->  models/vae/" in line_of(out, "  wanvideo\\Wan2_1_VAE_bf16.safetensors")
    assert "->  models/loras/" in line_of(out, "  WanVideo\\Lightx2v\\lightx2v_I2V_14B_480p")
    assert "->  models/text_encoders/" in line_of(out, "  umt5-xxl-enc-bf16.safetensors")
    muted = [line for line in out.splitlines() if line.startswith("  muted: ")]
    assert sorted(muted) == ["  muted: node 46 WanVideoTextEmbedBridge", "  muted: node 48 CLIPLoader",
                             "  muted: node 49 CLIPTextEncode", "  muted: node 50 CLIPTextEncode"]
    needs = line_of(out, "  they would also need: ")
    assert "WanVideoTextEmbedBridge (kijai/ComfyUI-WanVideoWrapper)" in needs
    assert "umt5_xxl_fp16.safetensors (models/text_encoders)" in needs
    assert not any(line.startswith("  umt5_xxl_fp16") for line in out.splitlines())  # not among active models


def test_zeezz7_api_export_lists_its_32_nodes_and_flattened_subgraph(
        real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = run_json(capsys, str(real / ZEEZZ7))
    assert code == 0
    assert report["node_count"] == 32
    assert sum(report["class_counts"].values()) == 32
    assert report["class_counts"]["ComfySwitchNode"] == 5
    assert report["packs"] == {"comfyanonymous/ComfyUI (core, newer than 0.8.0)": ["ComfyMathExpression"]}
    code, out, _ = run(capsys, str(real / ZEEZZ7))
    assert "ComfyMathExpression  (core nodes of a newer ComfyUI: update ComfyUI)" in out
    assert "git clone" not in out  # nothing to clone: the only non-core class needs a newer ComfyUI
    assert "(node 129:95 UNETLoader)" in line_of(out, "  wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors")
    assert line_of(out, "subgraphs:") == "subgraphs: 1 instance(s) flattened into 30 nodes (ids 'instance:inner')"
    assert "add --url" in out


def test_reggie_ui_shows_bypassed_node_subgraphs_and_frontend_only_nodes(
        real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(real / REGGIE_UI))
    assert code == 0
    assert line_of(out, "  bypassed: ") == "  bypassed: node 552 WanVideoTorchCompileSettings"
    assert "WanVideoTorchCompileSettings (kijai/ComfyUI-WanVideoWrapper)" in line_of(out, "  they would also need:")
    assert "WanVideoTorchCompileSettings" not in line_of(out, "  kijai/ComfyUI-WanVideoWrapper: ")
    assert line_of(out, "subgraphs:") == "subgraphs: 2 definitions, 2 instances, 11 inner nodes"
    assert line_of(out, "frontend-only").endswith(": Anything Everywhere, GetNode, SetNode")
    assert line_of(out, "  pythongosssss/ComfyUI-Custom-Scripts: ").endswith("PlaySound|pysssss")
    assert "->  models/diffusion_models/" in line_of(out, "  wan2.2_i2v_high_noise_14B_fp8_scaled")
    assert "add --url" in out  # a UI file is converted against a server and checked


def test_pt_nextgen_groups_easy_use_and_unknown_classes(real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(real / PT_NEXTGEN))
    assert code == 0
    easy = line_of(out, "  yolain/ComfyUI-Easy-Use: ")
    assert "easy anythingIndexSwitch x4" in easy
    assert "easy forLoopEnd x2" in easy
    assert line_of(out, "  unknown pack: ").startswith("  unknown pack: Float, Int x3")
    assert "->  models/clip_vision/" in line_of(out, "  clip_vision_h.safetensors")
    assert "->  models/diffusion_models/" in line_of(out, "  WAN2.2/wan2.2_i2v_high_noise_14B_fp8_scaled")


def test_core_only_examples_need_no_custom_nodes(real: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in (EXAMPLE_14B, EXAMPLE_5B, ERIKTRK):
        code, out, _ = run(capsys, str(real / name))
        assert code == 0
        assert "custom nodes: none (core ComfyUI nodes only)" in out
    code, out, _ = run(capsys, str(real / EXAMPLE_5B))
    assert "->  models/vae/" in line_of(out, "  wan2.2_vae.safetensors")
    assert "->  models/diffusion_models/" in line_of(out, "  wan2.2_ti2v_5B_fp16.safetensors")


# --------------------------------------------------------------------------- against the fake ComfyUI


def test_project_workflow_passes_against_the_fake_server(
        fake_server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(PROJECT_WORKFLOW), "--url", fake_server.url)
    assert (code, err) == (0, "")
    assert f"server {fake_server.url}: everything the workflow needs is installed" in out
    code, report = run_json(capsys, str(PROJECT_WORKFLOW), "--url", fake_server.url)
    assert code == 0
    assert report["server"]["problems"] == []
    assert report["server"]["exit_code"] == 0


def test_missing_models_exit_1_naming_files_and_folders(
        start_fake: Callable[..., FakeServer], capsys: pytest.CaptureFixture[str]) -> None:
    server = start_fake(env={"FAKE_COMFYUI_MODELS": "{}"})
    code, out, _ = run(capsys, str(PROJECT_WORKFLOW), "--url", server.url)
    assert code == 1
    assert "4 problem(s), each with its fix" in out
    for name in OFFICIAL_FILES:
        assert any(line.startswith("[model]") and repr(name) in line for line in out.splitlines()), name
    assert "fix: put it in <comfyui>/models/diffusion_models/" in out
    code, report = run_json(capsys, str(PROJECT_WORKFLOW), "--url", server.url)
    assert code == 1
    problems = report["server"]["problems"]
    assert sorted(p["value"] for p in problems) == sorted(OFFICIAL_FILES)
    assert {p["kind"] for p in problems} == {"model"}


def test_ui_file_with_url_is_converted_and_what_the_server_lacks_is_named(
        fake_server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(WRAPPER_UI), "--url", fake_server.url)
    assert code == 1
    assert err == ""
    assert "kijai/ComfyUI-WanVideoWrapper" in out  # the report still comes
    assert "UI to API conversion: 17 nodes, left out 9" in out
    assert "node 30 (WanVideoSampler): class 'WanVideoSampler' is not on the server" in out


def test_to_api_writes_the_converted_prompt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_convert import sampler_graph

    ui = tmp_path / "mine.json"
    ui.write_text(json.dumps(sampler_graph().data()), encoding="utf-8")
    out_file = tmp_path / "mine.api.json"
    code, out, err = run(capsys, str(ui), "--object-info", str(INFO_FILE), "--to-api", str(out_file))
    assert (code, err) == (1, "")  # converted, and checked against the saved object_info, which lacks the models
    assert "every node and input named" in out
    assert f"saved object_info {INFO_FILE}: 3 problem(s), each with its fix:" in out
    assert "model file 'vae.safetensors' not in models/vae" in out
    assert "not checked" not in out
    prompt = json.loads(out_file.read_text(encoding="utf-8"))
    assert prompt["2"]["inputs"]["seed"] == 42
    assert prompt["2"]["class_type"] == "KSampler"
    broken = sampler_graph()
    broken.nodes[5]["mode"] = 2
    ui.write_text(json.dumps(broken.data()), encoding="utf-8")
    code, report = run_json(capsys, str(ui), "--object-info", str(INFO_FILE), "--to-api", str(out_file))
    assert code == 1
    assert report["server"]["object_info"] == str(INFO_FILE)
    assert [(i["node_id"], i["input"]) for i in report["conversion"]["issues"]] == [("7", "vae")]
    assert "8" in json.loads(out_file.read_text(encoding="utf-8"))


def test_ui_file_to_api_without_a_server_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.unit.test_convert import sampler_graph

    ui = tmp_path / "mine.json"
    ui.write_text(json.dumps(sampler_graph().data()), encoding="utf-8")
    code, _out, err = run(capsys, str(ui), "--to-api", str(tmp_path / "x.json"))
    assert code == 2
    assert "UI format" in err
    assert "--url" in err
    assert not (tmp_path / "x.json").exists()


# --------------------------------------------------------------------------- bad input


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, str(tmp_path / "nope.json"))
    assert (code, out) == (2, "")
    assert "cannot read workflow" in err
    assert "No such file" in err
    assert "check the path" in err


def test_not_json_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    code, out, err = run(capsys, str(bad))
    assert (code, out) == (2, "")
    assert "Expecting property name" in err
    assert "JSON" in err


def test_json_of_neither_format_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "odd.json"
    odd.write_text("[1, 2]", encoding="utf-8")
    code, _, err = run(capsys, str(odd))
    assert code == 2
    assert "neither an API-format workflow" in err
    assert "re-save it from ComfyUI" in err


def test_unreachable_server_exits_2_with_the_cause(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # free once closed: nothing listens there
    code, out, err = run(capsys, str(PROJECT_WORKFLOW), "--url", f"http://127.0.0.1:{port}")
    assert code == 2
    assert "format: API, 15 nodes" in out
    assert f"cannot check against http://127.0.0.1:{port}" in err
    assert "cannot connect to ComfyUI" in err
    assert "--url" in err
    assert "--wan22-url" not in err


def test_bad_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, str(PROJECT_WORKFLOW), "--url", "127.0.0.1:8188")
    assert code == 2
    assert "bad ComfyUI URL '127.0.0.1:8188'" in err
    assert "http://HOST:PORT" in err


def test_an_api_file_is_checked_against_a_saved_object_info_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = json.loads(FAKE_INFO.read_text(encoding="utf-8"))
    saved = tmp_path / "object_info.json"
    saved.write_text(json.dumps(info), encoding="utf-8")
    code, out, err = run(capsys, str(PROJECT_WORKFLOW), "--object-info", str(saved))
    assert err == ""
    assert "not checked" not in out
    assert f"saved object_info {saved}: " in out
    assert code == (1 if "problem(s)" in out else 0)
    del info["KSamplerAdvanced"]
    saved.write_text(json.dumps(info), encoding="utf-8")
    code, out, _ = run(capsys, str(PROJECT_WORKFLOW), "--object-info", str(saved))
    assert code == 1
    assert "node class 'KSamplerAdvanced' is not installed on the server" in out
    code, out, _ = run(capsys, str(PROJECT_WORKFLOW))  # nothing to check against: it says how
    assert (code, out.splitlines()[-1]) == (0, "not checked against a server: add --url http://HOST:PORT of a "
                                               "running ComfyUI (or --object-info FILE, its saved /object_info) "
                                               "to check it")


def test_the_gguf_workflow_names_comfyui_gguf_its_pip_requirement_and_the_experts_folder(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, str(ROOT / "workflows" / "wan22_i2v_a14b_gguf.json"))
    assert code == 0
    assert line_of(out, "  city96/ComfyUI-GGUF: ") == (
        "  city96/ComfyUI-GGUF: UnetLoaderGGUF x2  (and pip install gguf into ComfyUI's interpreter)")
    assert "->  models/diffusion_models/  (node 1 UnetLoaderGGUF)" in line_of(
        out, "  Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf")
