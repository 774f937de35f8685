"""The files a workflow names are taken from where the user keeps them (<comfyui>/input), and fix hints name the
folders the launched server reads, against the fake ComfyUI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_wan22.runner import png_bytes
from tests.plugin.conftest import FAKE_DIR, REPO

Project = Callable[..., pytest.Pytester]
START = png_bytes(24, 8)  # not the ramp the plugin generates at the variant's size
CLIP = b"\x00\x00\x00\x18ftypmp42 a user's clip"


def _install(tmp: Path, *inputs: str) -> Path:
    """A ComfyUI install (a copy of the fake) whose input/ folder holds the user's files."""
    dest = tmp / "ComfyUI"
    shutil.copytree(FAKE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "input").mkdir()
    for name in inputs:
        (dest / "input" / name).write_bytes(START if name.endswith(".png") else CLIP)
    return dest


def _with_video(tmp: Path, name: str) -> Path:
    """The shipped workflow plus a LoadVideo node (and a preview of it, so it runs)."""
    graph = json.loads((REPO / "workflows" / "wan22_i2v_a14b.json").read_text())
    graph["90"] = {"class_type": "LoadVideo", "inputs": {"file": name}, "_meta": {"title": "Reference clip"}}
    graph["91"] = {"class_type": "PreviewAny", "inputs": {"source": ["90", 0]}, "_meta": {"title": "Preview clip"}}
    path = tmp / "with_clip.json"
    path.write_text(json.dumps(graph))
    return path


def test_an_input_image_from_the_users_input_folder_is_the_one_the_run_uses(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            wan22_run(BASE.set("Start Image", "image", "my_start.png"))
    """)
    comfyui = _install(p.path, "my_start.png")
    result = p.runpytest(f"--wan22-comfyui-dir={comfyui}", "--wan22-log-dir=logs")
    result.assert_outcomes(passed=1)
    assert (p.path / "logs" / "main" / "input" / "my_start.png").read_bytes() == START


@pytest.mark.parametrize("present", [True, False])
def test_an_input_video_is_taken_from_the_users_input_folder_or_named_there(wan22_project: Project,
                                                                             present: bool) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            wan22_run(Variant(load_workflow("with_clip.json")).schedule("lightx2v_4step").duration(5))
    """)
    _with_video(p.path, "my_clip.mp4")
    comfyui = _install(p.path, *(["my_clip.mp4"] if present else []))
    result = p.runpytest(f"--wan22-comfyui-dir={comfyui}", "--wan22-log-dir=logs")
    server_input = p.path / "logs" / "main" / "input"
    if present:
        result.assert_outcomes(passed=1)
        assert (server_input / "my_clip.mp4").read_bytes() == CLIP
    else:
        result.assert_outcomes(failed=1)
        result.stdout.fnmatch_lines([f"*input video 'my_clip.mp4' not in input/*fix: put it in {comfyui}/input/ "
                                     f"(before each test the plugin copies the files a workflow names from there "
                                     f"into the server's own input folder, {server_input})*"])


def test_a_missing_lora_names_the_models_folder_of_the_users_install(wan22_project: Project) -> None:
    p = wan22_project("""
        @pytest.mark.rtx5090
        def test_variant(wan22_run):
            wan22_run(BASE)
    """, fake_env={"FAKE_COMFYUI_MODELS": json.dumps({"loras": []})})
    comfyui = _install(p.path)
    result = p.runpytest(f"--wan22-comfyui-dir={comfyui}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([f"*not in models/loras*fix: put it in {comfyui}/models/loras/ or point "
                                 f"{comfyui}/extra_model_paths.yaml at it"])
