"""Roles found from a graph's structure, and Variant builder methods on graphs other than the built-in 14B one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pytest_wan22.errors import WorkflowError
from pytest_wan22.workflows import Variant, Workflow
from pytest_wan22.workflows.roles import expert_loaders, latent_node, video_nodes

#: The shape of ComfyUI's TI2V 5B example: one expert, KSampler, two video outputs.
TI2V_5B: dict[str, Any] = {
    "37": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_ti2v_5B_fp16.safetensors",
                                                  "weight_dtype": "default"}},
    "38": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5.safetensors", "type": "wan",
                                                  "device": "default"}},
    "39": {"class_type": "VAELoader", "inputs": {"vae_name": "wan2.2_vae.safetensors"}},
    "57": {"class_type": "LoadImage", "inputs": {"image": "start.png"}},
    "48": {"class_type": "ModelSamplingSD3", "inputs": {"shift": 8.0, "model": ["37", 0]}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox", "clip": ["38", 0]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["38", 0]}},
    "55": {"class_type": "Wan22ImageToVideoLatent", "inputs": {"width": 1280, "height": 704, "length": 41,
                                                               "batch_size": 1, "vae": ["39", 0],
                                                               "start_image": ["57", 0]}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 30, "cfg": 5.0, "sampler_name": "uni_pc",
                                               "scheduler": "simple", "denoise": 1.0, "model": ["48", 0],
                                               "positive": ["6", 0], "negative": ["7", 0],
                                               "latent_image": ["55", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["39", 0]}},
    "28": {"class_type": "SaveAnimatedWEBP", "inputs": {"filename_prefix": "x", "fps": 24.0, "lossless": False,
                                                        "quality": 90, "method": "default", "images": ["8", 0]}},
    "47": {"class_type": "SaveWEBM", "inputs": {"filename_prefix": "x", "codec": "vp9", "fps": 24.0, "crf": 16.0,
                                                "images": ["8", 0]}},
}


@pytest.fixture
def ti2v() -> Variant:
    return Variant(Workflow(copy.deepcopy(TI2V_5B), name="ti2v_5b"))


def test_roles_from_structure() -> None:
    assert expert_loaders(TI2V_5B) == ("37",)
    assert latent_node(TI2V_5B) == "55"
    assert video_nodes(TI2V_5B) == ["28", "47"]


def test_single_expert_graph_runs_as_it_is(ti2v: Variant) -> None:
    assert ti2v.build() == TI2V_5B
    d = ti2v.describe()
    assert (d["width"], d["height"], d["length"], d["passes"], d["pass_order"]) == (1280, 704, 41, 1, None)
    assert (d["fps"], d["steps"], d["models"]["model"]) == (24.0, 30, "wan2.2_ti2v_5B_fp16.safetensors")
    assert ti2v.variant_id == "41f-1280x704-30steps_cfg5"
    assert ti2v.image_size() == (1280, 704)


def test_duration_and_resolution_change_the_latent_node_and_every_video_node(ti2v: Variant) -> None:
    g = ti2v.duration(2, fps=24).resolution(640, 352).build()
    assert (g["55"]["inputs"]["length"], g["55"]["inputs"]["width"], g["55"]["inputs"]["height"]) == (49, 640, 352)
    assert g["28"]["inputs"]["fps"] == g["47"]["inputs"]["fps"] == 24


@pytest.mark.parametrize("cls", ["WanImageToVideo", "WanFirstLastFrameToVideo", "WanFunControlToVideo",
                                 "EmptyHunyuanLatentVideo"])
def test_resolution_applies_to_each_latent_class(cls: str) -> None:
    graph = copy.deepcopy(TI2V_5B)
    graph["55"]["class_type"] = cls
    g = Variant(Workflow(graph)).resolution(320, 192).scaled(frames=9).build()
    assert (g["55"]["inputs"]["width"], g["55"]["inputs"]["height"], g["55"]["inputs"]["length"]) == (320, 192, 9)


def test_schedule_on_a_single_ksampler(ti2v: Variant) -> None:
    g = ti2v.schedule(steps=4, cfg=1.0).build()
    assert (g["3"]["inputs"]["steps"], g["3"]["inputs"]["cfg"]) == (4, 1.0)


def test_interpolation_between_decode_and_both_video_nodes(ti2v: Variant) -> None:
    g = ti2v.interpolate(2).build()
    vfi = [i for i, n in g.items() if n["class_type"] == "RIFE VFI"]
    assert len(vfi) == 1
    assert g[vfi[0]]["inputs"]["frames"] == ["8", 0]
    assert g["28"]["inputs"]["images"] == g["47"]["inputs"]["images"] == [vfi[0], 0]
    assert g["28"]["inputs"]["fps"] == 48.0
    assert ti2v.interpolate(2).expected_output().frames == 81


def test_model_role_swaps_the_one_expert(ti2v: Variant) -> None:
    g = ti2v.models({"model": "tiny.safetensors", "vae": "v.safetensors"}).build()
    assert (g["37"]["inputs"]["unet_name"], g["39"]["inputs"]["vae_name"]) == ("tiny.safetensors", "v.safetensors")


@pytest.mark.parametrize(("make", "method"), [
    (lambda v: v.pass_order("low_high"), "pass_order"),
    (lambda v: v.schedule("lightx2v_4step"), "schedule('lightx2v_4step')"),
    (lambda v: v.models({"high": "h.safetensors"}), "models(high=/low=)"),
])
def test_two_expert_methods_fail_on_one_expert_naming_the_method(ti2v: Variant, make: Any, method: str) -> None:
    with pytest.raises(WorkflowError) as info:
        make(ti2v).build()
    text = str(info.value)
    assert method in text
    assert "UNETLoader" in text or "1 model loader" in text


def test_a_method_without_its_node_names_what_it_looked_for_and_what_the_graph_has() -> None:
    graph = copy.deepcopy(TI2V_5B)
    graph["55"]["class_type"] = "EmptyLatentImage"
    with pytest.raises(WorkflowError, match=r"duration\(\) does not apply: it looks for a latent.*"
                                            r"Wan22ImageToVideoLatent.*Nodes: .*EmptyLatentImage"):
        Variant(Workflow(graph)).duration(5).build()
    del graph["28"], graph["47"]
    graph["9"] = {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "x"}}
    with pytest.raises(WorkflowError, match=r"interpolate\(\) does not apply: it looks for a video node.*SaveImage"):
        Variant(Workflow(graph)).interpolate(2).build()


def test_schedule_refuses_other_samplers() -> None:
    graph = copy.deepcopy(TI2V_5B)
    graph["3"]["class_type"] = "WanVideoSampler"
    with pytest.raises(WorkflowError, match=r"schedule\(\) sets KSampler.*3 \(WanVideoSampler"):
        Variant(Workflow(graph)).schedule(steps=4).build()


def test_experts_found_by_pass_even_with_misleading_titles() -> None:
    from pytest_wan22.workflows import load_workflow
    from tests.unit.test_workflows import WORKFLOW

    wf = load_workflow(WORKFLOW)
    graph = wf.graph
    high = wf.select("Load Diffusion Model (high noise)")
    low = wf.select("Load Diffusion Model (low noise)")
    graph[high]["_meta"]["title"], graph[low]["_meta"]["title"] = "A", "B"
    v = Variant(Workflow(graph)).pass_order("low_high")
    assert v.describe()["pass_order"] == "low_high"
    assert v.describe()["models"]["high"] == wf.graph[high]["inputs"]["unet_name"]


def test_model_chain_followed_through_a_switch_node() -> None:
    graph = copy.deepcopy(TI2V_5B)
    graph["90"] = {"class_type": "easy anythingIndexSwitch",
                   "inputs": {"index": ["91", 0], "value0": ["48", 0], "value1": ["48", 0]}}
    graph["91"] = {"class_type": "PrimitiveInt", "inputs": {"value": 0}}
    graph["3"]["inputs"]["model"] = ["90", 0]
    assert expert_loaders(graph) == ("37",)


def test_model_chain_followed_through_both_branches_of_a_switch() -> None:
    graph = copy.deepcopy(TI2V_5B)
    graph["92"] = {"class_type": "LoraLoaderModelOnly",
                   "inputs": {"model": ["37", 0], "lora_name": "l.safetensors", "strength_model": 1.0}}
    graph["93"] = {"class_type": "ComfySwitchNode",
                   "inputs": {"switch": ["94", 0], "on_false": ["37", 0], "on_true": ["92", 0]}}
    graph["94"] = {"class_type": "PrimitiveBoolean", "inputs": {"value": True}}
    graph["48"]["inputs"]["model"] = ["93", 0]
    assert expert_loaders(graph) == ("37",)
    graph["95"] = {"class_type": "UNETLoader", "inputs": {"unet_name": "other.safetensors", "weight_dtype": "default"}}
    graph["92"]["inputs"]["model"] = ["95", 0]  # the branches now lead to two loaders: undecidable
    assert expert_loaders(graph) == ()


def test_seed_and_scale_with_linked_inputs() -> None:
    graph = copy.deepcopy(TI2V_5B)
    graph["91"] = {"class_type": "PrimitiveInt", "inputs": {"value": 6}}
    graph["3"]["inputs"]["seed"] = ["91", 0]
    g = Variant(Workflow(graph)).seed(42).build()
    assert g["91"]["inputs"]["value"] == 42
    assert g["3"]["inputs"]["seed"] == ["91", 0]
    graph["91"]["class_type"] = "SomethingElse"
    graph["91"]["inputs"] = {"text": "x"}
    with pytest.raises(WorkflowError, match="seed linked to a primitive"):
        Variant(Workflow(graph)).seed(1).build()


def test_scaled_keeps_a_linked_split() -> None:
    from pytest_wan22.workflows import load_workflow
    from tests.unit.test_workflows import WORKFLOW

    graph = load_workflow(WORKFLOW).graph
    first = next(i for i, n in graph.items() if n["inputs"].get("start_at_step") == 0)
    graph["91"] = {"class_type": "PrimitiveInt", "inputs": {"value": 10}}
    graph[first]["inputs"]["end_at_step"] = ["91", 0]
    g = Variant(Workflow(graph)).scaled(steps=4).build()
    assert (g[first]["inputs"]["steps"], g[first]["inputs"]["end_at_step"]) == (4, ["91", 0])
    g = Variant(Workflow(graph)).scaled(steps=4, split=2).build()
    assert g[first]["inputs"]["end_at_step"] == 2
