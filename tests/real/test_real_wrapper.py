"""kijai's WanVideoWrapper Wan 2.2 i2v example on a real ComfyUI on the CPU (set WAN22_COMFYUI_DIR and WAN22_PYTHON;
the node packs ComfyUI-WanVideoWrapper, ComfyUI-KJNodes and ComfyUI-VideoHelperSuite must be in its custom_nodes)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.real.conftest import COMFYUI, REPO, real_project

EXAMPLE = REPO / "tests" / "data" / "workflows" / "wanvideo_2_2_I2V_A14B_example_WIP.json"
#: The node packs the example needs: a word of their folder name, and where to get them.
PACKS = {"wanvideowrapper": "kijai/ComfyUI-WanVideoWrapper", "kjnodes": "kijai/ComfyUI-KJNodes",
         "videohelpersuite": "Kosinkadink/ComfyUI-VideoHelperSuite"}


def missing_packs() -> list[str]:
    folder = Path(COMFYUI or ".") / "custom_nodes"
    names = [p.name.lower() for p in folder.iterdir() if p.is_dir()] if folder.is_dir() else []
    return [repo for word, repo in PACKS.items() if not any(word in n.replace("-", "") for n in names)]


@pytest.fixture
def project(pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory) -> pytest.Pytester:
    missing = missing_packs()
    if missing:
        pytest.skip(f"the WanVideoWrapper example needs the node packs {', '.join(missing)} in "
                    f"{COMFYUI}/custom_nodes (with their requirements installed into ComfyUI's interpreter)")
    return real_project(pytester, tmp_path_factory, comfyui_dir=COMFYUI, log_dir="logs", rounds=1,
                        warmup_rounds=0)


def test_the_wrapper_example_runs_on_the_cpu_tier_with_steps_and_video_checked(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("-m", "cpu", f"--wan22-workflows={EXAMPLE}", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    (path,) = (project.path / "logs" / "main" / "records").glob("*.json")
    record = json.loads(path.read_text(encoding="utf-8"))
    assert record["outcome"] == "success"
    # the tier's 4 steps split at 2, each pass's steps from its last progress bar (not the weight loading)
    assert [(p["node_id"], p["steps"], len(p["step_times"])) for p in record["passes"]] == [("27", 2, 2),
                                                                                           ("90", 2, 2)]
    assert all(p["seconds"] > 0 for p in record["passes"])
    (video,) = record["outputs"]
    assert (video["type"], video["frames"], video["width"], video["height"], video["fps"]) == (
        "temp", 9, 64, 64, 16.0)
    log = (project.path / "logs" / "main" / "comfyui.log").read_text(encoding="utf-8", errors="replace")
    assert "num_heads: 12, num_layers: 30" in log  # the wrapper built the tiny DiT from the file's width
    ini = next(project.path.glob("*.ini")).read_text(encoding="utf-8")
    models = ini.split("wan22_models_dir = ")[1].split()[0]
    tiny = Path(models) / "tiny"  # the cpu tier's set
    written = tiny / "models" / "diffusion_models" / "WanVideo" / "2_2"
    assert sorted(p.name for p in written.iterdir()) == ["Wan2_2-I2V-A14B-HIGH_fp8_e4m3fn_scaled_KJ.safetensors",
                                                         "Wan2_2-I2V-A14B-LOW_fp8_e4m3fn_scaled_KJ.safetensors"]
    assert not (tiny / "models" / "text_encoders" / "umt5-xxl-enc-bf16.safetensors").exists()
