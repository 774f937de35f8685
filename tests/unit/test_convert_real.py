"""Conversion of third-party UI workflows (opt-in: their licences keep them out of this repository).

Set WAN22_REAL_WORKFLOWS_DIR to a folder holding the files named below to run these checks. The /object_info
they convert against is committed (tests/data/object_info_packs.json: core ComfyUI 0.8.0 plus the node packs
those workflows use).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.workflows.convert import convert_ui, is_ui_format

INFO: dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[1] / "data" / "object_info_packs.json").read_text(encoding="utf-8"))
ENV = "WAN22_REAL_WORKFLOWS_DIR"
REGGIE_UI = "gh-Reggie-sun-AI-VIDEO__wan22_i2v_ui.json"
REGGIE_API = "gh-Reggie-sun-AI-VIDEO__wan22_i2v_api.json"

#: What the hand-maintained Reggie-sun API file changed against its UI file (see its source's README):
#: (node id, input) -> why. Everything else must match the conversion.
REGGIE_EDITS = {
    ("521", "image"): "the API file names a test image",
    ("28", "enable_vae_tiling"): "tiled VAE switched on in the API file only",
    ("28", "tile_x"): "tiled VAE sizes edited in the API file",
    ("28", "tile_y"): "tiled VAE sizes edited in the API file",
    ("28", "tile_stride_x"): "tiled VAE sizes edited in the API file",
    ("28", "tile_stride_y"): "tiled VAE sizes edited in the API file",
    ("514", "tiled_vae"): "tiled VAE switched on in the API file only",
    ("38", "compile_args"): "the API file still wires the bypassed WanVideoTorchCompileSettings",
    ("484", "compile_args"): "the API file still wires the bypassed WanVideoTorchCompileSettings",
    ("485", "compile_args"): "the API file still wires the bypassed WanVideoTorchCompileSettings",
}


def real_dir() -> Path:
    folder = os.environ.get(ENV)
    if not folder or not Path(folder).is_dir():
        pytest.skip(f"{ENV} is unset: point it at a folder of the shared real workflows (third-party files "
                    "this repository may not redistribute) to convert them")
    return Path(folder)


def ui_files() -> list[str]:
    folder = os.environ.get(ENV)
    if not folder or not Path(folder).is_dir():
        return ["(none)"]
    return sorted(p.name for p in Path(folder).glob("*.json")
                  if is_ui_format(json.loads(p.read_text(encoding="utf-8"))))


@pytest.mark.parametrize("name", ui_files())
def test_every_ui_file_converts(name: str) -> None:
    path = real_dir() / name
    conversion = convert_ui(json.loads(path.read_text(encoding="utf-8")), INFO)
    assert conversion.prompt
    # the only thing left undecided is a WanVideoSampler widget of an older wrapper release
    for issue in conversion.issues:
        assert (issue.class_type, issue.input) == ("WanVideoSampler", "add_noise_to_samples"), str(issue)


def _strip(value: Any) -> Any:
    if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
        return [value[0].rsplit(":", 1)[-1], value[1]]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=1e-6)
    return bool(a == b)


def test_reggie_sun_ui_converts_to_its_api_export() -> None:
    folder = real_dir()
    ui = json.loads((folder / REGGIE_UI).read_text(encoding="utf-8"))
    api = json.loads((folder / REGGIE_API).read_text(encoding="utf-8"))
    conversion = convert_ui(ui, INFO)
    assert conversion.ok, conversion.report()
    # ids: subgraph inner nodes are 'instance:inner' here, bare inner ids in the API file
    converted = {k.rsplit(":", 1)[-1]: v for k, v in conversion.prompt.items()}
    api_nodes = set(api) - {"552"}  # the bypassed compile node the API file keeps
    ui_only = {k for k in converted if converted[k]["class_type"] == "PlaySound|pysssss"}  # dropped by hand
    assert set(converted) - ui_only == api_nodes
    diffs = []
    for node_id in sorted(api_nodes):
        mine, theirs = converted[node_id], api[node_id]
        assert mine["class_type"] == theirs["class_type"], node_id
        optional = (INFO.get(mine["class_type"], {}).get("input") or {}).get("optional") or {}
        for name in sorted(set(mine["inputs"]) | set(theirs["inputs"])):
            if (node_id, name) in REGGIE_EDITS:
                continue
            a, b = _strip(mine["inputs"].get(name)), theirs["inputs"].get(name)
            if name not in theirs["inputs"] and name in optional and not isinstance(a, list):
                continue  # an optional widget value the API file leaves to the default
            if not _same(a, b):
                diffs.append(f"{node_id} {mine['class_type']}.{name}: converted {a!r}, API file {b!r}")
    assert not diffs, "\n".join(diffs)
