"""Layouts of every model file a Wan 2.2 workflow names (synth.layout_specs) and their inference from the graph
(synth_plan): full-size shape arithmetic against the real files, tiny layouts, names and graphs, the errors. What
ComfyUI detects each layout as is judged in tests/real/test_synth_judge.py."""

from __future__ import annotations

import math
from typing import Any

import pytest

from pytest_wan22 import synth
from pytest_wan22.errors import LayoutError
from pytest_wan22.synth_plan import media_needs, model_needs, weight_format

DIT_14B = {"kind": "wan_dit", "dim": 5120, "ffn_dim": 13824, "layers": 40, "out_dim": 16, "format": "fp8_scaled"}
DIT_5B = {"kind": "wan_dit", "dim": 3072, "ffn_dim": 14336, "layers": 30, "out_dim": 48}

# Sizes of the real files (Comfy-Org's Wan 2.2 repackaged, as downloaded) and how far the whole file may differ: the
# tensors not at all, the safetensors header by its padding where the real one has the same keys, and by a few KiB
# where it differs (the fp8 files' key order and offsets, the Wan 2.1 VAE's metadata).
REAL_BYTES = {
    "wan2.2_i2v_high_noise_14B_fp8_scaled": ({**DIT_14B, "in_dim": 36}, 14_294_742_832, 32 * 1024),
    "wan2.2_s2v_14B_fp8_scaled": ({**DIT_14B, "in_dim": 16, "extra": "s2v"}, 16_394_821_672, 32 * 1024),
    "wan2.2_ti2v_5B_fp16": ({**DIT_5B, "in_dim": 48, "format": "fp16"}, 9_999_658_848, 64),
    "wan2.2_fun_control_5B_bf16": ({**DIT_5B, "in_dim": 148, "ref_conv": 48, "format": "bf16"}, 10_003_303_280,
                                   64),
    "wan_2.1_vae": ({"kind": "wan21_vae", "dim": 96, "format": "bf16"}, 253_815_318, 16 * 1024),
    "wan2.2_vae": ({"kind": "wan22_vae", "format": "bf16"}, 1_409_400_960, 64),
}


@pytest.mark.parametrize("name", sorted(REAL_BYTES))
def test_full_size_layouts_have_the_real_files_bytes(name: str) -> None:
    layout, real, header = REAL_BYTES[name]
    assert abs(synth.layout_bytes(layout) - real) <= header, (name, synth.layout_bytes(layout) - real)


def test_full_size_text_encoder_is_the_real_one_but_for_its_tokenizer() -> None:
    ours = synth.layout_bytes({"kind": "umt5_xxl", "format": "fp8_scaled"})
    assert 0 < 6_735_906_897 - ours < 5 * 2**20  # the real file carries a SentencePiece model of a few MB


def _shapes(layout: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {t.name: t.shape for t in synth.layout_specs(layout)}


def test_full_size_expert_extras() -> None:
    control = _shapes({**DIT_14B, "in_dim": 52, "ref_conv": 16})
    assert control["patch_embedding.weight"] == (5120, 52, 1, 2, 2)
    assert control["ref_conv.weight"] == (5120, 16, 2, 2)
    camera = _shapes({**DIT_14B, "in_dim": 36, "cam_adapter": 24})
    assert camera["control_adapter.conv.weight"] == (5120, 24 * 64, 2, 2)
    assert camera["control_adapter.residual_blocks.0.conv2.weight"] == (5120, 5120, 3, 3)
    assert "img_emb.proj.1.weight" not in camera  # no CLIP image input in Wan 2.2's camera model
    s2v = _shapes({**DIT_14B, "in_dim": 16, "extra": "s2v"})
    assert s2v["casual_audio_encoder.encoder.conv1_local.conv.weight"] == (5120, 1024, 3)
    assert s2v["casual_audio_encoder.weights"] == (1, 25, 1, 1)
    assert sum(1 for n in s2v if n.startswith("audio_injector.injector.") and n.endswith(".q.weight")) == 12
    assert s2v["frame_packer.proj_4x.weight"] == (5120, 16, 4, 8, 8)
    animate = _shapes({**DIT_14B, "in_dim": 36, "clip": True, "extra": "animate"})
    assert sum(1 for n in animate if n.endswith("linear1_q.weight")) == 8  # a face adapter block per 5 layers
    assert animate["img_emb.proj.1.weight"] == (1280, 1280)
    assert animate["blocks.39.cross_attn.k_img.weight"] == (5120, 5120)
    assert animate["motion_encoder.enc.net_app.convs.7.conv2.0.kernel"] == (4, 4)
    assert animate["face_encoder.conv1_local.conv.weight"] == (4096, 512, 3)


def test_fp8_scaled_quantizes_linear_weights_only() -> None:
    specs = {t.name: t for t in synth.layout_specs({**DIT_14B, "in_dim": 16, "extra": "s2v", "dim": 128,
                                                    "ffn_dim": 256, "layers": 2})}
    assert specs["scaled_fp8"].dtype == "F8_E4M3"
    assert specs["blocks.0.ffn.0.weight"].dtype == "F8_E4M3"
    assert specs["blocks.0.ffn.0.scale_weight"].dtype == "F32"
    assert specs["audio_injector.injector_adain_layers.3.linear.weight"].dtype == "F8_E4M3"
    assert specs["trainable_cond_mask.weight"].dtype == "BF16"  # an Embedding, not a Linear
    assert specs["casual_audio_encoder.weights"].init == "ones"  # a softmax-like weighting: never near zero
    assert "trainable_cond_mask.scale_weight" not in specs


def test_weight_formats_follow_the_name() -> None:
    assert weight_format("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "bf16") == "fp8_scaled"
    assert weight_format("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "bf16") == "fp8_scaled"
    assert weight_format("wan2.2_t2v_14B_fp8_e4m3fn.safetensors", "bf16") == "fp8_e4m3fn"
    assert weight_format("x_fp8_e5m2.safetensors", "bf16") == "fp8_e5m2"
    assert weight_format("wan2.2_ti2v_5B_fp16.safetensors", "bf16") == "fp16"
    assert weight_format("wan2.2_vae.safetensors", "bf16") == "bf16"
    plain = {t.name: t for t in synth.layout_specs({**DIT_14B, "in_dim": 16, "dim": 128, "ffn_dim": 256,
                                                    "layers": 1, "format": "fp8_e4m3fn"})}
    assert plain["blocks.0.self_attn.q.weight"].dtype == "F8_E4M3"
    assert plain["blocks.0.self_attn.q.weight"].init == "normal"  # no scale: the values themselves are small
    assert "scaled_fp8" not in plain


def test_layout_digests_change_with_the_layout_only() -> None:
    a = {**DIT_14B, "in_dim": 36}
    assert synth.layout_digest(a) == synth.layout_digest(dict(reversed(list(a.items()))))
    assert synth.layout_digest(a) != synth.layout_digest({**a, "in_dim": 16})
    assert synth.layout_digest(a) != synth.layout_digest(a, fp8_matmul="full")


# ----------------------------------------------------------------------------- inference from the graph


def _graph(unet: str, conditioning: str | None = None, *, vae: str = "wan_2.1_vae.safetensors",
           loras: tuple[str, ...] = (), extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """UNETLoader -> LoRAs -> ModelSamplingSD3 -> KSampler <- a conditioning node (with a VAELoader)."""
    g: dict[str, Any] = {"1": {"class_type": "UNETLoader", "inputs": {"unet_name": unet, "weight_dtype": "default"}},
                         "2": {"class_type": "VAELoader", "inputs": {"vae_name": vae}}}
    model = ["1", 0]
    for i, lora in enumerate(loras):
        g[f"l{i}"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": model, "lora_name": lora,
                                                                         "strength_model": 1.0}}
        model = [f"l{i}", 0]
    g["3"] = {"class_type": "ModelSamplingSD3", "inputs": {"model": model, "shift": 8.0}}
    sampler: dict[str, Any] = {"model": ["3", 0], "seed": 1, "steps": 4}
    if conditioning:
        g["4"] = {"class_type": conditioning, "inputs": {"vae": ["2", 0], "width": 640, "height": 640,
                                                         "length": 81}}
        sampler.update(positive=["4", 0], negative=["4", 1], latent_image=["4", 2])
    g["5"] = {"class_type": "KSampler", "inputs": sampler}
    g.update(extra or {})
    return g


def _layout(g: dict[str, Any], size: str = "full", folder: str = "diffusion_models") -> dict[str, Any]:
    (need,) = [n for n in model_needs(g, size) if n.folder == folder]
    return dict(need.layout)


@pytest.mark.parametrize(("unet", "conditioning", "expect"), [
    ("wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors", "EmptyHunyuanLatentVideo", {"in_dim": 16}),
    ("wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors", "WanImageToVideo", {"in_dim": 36}),
    ("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "WanFirstLastFrameToVideo", {"in_dim": 36}),
    ("wan2.2_fun_inpaint_high_noise_14B_fp8_scaled.safetensors", "WanFunInpaintToVideo", {"in_dim": 36}),
    ("wan2.2_fun_control_low_noise_14B_fp8_scaled.safetensors", "Wan22FunControlToVideo",
     {"in_dim": 52, "ref_conv": 16}),
    ("wan2.2_fun_camera_high_noise_14B_fp8_scaled.safetensors", "WanCameraImageToVideo",
     {"in_dim": 36, "cam_adapter": 24}),
    ("wan2.2_s2v_14B_fp8_scaled.safetensors", "WanSoundImageToVideo", {"in_dim": 16, "extra": "s2v"}),
    ("Wan2_2-Animate-14B_fp8_e4m3fn_scaled_KJ.safetensors", "WanAnimateToVideo",
     {"in_dim": 36, "clip": True, "extra": "animate"}),
])
def test_14b_experts_by_name_and_graph(unet: str, conditioning: str, expect: dict[str, Any]) -> None:
    layout = _layout(_graph(unet, conditioning))
    assert layout == {**DIT_14B, **expect}


@pytest.mark.parametrize(("unet", "conditioning", "expect"), [
    ("wan2.2_ti2v_5B_fp16.safetensors", "Wan22ImageToVideoLatent", {"in_dim": 48, "format": "fp16"}),
    ("wan2.2_fun_inpaint_5B_bf16.safetensors", "WanFunInpaintToVideo", {"in_dim": 100, "format": "bf16"}),
    ("wan2.2_fun_control_5B_bf16.safetensors", "Wan22FunControlToVideo",
     {"in_dim": 148, "ref_conv": 48, "format": "bf16"}),
])
def test_5b_models_by_name_and_graph(unet: str, conditioning: str, expect: dict[str, Any]) -> None:
    g = _graph(unet, conditioning, vae="wan2.2_vae.safetensors")
    assert _layout(g) == {**DIT_5B, **expect}
    assert _layout(g, folder="vae") == {"kind": "wan22_vae", "format": "bf16"}


def test_a_name_that_says_nothing_takes_the_graphs_model() -> None:
    assert _layout(_graph("my_model.safetensors", "Wan22FunControlToVideo"))["in_dim"] == 52
    five = _graph("my_model.safetensors", "Wan22FunControlToVideo", vae="wan2.2_vae.safetensors")
    assert _layout(five)["in_dim"] == 148  # the Wan 2.2 VAE's 48 channels: the 5B model
    assert _layout(five)["format"] == "bf16"
    # the name wins over the graph: an i2v expert fed by fun control conditioning is still the i2v model
    assert _layout(_graph("wan2.2_i2v_low_noise_14B_fp16.safetensors", "Wan22FunControlToVideo"))["in_dim"] == 36


def test_tiny_layouts_keep_the_models_shape_but_not_its_size() -> None:
    layout = _layout(_graph("wan2.2_fun_control_5B_bf16.safetensors", "Wan22FunControlToVideo",
                            vae="wan2.2_vae.safetensors"), "tiny")
    assert layout == {**DIT_5B, "dim": 128, "ffn_dim": 256, "layers": 2, "in_dim": 148, "ref_conv": 48,
                      "format": "bf16"}
    animate = _layout(_graph("Wan2_2-Animate-14B_bf16.safetensors", "WanAnimateToVideo"), "tiny")
    assert animate["layers"] == 5  # ComfyUI detects animate by its first face adapter block, one per 5 layers
    g = _graph("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "WanImageToVideo")
    assert _layout(g, "tiny", "vae") == {"kind": "wan21_vae", "dim": 8, "format": "bf16"}


def test_loras_are_shaped_for_the_model_they_patch() -> None:
    g = _graph("wan2.2_s2v_14B_fp8_scaled.safetensors", "WanSoundImageToVideo",
               loras=("wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors",
                      "lightx2v_I2V_14B_480p_cfg_step_distill_rank32_bf16.safetensors"))
    loras = {n.name: n for n in model_needs(g, "full") if n.folder == "loras"}
    first = loras["wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"]
    assert first.patches == {**DIT_14B, "in_dim": 16, "extra": "s2v"}
    assert first.layout["blocks"] == {"dim": 5120, "ffn_dim": 13824, "layers": 40, "clip": False}
    assert first.layout["rank"] == 64
    assert loras["lightx2v_I2V_14B_480p_cfg_step_distill_rank32_bf16.safetensors"].layout["rank"] == 32
    specs = {t.name: t.shape for t in synth.layout_specs(first.layout)}
    assert specs["diffusion_model.blocks.39.ffn.0.lora_down.weight"] == (64, 5120)
    assert specs["diffusion_model.blocks.39.ffn.0.lora_up.weight"] == (13824, 64)
    tiny = [n for n in model_needs(g, "tiny") if n.folder == "loras"]
    assert {n.layout["rank"] for n in tiny} == {16}
    clip = _graph("Wan2_2-Animate-14B_bf16.safetensors", "WanAnimateToVideo", loras=("relight_lora_fp16.safetensors",))
    (lora,) = [n for n in model_needs(clip, "tiny") if n.folder == "loras"]
    names = {t.name for t in synth.layout_specs(lora.layout)}
    assert "diffusion_model.blocks.0.cross_attn.k_img.lora_down.weight" in names
    assert lora.layout["format"] == "fp16"


def test_other_loaders_and_the_vae_by_the_models() -> None:
    g = _graph("wan2.2_ti2v_5B_fp16.safetensors", "Wan22ImageToVideoLatent", vae="ae.safetensors", extra={
        "6": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp16.safetensors", "type": "wan"}},
        "7": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_h.safetensors"}},
        "8": {"class_type": "AudioEncoderLoader",
              "inputs": {"audio_encoder_name": "wav2vec2_large_english.safetensors"}},
    })
    found = {n.folder: n.layout for n in model_needs(g, "full")}
    assert found["vae"] == {"kind": "wan22_vae", "format": "bf16"}  # the name says nothing: the 5B model's VAE
    assert found["text_encoders"] == {"kind": "umt5_xxl", "format": "fp16"}
    assert found["clip_vision"] == {"kind": "clip_vision_h", "format": "fp16"}
    assert found["audio_encoders"] == {"kind": "wav2vec2_large", "format": "fp16"}


def test_a_layout_that_cannot_be_inferred_names_file_loader_and_what_is_missing() -> None:
    with pytest.raises(LayoutError) as info:
        model_needs(_graph("my_model.safetensors", "EmptyLatentImage"), "tiny")
    msg = str(info.value)
    assert "'my_model.safetensors'" in msg
    assert "UNETLoader (node 1)" in msg
    assert "no sampler it drives is fed by a Wan 2.2 conditioning or latent node" in msg
    assert "name the file after its model" in msg

    with pytest.raises(LayoutError, match=r"'wan2.1_t2v_1.3B_fp16.safetensors'.*says Wan 2.1"):
        model_needs(_graph("wan2.1_t2v_1.3B_fp16.safetensors", "EmptyHunyuanLatentVideo"), "full")
    with pytest.raises(LayoutError, match=r"no 5B fun camera model"):
        model_needs(_graph("wan2.2_fun_camera_5B_bf16.safetensors", "WanCameraImageToVideo"), "full")

    lonely = {"1": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "x.safetensors", "model": ["9", 0]}},
              "9": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "c.safetensors"}}}
    with pytest.raises(LayoutError, match=r"'x.safetensors'.*LoraLoaderModelOnly \(node 1\).*does not lead to a "
                                          r"UNETLoader"):
        model_needs(lonely, "full")

    te = {"6": {"class_type": "CLIPLoader", "inputs": {"clip_name": "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                                                       "type": "wan"}}}
    with pytest.raises(LayoutError, match=r"5.7B parameters.*precomputed conditioning"):
        model_needs(te, "tiny")
    with pytest.raises(LayoutError, match=r"type 'sd3'"):
        model_needs({"6": {"class_type": "CLIPLoader", "inputs": {"clip_name": "t5.safetensors", "type": "sd3"}}},
                    "full")
    with pytest.raises(LayoutError, match=r"neither Wan 2.1 nor Wan 2.2"):
        model_needs({"2": {"class_type": "VAELoader", "inputs": {"vae_name": "vae.safetensors"}}}, "full")
    with pytest.raises(LayoutError, match=r"ViT-H"):
        model_needs({"7": {"class_type": "CLIPVisionLoader", "inputs": {"clip_name": "clip_vision_g.safetensors"}}},
                    "full")


def test_one_file_cannot_be_two_models() -> None:
    g = _graph("shared.safetensors", "WanImageToVideo", extra={
        "11": {"class_type": "UNETLoader", "inputs": {"unet_name": "shared.safetensors"}},
        "13": {"class_type": "ModelSamplingSD3", "inputs": {"model": ["11", 0]}},
        "14": {"class_type": "Wan22FunControlToVideo", "inputs": {"vae": ["2", 0]}},
        "15": {"class_type": "KSampler", "inputs": {"model": ["13", 0], "positive": ["14", 0]}}})
    with pytest.raises(LayoutError, match=r"'shared.safetensors' is loaded by .* one file cannot be both"):
        model_needs(g, "full")


def test_every_file_is_planned_once_with_experts_first() -> None:
    g = _graph("wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "WanImageToVideo",
               loras=("a_lora.safetensors",), extra={
                   "6": {"class_type": "VAELoader", "inputs": {"vae_name": "wan_2.1_vae.safetensors"}}})
    needs = model_needs(g, "tiny")
    assert [n.folder for n in needs] == ["diffusion_models", "loras", "vae"]
    assert needs[0].relpath == "models/diffusion_models/wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors"
    assert needs[0].what == "Wan 2.2 14B image-to-video model (in_dim 36), fp8_scaled, tiny"


# ----------------------------------------------------------------------------- input media


def test_media_at_the_clips_size_and_length() -> None:
    g = {"1": {"class_type": "LoadImage", "inputs": {"image": "start.jpg"}},
         "2": {"class_type": "LoadVideo", "inputs": {"file": "control.mp4 [input]"}},
         "3": {"class_type": "LoadAudio", "inputs": {"audio": "talk.MP3"}},
         "4": {"class_type": "PrimitiveInt", "inputs": {"value": 77}},
         "5": {"class_type": "WanSoundImageToVideo", "inputs": {"length": ["4", 0], "width": 64}},
         "6": {"class_type": "WanSoundImageToVideoExtend", "inputs": {"length": ["4", 0]}},
         "7": {"class_type": "LoadImage", "inputs": {"image": "start.jpg"}}}
    needs = {m.name: m for m in media_needs(g, 64, 48, 9, 16.0)}
    assert set(needs) == {"start.jpg", "control.mp4", "talk.MP3"}
    assert needs["start.jpg"].describe() == "image 64x48"
    assert needs["control.mp4"].describe() == "video 64x48, 77 frames at 16 fps"  # every chunk's length covered
    assert needs["talk.MP3"].seconds == math.ceil(154 / 16) + 1  # both sound chunks, with a second to spare
    assert needs["talk.MP3"].sample_rate == 16000
    assert needs["talk.MP3"].job()["kind"] == "audio"
