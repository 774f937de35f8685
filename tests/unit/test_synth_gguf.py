"""GGUF experts (city96/ComfyUI-GGUF's UnetLoaderGGUF) on the synthetic set: the layout a QuantStack or city96 file
name gives (synth_plan), the GGML type of each tensor (synth.gguf_specs), and the file the writer writes, read back
with the gguf package's own reader. What ComfyUI-GGUF and ComfyUI detect it as is judged in
tests/real/test_synth_judge.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22 import synth
from pytest_wan22.errors import LayoutError
from pytest_wan22.synth_plan import gguf_file_type, model_needs

needs_gguf = pytest.mark.skipif(importlib.util.find_spec("gguf") is None,
                                reason="the gguf package is not installed (pip install -e '.[test]')")

I2V_GGUF = {"kind": "wan_dit", "dim": 256, "ffn_dim": 512, "layers": 2, "out_dim": 16, "in_dim": 36,
            "format": "Q4_K_M", "container": "gguf"}


def _expert(name: str, cls: str = "UnetLoaderGGUF", **extra: Any) -> dict[str, dict[str, Any]]:
    return {"1": {"class_type": cls, "inputs": {"unet_name": name, **extra}}}


@pytest.mark.parametrize(("name", "family_in_dim", "out_dim", "file_type"), [
    ("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", 36, 16, "Q4_K_M"),  # QuantStack
    ("Wan2.2-I2V-A14B-LowNoise-Q8_0.gguf", 36, 16, "Q8_0"),
    ("Wan2.2-T2V-A14B-LowNoise-Q3_K_S.gguf", 16, 16, "Q3_K_S"),
    ("wan2.2_t2v_high_noise_14B_Q5_K_M.gguf", 16, 16, "Q5_K_M"),  # city96
    ("Wan2.2-TI2V-5B-Q8_0.gguf", 48, 48, "Q8_0"),
    ("Wan2.2-Fun-A14B-Control-HighNoise-Q6_K.gguf", 52, 16, "Q6_K"),
    ("wan2.2_i2v_low_noise_14B-BF16.gguf", 36, 16, "BF16"),
])
def test_gguf_names_give_the_model_and_its_file_type(name: str, family_in_dim: int, out_dim: int,
                                                     file_type: str) -> None:
    five = out_dim == 48
    for size, dims in (("tiny", synth.GGUF_TINY_DIT), ("full", synth.DIT_SIZES["5B" if five else "14B"])):
        (need,) = model_needs(_expert(name), size)
        assert need.folder == "diffusion_models"
        assert need.layout["container"] == "gguf"
        assert need.layout["format"] == file_type
        assert need.layout["in_dim"] == family_in_dim
        assert need.layout["out_dim"] == out_dim
        assert (need.layout["dim"], need.layout["ffn_dim"], need.layout["layers"]) == dims
        assert f"GGUF {file_type}" in need.what


def test_the_advanced_loader_and_the_lora_on_a_gguf_expert() -> None:
    g = {**_expert("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", "UnetLoaderGGUFAdvanced", dequant_dtype="default"),
         "2": {"class_type": "LoraLoaderModelOnly",
               "inputs": {"model": ["1", 0], "lora_name": "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
                          "strength_model": 1.0}}}
    expert, lora = model_needs(g, "tiny")
    assert expert.layout == I2V_GGUF
    assert lora.layout["blocks"] == {"dim": 256, "ffn_dim": 512, "layers": 2, "clip": False}
    assert lora.patches == I2V_GGUF


def test_gguf_file_types_in_names() -> None:
    assert gguf_file_type("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf") == "Q4_K_M"
    assert gguf_file_type("wan2.2_t2v_high_noise_14B_Q5_K_M.gguf") == "Q5_K_M"
    assert gguf_file_type("Wan2.2-TI2V-5B-Q8_0.gguf") == "Q8_0"
    assert gguf_file_type("x-Q6_K.gguf") == "Q6_K"
    assert gguf_file_type("x-F16.gguf") == "F16"
    assert gguf_file_type("x-IQ4_XS.gguf") is None
    assert gguf_file_type("wan2.2_i2v_high_noise_14B.gguf") is None


@pytest.mark.parametrize(("graph", "message"), [
    (_expert("Wan2.2-I2V-A14B-HighNoise.gguf"), "none of the GGUF types"),
    (_expert("Wan2.2-I2V-A14B-HighNoise-IQ4_XS.gguf"), "none of the GGUF types"),
    (_expert("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf", "UNETLoader"), "does not load GGUF files"),
    (_expert("wan2.2_i2v_high_noise_14B_fp16.safetensors"), "loads .gguf files only"),
    ({"1": {"class_type": "WanVideoModelLoader", "inputs": {"model": "Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"}}},
     "not for WanVideoModelLoader"),
])
def test_a_gguf_file_that_cannot_be_written_is_refused_with_why(graph: dict[str, Any], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        model_needs(graph, "tiny")


def _types(file_type: str, **layout: Any) -> dict[str, str]:
    return {t.name: t.qtype for t in synth.gguf_specs({**I2V_GGUF, "format": file_type, **layout})}


def test_each_tensor_gets_the_type_their_tools_give_it() -> None:
    q4km = _types("Q4_K_M")
    assert q4km["blocks.0.self_attn.q.weight"] == "Q4_K"
    assert q4km["blocks.0.cross_attn.o.weight"] == "Q4_K"
    assert q4km["blocks.0.ffn.0.weight"] == "Q4_K"
    assert q4km["blocks.1.self_attn.v.weight"] == "Q6_K"  # attention values and ffn.2 a step higher
    assert q4km["blocks.1.ffn.2.weight"] == "Q6_K"
    assert q4km["patch_embedding.weight"] == "F32"  # 5-D: kept apart by the converter, put back in F32
    assert q4km["blocks.0.modulation"] == "F32"
    assert q4km["blocks.0.norm3.weight"] == "F32"
    assert q4km["blocks.0.self_attn.q.bias"] == "F32"
    for kept in ("text_embedding.0.weight", "time_embedding.2.weight", "time_projection.1.weight",
                 "head.head.weight"):
        assert q4km[kept] == "F16", kept
    assert _types("BF16")["text_embedding.0.weight"] == "BF16"
    assert _types("Q8_0")["blocks.1.ffn.2.weight"] == "Q8_0"
    assert _types("Q4_0")["blocks.1.ffn.2.weight"] == "Q4_1"
    q3km = _types("Q3_K_M", layers=4)
    values = [q3km[f"blocks.{i}.{a}.v.weight"] for i in range(4) for a in ("self_attn", "cross_attn")]
    assert values == ["Q5_K"] * 2 + ["Q4_K"] * 6  # the first two attention values a step higher still
    narrow = _types("Q4_K_M", dim=128, ffn_dim=256)  # rows of 128 do not fill a 256-value K block: F16
    assert narrow["blocks.0.self_attn.q.weight"] == "F16"
    assert narrow["blocks.0.ffn.2.weight"] == "Q6_K"


def test_gguf_size_and_names_follow_the_safetensors_layout() -> None:
    plain = {t.name: t.shape for t in synth.layout_specs({**I2V_GGUF, "format": "bf16", "container": None})}
    assert {t.name: t.shape for t in synth.gguf_specs(I2V_GGUF)} == plain
    full = {**I2V_GGUF, "dim": 5120, "ffn_dim": 13824, "layers": 40}
    q8, q4 = synth.layout_bytes({**full, "format": "Q8_0"}), synth.layout_bytes(full)
    assert 15.0e9 < q8 < 15.5e9
    assert 9.0e9 < q4 < 10.5e9
    with pytest.raises(ValueError, match="gguf_specs"):
        synth.layout_specs(I2V_GGUF)


@needs_gguf
@pytest.mark.parametrize("qtype", sorted(synth._K_BLOCKS))
def test_k_type_blocks_are_valid_with_mean_zero_and_the_asked_spread(qtype: str) -> None:
    import gguf
    import numpy as np

    blocks = synth.k_blocks(qtype, 2048, 0.01, np.random.default_rng(0))
    values = gguf.quants.dequantize(blocks.reshape(-1), gguf.GGMLQuantizationType[qtype])
    assert values.size == 2048 * 256
    assert np.isfinite(values).all()
    assert abs(float(values.mean())) < 0.001
    assert 0.009 < float(values.std()) < 0.011


@needs_gguf
@pytest.mark.parametrize("file_type", ["Q4_K_M", "Q8_0", "Q3_K_M", "Q2_K", "Q5_0", "BF16", "F16"])
def test_the_written_file_reads_back_with_the_types_and_shapes_of_the_layout(file_type: str, tmp_path: Path) -> None:
    import gguf
    import numpy as np

    layout = {**I2V_GGUF, "format": file_type}
    path = tmp_path / f"Wan2.2-I2V-A14B-HighNoise-{file_type}.gguf"
    size = synth.write_gguf(path, layout, seed=3)
    assert size == path.stat().st_size == synth.layout_bytes(layout)
    reader = gguf.GGUFReader(path)
    field = reader.get_field("general.architecture")
    assert field is not None
    assert str(field.parts[field.data[-1]], encoding="utf-8") == "wan"
    file_type_field = reader.get_field("general.file_type")
    assert file_type_field is not None
    assert int(file_type_field.parts[file_type_field.data[-1]][0]) == gguf.LlamaFileType[
        "ALL_F32" if file_type == "F32" else f"MOSTLY_{file_type}"]
    want = {t.name: t for t in synth.gguf_specs(layout)}
    got = {t.name: t for t in reader.tensors}
    assert list(got) == list(want)
    for name, t in got.items():
        assert t.tensor_type.name == want[name].qtype, name
        assert tuple(int(v) for v in reversed(t.shape)) == want[name].shape, name  # ggml order is reversed
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        assert np.isfinite(values).all(), name
        if want[name].init == "normal":
            assert 0.7 * want[name].value < float(values.std()) < 1.3 * want[name].value, name
        elif want[name].init == "ones":
            assert (values == 1).all(), name


@needs_gguf
def test_ensure_files_writes_a_gguf_layout_once_as_a_gguf_blob(tmp_path: Path) -> None:
    root = tmp_path / "set"
    high = "models/diffusion_models/Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"
    low = "models/diffusion_models/Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"
    jobs = [synth.FileJob(high, I2V_GGUF), synth.FileJob(low, I2V_GGUF)]
    assert synth.ensure_files(sys.executable, root, jobs) == [high, low]
    blob = synth.blob_path(root, synth.layout_digest(I2V_GGUF), I2V_GGUF)
    assert blob.suffix == ".gguf"
    assert blob.is_file()
    assert (root / high).stat().st_ino == (root / low).stat().st_ino == blob.stat().st_ino
    assert (root / high).read_bytes()[:4] == b"GGUF"
    assert synth.ensure_files(sys.executable, root, jobs) == []


GGUF_WORKFLOW = Path(__file__).resolve().parents[2] / "workflows" / "wan22_i2v_a14b_gguf.json"


@pytest.mark.parametrize("cls", ["UnetLoaderGGUF", "UnetLoaderGGUFAdvanced"])
def test_the_gguf_workflow_has_its_roles_and_files_found_as_a_core_one(cls: str) -> None:
    from pytest_wan22.workflows import Variant, Workflow, load_workflow
    from pytest_wan22.workflows.roles import expert_pair, role_files

    g = load_workflow(GGUF_WORKFLOW).graph
    for loader in ("1", "2"):
        g[loader]["class_type"] = cls
    assert expert_pair(g) == ("1", "2")
    files = role_files(g, g)
    assert (files["high"], files["low"]) == ("Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf",
                                             "Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf")
    assert files["lora_high"] == "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors"
    # the graph as the cpu tier runs it: the text path precomputed
    built = Variant(Workflow(g, name="gguf")).precomputed_conditioning("cond").build()
    needs = {n.name: n for n in model_needs(built, "tiny")}
    assert needs["Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf"].layout == I2V_GGUF
    assert needs["Wan2.2-I2V-A14B-LowNoise-Q4_K_M.gguf"].layout == I2V_GGUF
    assert needs["wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors"].patches == I2V_GGUF
    assert needs["wan_2.1_vae.safetensors"].layout["kind"] == "wan21_vae"


def test_a_gguf_text_encoder_is_the_text_encoder_role_and_gives_way_to_precomputed_conditioning() -> None:
    from pytest_wan22.workflows import Variant, Workflow, load_workflow
    from pytest_wan22.workflows.roles import role_files

    g = load_workflow(GGUF_WORKFLOW).graph
    g["5"] = {"class_type": "CLIPLoaderGGUF", "inputs": {"clip_name": "umt5-xxl-encoder-Q8_0.gguf", "type": "wan"},
              "_meta": {"title": "Load Text Encoder"}}
    assert role_files(g, g)["text_encoder"] == "umt5-xxl-encoder-Q8_0.gguf"
    built = Variant(Workflow(g, name="gguf")).precomputed_conditioning("cond").build()
    assert "CLIPLoaderGGUF" not in {n["class_type"] for n in built.values()}
    assert all(n.loader != "CLIPLoaderGGUF" for n in model_needs(built, "tiny"))


# ComfyUI-GGUF's T5_SD_MAP (loader.py): how CLIPLoaderGGUF renames a t5encoder GGUF's tensors to ComfyUI's.
T5_SD_MAP = {"enc.": "encoder.", ".blk.": ".block.", "token_embd": "shared", "output_norm": "final_layer_norm",
             "attn_q": "layer.0.SelfAttention.q", "attn_k": "layer.0.SelfAttention.k",
             "attn_v": "layer.0.SelfAttention.v", "attn_o": "layer.0.SelfAttention.o",
             "attn_norm": "layer.0.layer_norm", "attn_rel_b": "layer.0.SelfAttention.relative_attention_bias",
             "ffn_up": "layer.1.DenseReluDense.wi_1", "ffn_down": "layer.1.DenseReluDense.wo",
             "ffn_gate": "layer.1.DenseReluDense.wi_0", "ffn_norm": "layer.1.layer_norm"}
UMT5_GGUF = {"kind": "umt5_xxl", "format": "Q8_0", "container": "gguf"}


def _comfy_name(name: str) -> str:
    for theirs, ours in T5_SD_MAP.items():
        name = name.replace(theirs, ours)
    return name


@pytest.mark.parametrize(("name", "file_type"), [("umt5-xxl-encoder-Q8_0.gguf", "Q8_0"),
                                                 ("umt5-xxl-encoder-Q5_K_M.gguf", "Q5_K_M")])
def test_a_gguf_text_encoder_for_clip_loader_gguf_is_umt5_xxl_in_llama_cpp_names(name: str, file_type: str) -> None:
    g = {"1": {"class_type": "CLIPLoaderGGUF", "inputs": {"clip_name": name, "type": "wan"}}}
    (need,) = model_needs(g, "full")
    assert need.layout == {**UMT5_GGUF, "format": file_type}
    assert need.folder == "text_encoders"
    specs = {t.name: t for t in synth.gguf_specs(need.layout)}
    assert {_comfy_name(n): t.shape for n, t in specs.items()} == synth.umt5_shapes()  # what the loader renames
    assert specs["token_embd.weight"].qtype == (file_type[:4] if file_type.endswith("_M") else file_type)
    assert specs["enc.blk.0.attn_rel_b.weight"].qtype == "F16"
    assert specs["enc.blk.3.ffn_norm.weight"].qtype == "F32"


@pytest.mark.parametrize(("graph", "message"), [
    ({"1": {"class_type": "CLIPLoaderGGUF", "inputs": {"clip_name": "umt5-xxl-encoder-Q8_0.gguf", "type": "wan"}}},
     "precomputed conditioning"),  # tiny
    ({"1": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5-xxl-encoder-Q8_0.gguf", "type": "wan"}}},
     "does not load GGUF files"),
    ({"1": {"class_type": "CLIPLoaderGGUF",
            "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors", "type": "wan"}}},
     "refuses scaled fp8"),
])
def test_a_text_encoder_comfyui_gguf_would_not_load_is_refused_with_why(graph: dict[str, Any], message: str) -> None:
    with pytest.raises(LayoutError, match=message):
        model_needs(graph, "tiny" if message == "precomputed conditioning" else "full")


def test_the_umt5_tokenizer_metadata_is_umt5_sized_with_byte_fallback() -> None:
    tokens, scores, types = synth.umt5_gguf_vocab()
    assert len(tokens) == len(scores) == len(types) == 256384  # ComfyUI-GGUF rebuilds the tokenizer at this size
    assert tokens[:3] == ("<pad>", "</s>", "<unk>")
    assert types[:3] == (3, 3, 2)
    assert tokens[3:259] == tuple(f"<0x{b:02X}>" for b in range(256))
    assert set(types[3:259]) == {6}
    assert len(set(tokens)) == len(tokens)
    assert "\u2581cat" in tokens


@needs_gguf
def test_a_t5encoder_gguf_reads_back_with_its_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gguf

    small = {k: v for k, v in synth.umt5_shapes().items() if k.startswith(("encoder.block.0.", "encoder.final"))}
    monkeypatch.setattr(synth, "umt5_shapes", lambda: small)  # one block: the metadata is what is tested
    path = tmp_path / "umt5-xxl-encoder-Q8_0.gguf"
    assert synth.write_gguf(path, UMT5_GGUF) == path.stat().st_size == synth.layout_bytes(UMT5_GGUF)
    reader = gguf.GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.get_field(key)
        assert field is not None, key
        return field.contents()

    assert value("general.architecture") == "t5encoder"
    assert value("tokenizer.ggml.model") == "t5"
    assert len(value("tokenizer.ggml.tokens")) == 256384
    assert value("tokenizer.ggml.tokens")[259:261] == list(synth.umt5_gguf_vocab()[0][259:261])
    assert value("tokenizer.ggml.add_space_prefix") is True
    assert (value("tokenizer.ggml.eos_token_id"), value("tokenizer.ggml.padding_token_id")) == (1, 0)
    assert {t.name: t.tensor_type.name for t in reader.tensors} == {
        t.name: t.qtype for t in synth.gguf_specs(UMT5_GGUF)}
