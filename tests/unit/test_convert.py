"""UI-format to API-format conversion on hand-made editor graphs, against a captured /object_info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.errors import WorkflowError
from pytest_wan22.workflows.convert import convert_ui, is_ui_format

INFO: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "object_info_packs.json").read_text(encoding="utf-8"))


class UI:
    """A tiny builder for editor-format graphs: nodes with sockets, links as [id, from, slot, to, slot, type]."""

    def __init__(self) -> None:
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []

    def node(self, node_id: int, cls: str, widgets: Any = None, *, inputs: tuple[tuple[str, str], ...] = (),
             outputs: tuple[str, ...] = (), mode: int = 0, title: str | None = None,
             widget_inputs: tuple[str, ...] = ()) -> dict[str, Any]:
        node: dict[str, Any] = {
            "id": node_id, "type": cls, "mode": mode,
            "inputs": [{"name": n, "type": t, "link": None} for n, t in inputs]
            + [{"name": n, "type": "INT", "link": None, "widget": {"name": n}} for n in widget_inputs],
            "outputs": [{"name": t, "type": t, "links": []} for t in outputs],
            "widgets_values": widgets if widgets is not None else [],
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node

    def link(self, src: int, slot: int, dst: int, input_name: str) -> None:
        link_id = len(self.links) + 1
        target = next(n for n in self.nodes if n["id"] == dst)
        tslot = next(i for i, inp in enumerate(target["inputs"]) if inp["name"] == input_name)
        target["inputs"][tslot]["link"] = link_id
        self.links.append([link_id, src, slot, dst, tslot, "*"])

    def data(self, **extra: Any) -> dict[str, Any]:
        return {"last_node_id": 99, "last_link_id": len(self.links), "nodes": self.nodes, "links": self.links,
                "version": 0.4, **extra}


def sampler_graph() -> UI:
    """Loader -> KSampler -> VAEDecode -> SaveWEBM, with an empty latent."""
    ui = UI()
    ui.node(1, "UNETLoader", ["model.safetensors", "default"], outputs=("MODEL",))
    ui.node(2, "KSampler", [42, "randomize", 20, 5.0, "euler", "simple", 1.0],
            inputs=(("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"),
                    ("latent_image", "LATENT")), outputs=("LATENT",))
    ui.node(3, "EmptyLatentImage", [512, 512, 1], outputs=("LATENT",))
    ui.node(4, "CLIPLoader", ["te.safetensors", "wan", "default"], outputs=("CLIP",))
    ui.node(5, "CLIPTextEncode", ["a fox"], inputs=(("clip", "CLIP"),), outputs=("CONDITIONING",))
    ui.node(6, "VAELoader", ["vae.safetensors"], outputs=("VAE",))
    ui.node(7, "VAEDecode", inputs=(("samples", "LATENT"), ("vae", "VAE")), outputs=("IMAGE",))
    ui.node(8, "SaveWEBM", ["out", "vp9", 24, 16], inputs=(("images", "IMAGE"),))
    ui.link(1, 0, 2, "model")
    ui.link(5, 0, 2, "positive")
    ui.link(5, 0, 2, "negative")
    ui.link(3, 0, 2, "latent_image")
    ui.link(4, 0, 5, "clip")
    ui.link(2, 0, 7, "samples")
    ui.link(6, 0, 7, "vae")
    ui.link(7, 0, 8, "images")
    return ui


def test_widget_values_named_in_server_order_skipping_control_after_generate() -> None:
    c = convert_ui(sampler_graph().data(), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"] == {
        "seed": 42, "steps": 20, "cfg": 5.0, "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
        "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 0], "latent_image": ["3", 0]}
    assert c.prompt["2"]["class_type"] == "KSampler"
    assert c.prompt["1"]["inputs"] == {"unet_name": "model.safetensors", "weight_dtype": "default"}
    assert c.prompt["8"]["inputs"]["images"] == ["7", 0]


def test_seed_without_control_value_keeps_alignment() -> None:
    ui = sampler_graph()
    ui.nodes[1]["widgets_values"] = [42, 20, 5.0, "euler", "simple", 1.0]
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"]["steps"] == 20


def test_misaligned_widgets_are_reported_not_guessed() -> None:
    ui = sampler_graph()
    ui.nodes[1]["widgets_values"] = [42, "randomize", "euler", 20, 5.0, "simple", 1.0]
    c = convert_ui(ui.data(), INFO)
    assert not c.ok
    assert [(i.node_id, i.input) for i in c.issues] == [("2", "steps")]
    assert "widget order" in c.issues[0].message
    assert c.prompt["2"]["inputs"]["seed"] == 42


def test_input_converted_to_socket_takes_the_link() -> None:
    ui = sampler_graph()
    ui.node(9, "PrimitiveInt", [7, "fixed"], outputs=("INT",))
    ui.nodes[1]["inputs"].append({"name": "steps", "type": "INT", "link": None, "widget": {"name": "steps"}})
    ui.link(9, 0, 2, "steps")
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"]["steps"] == ["9", 0]
    assert c.prompt["9"] == {"inputs": {"value": 7}, "class_type": "PrimitiveInt", "_meta": {"title": "Int"}}


def test_reroute_and_frontend_primitive_node_resolve() -> None:
    ui = sampler_graph()
    ui.node(10, "Reroute", inputs=(("", "*"),), outputs=("MODEL",))
    ui.node(11, "PrimitiveNode", [12, "increment"], outputs=("INT",))
    ui.nodes[1]["inputs"][0]["link"] = None
    ui.link(1, 0, 10, "")
    ui.link(10, 0, 2, "model")
    ui.nodes[1]["inputs"].append({"name": "steps", "type": "INT", "link": None, "widget": {"name": "steps"}})
    ui.link(11, 0, 2, "steps")
    ui.node(12, "Note", ["remember"])
    ui.node(13, "MarkdownNote", ["# hi"])
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"]["model"] == ["1", 0]
    assert c.prompt["2"]["inputs"]["steps"] == 12
    assert not {"10", "11", "12", "13"} & set(c.prompt)


def test_bypassed_node_passes_its_matching_input_through() -> None:
    ui = sampler_graph()
    ui.node(20, "ModelSamplingSD3", [8.0], inputs=(("model", "MODEL"),), outputs=("MODEL",), mode=4)
    ui.nodes[1]["inputs"][0]["link"] = None
    ui.link(1, 0, 20, "model")
    ui.link(20, 0, 2, "model")
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert "20" not in c.prompt
    assert c.prompt["2"]["inputs"]["model"] == ["1", 0]


def test_muted_node_and_what_only_feeds_it_are_dropped() -> None:
    ui = sampler_graph()
    ui.node(30, "CLIPLoader", ["other.safetensors", "wan", "default"], outputs=("CLIP",))
    ui.node(31, "CLIPTextEncode", ["muted"], inputs=(("clip", "CLIP"),), outputs=("CONDITIONING",), mode=2)
    ui.link(30, 0, 31, "clip")
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert not {"30", "31"} & set(c.prompt)
    assert "4" in c.prompt  # the loader that also feeds an active node stays


def test_muted_node_feeding_a_required_input_is_reported() -> None:
    ui = sampler_graph()
    ui.nodes[5]["mode"] = 2  # VAELoader muted: VAEDecode loses its vae
    c = convert_ui(ui.data(), INFO)
    assert [(i.node_id, i.input) for i in c.issues] == [("7", "vae")]
    assert "muted" in c.issues[0].message


def test_subgraph_flattened_with_stable_ids_nested() -> None:
    ui = sampler_graph()
    # replace the loader by a subgraph instance 50 whose nested instance 7 holds the UNETLoader
    ui.nodes[0] = {"id": 50, "type": "sg-outer", "mode": 0, "inputs": [],
                   "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}], "widgets_values": []}
    ui.links[0][1] = 50
    inner = {"id": "sg-inner", "name": "Inner", "nodes": [
        {"id": 1, "type": "UNETLoader", "mode": 0, "inputs": [], "outputs": [{"name": "MODEL", "type": "MODEL"}],
         "widgets_values": ["inner.safetensors", "default"]},
        {"id": 2, "type": "ModelSamplingSD3", "mode": 0,
         "inputs": [{"name": "model", "type": "MODEL", "link": 1},
                    {"name": "shift", "type": "FLOAT", "widget": {"name": "shift"}, "link": 3}],
         "outputs": [{"name": "MODEL", "type": "MODEL"}], "widgets_values": [5.0]}],
        "links": [{"id": 1, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0},
                  {"id": 2, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0},
                  {"id": 3, "origin_id": -10, "origin_slot": 0, "target_id": 2, "target_slot": 1}]}
    outer = {"id": "sg-outer", "name": "Outer", "nodes": [
        {"id": 7, "type": "sg-inner", "mode": 0,
         "inputs": [{"name": "shift", "type": "FLOAT", "widget": {"name": "shift"}, "link": None}],
         "outputs": [{"name": "MODEL", "type": "MODEL"}], "widgets_values": [3.0]}],
        "links": [{"id": 1, "origin_id": 7, "origin_slot": 0, "target_id": -20, "target_slot": 0}]}
    c = convert_ui(ui.data(definitions={"subgraphs": [outer, inner]}), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"]["model"] == ["50:7:2", 0]
    assert c.prompt["50:7:2"]["inputs"] == {"shift": 3.0, "model": ["50:7:1", 0]}
    assert c.prompt["50:7:1"]["inputs"]["unet_name"] == "inner.safetensors"
    assert "50" not in c.prompt


def test_subgraph_input_fed_from_outside() -> None:
    ui = UI()
    ui.node(1, "UNETLoader", ["m.safetensors", "default"], outputs=("MODEL",))
    ui.node(2, "sg", inputs=(("model", "MODEL"),), outputs=("MODEL",))
    ui.node(3, "TorchCompileModel", ["inductor"], inputs=(("model", "MODEL"),), outputs=("MODEL",))
    ui.link(1, 0, 2, "model")
    ui.link(2, 0, 3, "model")
    sg = {"id": "sg", "nodes": [{"id": 5, "type": "ModelSamplingSD3", "mode": 0,
                                 "inputs": [{"name": "model", "type": "MODEL", "link": 1}], "widgets_values": [8]}],
          "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0},
                    {"id": 2, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0}]}
    c = convert_ui(ui.data(definitions={"subgraphs": [sg]}), INFO)
    assert c.prompt["2:5"]["inputs"] == {"shift": 8, "model": ["1", 0]}
    assert c.prompt["3"]["inputs"]["model"] == ["2:5", 0]


def test_kjnodes_set_and_get_resolve_to_the_source() -> None:
    ui = sampler_graph()
    ui.node(40, "SetNode", ["MyModel"], inputs=(("MODEL", "MODEL"),), outputs=("*",))
    ui.node(41, "GetNode", ["MyModel"], outputs=("MODEL",))
    ui.nodes[1]["inputs"][0]["link"] = None
    ui.link(1, 0, 40, "MODEL")
    ui.link(41, 0, 2, "model")
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"]["model"] == ["1", 0]
    assert not {"40", "41"} & set(c.prompt)


def test_getnode_without_setnode_is_reported() -> None:
    ui = sampler_graph()
    ui.node(41, "GetNode", ["Nowhere"], outputs=("MODEL",))
    ui.nodes[1]["inputs"][0]["link"] = None
    ui.link(41, 0, 2, "model")
    c = convert_ui(ui.data(), INFO)
    messages = [str(i) for i in c.issues]
    assert any("GetNode 'Nowhere'" in m for m in messages)
    assert any(i.node_id == "2" and i.input == "model" for i in c.issues)


def test_unknown_class_keeps_named_links_and_reports_positional_widgets() -> None:
    ui = sampler_graph()
    ui.node(70, "BrandNewNode", [1, 2], inputs=(("images", "IMAGE"),))
    ui.link(7, 0, 70, "images")
    ui.node(71, "DictNode", {"fps": 16}, inputs=(("images", "IMAGE"),))
    ui.link(7, 0, 71, "images")
    c = convert_ui(ui.data(), INFO)
    assert c.prompt["70"]["inputs"] == {"images": ["7", 0]}
    assert c.prompt["71"]["inputs"] == {"fps": 16, "images": ["7", 0]}
    assert [(i.node_id, i.input) for i in c.issues] == [("70", None)]
    assert "by position" in c.issues[0].message


def test_vhs_named_widgets_and_upload_widget() -> None:
    ui = UI()
    ui.node(1, "LoadImage", ["start.png", "image"], outputs=("IMAGE", "MASK"))
    ui.node(2, "VHS_VideoCombine", {"frame_rate": 16, "loop_count": 0, "filename_prefix": "x",
                                    "format": "video/h264-mp4", "pingpong": False, "save_output": True,
                                    "videopreview": {"hidden": False}},
            inputs=(("images", "IMAGE"),))
    ui.link(1, 0, 2, "images")
    c = convert_ui(ui.data(), INFO)
    assert c.prompt["1"]["inputs"] == {"image": "start.png"}
    assert c.prompt["2"]["inputs"]["frame_rate"] == 16
    assert "videopreview" not in c.prompt["2"]["inputs"]


def test_use_everywhere_links_from_extra() -> None:
    ui = sampler_graph()
    ui.nodes[6]["inputs"][1]["link"] = None  # VAEDecode.vae left to Anything Everywhere
    ui.node(80, "Anything Everywhere", inputs=(("anything", "VAE"),))
    ui.link(6, 0, 80, "anything")
    ue = [{"downstream": 7, "downstream_slot": 1, "upstream": "6", "upstream_slot": 0, "controller": 80,
           "type": "VAE"}]
    c = convert_ui(ui.data(extra={"ue_links": ue}), INFO)
    assert c.ok, c.report()
    assert c.prompt["7"]["inputs"]["vae"] == ["6", 0]
    assert "80" not in c.prompt
    # without the recorded links, the missing input is named
    bare = convert_ui(ui.data(), INFO)
    assert [(i.node_id, i.input) for i in bare.issues] == [("7", "vae")]


def group_graph(values: list[Any]) -> dict[str, Any]:
    """The loader's model runs through a legacy group node: ModelSamplingSD3 -> TorchCompileModel."""
    ui = sampler_graph()
    ui.node(90, "workflow>Speed", values, inputs=(("model", "MODEL"),), outputs=("MODEL",))
    ui.nodes[1]["inputs"][0]["link"] = None
    ui.link(1, 0, 90, "model")
    ui.link(90, 0, 2, "model")
    group = {"nodes": [
        {"index": 0, "type": "ModelSamplingSD3", "inputs": [{"name": "model", "type": "MODEL", "link": None}],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "widgets_values": [8.0]},
        {"index": 1, "type": "TorchCompileModel", "title": "Compile",
         "inputs": [{"name": "model", "type": "MODEL", "link": None}],
         "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "widgets_values": ["inductor"]}],
        "links": [[0, 0, 1, 0, 1, "MODEL"]], "external": [[1, 0, "MODEL"]]}
    return ui.data(extra={"groupNodes": {"Speed": group}})


def test_legacy_group_node_is_expanded_with_stable_ids() -> None:
    c = convert_ui(group_graph([5.0, "cudagraphs"]), INFO)
    assert c.ok, c.report()
    assert c.prompt["90:0"]["inputs"] == {"shift": 5.0, "model": ["1", 0]}
    assert c.prompt["90:1"]["inputs"] == {"backend": "cudagraphs", "model": ["90:0", 0]}
    assert c.prompt["90:1"]["_meta"]["title"] == "Compile"
    assert c.prompt["2"]["inputs"]["model"] == ["90:1", 0]
    assert "90" not in c.prompt


def test_legacy_group_node_that_does_not_add_up_is_reported() -> None:
    c = convert_ui(group_graph([5.0]), INFO)
    assert (c.issues[0].node_id, c.issues[0].input) == ("90", None)
    assert "1 widget values for 2 inner widgets" in c.issues[0].message
    missing = convert_ui(group_graph([5.0, "inductor"]) | {"extra": {"groupNodes": {}}}, INFO)
    assert any("no definition in extra.groupNodes" in i.message for i in missing.issues)


def test_api_format_is_not_converted() -> None:
    assert not is_ui_format({"1": {"class_type": "X", "inputs": {}}})
    with pytest.raises(WorkflowError, match="not a UI-format"):
        convert_ui({"1": {"class_type": "X", "inputs": {}}}, INFO)


def test_load_workflow_converts_ui_files_with_object_info(tmp_path: Path) -> None:
    from pytest_wan22.workflows import load_workflow

    path = tmp_path / "mine.json"
    path.write_text(json.dumps(sampler_graph().data()), encoding="utf-8")
    wf = load_workflow(path, object_info=INFO)
    assert wf.name == "mine"
    assert wf.node("class:KSampler")["inputs"]["steps"] == 20
    broken = sampler_graph()
    broken.nodes[5]["mode"] = 2
    path.write_text(json.dumps(broken.data()), encoding="utf-8")
    with pytest.raises(WorkflowError, match=r"(?s)without guessing .*node 7 \(VAEDecode\) input 'vae'"):
        load_workflow(path, object_info=INFO)


def test_subgraph_instance_values_pair_with_the_definitions_widget_inputs() -> None:
    """Older files store one value per widget-typed definition input on the instance, linked or not."""
    ui = UI()
    ui.node(1, "UNETLoader", ["m.safetensors", "default"], outputs=("MODEL",))
    ui.node(2, "PrimitiveFloat", [9.0], outputs=("FLOAT",))
    ui.node(3, "sg", [3.0, 7.0], inputs=(("model", "MODEL"), ("other", "FLOAT")), outputs=("MODEL",))
    ui.node(4, "TorchCompileModel", ["inductor"], inputs=(("model", "MODEL"),), outputs=("MODEL",))
    ui.link(1, 0, 3, "model")
    ui.link(2, 0, 3, "other")
    ui.link(3, 0, 4, "model")
    sg = {"id": "sg", "inputs": [{"name": "model", "type": "MODEL"}, {"name": "shift", "type": "FLOAT"},
                                 {"name": "other", "type": "FLOAT"}],
          "nodes": [{"id": 5, "type": "ModelSamplingSD3", "mode": 0, "widgets_values": [8.0],
                     "inputs": [{"name": "model", "type": "MODEL", "link": 1},
                                {"name": "shift", "type": "FLOAT", "widget": {"name": "shift"}, "link": 3}]},
                    {"id": 6, "type": "ModelSamplingSD3", "mode": 0, "widgets_values": [8.0],
                     "inputs": [{"name": "model", "type": "MODEL", "link": 4},
                                {"name": "shift", "type": "FLOAT", "widget": {"name": "shift"}, "link": 5}]}],
          "links": [{"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0},
                    {"id": 3, "origin_id": -10, "origin_slot": 1, "target_id": 5, "target_slot": 1},
                    {"id": 4, "origin_id": 5, "origin_slot": 0, "target_id": 6, "target_slot": 0},
                    {"id": 5, "origin_id": -10, "origin_slot": 2, "target_id": 6, "target_slot": 1},
                    {"id": 2, "origin_id": 6, "origin_slot": 0, "target_id": -20, "target_slot": 0}]}
    c = convert_ui(ui.data(definitions={"subgraphs": [sg]}), INFO)
    assert c.ok, c.report()
    assert c.prompt["3:5"]["inputs"]["shift"] == 3.0  # the instance's value, not the inner 8.0
    assert c.prompt["3:6"]["inputs"]["shift"] == ["2", 0]  # a linked input keeps its link


def test_bypass_matches_comma_types_and_prefers_the_same_slot() -> None:
    ui = sampler_graph()
    ui.node(21, "SomePackNode", inputs=(("clip", "CLIP"), ("model", "MODEL,LATENT")), outputs=("MODEL",), mode=4)
    ui.nodes[1]["inputs"][0]["link"] = None
    ui.link(4, 0, 21, "clip")
    ui.link(1, 0, 21, "model")
    ui.link(21, 0, 2, "model")
    c = convert_ui(ui.data(), INFO)
    assert c.ok, c.report()
    assert c.prompt["2"]["inputs"]["model"] == ["1", 0]
