"""The GGUF two-expert workflow (city96/ComfyUI-GGUF's UnetLoaderGGUF) on a real ComfyUI on the CPU: the synthetic
set writes its experts as GGUF files and every round's video is checked; a server without the pack fails the test
naming the pack and how to install it (set WAN22_COMFYUI_DIR and WAN22_PYTHON)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.real.conftest import COMFYUI, PYTHON, REPO, real_project

GGUF_WORKFLOW = REPO / "workflows" / "wan22_i2v_a14b_gguf.json"


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    p = real_project(pytester, tmp_path_factory, comfyui_dir=COMFYUI, log_dir="logs", rounds=2, warmup_rounds=1)
    p.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    return p


def test_the_gguf_workflow_runs_on_gguf_experts_with_its_video_checked(
        project: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> None:
    assert COMFYUI
    assert PYTHON
    if not (Path(COMFYUI) / "custom_nodes" / "ComfyUI-GGUF" / "nodes.py").is_file():
        pytest.skip(f"city96/ComfyUI-GGUF is not in {COMFYUI}/custom_nodes (git clone it there and pip install gguf "
                    "into ComfyUI's interpreter)")
    result = project.runpytest_subprocess(f"--wan22-workflows={GGUF_WORKFLOW}", "-p", "no:randomly")
    result.assert_outcomes(passed=2)
    records = [json.loads(p.read_text()) for p in
               sorted((project.path / "logs/main/records").glob("high_low-5s-640p-lightx2v_4step.*.json"))]
    assert [r["warmup"] for r in records] == [True, False, False]
    for record in records:
        assert record["outcome"] == "success"
        video = record["outputs"][0]
        assert (video["frames"], video["width"], video["height"], video["fps"]) == (9, 64, 64, 16.0)
    loaded = {n["title"]: n for n in records[0]["nodes"]}
    assert loaded["Load Diffusion Model (high noise)"]["class_type"] == "UnetLoaderGGUF"
    models = Path(os.environ.get("WAN22_MODELS_DIR") or tmp_path_factory.getbasetemp() / "models")
    experts = sorted(models.rglob("Wan2.2-I2V-A14B-*Noise-Q4_K_M.gguf"))
    assert len(experts) == 2
    assert all(p.read_bytes()[:4] == b"GGUF" for p in experts)


def test_a_server_without_comfyui_gguf_names_the_pack_and_its_requirement(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess(f"--wan22-workflows={GGUF_WORKFLOW}", "-p", "no:randomly",
                                          "--wan22-server-args=--disable-all-custom-nodes")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([
        "*node 1 'Load Diffusion Model (high noise)' (UnetLoaderGGUF): node class 'UnetLoaderGGUF' is not installed "
        "on the server; fix: install city96/ComfyUI-GGUF into *custom_nodes/ (git clone "
        "https://github.com/city96/ComfyUI-GGUF) and restart the server; it needs the Python package gguf in the "
        "server's interpreter*"])
