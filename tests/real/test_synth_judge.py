"""ComfyUI 0.8.0 judges the synthetic layouts: every layout the synthetic set writes, tiny and full size, is handed
to the loader ComfyUI uses for its kind (tests/real/comfy_judge.py, run in ComfyUI's interpreter) and must be
detected as the model the real file is, with no missing, unexpected or unloaded key. The layouts the synthetic set
infers for ComfyUI's own Wan 2.2 templates go through the same judge, and files the writer really wrote are read
back by ComfyUI's loaders."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22 import synth
from pytest_wan22.collect import template_dirs
from pytest_wan22.synth_plan import media_needs, model_needs
from pytest_wan22.workflows import Variant, Workflow, load_workflow
from pytest_wan22.workflows.convert import convert_ui
from tests.real.conftest import COMFYUI, PYTHON, REPO

JUDGE = Path(__file__).with_name("comfy_judge.py")
OBJECT_INFO = REPO / "tests" / "data" / "comfyui-0.8.0" / "object_info.json"
TINY = {"kind": "wan_dit", "dim": 128, "ffn_dim": 256, "layers": 2, "out_dim": 16}
FULL_14B = {"kind": "wan_dit", "dim": 5120, "ffn_dim": 13824, "layers": 40, "out_dim": 16, "format": "fp8_scaled"}
FULL_5B = {"kind": "wan_dit", "dim": 3072, "ffn_dim": 14336, "layers": 30, "out_dim": 48}

# layout id -> (layout, what ComfyUI must detect: its model config class and unet config values)
DITS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
for size, base, five in (("tiny", {**TINY, "format": "fp8_scaled"}, {**TINY, "out_dim": 48, "format": "bf16"}),
                         ("full", FULL_14B, {**FULL_5B, "format": "bf16"})):
    DITS.update({
        f"14B t2v {size}": ({**base, "in_dim": 16}, {"detected": "WAN21_T2V", "model_type": "t2v", "in_dim": 16}),
        f"14B i2v {size}": ({**base, "in_dim": 36}, {"detected": "WAN21_T2V", "model_type": "t2v", "in_dim": 36}),
        f"14B fun inpaint {size}": ({**base, "in_dim": 36}, {"detected": "WAN21_T2V", "in_dim": 36}),
        f"14B fun control {size}": ({**base, "in_dim": 52, "ref_conv": 16},
                                    {"detected": "WAN21_T2V", "in_dim": 52, "in_dim_ref_conv": 16}),
        f"14B fun camera {size}": ({**base, "in_dim": 36, "cam_adapter": 24},
                                   {"detected": "WAN22_Camera", "model_type": "camera_2.2", "in_dim": 36,
                                    "net": "CameraWanModel"}),
        f"14B s2v {size}": ({**base, "in_dim": 16, "extra": "s2v"},
                            {"detected": "WAN22_S2V", "model_type": "s2v", "net": "WanModel_S2V"}),
        f"14B animate {size}": ({**base, "in_dim": 36, "clip": True, "extra": "animate",
                                 **({"layers": 5} if size == "tiny" else {})},
                                {"detected": "WAN22_Animate", "model_type": "animate", "net": "AnimateWanModel"}),
        f"5B ti2v {size}": ({**five, "in_dim": 48, "format": "fp16"},
                            {"detected": "WAN22_T2V", "out_dim": 48, "in_dim": 48}),
        f"5B fun inpaint {size}": ({**five, "in_dim": 100}, {"detected": "WAN22_T2V", "out_dim": 48, "in_dim": 100}),
        f"5B fun control {size}": ({**five, "in_dim": 148, "ref_conv": 48},
                                   {"detected": "WAN22_T2V", "out_dim": 48, "in_dim": 148, "in_dim_ref_conv": 48}),
    })
OTHERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "Wan 2.1 VAE tiny": ({"kind": "wan21_vae", "dim": 8, "format": "bf16"},
                         {"detected": "comfy.ldm.wan.vae", "latent_channels": 16}),
    "Wan 2.1 VAE full": ({"kind": "wan21_vae", "dim": 96, "format": "bf16"},
                         {"detected": "comfy.ldm.wan.vae", "latent_channels": 16}),
    "Wan 2.2 VAE": ({"kind": "wan22_vae", "format": "bf16"},
                    {"detected": "comfy.ldm.wan.vae2_2", "latent_channels": 48}),
    "CLIP vision ViT-H": ({"kind": "clip_vision_h", "format": "fp16"},
                          {"detected": "CLIPVisionModelProjection", "layers": 32}),
    "wav2vec2 large": ({"kind": "wav2vec2_large", "format": "fp16"},
                       {"detected": "Wav2Vec2Model", "layers": 24, "embed_dim": 1024}),
    "UMT5-XXL fp8_scaled": ({"kind": "umt5_xxl", "format": "fp8_scaled"},
                            {"detected": "T5_XXL", "missing": [], "unexpected": [], "wrong_shape": []}),
    "UMT5-XXL fp16": ({"kind": "umt5_xxl", "format": "fp16"},
                      {"detected": "T5_XXL", "missing": [], "unexpected": [], "wrong_shape": []}),
}
LORAS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    f"LoRA for the {name}": ({"kind": "lora", "rank": 16, "format": "bf16",
                              "blocks": {k: layout[k] for k in ("dim", "ffn_dim", "layers")} | {
                                  "clip": bool(layout.get("clip"))}},
                             {"target": {**want, "meta": False}, "patched": layout["layers"] * (
                                 12 if layout.get("clip") else 10)})
    for name, (layout, want) in DITS.items() if name.endswith("tiny")
}
TARGETS = {f"LoRA for the {name}": layout for name, (layout, _) in DITS.items()}
EVERY = {**DITS, **OTHERS, **LORAS}


def judge(entries: Iterable[Mapping[str, Any]], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """ComfyUI's verdict on each {"id", "layout"[, "path"]}, by id."""
    assert COMFYUI
    assert PYTHON
    todo = tmp_path / "layouts.json"
    todo.write_text(json.dumps(list(entries)))
    done = subprocess.run([PYTHON, str(JUDGE), COMFYUI, str(todo)], capture_output=True, text=True, timeout=1800,
                          check=False)
    found = {}
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            verdict = json.loads(line)
            found[verdict.pop("id")] = verdict
    assert found, f"the judge printed nothing (exit {done.returncode}):\n{done.stderr[-3000:]}"
    return found


def _agrees(verdict: Mapping[str, Any], want: Mapping[str, Any]) -> list[str]:
    """What differs from the wanted verdict (nested dicts compared key by key), plus every error or warning."""
    wrong = [f"{k}: {verdict.get(k)!r}, wanted {v!r}" for k, v in want.items()
             if not isinstance(v, Mapping) and verdict.get(k) != v]
    for k, v in want.items():
        if isinstance(v, Mapping):
            wrong += [f"{k}.{w}" for w in _agrees(verdict.get(k) or {}, v)]
    if "error" in verdict:
        wrong.append(f"error: {verdict['error']}")
    return wrong + [f"warning: {w}" for w in verdict.get("warnings", [])]


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return judge([{"id": k, "layout": layout, "target": TARGETS.get(k)} for k, (layout, _) in EVERY.items()],
                 tmp_path_factory.mktemp("judge"))


@pytest.mark.parametrize("name", list(EVERY))
def test_every_layout_is_detected_as_the_model_it_stands_for(name: str, verdicts: dict[str, dict[str, Any]]) -> None:
    assert _agrees(verdicts[name], EVERY[name][1]) == []


# ComfyUI's Wan 2.2 templates (package comfyui-workflow-templates-media-video): the ComfyUI model each diffusion
# model file they name is, converted against a ComfyUI 0.8.0 server's object_info.
TEMPLATE_MODELS = {
    "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors": {"detected": "WAN21_T2V", "in_dim": 36},
    "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors": {"detected": "WAN21_T2V", "in_dim": 36},
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": {"detected": "WAN21_T2V", "in_dim": 16},
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": {"detected": "WAN21_T2V", "in_dim": 16},
    "wan2.2_fun_inpaint_high_noise_14B_fp8_scaled.safetensors": {"detected": "WAN21_T2V", "in_dim": 36},
    "wan2.2_fun_inpaint_low_noise_14B_fp8_scaled.safetensors": {"detected": "WAN21_T2V", "in_dim": 36},
    "wan2.2_fun_control_high_noise_14B_fp8_scaled.safetensors": {"in_dim": 52, "in_dim_ref_conv": 16},
    "wan2.2_fun_control_low_noise_14B_fp8_scaled.safetensors": {"in_dim": 52, "in_dim_ref_conv": 16},
    "wan2.2_fun_camera_high_noise_14B_fp8_scaled.safetensors": {"detected": "WAN22_Camera"},
    "wan2.2_fun_camera_low_noise_14B_fp8_scaled.safetensors": {"detected": "WAN22_Camera"},
    "wan2.2_s2v_14B_fp8_scaled.safetensors": {"detected": "WAN22_S2V"},
    "Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors": {"detected": "WAN22_Animate"},
    "wan2.2_ti2v_5B_fp16.safetensors": {"detected": "WAN22_T2V", "in_dim": 48},
    "wan2.2_fun_inpaint_5B_bf16.safetensors": {"detected": "WAN22_T2V", "in_dim": 100},
    "wan2.2_fun_control_5B_bf16.safetensors": {"detected": "WAN22_T2V", "in_dim": 148, "in_dim_ref_conv": 48},
}


def template_prompts() -> dict[str, dict[str, Any]]:
    assert PYTHON
    info = json.loads(OBJECT_INFO.read_text())
    found = {}
    for folder in template_dirs(PYTHON):
        for path in sorted(folder.glob("*wan2_2*.json")):
            found[path.stem] = convert_ui(json.loads(path.read_text()), info).prompt
    return found


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_the_layouts_inferred_for_every_template_are_the_real_models(size: str, tmp_path: Path) -> None:
    prompts = template_prompts()
    assert len(prompts) == 12
    entries: dict[str, dict[str, Any]] = {}
    for template, prompt in prompts.items():
        if size == "tiny":  # as the cpu tier runs it: the text encoder replaced by precomputed conditioning
            prompt = Variant(Workflow(prompt, name=template)).precomputed_conditioning("cond").build()
        for need in model_needs(prompt, size):
            entries[f"{template}: {need.name}"] = {"id": f"{template}: {need.name}", "layout": need.layout,
                                                   "target": need.patches}
    verdicts = judge(entries.values(), tmp_path)
    wrong = []
    for key, verdict in verdicts.items():
        name = key.split(": ", 1)[1]
        want = TEMPLATE_MODELS.get(name, {})
        wrong += [f"{key}: {w}" for w in _agrees(verdict, want if "target" not in verdict else {})]
    assert wrong == []
    assert {k.split(": ", 1)[1] for k in verdicts} >= set(TEMPLATE_MODELS)


def test_files_the_writer_wrote_load_in_comfyui(tmp_path: Path) -> None:
    assert PYTHON
    root = tmp_path / "set"
    layouts = {"s2v": {**TINY, "in_dim": 16, "extra": "s2v", "format": "fp8_scaled"},
               "control5": {**TINY, "out_dim": 48, "in_dim": 148, "ref_conv": 48, "format": "bf16"},
               "vae": {"kind": "wan21_vae", "dim": 8, "format": "bf16"}}
    lora = {"kind": "lora", "rank": 8, "format": "bf16", "blocks": {"dim": 128, "ffn_dim": 256, "layers": 2,
                                                                    "clip": False}}
    jobs = [synth.FileJob(f"models/x/{k}.safetensors", v) for k, v in {**layouts, "lora": lora}.items()]
    synth.ensure_files(PYTHON, root, jobs, timeout=600, log_path=tmp_path / "w.log")
    media = media_needs({"1": {"class_type": "LoadVideo", "inputs": {"file": "c.mp4"}},
                         "2": {"class_type": "LoadAudio", "inputs": {"audio": "a.MP3"}},
                         "3": {"class_type": "LoadImage", "inputs": {"image": "i.jpg"}}}, 64, 48, 9, 16.0)
    synth.ensure_media(PYTHON, root, [dict(m.job(), describe=m.describe()) for m in media],
                       log_path=tmp_path / "m.log")
    entries = [{"id": j.relpath, "layout": j.layout, "path": str(root / j.relpath), "target": layouts["s2v"]}
               for j in jobs]
    entries += [{"id": m.name, "layout": {"kind": "media", "media": m.kind}, "path": str(root / "input" / m.name)}
                for m in media]
    verdicts = judge(entries, tmp_path)
    assert _agrees(verdicts["models/x/s2v.safetensors"], {"detected": "WAN22_S2V"}) == []
    assert _agrees(verdicts["models/x/control5.safetensors"], {"in_dim": 148, "in_dim_ref_conv": 48}) == []
    assert _agrees(verdicts["models/x/vae.safetensors"], {"latent_channels": 16}) == []
    assert _agrees(verdicts["models/x/lora.safetensors"], {"patched": 20}) == []
    assert _agrees(verdicts["c.mp4"], {"frames": 9, "width": 64, "height": 48}) == []
    assert _agrees(verdicts["a.MP3"], {"sample_rate": 16000}) == []
    assert verdicts["a.MP3"]["seconds"] >= 2.0
    assert _agrees(verdicts["i.jpg"], {"width": 64, "height": 48, "format": "JPEG"}) == []


# GGUF experts (city96/ComfyUI-GGUF), as QuantStack and city96 name them: read by the pack's own loader, loaded with
# its GGMLOps and run once (tiny), or detected with their keys checked on the meta device (full size).
GGUF_TINY = {"kind": "wan_dit", "dim": 256, "ffn_dim": 512, "layers": 2, "container": "gguf"}
GGUF_FULL_14B = {**FULL_14B, "container": "gguf"}
GGUF_DITS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
for size, base, five in (("tiny", {**GGUF_TINY, "out_dim": 16}, {**GGUF_TINY, "out_dim": 48}),
                         ("full", GGUF_FULL_14B, {**FULL_5B, "container": "gguf"})):
    ran = {"finite": True} if size == "tiny" else {"meta": True}
    GGUF_DITS.update({
        f"GGUF 14B i2v Q4_K_M {size}": ({**base, "in_dim": 36, "format": "Q4_K_M"},
                                        {"detected": "WAN21_T2V", "in_dim": 36, **ran}),
        f"GGUF 14B i2v Q8_0 {size}": ({**base, "in_dim": 36, "format": "Q8_0"},
                                      {"detected": "WAN21_T2V", "in_dim": 36, **ran}),
        f"GGUF 14B t2v Q5_K_M {size}": ({**base, "in_dim": 16, "format": "Q5_K_M"},
                                        {"detected": "WAN21_T2V", "in_dim": 16, **ran}),
        f"GGUF 14B t2v Q3_K_S {size}": ({**base, "in_dim": 16, "format": "Q3_K_S"},
                                        {"detected": "WAN21_T2V", "in_dim": 16, **ran}),
        f"GGUF 14B i2v Q2_K {size}": ({**base, "in_dim": 36, "format": "Q2_K"},
                                      {"detected": "WAN21_T2V", "in_dim": 36, **ran}),
        f"GGUF 14B i2v Q4_0 {size}": ({**base, "in_dim": 36, "format": "Q4_0"},
                                      {"detected": "WAN21_T2V", "in_dim": 36, **ran}),
        f"GGUF 14B fun control Q6_K {size}": ({**base, "in_dim": 52, "ref_conv": 16, "format": "Q6_K"},
                                              {"detected": "WAN21_T2V", "in_dim": 52, **ran}),
        f"GGUF 5B ti2v Q8_0 {size}": ({**five, "in_dim": 48, "format": "Q8_0"},
                                      {"detected": "WAN22_T2V", "in_dim": 48, "out_dim": 48, **ran}),
        f"GGUF 5B ti2v BF16 {size}": ({**five, "in_dim": 48, "format": "BF16"},
                                      {"detected": "WAN22_T2V", "in_dim": 48, "out_dim": 48, **ran}),
    })
GGUF_WORKFLOW = REPO / "workflows" / "wan22_i2v_a14b_gguf.json"


def _unless_skipped(verdicts: Mapping[str, Mapping[str, Any]]) -> None:
    reasons = {str(v["skipped"]) for v in verdicts.values() if "skipped" in v}
    if reasons:
        pytest.skip(reasons.pop())


@pytest.fixture(scope="module")
def gguf_verdicts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    return judge([{"id": k, "layout": layout} for k, (layout, _) in GGUF_DITS.items()],
                 tmp_path_factory.mktemp("judge-gguf"))


@pytest.mark.parametrize("name", list(GGUF_DITS))
def test_every_gguf_layout_loads_through_comfyui_gguf_as_the_model_it_stands_for(
        name: str, gguf_verdicts: dict[str, dict[str, Any]]) -> None:
    _unless_skipped({name: gguf_verdicts[name]})
    assert _agrees(gguf_verdicts[name], GGUF_DITS[name][1]) == []


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_the_gguf_workflows_files_are_what_comfyui_gguf_loads(size: str, tmp_path: Path) -> None:
    prompt = load_workflow(GGUF_WORKFLOW).graph
    if size == "tiny":
        prompt = Variant(Workflow(prompt, name="gguf")).precomputed_conditioning("cond").build()
    needs = [n for n in model_needs(prompt, size) if n.loader != "CLIPLoader"]
    verdicts = judge([{"id": n.name, "layout": n.layout, "target": n.patches} for n in needs], tmp_path)
    _unless_skipped(verdicts)
    expert = {"detected": "WAN21_T2V", "in_dim": 36, **({"finite": True} if size == "tiny" else {})}
    for name in ("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"):
        assert _agrees(verdicts[name], expert) == []
    if size == "tiny":  # a LoRA is judged against the model it patches, loaded from safetensors of its layout
        lora = verdicts["wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"]
        assert _agrees(lora, {"patched": 20}) == []  # no shape mismatch warned as the patches are applied
        assert lora.get("patched_run", {}).get("finite") is True, lora  # ComfyUI-GGUF applies them as it dequantizes


def test_gguf_files_the_writer_wrote_load_in_comfyui_gguf(tmp_path: Path) -> None:
    assert PYTHON
    root = tmp_path / "set"
    layout = {**GGUF_TINY, "out_dim": 16, "in_dim": 36, "format": "Q4_K_M"}
    job = synth.FileJob("models/diffusion_models/Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", layout)
    synth.ensure_files(PYTHON, root, [job], timeout=600, log_path=tmp_path / "w.log")
    verdicts = judge([{"id": job.relpath, "layout": layout, "path": str(root / job.relpath)}], tmp_path)
    _unless_skipped(verdicts)
    assert _agrees(verdicts[job.relpath], {"detected": "WAN21_T2V", "in_dim": 36, "finite": True,
                                           "gguf_types": ["F16", "F32", "Q4_K", "Q6_K"]}) == []


def test_a_gguf_umt5_is_read_by_clip_loader_gguf_as_the_wan_text_encoder(tmp_path: Path) -> None:
    layout = {"kind": "umt5_xxl", "format": "Q4_K_M", "container": "gguf"}  # K types: written in seconds
    verdicts = judge([{"id": "umt5-xxl-encoder-Q4_K_M.gguf", "layout": layout}], tmp_path)
    _unless_skipped(verdicts)
    verdict = verdicts["umt5-xxl-encoder-Q4_K_M.gguf"]
    expected = "Dequantizing token_embd.weight to prevent runtime OOM."  # ComfyUI-GGUF says so for every UMT5
    verdict["warnings"] = [w for w in verdict.get("warnings", []) if w != expected]
    assert _agrees(verdict, {"detected": "T5_XXL", "encoder": "WanTEModel", "missing": [], "unexpected": [],
                             "wrong_shape": []}) == []
    assert verdict["gguf_types"] == ["F16", "F32", "Q4_K", "Q6_K"]
    assert verdict["tokens"]
    assert all(0 < t < 256384 for t in verdict["tokens"])  # the tokenizer it rebuilt from the metadata
