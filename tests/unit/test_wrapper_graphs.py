"""WanVideoWrapper graphs: kijai's own Wan 2.2 i2v A14B example (tests/data/workflows, Apache-2.0) converted,
its roles found, its files planned in the wrapper's layouts, the graph as the cpu tier runs it, and the sampler's
progress frames read as steps."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.client import Event
from pytest_wan22.errors import LayoutError
from pytest_wan22.runner import NodeTiming, last_bar, outputs, sampler_passes
from pytest_wan22.synth import layout_bytes, layout_specs, umt5_shapes
from pytest_wan22.synth_plan import WRAPPER_TINY_DIT, model_needs
from pytest_wan22.workflows import Variant, Workflow
from pytest_wan22.workflows.convert import convert_ui
from pytest_wan22.workflows.frame_count import video_frames
from pytest_wan22.workflows.roles import (
    DECODE_CLASSES,
    expert_pair,
    latent_node,
    nodes_of,
    role_files,
    sampler_nodes,
    video_nodes,
)
from pytest_wan22.workflows.variant import native_model_paths

DATA = Path(__file__).resolve().parents[1] / "data"
EXAMPLE = DATA / "workflows" / "wanvideo_2_2_I2V_A14B_example_WIP.json"
INFO: dict[str, Any] = json.loads((DATA / "object_info_packs.json").read_text(encoding="utf-8"))
HIGH = "WanVideo\\2_2\\Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors"
LOW = "WanVideo\\2_2\\Wan2_2-I2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors"
LORA = "WanVideo\\Lightx2v\\lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
CPU_SCALE = {"width": 64, "height": 64, "frames": 9, "steps": 4, "split": 2}


@pytest.fixture(scope="module")
def prompt() -> dict[str, Any]:
    conversion = convert_ui(json.loads(EXAMPLE.read_text(encoding="utf-8")), INFO)
    assert conversion.ok, conversion.report()
    return conversion.prompt


@pytest.fixture
def example(prompt: dict[str, Any]) -> Variant:
    return Variant(Workflow(prompt, EXAMPLE.stem))


def on_cpu_tier(v: Variant) -> dict[str, Any]:
    """The graph as rounds.adapt builds it on the cpu tier's tiny set."""
    return v.precomputed_conditioning("wan22_tiny_cond").on_cpu().scaled(**CPU_SCALE).build()


# --------------------------------------------------------------------------- conversion and roles


def test_the_example_converts_leaving_the_empty_last_sampler_widget_at_its_default() -> None:
    conversion = convert_ui(json.loads(EXAMPLE.read_text(encoding="utf-8")), INFO)
    assert conversion.ok, conversion.report()
    notes = [d for d in conversion.dropped if "add_noise_to_samples" in d]
    assert len(notes) == 2
    assert all("server's default" in n for n in notes)
    assert all("add_noise_to_samples" not in n["inputs"] for n in conversion.prompt.values()
               if n["class_type"] == "WanVideoSampler")


def test_an_empty_value_before_the_last_widget_is_still_an_issue() -> None:
    data = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    sampler = next(n for n in data["nodes"] if n["id"] == 27)
    sampler["widgets_values"][5] = ""  # force_offload, with widgets after it: the order differs
    conversion = convert_ui(data, INFO)
    assert [(i.node_id, i.input) for i in conversion.issues] == [("27", "force_offload")]


def test_roles_come_from_the_wrapper_nodes(prompt: dict[str, Any]) -> None:
    assert sampler_nodes(prompt) == ["27", "90"]  # 90 samples what 27 left
    assert expert_pair(prompt) == ("22", "71")  # through WanVideoSetLoRAs and WanVideoSetBlockSwap
    assert latent_node(prompt) == "89"  # WanVideoImageToVideoEncode
    assert video_nodes(prompt) == ["60"]  # VHS_VideoCombine
    assert nodes_of(prompt, DECODE_CLASSES) == ["28"]  # WanVideoDecode
    files = role_files(prompt, prompt)
    assert files == {"high": HIGH, "low": LOW, "text_encoder": "umt5-xxl-enc-bf16.safetensors",
                     "vae": "wanvideo\\Wan2_1_VAE_bf16.safetensors", "image": "oldman_upscaled.png"}


def test_describe_reads_steps_split_and_loras_held_by_primitives(example: Variant) -> None:
    d = example.describe()
    assert (d["steps"], d["split"], d["passes"], d["pass_order"]) == (6, 3, 2, "high_low")
    assert (d["width"], d["height"], d["length"], d["fps"]) == (720, 720, 81, 16.0)
    assert d["compile"] == "inductor"
    assert len(d["lora"]) == 2
    scaled = example.scaled(**CPU_SCALE).describe()
    assert (scaled["steps"], scaled["split"], scaled["width"], scaled["length"]) == (4, 2, 64, 9)
    out = example.scaled(**CPU_SCALE).expected_output()
    assert (out.frames, out.fps) == (9, 16.0)


def test_the_videos_frames_are_followed_through_the_wrapper_nodes(prompt: dict[str, Any]) -> None:
    """VHS_VideoCombine <- GetImageSizeAndCount <- WanVideoDecode <- sampler 90 <- sampler 27 <- the image embeds."""
    assert video_frames(prompt, prompt["60"]["inputs"]["images"]) == 81
    g = json.loads(json.dumps(prompt))
    g["89"]["inputs"]["num_frames"] = 23  # not whole latent frames: the VAE gives 4 per latent frame, plus one
    assert video_frames(g, g["60"]["inputs"]["images"]) == 21


# --------------------------------------------------------------------------- the graph on a CPU


def test_cpu_tier_graph_takes_the_cpu_equivalents(example: Variant) -> None:
    g = on_cpu_tier(example)
    for loader in ("22", "71"):
        inputs = g[loader]["inputs"]
        assert (inputs["attention_mode"], inputs["base_precision"], inputs["quantization"]) == (
            "sdpa", "fp16", "fp8_e4m3fn_scaled")
        assert "compile_args" not in inputs
        assert "block_swap_args" not in inputs
    classes = {n["class_type"] for n in g.values()}
    assert not classes & {"WanVideoSetBlockSwap", "WanVideoBlockSwap", "WanVideoTorchCompileSettings"}
    assert g["80"]["inputs"]["model"] == ["22", 0]
    assert g["79"]["inputs"]["model"] == ["71", 0]
    assert expert_pair(g) == ("22", "71")


def test_the_original_graph_keeps_its_gpu_options(example: Variant) -> None:
    g = example.build()
    assert g["22"]["inputs"]["attention_mode"] == "sageattn"
    assert g["22"]["inputs"]["compile_args"] == ["35", 0]
    assert g["92"]["class_type"] == "WanVideoSetBlockSwap"


def test_fp8_fast_quantization_becomes_plain_fp8_on_a_cpu(prompt: dict[str, Any]) -> None:
    g = json.loads(json.dumps(prompt))
    g["22"]["inputs"]["quantization"] = "fp8_e4m3fn_scaled_fast"
    built = Variant(Workflow(g, "w")).on_cpu().build()
    assert built["22"]["inputs"]["quantization"] == "fp8_e4m3fn_scaled"


def test_the_t5_path_becomes_precomputed_conditioning_through_the_bridge(example: Variant) -> None:
    g = on_cpu_tier(example)
    assert g["11"]["class_type"] == "LoadTrainingDataset"
    bridge = g["16"]
    assert bridge["class_type"] == "WanVideoTextEmbedBridge"
    zero = bridge["inputs"]["positive"][0]
    assert g[zero] == {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["11", 1]},
                       "_meta": {"title": "Precomputed Conditioning (zero)"}}
    assert g["27"]["inputs"]["text_embeds"] == ["16", 0]
    assert g["90"]["inputs"]["text_embeds"] == ["16", 0]
    assert not any(n["class_type"] == "LoadWanVideoT5TextEncoder" for n in g.values())


def test_the_tier_scale_reaches_the_primitives_and_the_image_resize(example: Variant) -> None:
    g = on_cpu_tier(example)
    assert g["94"]["inputs"]["value"] == 4  # Steps, shared by both samplers and the CFG schedule
    assert g["91"]["inputs"]["value"] == 2  # Split_step: end of pass one, start of pass two
    assert (g["68"]["inputs"]["width"], g["68"]["inputs"]["height"]) == (64, 64)  # feeds the encode's size
    assert g["89"]["inputs"]["num_frames"] == 9


@pytest.mark.parametrize(("sep", "expected"), [
    ("/", "WanVideo/2_2/Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors"),
    ("\\", HIGH),
])
def test_model_sub_folders_take_the_servers_separator(prompt: dict[str, Any], sep: str, expected: str) -> None:
    g = json.loads(json.dumps(prompt))
    g["71"]["inputs"]["model"] = LOW.replace("\\", "/")
    native_model_paths(g, sep)
    assert g["22"]["inputs"]["model"] == expected
    assert g["71"]["inputs"]["model"] == (LOW.replace("\\", "/") if sep == "/" else LOW)
    assert g["67"]["inputs"]["image"] == "oldman_upscaled.png"
    assert g["16"]["inputs"]["positive_prompt"] == prompt["16"]["inputs"]["positive_prompt"]


# --------------------------------------------------------------------------- files in the wrapper's layouts


def test_tiny_files_are_planned_in_the_wrapper_layouts(example: Variant) -> None:
    needs = {n.relpath: n for n in model_needs(on_cpu_tier(example), "tiny")}
    dit = {"kind": "wan_dit", "dim": 96, "ffn_dim": 192, "layers": 30, "out_dim": 16, "in_dim": 36,
           "format": "fp8_scaled"}
    assert sorted(needs) == [
        "models/diffusion_models/WanVideo/2_2/Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors",
        "models/diffusion_models/WanVideo/2_2/Wan2_2-I2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors",
        "models/loras/WanVideo/Lightx2v/lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors",
        "models/vae/wanvideo/Wan2_1_VAE_bf16.safetensors",
    ]
    by_folder = {n.folder: n for n in needs.values()}
    assert by_folder["diffusion_models"].layout == dit
    assert by_folder["loras"].layout == {"kind": "lora", "rank": 16, "format": "bf16",
                                         "blocks": {"dim": 96, "ffn_dim": 192, "layers": 30, "clip": True}}
    assert by_folder["vae"].layout == {"kind": "wan21_vae", "dim": 96, "format": "bf16"}


def test_the_wrapper_reads_width_heads_and_layers_it_can_build() -> None:
    """WanVideoModelLoader takes 12 heads and 30 layers for a width it does not know, and its RoPE splits the head
    width in three even parts: the tiny DiT must have 30 blocks and a width of 12 heads of an even width."""
    dim, ffn, layers = WRAPPER_TINY_DIT
    specs = {s.name: s.shape for s in layout_specs({"kind": "wan_dit", "dim": dim, "ffn_dim": ffn, "layers": layers,
                                                    "in_dim": 36, "out_dim": 16, "format": "fp8_scaled"})}
    assert specs["patch_embedding.weight"] == (dim, 36, 1, 2, 2)
    assert {int(n.split(".")[1]) for n in specs if n.startswith("blocks.")} == set(range(30))
    assert "blocks.0.cross_attn.k_img.weight" not in specs  # Wan 2.2 i2v: no CLIP image cross-attention
    assert dim % 12 == 0
    assert dim not in (5120, 3072, 4096)
    head = dim // 12
    assert head % 2 == 0
    assert all(p % 2 == 0 for p in (head - 4 * (head // 6), 2 * (head // 6)))
    assert "scaled_fp8" in specs
    assert "blocks.0.self_attn.q.scale_weight" in specs


def test_full_size_plans_the_wrapper_t5_and_tiny_refuses_it_with_why(example: Variant) -> None:
    full = {n.folder: n for n in model_needs(example.build(), "full")}
    assert full["text_encoders"].layout == {"kind": "wanvideo_t5", "format": "bf16"}
    assert full["diffusion_models"].layout["dim"] == 5120
    assert full["diffusion_models"].layout["layers"] == 40
    assert full["loras"].layout["rank"] == 64
    with pytest.raises(LayoutError, match=r"umt5-xxl-enc-bf16.*LoadWanVideoT5TextEncoder.*5.7B"):
        model_needs(example.build(), "tiny")


def test_wrapper_t5_keys_are_comfyuis_renamed_as_the_wrapper_loader_does() -> None:
    def wrapper_name(key: str) -> str:  # LoadWanVideoT5TextEncoder's own conversion of T5 names
        if key == "shared.weight":
            return "token_embedding.weight"
        if key == "encoder.final_layer_norm.weight":
            return "norm.weight"
        block = f"blocks.{key.split('.')[2]}."
        for old, new in (("SelfAttention.relative_attention_bias", "pos_embedding.embedding"),
                         ("SelfAttention.q", "attn.q"), ("SelfAttention.k", "attn.k"), ("SelfAttention.v", "attn.v"),
                         ("SelfAttention.o", "attn.o"), ("layer.0.layer_norm", "norm1"),
                         ("layer.1.layer_norm", "norm2"), ("DenseReluDense.wi_0", "ffn.gate.0"),
                         ("DenseReluDense.wi_1", "ffn.fc1"), ("DenseReluDense.wo", "ffn.fc2")):
            if old + ".weight" in key:
                return block + new + ".weight"
        raise AssertionError(key)

    expected = {wrapper_name(k): v for k, v in umt5_shapes().items()}
    specs = {s.name: (s.shape, s.dtype) for s in layout_specs({"kind": "wanvideo_t5", "format": "bf16"})}
    assert {k: v[0] for k, v in specs.items()} == expected
    assert {v[1] for v in specs.values()} == {"BF16"}
    assert layout_bytes({"kind": "wanvideo_t5", "format": "bf16"}) == pytest.approx(11_361_845_552, abs=1024)


# --------------------------------------------------------------------------- progress frames and the video


def _frames(node: str, bars: list[tuple[int, int]], t0: float = 1.0, dt: float = 0.1) -> list[Event]:
    out, t = [], t0
    for count, maximum in bars:
        for value in range(1, count + 1):
            t += dt
            out.append(Event(round(t, 6), "progress", {"value": value, "max": maximum, "node": node}))
    return out


def test_the_wrapper_samplers_weight_loading_bar_is_not_counted_as_steps() -> None:
    start = Event(1.0, "executing", {"node": "27"})
    loading = _frames("27", [(5, 5)])  # load_weights: one frame per parameter
    steps = _frames("27", [(2, 2)], t0=3.0, dt=1.0)
    events = [start, *loading, *steps, Event(6.0, "executing", {"node": None})]
    node = NodeTiming("27", "WanVideoSampler", "WanVideo Sampler", 5.0)
    (p,) = sampler_passes(events, [node])
    assert (p.steps, p.step_times) == (2, (4.0, 5.0))
    assert p.seconds == pytest.approx(6.0 - 1.5)  # from the end of the loading bar to the node's end
    assert p.seconds_per_step == pytest.approx(2.25)


def test_a_single_bar_keeps_the_node_time() -> None:
    frames = _frames("3", [(4, 4)])
    assert last_bar(frames) == (frames, None)
    (p,) = sampler_passes([Event(1.0, "executing", {"node": "3"}), *frames], [
        NodeTiming("3", "KSamplerAdvanced", "hi", 2.0)])
    assert (p.steps, len(p.step_times), p.seconds) == (4, 4, 2.0)


def test_a_bar_that_starts_over_on_the_same_max_is_a_new_bar() -> None:
    frames = _frames("3", [(3, 3), (3, 3)])
    bar, before = last_bar(frames)
    assert bar == frames[3:]
    assert before == frames[2].t


def test_a_video_in_the_temp_folder_is_read(tmp_path: Path) -> None:
    """VHS_VideoCombine with save_output off writes to ComfyUI's temp folder, the --temp-directory's temp/."""
    src = DATA / "video"
    mp4 = next(p for p in sorted(src.glob("*.mp4")))
    out = tmp_path / "output"
    (tmp_path / "temp" / "temp").mkdir(parents=True)
    out.mkdir()
    (tmp_path / "temp" / "temp" / "clip.mp4").write_bytes(mp4.read_bytes())
    history = {"outputs": {"60": {"gifs": [{"filename": "clip.mp4", "subfolder": "", "type": "temp"}]}}}
    (f,) = outputs(history, out)
    assert f.path == str(tmp_path / "temp" / "temp" / "clip.mp4")
    assert f.frames
    assert f.bytes
