"""Workflow loading, selectors, the Variant builder and its ids, and what real workflows need."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.errors import SelectorError, WorkflowError
from pytest_wan22.workflows import (
    Variant,
    Workflow,
    load_workflow,
    node_titles,
    sampler_nodes,
    workflow_needs,
)
from tests.fake_comfyui.harness import (
    CAPTURES,
    OWN_WORKFLOWS,
    needs_real_workflows,
    official_template,
    real_workflows_dir,
)

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / "workflows" / "wan22_i2v_a14b.json"
REAL = real_workflows_dir() or Path("third-party-workflows-not-given")
OFFICIAL_14B = "video_wan2_2_14B_i2v.json"
OFFICIAL_5B = "video_wan2_2_5B_ti2v.json"

HIGH = "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
LOW = "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors"
TITLES = [
    "Load Diffusion Model (high noise)", "Load Diffusion Model (low noise)", "Model Sampling (high noise)",
    "Model Sampling (low noise)", "Load Text Encoder", "Positive Prompt", "Negative Prompt", "Load VAE",
    "Start Image", "Wan Image To Video", "KSampler (high noise)", "KSampler (low noise)", "VAE Decode",
    "Create Video", "Save Video",
]


@pytest.fixture(scope="module")
def wf() -> Workflow:
    return load_workflow(WORKFLOW)


@pytest.fixture
def base(wf: Workflow) -> Variant:
    return Variant(wf)


def by_title(prompt: dict[str, Any], title: str) -> dict[str, Any]:
    found = [n for n in prompt.values() if n.get("_meta", {}).get("title") == title]
    assert len(found) == 1, f"{len(found)} nodes titled {title!r}"
    return found[0]


def ids_by_title(prompt: dict[str, Any]) -> dict[str, str]:
    return {n["_meta"]["title"]: i for i, n in prompt.items()}


def expert_of_first_pass(prompt: dict[str, Any]) -> str:
    """Follow the first sampler's model chain to the UNETLoader and return its file name."""
    node = prompt[sampler_nodes(prompt)[0]]
    while node["class_type"] != "UNETLoader":
        node = prompt[node["inputs"]["model"][0]]
    return str(node["inputs"]["unet_name"])


def write(tmp_path: Path, data: Any, name: str = "wf.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the shipped workflow


def test_workflow_matches_the_official_template(wf: Workflow) -> None:
    g = wf.graph
    assert [n.title for n in wf.nodes()] == TITLES
    assert len({n.title for n in wf.nodes()}) == len(g)
    assert by_title(g, "Load Diffusion Model (high noise)")["inputs"]["unet_name"] == HIGH
    assert by_title(g, "Load Diffusion Model (low noise)")["inputs"]["unet_name"] == LOW
    assert by_title(g, "Load Text Encoder")["inputs"] == {
        "clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan", "device": "default"}
    assert by_title(g, "Load VAE")["inputs"]["vae_name"] == "wan_2.1_vae.safetensors"
    assert by_title(g, "Start Image")["inputs"]["image"] == "wan22_i2v_start.png"
    wan = by_title(g, "Wan Image To Video")["inputs"]
    assert (wan["width"], wan["height"], wan["length"]) == (640, 640, 81)
    assert [by_title(g, t)["inputs"]["shift"] for t in TITLES[2:4]] == [5.0, 5.0]
    high, low = by_title(g, "KSampler (high noise)")["inputs"], by_title(g, "KSampler (low noise)")["inputs"]
    for s in (high, low):
        assert (s["sampler_name"], s["scheduler"], s["steps"], s["cfg"]) == ("euler", "simple", 20, 3.5)
    assert (high["start_at_step"], high["end_at_step"]) == (0, 10)
    assert (high["add_noise"], high["return_with_leftover_noise"]) == ("enable", "enable")
    assert (low["start_at_step"], low["end_at_step"], low["add_noise"]) == (10, 10000, "disable")
    assert by_title(g, "Create Video")["inputs"]["fps"] == 16.0
    assert sampler_nodes(g) == [wf.select("KSampler (high noise)"), wf.select("KSampler (low noise)")]


def test_input_names_match_what_comfyui_080_ran(wf: Workflow) -> None:
    tiny = json.loads((CAPTURES / "wan22_i2v_tiny_api.json").read_text())
    ours = {n["class_type"]: set(n["inputs"]) for n in wf.graph.values()}
    theirs = {n["class_type"]: set(n["inputs"]) for n in tiny.values()}
    assert ours == theirs


def test_base_variant_id_and_expected_output(base: Variant) -> None:
    assert base.variant_id == "high_low-5s-640p-default"
    assert base.id == base.variant_id
    out = base.expected_output()
    assert (out.frames, out.fps, out.width, out.height, out.seconds) == (81, 16.0, 640, 640, 5.0)


# --------------------------------------------------------------------------- loading errors


def test_ui_format_is_refused_with_the_export_hint(tmp_path: Path) -> None:
    path = write(tmp_path, {"last_node_id": 2, "nodes": [{"id": 1, "type": "LoadImage"}], "links": []})
    with pytest.raises(WorkflowError, match=r"UI-format.*object_info=.*--to-api.*Export \(API\)") as info:
        load_workflow(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("path", [official_template(OFFICIAL_14B), official_template(OFFICIAL_5B),
                                  OWN_WORKFLOWS / "wrapper_ui.json"], ids=lambda p: p.name)
def test_ui_exports_are_refused(path: Path) -> None:
    with pytest.raises(WorkflowError, match="UI-format"):
        load_workflow(path)


@needs_real_workflows
@pytest.mark.parametrize("name", ["gh-comfyanonymous-ComfyUI_examples__image_to_video_wan22_14B.json",
                                  "gh-Reggie-sun-AI-VIDEO__wan22_i2v_ui.json"])
def test_real_ui_exports_are_refused(name: str) -> None:
    with pytest.raises(WorkflowError, match="UI-format"):
        load_workflow(REAL / name)


@pytest.mark.parametrize(("data", "expected"), [
    ("{not json", r"not valid JSON .*line 1"),
    ([1, 2], r"JSON object of node id"),
    ({}, r"no nodes"),
    ({"1": {"inputs": {}}}, r"node '1' has no class_type"),
    ({"1": {"class_type": "VAEDecode"}}, r"node '1' \(VAEDecode\) has no inputs"),
    ({"1": {"class_type": "VAEDecode", "inputs": {"vae": ["9", 0]}}}, r"links to node '9', which is not in"),
    ({"1": {"class_type": "VAELoader", "inputs": {}},
      "2": {"class_type": "VAEDecode", "inputs": {"vae": ["1", "0"]}}}, r"input 'vae' is \['1', '0'\]"),
    ({"1": {"class_type": "VAELoader", "inputs": {}},
      "2": {"class_type": "VAEDecode", "inputs": {"vae": ["1", 0, 1]}}}, r"must be \[\"<node id>\""),
    ({"1": {"class_type": "VAELoader", "inputs": {}},
      "2": {"class_type": "VAEDecode", "inputs": {"vae": [1, 0]}}}, r"as a number.*\[\"1\", 0\]"),
    ({"1": "VAELoader"}, r"node '1' is str"),
])
def test_malformed_files_name_file_node_and_fix(tmp_path: Path, data: Any, expected: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(WorkflowError, match=expected) as info:
        load_workflow(path)
    assert str(path) in str(info.value)


def test_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="cannot read workflow"):
        load_workflow(tmp_path / "nope.json")


def test_prompt_wrapper_is_accepted(tmp_path: Path, wf: Workflow) -> None:
    path = write(tmp_path, {"prompt": wf.graph, "client_id": "x"}, "wrapped.json")
    loaded = load_workflow(path)
    assert loaded.graph == wf.graph
    assert loaded.name == "wrapped"
    assert loaded.digest == wf.digest


# --------------------------------------------------------------------------- immutability and selectors


def test_workflow_is_immutable_and_hands_out_copies(wf: Workflow) -> None:
    g = wf.graph
    g["1"]["inputs"]["unet_name"] = "changed"
    g["11"]["inputs"]["model"][0] = "4"
    del g["15"]
    assert wf.graph["1"]["inputs"]["unet_name"] == HIGH
    assert wf.graph["11"]["inputs"]["model"] == ["3", 0]
    assert "15" in wf.to_prompt()
    assert wf.to_prompt() is not wf.to_prompt()
    node = wf.node("Load VAE")
    node["inputs"]["vae_name"] = "x"
    assert wf.node("Load VAE")["inputs"]["vae_name"] == "wan_2.1_vae.safetensors"
    with pytest.raises(AttributeError):
        wf.name = "other"  # type: ignore[misc]


def test_workflow_does_not_share_the_callers_dict() -> None:
    source = {"1": {"class_type": "VAELoader", "inputs": {"vae_name": "a"}}}
    w = Workflow(source, name="w")
    source["1"]["inputs"]["vae_name"] = "b"
    assert w.graph["1"]["inputs"]["vae_name"] == "a"


def test_selectors_by_title_class_and_id(wf: Workflow) -> None:
    assert wf.select("Load VAE") == "8"
    assert wf.select("class:WanImageToVideo") == "10"
    assert wf.select("id:12") == "12"
    assert wf.select_all("class:UNETLoader") == ("1", "2")
    assert wf.select_all("Nope") == ()


@pytest.mark.parametrize(("selector", "expected"), [
    ("Load Vae", r"matched no node.*'Load VAE' \(VAELoader\)"),
    ("class:RIFE VFI", r"matched no node"),
    ("id:99", r"matched no node"),
    ("class:UNETLoader", r"matched 2 nodes.*'Load Diffusion Model \(high noise\)'.*unique _meta.title"),
    ("", r"not a non-empty string"),
])
def test_selector_errors_list_candidate_titles(wf: Workflow, selector: str, expected: str) -> None:
    with pytest.raises(SelectorError, match=expected) as info:
        wf.select(selector)
    if selector:
        assert "KSampler (low noise)" in str(info.value)


def test_variant_is_immutable(base: Variant) -> None:
    before = base.build()
    changed = base.duration(10).pass_order("low_high").schedule("lightx2v_4step").torch_compile()
    changed = changed.interpolate()
    assert base.build() == before
    assert base.variant_id == "high_low-5s-640p-default"
    assert changed is not base
    built = changed.build()
    built["1"]["inputs"]["unet_name"] = "x"
    assert changed.build()["1"]["inputs"]["unet_name"] == HIGH
    with pytest.raises(AttributeError):
        base._state = None  # type: ignore[misc]
    described = changed.describe()
    described["steps"] = 99
    assert changed.describe()["steps"] == 4


# --------------------------------------------------------------------------- variant ids


@pytest.mark.parametrize("order", ["high_low", "low_high"])
@pytest.mark.parametrize("seconds", [5, 10])
@pytest.mark.parametrize("rife", [False, True])
def test_ids_are_readable(base: Variant, order: str, seconds: int, rife: bool) -> None:
    v = base.pass_order(order).duration(seconds)  # type: ignore[arg-type]
    if rife:
        v = v.interpolate(2)
    assert v.variant_id == f"{order}-{seconds}s-640p-default" + ("-rife2x" if rife else "")


def test_pass_order_duration_rife_grid_gives_distinct_ids_and_digests(base: Variant) -> None:
    grid = [base.pass_order(o).duration(s) for o in ("high_low", "low_high") for s in (5, 10)]  # type: ignore[arg-type]
    grid += [v.interpolate() for v in grid]
    assert len({v.variant_id for v in grid}) == 8
    assert len({v.digest for v in grid}) == 8


def test_ids_do_not_depend_on_call_order_or_file_path(base: Variant, wf: Workflow, tmp_path: Path) -> None:
    a = base.duration(10).interpolate().torch_compile().pass_order("low_high")
    b = base.pass_order("low_high").torch_compile().interpolate().duration(10)
    assert a == b
    assert (a.variant_id, a.digest) == (b.variant_id, b.digest)
    assert a.variant_id == "low_high-10s-640p-default-compile-rife2x"
    moved = load_workflow(write(tmp_path, wf.graph, "elsewhere.json"))
    c = Variant(moved).duration(10).interpolate().torch_compile().pass_order("low_high")
    assert (c.variant_id, c.digest) == (a.variant_id, a.digest)


def test_digest_follows_the_graph_not_the_seed(base: Variant, wf: Workflow) -> None:
    assert base.seed(1).digest == base.seed(2).digest == base.digest
    assert base.seed(1).variant_id == base.variant_id
    assert base.models({"high": "other.safetensors"}).digest != base.digest
    assert base.models({"high": "other.safetensors"}).variant_id == base.variant_id
    edited = wf.graph
    edited["6"]["inputs"]["text"] = "another prompt"
    assert Variant(Workflow(edited, name=wf.name)).variant_id == base.variant_id
    assert Variant(Workflow(edited, name=wf.name)).digest != base.digest


# --------------------------------------------------------------------------- builder methods


def test_pass_order_low_high_swaps_the_experts(base: Variant) -> None:
    assert expert_of_first_pass(base.build()) == HIGH
    swapped = base.pass_order("low_high")
    p = swapped.build()
    assert expert_of_first_pass(p) == LOW
    assert by_title(p, "Model Sampling (high noise)")["inputs"]["model"] == ["2", 0]
    assert by_title(p, "Model Sampling (low noise)")["inputs"]["model"] == ["1", 0]
    assert swapped.describe()["pass_order"] == "low_high"
    assert swapped.pass_order("high_low") == base
    with pytest.raises(WorkflowError, match="'high_low' or 'low_high'"):
        base.pass_order("sideways")  # type: ignore[arg-type]


def test_low_high_keeps_each_lora_with_its_expert(base: Variant) -> None:
    p = base.schedule("lightx2v_4step").pass_order("low_high").build()
    first = p[by_title(p, "Model Sampling (high noise)")["inputs"]["model"][0]]
    assert first["_meta"]["title"] == "LoRA (low noise)"
    assert first["inputs"]["model"] == ["2", 0]
    assert expert_of_first_pass(p) == LOW


@pytest.mark.parametrize(("seconds", "fps", "length"), [(5, 16, 81), (10, 16, 161), (5, 24, 121)])
def test_duration_sets_length_and_fps(base: Variant, seconds: int, fps: int, length: int) -> None:
    v = base.duration(seconds, fps=fps)
    p = v.build()
    assert by_title(p, "Wan Image To Video")["inputs"]["length"] == length
    assert by_title(p, "Create Video")["inputs"]["fps"] == fps
    assert v.variant_id.split("-")[1] == f"{seconds}s"
    assert v.expected_output().frames == length


@pytest.mark.parametrize(("seconds", "fps"), [(3, 15), (0, 16), (5, -1)])
def test_duration_refuses_lengths_wan_cannot_make(base: Variant, seconds: int, fps: int) -> None:
    with pytest.raises(WorkflowError, match="duration"):
        base.duration(seconds, fps=fps)


@pytest.mark.parametrize(("w", "h", "label"), [(832, 480, "480p"), (640, 640, "640p"), (1280, 720, "720p"),
                                               (1024, 576, "1024x576")])
def test_resolution_and_its_label(base: Variant, w: int, h: int, label: str) -> None:
    v = base.resolution(w, h)
    wan = by_title(v.build(), "Wan Image To Video")["inputs"]
    assert (wan["width"], wan["height"]) == (w, h)
    assert v.variant_id == f"high_low-5s-{label}-default"
    assert v.image_size() == (w, h)


def test_resolution_must_be_multiples_of_16(base: Variant) -> None:
    with pytest.raises(WorkflowError, match="multiples of 16"):
        base.resolution(650, 480)


def test_schedule_lightx2v_inserts_loras_after_each_unet(base: Variant) -> None:
    v = base.schedule("lightx2v_4step")
    p = v.build()
    ids = ids_by_title(p)
    lora_h, lora_l = by_title(p, "LoRA (high noise)"), by_title(p, "LoRA (low noise)")
    assert lora_h == {"class_type": "LoraLoaderModelOnly", "_meta": {"title": "LoRA (high noise)"},
                      "inputs": {"model": [ids["Load Diffusion Model (high noise)"], 0],
        "lora_name": "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors", "strength_model": 1.0}}
    assert lora_l["inputs"]["lora_name"] == "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"
    assert by_title(p, "Model Sampling (high noise)")["inputs"]["model"] == [ids["LoRA (high noise)"], 0]
    assert by_title(p, "Model Sampling (low noise)")["inputs"]["model"] == [ids["LoRA (low noise)"], 0]
    high, low = by_title(p, "KSampler (high noise)")["inputs"], by_title(p, "KSampler (low noise)")["inputs"]
    assert (high["steps"], high["cfg"], high["start_at_step"], high["end_at_step"]) == (4, 1.0, 0, 2)
    assert (low["steps"], low["cfg"], low["start_at_step"], low["end_at_step"]) == (4, 1.0, 2, 10000)
    assert v.variant_id == "high_low-5s-640p-lightx2v_4step"
    assert v.schedule("lightx2v_4step") == v
    assert v.schedule("default").build() == base.build()


def test_custom_schedule(base: Variant) -> None:
    v = base.schedule(steps=8, cfg=1, split=3)
    p = v.build()
    high, low = by_title(p, "KSampler (high noise)")["inputs"], by_title(p, "KSampler (low noise)")["inputs"]
    assert (high["steps"], high["cfg"], high["end_at_step"], low["start_at_step"]) == (8, 1.0, 3, 3)
    assert v.variant_id == "high_low-5s-640p-8steps_cfg1_split3"
    assert base.schedule(steps=6).describe()["split"] == 3
    assert not any(n["class_type"] == "LoraLoaderModelOnly" for n in p.values())


@pytest.mark.parametrize("kwargs", [{"name": "turbo"}, {}, {"name": "default", "steps": 4},
                                    {"steps": 4, "split": 4}, {"steps": 4, "cfg": -1}])
def test_schedule_refuses_bad_requests(base: Variant, kwargs: dict[str, Any]) -> None:
    name = kwargs.pop("name", None)
    with pytest.raises(WorkflowError, match="schedule"):
        base.schedule(name, **kwargs)


def test_torch_compile_wraps_each_sampler_model(base: Variant) -> None:
    v = base.torch_compile()
    p = v.build()
    ids = ids_by_title(p)
    for suffix in ("high noise", "low noise"):
        comp = by_title(p, f"Torch Compile ({suffix})")
        assert comp["class_type"] == "TorchCompileModel"
        assert comp["inputs"] == {"model": [ids[f"Model Sampling ({suffix})"], 0], "backend": "inductor"}
        assert by_title(p, f"KSampler ({suffix})")["inputs"]["model"] == [ids[f"Torch Compile ({suffix})"], 0]
    assert v.variant_id == "high_low-5s-640p-default-compile"
    assert base.torch_compile("cudagraphs").variant_id.endswith("-compile_cudagraphs")
    with pytest.raises(WorkflowError, match="inductor"):
        base.torch_compile("tensorrt")


def test_interpolate_rife_between_decode_and_video(base: Variant) -> None:
    v = base.interpolate(2)
    p = v.build()
    ids = ids_by_title(p)
    vfi = by_title(p, "Interpolate Frames")
    assert vfi == {"class_type": "RIFE VFI", "_meta": {"title": "Interpolate Frames"}, "inputs": {
        "ckpt_name": "rife47.pth", "frames": [ids["VAE Decode"], 0], "clear_cache_after_n_frames": 10,
        "multiplier": 2, "fast_mode": True, "ensemble": True, "scale_factor": 1.0,
        "dtype": "float32", "torch_compile": False, "batch_size": 1}}
    video = by_title(p, "Create Video")["inputs"]
    assert video["images"] == [ids["Interpolate Frames"], 0]
    assert video["fps"] == 32.0
    out = v.expected_output()
    assert (out.frames, out.fps, out.seconds) == (161, 32.0, 5.0)
    assert v.variant_id == "high_low-5s-640p-default-rife2x"


def test_interpolate_multiplier_and_duration_compose(base: Variant) -> None:
    v = base.duration(10).interpolate(3)
    out = v.expected_output()
    assert (out.frames, out.fps, out.seconds) == (481, 48.0, 10.0)
    assert v.variant_id == "high_low-10s-640p-default-rife3x"
    assert by_title(v.build(), "Wan Image To Video")["inputs"]["length"] == 161


def test_interpolate_core_nodes(base: Variant) -> None:
    v = base.interpolate(2, node="core").models({"vfi": "film_net_fp32.pt"})
    p = v.build()
    ids = ids_by_title(p)
    assert by_title(p, "Load Frame Interpolation Model") == {
        "class_type": "FrameInterpolationModelLoader", "inputs": {"model_name": "film_net_fp32.pt"},
        "_meta": {"title": "Load Frame Interpolation Model"}}
    assert by_title(p, "Interpolate Frames")["inputs"] == {
        "interp_model": [ids["Load Frame Interpolation Model"], 0], "images": [ids["VAE Decode"], 0],
        "multiplier": 2}
    assert v.variant_id.endswith("-interp2x")
    for bad in ({"node": "FILM VFI"}, {"multiplier": 1}):
        with pytest.raises(WorkflowError, match="interpolate"):
            base.interpolate(**bad)  # type: ignore[arg-type]


def test_seed_touches_only_the_noise_adding_pass(base: Variant) -> None:
    p = base.seed(123456789).build()
    assert by_title(p, "KSampler (high noise)")["inputs"]["noise_seed"] == 123456789
    low_seed = base.build()["12"]["inputs"]["noise_seed"]
    assert by_title(p, "KSampler (low noise)")["inputs"]["noise_seed"] == low_seed
    assert base.seed(5).seed_value == 5
    for bad in (-1, 2**64, True):
        with pytest.raises(WorkflowError, match="seed"):
            base.seed(bad)


def test_models_swap_by_role(base: Variant) -> None:
    v = base.schedule("lightx2v_4step").models({
        "high": "h.safetensors", "low": "l.safetensors", "text_encoder": "t.safetensors",
        "vae": "v.safetensors", "image": "start.png", "lora_high": "lh.safetensors",
        "lora_low": "ll.safetensors"})
    p = v.build()
    assert by_title(p, "Load Diffusion Model (high noise)")["inputs"]["unet_name"] == "h.safetensors"
    assert by_title(p, "Load Diffusion Model (low noise)")["inputs"]["unet_name"] == "l.safetensors"
    assert by_title(p, "Load Text Encoder")["inputs"]["clip_name"] == "t.safetensors"
    assert by_title(p, "Load VAE")["inputs"]["vae_name"] == "v.safetensors"
    assert by_title(p, "Start Image")["inputs"]["image"] == "start.png"
    assert by_title(p, "LoRA (high noise)")["inputs"]["lora_name"] == "lh.safetensors"
    assert by_title(p, "LoRA (low noise)")["inputs"]["lora_name"] == "ll.safetensors"
    assert v.variant_id == "high_low-5s-640p-lightx2v_4step"
    assert v.describe()["models"]["lora_low"] == "ll.safetensors"
    with pytest.raises(WorkflowError, match="model role 'unet'"):
        base.models({"unet": "x"})


def test_models_ignores_roles_the_variant_lacks(base: Variant) -> None:
    v = base.models({"lora_high": "lh.safetensors", "lora_low": "ll.safetensors", "vfi": "rife49.pth"})
    assert v.build() == base.build()
    assert v.digest == base.digest


def test_models_follow_the_expert_under_low_high(base: Variant) -> None:
    p = base.pass_order("low_high").models({"high": "h.safetensors", "low": "l.safetensors"}).build()
    assert expert_of_first_pass(p) == "l.safetensors"


def test_precomputed_conditioning_matches_the_cpu_capture(base: Variant) -> None:
    v = base.precomputed_conditioning("wan22_tiny_cond")
    p = v.build()
    capture = json.loads((CAPTURES / "wan22_i2v_tiny_precomputed_cond_api.json").read_text())
    for node_id in ("5", "6", "7"):
        assert p[node_id]["class_type"] == capture[node_id]["class_type"]
        assert p[node_id]["inputs"] == capture[node_id]["inputs"]
    assert p["6"]["_meta"]["title"] == "Positive Prompt"
    assert p["7"]["_meta"]["title"] == "Negative Prompt"
    assert not any(n["class_type"] in ("CLIPLoader", "CLIPTextEncode") for n in p.values())
    assert by_title(p, "Wan Image To Video")["inputs"]["positive"] == ["6", 0]
    assert v.variant_id == base.variant_id
    assert v.digest != base.digest
    assert v.models({"text_encoder": "ignored.safetensors"}).build() == p


def test_label_and_set(base: Variant) -> None:
    v = base.label("sage").label("fp16acc").label("sage")
    assert v.variant_id == "high_low-5s-640p-default-sage-fp16acc"
    with pytest.raises(WorkflowError, match="letters, digits"):
        base.label("a-b")
    s = base.set("KSampler (high noise)", "sampler_name", "uni_pc", label="unipc")
    assert by_title(s.build(), "KSampler (high noise)")["inputs"]["sampler_name"] == "uni_pc"
    assert s.variant_id.endswith("-unipc")
    assert s.set("KSampler (high noise)", "sampler_name", "euler").build() == base.build()
    with pytest.raises(WorkflowError, match="has no input 'sampler'"):
        base.set("KSampler (high noise)", "sampler", "x").build()
    assert by_title(base.set("Load VAE", "extra", 1, create=True).build(), "Load VAE")["inputs"]["extra"] == 1
    with pytest.raises(SelectorError):
        base.set("Nope", "x", 1).build()


def test_set_can_target_nodes_other_methods_add(base: Variant) -> None:
    v = base.interpolate().set("Interpolate Frames", "fast_mode", False)
    assert by_title(v.build(), "Interpolate Frames")["inputs"]["fast_mode"] is False


def test_set_that_changes_a_measured_parameter_changes_the_id(base: Variant) -> None:
    v = base.set("KSampler (high noise)", "steps", 30).set("KSampler (low noise)", "steps", 30)
    assert v.variant_id == "high_low-5s-640p-30steps_cfg3.5_split10"


def test_scaled_shrinks_for_the_cpu_tier(base: Variant) -> None:
    v = base.schedule("lightx2v_4step").interpolate().scaled(width=64, height=64, frames=9, steps=4, split=2)
    p = v.build()
    wan = by_title(p, "Wan Image To Video")["inputs"]
    assert (wan["width"], wan["height"], wan["length"]) == (64, 64, 9)
    assert v.image_size() == (64, 64)
    assert v.expected_output().frames == 17
    d = base.scaled(steps=4, split=2).describe()
    assert (d["steps"], d["split"]) == (4, 2)
    with pytest.raises(WorkflowError, match="scaled"):
        base.scaled(depth=3)


def test_describe_reports_the_measured_parameters(base: Variant) -> None:
    d = base.schedule("lightx2v_4step").pass_order("low_high").torch_compile().interpolate().duration(10) \
        .precomputed_conditioning("cond").seed(3).label("x").describe()
    assert {k: d[k] for k in ("steps", "cfg", "split", "sampler", "scheduler", "width", "height", "length",
                              "fps", "seconds", "pass_order", "compile", "interpolation", "output_frames",
                              "output_fps", "seed", "precomputed_conditioning", "schedule", "labels")} == {
        "steps": 4, "cfg": 1.0, "split": 2, "sampler": "euler", "scheduler": "simple", "width": 640,
        "height": 640, "length": 161, "fps": 16.0, "seconds": 10.0, "pass_order": "low_high",
        "compile": "inductor", "interpolation": {"node": "RIFE VFI", "multiplier": 2}, "output_frames": 321,
        "output_fps": 32.0, "seed": 3, "precomputed_conditioning": "cond", "schedule": "lightx2v_4step",
        "labels": ["x"]}
    assert d["shift"] == [5.0, 5.0]
    assert len(d["lora"]) == 2


# --------------------------------------------------------------------------- helpers


def test_sampler_nodes_follow_the_latent_chain_not_the_ids() -> None:
    g = {
        "1": {"class_type": "KSamplerAdvanced", "inputs": {"latent_image": ["2", 0], "start_at_step": 10}},
        "2": {"class_type": "KSamplerAdvanced", "inputs": {"latent_image": ["3", 0], "start_at_step": 0}},
        "3": {"class_type": "EmptyLatentImage", "inputs": {}},
        "4": {"class_type": "VAEDecode", "inputs": {"samples": ["1", 0]}, "_meta": {"title": "Decode"}},
    }
    assert sampler_nodes(g) == ["2", "1"]
    assert node_titles(g) == {"1": ("KSamplerAdvanced", "KSamplerAdvanced"),
                              "2": ("KSamplerAdvanced", "KSamplerAdvanced"),
                              "3": ("EmptyLatentImage", "EmptyLatentImage"), "4": ("VAEDecode", "Decode")}


def test_untitled_experts_are_found_by_the_pass_they_feed(wf: Workflow) -> None:
    g = copy.deepcopy(wf.graph)
    for node in g.values():
        node.pop("_meta")
    v = Variant(Workflow(g, name="untitled"))
    assert v.variant_id == "high_low-5s-640p-default"
    assert expert_of_first_pass(v.pass_order("low_high").build()) == LOW


def test_core_modules_do_not_import_pytest() -> None:
    code = ("import sys, pytest_wan22.workflows, pytest_wan22.preflight; "
            "sys.exit(1 if 'pytest' in sys.modules or '_pytest' in sys.modules else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr or "importing workflows/preflight pulled in pytest"


def test_core_node_list_ships_with_the_package() -> None:
    path = REPO / "pytest_wan22" / "data" / "core_nodes.txt"
    names = {line for line in path.read_text().splitlines() if line and not line.startswith("#")}
    assert len(names) == 567
    assert {"KSamplerAdvanced", "WanImageToVideo", "LoadTrainingDataset", "CreateVideo"} <= names
    assert not names & {"RIFE VFI", "WanVideoSampler", "Note", "FrameInterpolate"}


# --------------------------------------------------------------------------- real workflows

REAL_EXPECTED: dict[str, dict[str, Any]] = {
    "gh-zeezz7-runkarobar-gpu__wan22_i2v_14B.api.json": {
        "format": "api", "node_count": 32, "custom_nodes": ["ComfyMathExpression"], "muted": 0, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 1, "inner_nodes": 30},
        "models": {HIGH, LOW, "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"}},
    "gh-comfyanonymous-ComfyUI_examples__image_to_video_wan22_14B.json": {
        "format": "ui", "node_count": 17, "custom_nodes": [], "muted": 0, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 0, "inner_nodes": 0},
        "models": {HIGH, LOW, "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"}},
    "gh-eriktrk-wan2.2_14b_i2v_4step_runpod_worker__wan22_14B_i2v_lightning.json": {
        "format": "api", "node_count": 17, "custom_nodes": [], "muted": 0, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 0, "inner_nodes": 0},
        "models": {HIGH, LOW, "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"}},
    "gh-kijai-ComfyUI-WanVideoWrapper__wanvideo_2_2_I2V_A14B_example_WIP.json": {
        "format": "ui", "node_count": 30, "muted": 4, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 0, "inner_nodes": 0},
        "custom_includes": {"WanVideoSampler", "VHS_VideoCombine", "INTConstant", "ImageResizeKJv2"},
        "models": {"WanVideo\\2_2\\Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors"}},
    "gh-Reggie-sun-AI-VIDEO__wan22_i2v_ui.json": {
        "format": "ui", "node_count": 27, "muted": 0, "bypassed": 1,
        "subgraphs": {"definitions": 2, "instances": 2, "inner_nodes": 11},
        "custom_includes": {"WanVideoModelLoader", "mxSlider", "CRT_QuantizeAndCropImage", "Textbox",
                            "PlaySound|pysssss"},
        "models": {HIGH, LOW, "LIGHTX2V_I2V_2.2_HIGH.safetensors", "wan_2.1_vae.safetensors"}},
    "gh-Reggie-sun-AI-VIDEO__wan22_i2v_api.json": {
        "format": "api", "node_count": 25, "muted": 0, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 0, "inner_nodes": 0},
        "custom_includes": {"WanVideoSampler", "VHS_VideoCombine"}, "models": {HIGH, LOW}},
    "gh-PT-Nextgen-video_ai_creator__wan22_i2v_4steps_api.json": {
        "format": "api", "node_count": 43, "muted": 0, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 0, "inner_nodes": 0},
        "custom_includes": {"easy forLoopStart", "PathchSageAttentionKJ", "VHS_SplitImages"},
        "models": {"clip_vision_h.safetensors", "WAN2.2/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"}},
    "gh-comfyanonymous-ComfyUI_examples__image_to_video_wan22_5B.json": {
        "format": "ui", "node_count": 13, "custom_nodes": [], "muted": 0, "bypassed": 0,
        "subgraphs": {"definitions": 0, "instances": 0, "inner_nodes": 0},
        "models": {"wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors"}},
}


@needs_real_workflows
def test_all_eight_real_workflows_are_covered() -> None:
    assert sorted(p.name for p in REAL.glob("*.json")) == sorted(REAL_EXPECTED)


@needs_real_workflows
@pytest.mark.parametrize("name", sorted(REAL_EXPECTED))
def test_what_a_real_workflow_needs(name: str) -> None:
    want = REAL_EXPECTED[name]
    s = workflow_needs(REAL / name)
    assert s["format"] == want["format"]
    assert s["node_count"] == want["node_count"]
    assert s["subgraphs"] == want["subgraphs"]
    assert len(s["muted"]) == want["muted"]
    assert len(s["bypassed"]) == want["bypassed"]
    if "custom_nodes" in want:
        assert s["custom_nodes"] == want["custom_nodes"]
    else:
        assert want["custom_includes"] <= set(s["custom_nodes"])
    assert want["models"] <= set(s["model_files"])
    assert not set(s["custom_nodes"]) & {"Note", "SetNode", "GetNode", "KSamplerAdvanced", "LoadImage"}
    assert set(s["custom_node_packs"]) >= set(s["custom_nodes"])
    if s["format"] == "api":
        assert load_workflow(REAL / name).name == Path(name).stem


@needs_real_workflows
def test_real_summary_separates_what_muted_and_bypassed_nodes_need() -> None:
    kijai = workflow_needs(
        REAL / "gh-kijai-ComfyUI-WanVideoWrapper__wanvideo_2_2_I2V_A14B_example_WIP.json")
    assert sorted(m["class_type"] for m in kijai["muted"]) == [
        "CLIPLoader", "CLIPTextEncode", "CLIPTextEncode", "WanVideoTextEmbedBridge"]
    assert kijai["model_files_inactive"] == ["umt5_xxl_fp16.safetensors"]
    assert "umt5_xxl_fp16.safetensors" not in kijai["model_files"]
    assert kijai["custom_nodes_inactive"] == ["WanVideoTextEmbedBridge"]
    assert kijai["custom_node_packs"]["WanVideoSampler"] == "kijai/ComfyUI-WanVideoWrapper"
    assert kijai["custom_node_packs"]["VHS_VideoCombine"] == "Kosinkadink/ComfyUI-VideoHelperSuite"
    reggie = workflow_needs(REAL / "gh-Reggie-sun-AI-VIDEO__wan22_i2v_ui.json")
    assert [b["class_type"] for b in reggie["bypassed"]] == ["WanVideoTorchCompileSettings"]
    assert {"SetNode", "GetNode", "Anything Everywhere"} <= set(reggie["frontend_only"])
    inner = {m["file"]: m["subgraph"] for m in reggie["model_refs"]}
    assert inner[HIGH] == "Model Loader"


def test_summary_separates_what_muted_and_bypassed_nodes_need() -> None:
    s = workflow_needs(OWN_WORKFLOWS / "wrapper_ui.json")
    assert (s["format"], s["node_count"]) == ("ui", 24)
    assert sorted(m["class_type"] for m in s["muted"]) == [
        "CLIPLoader", "CLIPTextEncode", "CLIPTextEncode", "WanVideoTextEmbedBridge"]
    assert [b["class_type"] for b in s["bypassed"]] == ["WanVideoTorchCompileSettings"]
    assert s["model_files_inactive"] == ["umt5_xxl_fp16.safetensors"]
    assert "umt5_xxl_fp16.safetensors" not in s["model_files"]
    assert s["custom_nodes_inactive"] == ["WanVideoTextEmbedBridge", "WanVideoTorchCompileSettings"]
    assert not {"WanVideoTextEmbedBridge", "CLIPLoader", "Note", "SetNode"} & set(s["custom_nodes"])
    assert s["custom_node_packs"]["WanVideoSampler"] == "kijai/ComfyUI-WanVideoWrapper"
    assert s["custom_node_packs"]["VHS_VideoCombine"] == "Kosinkadink/ComfyUI-VideoHelperSuite"
    assert s["custom_node_packs"]["INTConstant"] == "kijai/ComfyUI-KJNodes"
    assert {"SetNode", "GetNode", "Anything Everywhere", "Note"} <= set(s["frontend_only"])
    assert s["subgraphs"] == {"definitions": 1, "instances": 1, "inner_nodes": 3}
    inner = {m["file"]: m["subgraph"] for m in s["model_refs"]}
    assert inner["4x-UltraSharp.pth"] == "Upscaler"
    assert inner["WanVideo\\2_2\\Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors"] is None


def test_summary_of_a_flattened_api_export() -> None:
    s = workflow_needs(OWN_WORKFLOWS / "flattened_api.json")
    assert (s["format"], s["node_count"]) == ("api", 12)
    assert s["subgraphs"] == {"definitions": 0, "instances": 1, "inner_nodes": 5}
    assert s["custom_node_packs"]["ComfyMathExpression"] == "comfyanonymous/ComfyUI (core, newer than 0.8.0)"
    assert s["custom_node_packs"]["easy forLoopStart"] == "yolain/ComfyUI-Easy-Use"
    assert s["custom_node_packs"]["Int"] is None
    assert {HIGH, LOW, "clip_vision_h.safetensors", "rife47.pth"} <= set(s["model_files"])
    assert load_workflow(OWN_WORKFLOWS / "flattened_api.json").name == "flattened_api"


def test_summary_of_the_official_templates() -> None:
    i2v = workflow_needs(official_template(OFFICIAL_14B))
    assert i2v["format"] == "ui"
    assert {HIGH, LOW, "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "wan_2.1_vae.safetensors"} <= set(i2v["model_files"])
    assert i2v["subgraphs"]["definitions"] >= 1  # the template wraps its graph in a subgraph
    assert i2v["subgraphs"]["inner_nodes"] > i2v["node_count"]
    assert not set(i2v["custom_nodes"]) - {"ComfyMathExpression"}  # core nodes only (some of a newer core)
    ti2v = workflow_needs(official_template(OFFICIAL_5B))
    assert (ti2v["format"], ti2v["custom_nodes"]) == ("ui", [])
    assert {"wan2.2_ti2v_5B_fp16.safetensors", "wan2.2_vae.safetensors"} <= set(ti2v["model_files"])
    assert "MarkdownNote" in ti2v["frontend_only"]


def test_summary_of_the_shipped_workflow(wf: Workflow) -> None:
    s = workflow_needs(WORKFLOW)
    assert (s["format"], s["node_count"], s["custom_nodes"]) == ("api", 15, [])
    assert s["model_files"] == sorted([HIGH, LOW, "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                       "wan_2.1_vae.safetensors"])


def test_summary_refuses_what_is_no_workflow(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="neither an API-format"):
        workflow_needs(write(tmp_path, {"a": 1}))
    with pytest.raises(WorkflowError, match="cannot read"):
        workflow_needs(write(tmp_path, "{", "bad.json"))
