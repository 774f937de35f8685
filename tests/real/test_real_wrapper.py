"""kijai's WanVideoWrapper Wan 2.2 i2v example on a real ComfyUI on the CPU (set WAN22_COMFYUI_DIR and WAN22_PYTHON;
the node packs ComfyUI-WanVideoWrapper, ComfyUI-KJNodes and ComfyUI-VideoHelperSuite must be in its custom_nodes)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.synth import layout_specs
from pytest_wan22.synth_plan import model_needs
from pytest_wan22.workflows import Variant, Workflow
from pytest_wan22.workflows.convert import convert_ui
from tests.real.conftest import COMFYUI, PYTHON, REPO, real_project

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


JUDGE = REPO / "tests" / "real" / "wrapper_judge.py"
INFO = REPO / "tests" / "data" / "object_info_packs.json"


def judge(entries: list[dict[str, Any]], tmp_path: Path) -> dict[str, dict[str, Any]]:
    """Verdicts of tests/real/wrapper_judge.py (the wrapper's own modules, in ComfyUI's interpreter) by id."""
    pack = next(p for p in (Path(str(COMFYUI)) / "custom_nodes").iterdir() if "wanvideowrapper" in p.name.lower()
                .replace("-", ""))
    layouts = tmp_path / "layouts.json"
    layouts.write_text(json.dumps(entries), encoding="utf-8")
    out = subprocess.run([str(PYTHON), str(JUDGE), str(COMFYUI), str(pack), str(layouts)], capture_output=True,
                         text=True, timeout=600, check=False)
    verdicts = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(verdicts) == len(entries), out.stdout[-3000:] + out.stderr[-3000:]
    return {v["id"]: v for v in verdicts}


def example_variant(size: str) -> Variant:
    """The example as a variant: on the cpu tier's terms for the tiny set (skips without the wrapper pack)."""
    if "kijai/ComfyUI-WanVideoWrapper" in missing_packs():
        pytest.skip(f"needs kijai/ComfyUI-WanVideoWrapper in {COMFYUI}/custom_nodes")
    prompt = convert_ui(json.loads(EXAMPLE.read_text(encoding="utf-8")), json.loads(INFO.read_text(encoding="utf-8")))
    variant = Variant(Workflow(prompt.prompt, EXAMPLE.stem))
    return variant.precomputed_conditioning("wan22_tiny_cond").on_cpu() if size == "tiny" else variant


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_the_examples_files_are_what_the_wrapper_builds(size: str, tmp_path: Path) -> None:
    """Every layout planned for the example (tiny on the cpu tier's graph; full size, the wrapper's T5 included),
    set against the modules the wrapper builds for it on the meta device: no missing, unexpected or misshapen key."""
    variant = example_variant(size)
    needs = [n for n in model_needs(variant.build(), size) if n.layout["kind"] != "lora"]
    assert {n.layout["kind"] for n in needs} == ({"wan_dit", "wan21_vae", "wanvideo_t5"} if size == "full" else
                                                 {"wan_dit", "wan21_vae"})
    verdicts = judge([{"id": n.relpath, "layout": dict(n.layout)} for n in needs], tmp_path)
    for n in needs:
        v = verdicts[n.relpath]
        assert (v.get("error"), v["missing"], v["unexpected"], v["shapes"]) == (None, [], [], []), v


@pytest.mark.parametrize("size", ["tiny", "full"])
def test_the_examples_lora_patches_every_key_the_wrapper_keeps(size: str, tmp_path: Path) -> None:
    """The example's LightX2V LoRA through WanVideoSetLoRAs onto the model it patches (meta device): every key is
    applied but the CLIP image projections (k_img, v_img) of the Wan 2.1 LoRA, which the node drops on a Wan 2.2
    model (as it does the real file's), and neither the wrapper nor ComfyUI logs a key it did not load."""
    variant = example_variant(size)
    (need,) = [n for n in model_needs(variant.build(), size) if n.layout["kind"] == "lora"]
    assert need.patches is not None
    verdict = judge([{"id": need.relpath, "layout": dict(need.layout), "patches": dict(need.patches)}], tmp_path)
    v = verdict[need.relpath]
    keys = [s.name for s in layout_specs(need.layout)]
    dropped = [k for k in keys if "_img." in k] if not need.patches.get("clip") else []
    assert (v.get("error"), v["warnings"]) == (None, []), v
    assert v["unapplied"] == sorted({re.sub(r"\.blocks\.\d+\.", ".blocks.*.", k) for k in dropped}), v
    assert (v["keys"], v["applied"]) == (len(keys), len(keys) - len(dropped)), v
