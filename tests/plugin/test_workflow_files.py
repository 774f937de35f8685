"""--wan22-workflows: a user's workflow files (API or UI format) and ComfyUI's templates as tests."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "wan22_i2v_a14b.json"
FAKE_INFO = REPO / "tests" / "fake_comfyui" / "data" / "object_info.json"
Project = Callable[..., pytest.Pytester]
ONE_ROUND = ("--wan22-rounds=1", "--wan22-warmup-rounds=0")


def api_to_ui(prompt: dict[str, Any], object_info: dict[str, Any]) -> dict[str, Any]:
    """The editor's format of an API prompt: widget values in /object_info order, links as sockets."""
    nodes, links = [], []
    outputs: dict[str, list[dict[str, Any]]] = {}
    for node_id, node in prompt.items():
        info = object_info[node["class_type"]]
        outputs[node_id] = [{"name": t, "type": t, "links": []} for t in info["output"]]
    for node_id, node in prompt.items():
        info = object_info[node["class_type"]]
        specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        order = [*info.get("input_order", {}).get("required", []), *info.get("input_order", {}).get("optional", [])]
        widgets, inputs = [], []
        for name in order or list(specs):
            value = node["inputs"].get(name)
            head = specs[name][0]
            is_widget = isinstance(head, list) or head in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
            if isinstance(value, list):
                link_id = len(links) + 1
                links.append([link_id, int(value[0]), value[1], int(node_id), len(inputs), "*"])
                outputs[value[0]][value[1]]["links"].append(link_id)
                entry: dict[str, Any] = {"name": name, "type": "*", "link": link_id}
                if is_widget:
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            if is_widget:
                widgets.append(value if not isinstance(value, list) else 0)
                if name in ("seed", "noise_seed"):
                    widgets.append("fixed")
        nodes.append({"id": int(node_id), "type": node["class_type"], "mode": 0, "inputs": inputs,
                      "outputs": outputs[node_id], "widgets_values": widgets,
                      "title": node.get("_meta", {}).get("title")})
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "version": 0.4}


@pytest.fixture
def flows(pytester: pytest.Pytester) -> Path:
    folder = pytester.path / "flows"
    folder.mkdir()
    (folder / "notes.json").write_text('{"not": "a workflow"}', encoding="utf-8")
    return folder


def test_api_and_ui_files_run_one_test_each_with_readable_ids(wan22_project: Project, flows: Path) -> None:
    prompt = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    (flows / "my clip (api).json").write_text(json.dumps(prompt), encoding="utf-8")
    ui = api_to_ui(prompt, json.loads(FAKE_INFO.read_text(encoding="utf-8")))
    (flows / "my_clip_ui.json").write_text(json.dumps(ui), encoding="utf-8")
    p = wan22_project("")
    result = p.runpytest("-v", "-m", "rtx5090", f"--wan22-workflows={flows}", *ONE_ROUND)
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*collected 2 items", "*test_workflow[[]my_clip_api[]] PASSED*",
                                 "*test_workflow[[]my_clip_ui[]] PASSED*"])


def test_sidecar_sets_tiers_rounds_and_derives_variants(wan22_project: Project, flows: Path) -> None:
    (flows / "clip.json").write_text(WORKFLOW.read_text(encoding="utf-8"), encoding="utf-8")
    (flows / "clip.wan22.toml").write_text(textwrap.dedent("""
        tiers = ["rtx5090"]
        rounds = 1
        warmup_rounds = 0
        [[variants]]
        label = "short"
        duration = 5
        schedule = "lightx2v_4step"
        [[variants]]
        interpolate = 2
    """), encoding="utf-8")
    (flows / "other.json").write_text(WORKFLOW.read_text(encoding="utf-8"), encoding="utf-8")
    (flows / "other.wan22.toml").write_text('tiers = ["rtx4090"]\n', encoding="utf-8")
    p = wan22_project("")
    result = p.runpytest("-v", "-rs", f"--wan22-workflows={flows}", "-p", "no:randomly")
    result.stdout.fnmatch_lines(["*test_workflow[[]clip[]] PASSED*", "*test_workflow[[]clip-short[]] PASSED*",
                                 "*test_workflow[[]clip-interpolate2[]] SKIPPED*",
                                 "*test_workflow[[]other[]] SKIPPED*", "*short test summary*",
                                 "*high_low-5s-640p-default-rife2x cannot run on this server:",
                                 "*'RIFE VFI' is not installed on the server*",
                                 "*needs tier rtx4090*"])
    records = list((p.path / "logs").rglob("records/*.json")) if (p.path / "logs").exists() else []
    assert all(".0.json" in r.name for r in records)  # one round each, no warm-up


def test_ui_file_that_cannot_be_converted_fails_before_anything_runs(wan22_project: Project, flows: Path) -> None:
    prompt = json.loads(WORKFLOW.read_text(encoding="utf-8"))
    ui = api_to_ui(prompt, json.loads(FAKE_INFO.read_text(encoding="utf-8")))
    vae = next(n for n in ui["nodes"] if n["type"] == "VAELoader")
    vae["mode"] = 2  # muted: VAEDecode and WanImageToVideo lose their vae
    (flows / "broken.json").write_text(json.dumps(ui), encoding="utf-8")
    p = wan22_project("")
    result = p.runpytest(f"--wan22-workflows={flows / 'broken.json'}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cannot be converted to API format without guessing*nothing was run*",
                                 "*(VAEDecode) input 'vae'*muted*"])
    assert "prompt_id" not in result.stdout.str()


def test_templates_are_found_in_the_interpreter_under_test(wan22_project: Project, pytester: pytest.Pytester,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    site = pytester.path / "site"
    pkg = site / "comfyui_workflow_templates_media_video"
    (pkg / "templates").mkdir(parents=True)
    (pkg / "__init__.py").write_text("", encoding="utf-8")
    (pkg / "templates" / "video_wan2_2_fake_i2v.json").write_text(WORKFLOW.read_text(encoding="utf-8"),
                                                                 encoding="utf-8")
    (pkg / "templates" / "image_other.json").write_text("{}", encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(site))
    p = wan22_project("")
    result = p.runpytest("-v", "--wan22-workflows=template:video_wan2_2_fake_*", *ONE_ROUND)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_workflow[[]video_wan2_2_fake_i2v[]] PASSED*"])
    result = p.runpytest("--wan22-workflows=template:video_wan9_*")
    result.stderr.fnmatch_lines(["*no template matches 'video_wan9_*.json'*video_wan2_2_14B_i2v*"])


def test_a_missing_path_is_a_usage_error_naming_the_option(wan22_project: Project, tmp_path: Path) -> None:
    p = wan22_project("")
    result = p.runpytest(f"--wan22-workflows={tmp_path / 'nope'}")
    result.stderr.fnmatch_lines(["*--wan22-workflows (ini wan22_workflows, env WAN22_WORKFLOWS)*does not exist*"])


def test_a_file_in_the_folder_that_is_not_json_stops_the_session_naming_it(wan22_project: Project,
                                                                           flows: Path) -> None:
    (flows / "clip.json").write_text(WORKFLOW.read_text(encoding="utf-8"), encoding="utf-8")
    (flows / "broken.json").write_text('{"1": {"class_type": "KSampler", "inputs": {', encoding="utf-8")
    p = wan22_project("")
    result = p.runpytest(f"--wan22-workflows={flows}", *ONE_ROUND)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --wan22-workflows (ini wan22_workflows, env WAN22_WORKFLOWS) '{flows}': "
                                 f"{flows / 'broken.json'}: not valid JSON (* at line 1, column *); fix the file "
                                 "or export it*; or move it out of the folder"])
    assert "notes.json" not in result.stderr.str()  # JSON that is not a workflow is left out, as before


WRAPPER_EXAMPLE = REPO / "tests" / "data" / "workflows" / "wanvideo_2_2_I2V_A14B_example_WIP.json"
WRAPPER_MODELS = {  # the example's files, listed by the server with its platform's separator
    "diffusion_models": ["WanVideo/2_2/Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors",
                         "WanVideo/2_2/Wan2_2-I2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors"],
    "loras": ["WanVideo/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"],
    "vae": ["wanvideo/Wan2_1_VAE_bf16.safetensors"], "text_encoders": ["umt5-xxl-enc-bf16.safetensors"]}


def test_a_wanvideowrapper_workflow_runs_with_its_steps_from_the_samplers_last_bar_and_its_video_checked(
        wan22_project: Project) -> None:
    """kijai's Wan 2.2 i2v example: Windows sub-folder names, two WanVideoSampler passes split by primitives (6
    steps at 3), whose node first reports loading the weights; VHS_VideoCombine writes its clip to temp/."""
    p = wan22_project("", ini="wan22_log_dir = logs", fake_env={
        "FAKE_COMFYUI_CUSTOM_NODES": "wanvideowrapper", "FAKE_COMFYUI_MODELS": json.dumps(WRAPPER_MODELS)})
    result = p.runpytest("-v", "-m", "rtx5090", f"--wan22-workflows={WRAPPER_EXAMPLE}", *ONE_ROUND)
    result.assert_outcomes(passed=1)
    (path,) = (p.path / "logs" / "main" / "records").glob("*.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["outcome"] == "success"
    assert [(s["node_id"], s["steps"], len(s["step_times"])) for s in record["passes"]] == [("27", 3, 3), ("90", 3, 3)]
    (video,) = record["outputs"]
    assert (video["type"], video["frames"], video["fps"]) == ("temp", 81, 16.0)
    assert record["variant_id"] == "high_low-5s-720x720-6steps_cfgna_split3_lora-compile"
