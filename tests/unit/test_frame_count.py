"""The frames a graph's video node gets (workflows/frame_count.py), the clip size a scaled graph keeps where its
sizes are linked (Variant.scaled), and the refusal of a workflow pinned to a GPU on a tier without one (collect)."""

from __future__ import annotations

import copy
from typing import Any

from pytest_wan22.collect import cpu_refusal, gpu_pinned, node_classes
from pytest_wan22.workflows import Variant, Workflow
from pytest_wan22.workflows.frame_count import int_input, video_frames

# The shape of ComfyUI's Wan 2.2 S2V template: three sound-to-video chunks whose length is one primitive, their
# latents concatenated, the first latent frame repeated, and the first frames of the decoded clip dropped.
S2V: dict[str, Any] = {
    "1": {"class_type": "UNETLoader", "inputs": {"unet_name": "wan2.2_s2v_14B_fp8_scaled.safetensors"}},
    "104": {"class_type": "PrimitiveInt", "inputs": {"value": 77}},
    "100": {"class_type": "PrimitiveInt", "inputs": {"value": 3}},
    "93": {"class_type": "WanSoundImageToVideo", "inputs": {"width": 640, "height": 640, "length": ["104", 0]}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 4, "latent_image": ["93", 2]}},
    "76": {"class_type": "WanSoundImageToVideoExtend", "inputs": {"length": ["104", 0], "video_latent": ["3", 0]}},
    "77": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 2, "steps": 4, "latent_image": ["76", 2]}},
    "78": {"class_type": "LatentConcat", "inputs": {"dim": "t", "samples1": ["3", 0], "samples2": ["77", 0]}},
    "86": {"class_type": "WanSoundImageToVideoExtend", "inputs": {"length": ["104", 0], "video_latent": ["78", 0]}},
    "87": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 3, "steps": 4, "latent_image": ["86", 2]}},
    "88": {"class_type": "LatentConcat", "inputs": {"dim": "t", "samples1": ["78", 0], "samples2": ["87", 0]}},
    "94": {"class_type": "LatentCut", "inputs": {"dim": "t", "index": 0, "amount": 1, "samples": ["88", 0]}},
    "95": {"class_type": "LatentConcat", "inputs": {"dim": "t", "samples1": ["94", 0], "samples2": ["88", 0]}},
    "80": {"class_type": "VAEDecode", "inputs": {"samples": ["95", 0]}},
    "96": {"class_type": "ImageFromBatch", "inputs": {"batch_index": ["100", 0], "length": 4096, "image": ["80", 0]}},
    "82": {"class_type": "CreateVideo", "inputs": {"fps": 16, "images": ["96", 0]}},
    "83": {"class_type": "SaveVideo", "inputs": {"video": ["82", 0]}},
}


def test_the_video_frames_follow_the_latents_through_concatenations_cuts_and_batches() -> None:
    # 3 chunks of 20 latent frames, one repeated: 61 latent frames, 241 video frames, less the first 3
    assert video_frames(S2V, ["96", 0]) == 238
    assert video_frames(S2V, ["80", 0]) == 241
    assert video_frames(S2V, ["93", 0]) is None  # a conditioning output, not images
    assert int_input(S2V, S2V["93"], "length") == 77
    unknown = copy.deepcopy(S2V)
    unknown["95"]["class_type"] = "SomePackLatentOp"
    assert video_frames(unknown, ["96", 0]) is None


def test_a_scaled_graph_sets_linked_sizes_where_they_are_held() -> None:
    v = Variant(Workflow(S2V, name="s2v"))
    assert v.expected_output().frames == 238
    scaled = v.scaled(width=64, height=64, frames=9)
    g = scaled.build()
    assert g["104"]["inputs"]["value"] == 9  # every chunk: one primitive
    assert g["93"]["inputs"]["length"] == ["104", 0]
    assert scaled.expected_output().frames == (3 * 3 + 1 - 1) * 4 + 1 - 3
    assert scaled.image_size() == (64, 64)


CAMERA: dict[str, Any] = {
    "1": {"class_type": "UNETLoader",
          "inputs": {"unet_name": "wan2.2_fun_camera_high_noise_14B_fp8_scaled.safetensors"}},
    "108": {"class_type": "WanCameraEmbedding", "inputs": {"camera_pose": "Static", "width": 720, "height": 720,
                                                           "length": 81}},
    "98": {"class_type": "WanCameraImageToVideo", "inputs": {"width": ["108", 1], "height": ["108", 2],
                                                             "length": ["108", 3], "camera_conditions": ["108", 0]}},
    "3": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "seed": 1, "steps": 4, "latent_image": ["98", 2]}},
    "4": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0]}},
    "5": {"class_type": "CreateVideo", "inputs": {"fps": 16, "images": ["4", 0]}},
}


def test_the_camera_embedding_is_scaled_with_the_latent_it_feeds() -> None:
    v = Variant(Workflow(CAMERA, name="camera"))
    assert (v.describe()["width"], v.describe()["length"]) == (720, 81)
    assert v.variant_id.startswith("5s-720x720")
    g = v.scaled(width=64, height=48, frames=9).build()
    assert {k: g["108"]["inputs"][k] for k in ("width", "height", "length")} == {"width": 64, "height": 48,
                                                                                 "length": 9}
    assert g["98"]["inputs"]["width"] == ["108", 1]


ANIMATE_UI: dict[str, Any] = {
    "nodes": [
        {"id": 108, "type": "DownloadAndLoadSAM2Model", "mode": 0,
         "widgets_values": ["sam2_hiera_base_plus.safetensors", "video", "cuda", "fp16"]},
        {"id": 100, "type": "DWPreprocessor", "mode": 0, "widgets_values": ["enable", 512]},
        {"id": 5, "type": "OffloadToGpu", "mode": 4, "widgets_values": ["cuda:1"]},  # bypassed: never runs
        {"id": 6, "type": "MarkdownNote", "mode": 0, "widgets_values": ["runs on cuda"]},
        {"id": 7, "type": "0a1b2c3d-0000-4000-8000-000000000000", "mode": 0}],
    "links": [],
    "definitions": {"subgraphs": [{"nodes": [{"id": 3, "type": "Sam2Segmentation", "mode": 0,
                                              "widgets_values": [True, "cuda:0"]}]}]},
}


def test_a_workflow_pinned_to_a_gpu_is_refused_on_a_tier_without_one() -> None:
    pinned = gpu_pinned(ANIMATE_UI)
    assert pinned == [("108", "DownloadAndLoadSAM2Model", "cuda"), ("3", "Sam2Segmentation", "cuda:0")]
    assert gpu_pinned({"1": {"class_type": "LoadSAM", "inputs": {"device": "cuda"}},
                       "2": {"class_type": "CLIPLoader", "inputs": {"device": "default"}}}) == [
        ("1", "LoadSAM", "cuda")]
    missing = sorted(node_classes(ANIMATE_UI))
    assert missing == ["DWPreprocessor", "DownloadAndLoadSAM2Model", "Sam2Segmentation"]
    text = cpu_refusal("video_wan2_2_14B_animate", "cpu", pinned[:1], missing)
    assert text == (
        "video_wan2_2_14B_animate cannot run on the cpu tier, which has no GPU: node 108 DownloadAndLoadSAM2Model "
        "(kijai/ComfyUI-segment-anything-2) is set to device 'cuda'. It also needs node packs this ComfyUI lacks "
        "(they download their own weights at first use): Fannovel16/comfyui_controlnet_aux: DWPreprocessor; "
        "kijai/ComfyUI-segment-anything-2: DownloadAndLoadSAM2Model, Sam2Segmentation")
