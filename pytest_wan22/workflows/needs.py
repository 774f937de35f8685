"""What a workflow file (API or UI format) needs: node classes, custom node packs, model files."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_wan22.errors import WorkflowError
from pytest_wan22.preflight import node_pack

from .convert import is_ui_format
from .graph import FRONTEND_ONLY, unwrap_prompt
from .nodes import title_of

__all__ = ["workflow_needs"]

_MODEL_EXTENSIONS = (".safetensors", ".sft", ".ckpt", ".pt", ".pt2", ".pth", ".bin", ".gguf", ".onnx")
_MODEL_INPUT_NAMES = frozenset({
    "unet_name", "clip_name", "clip_name1", "clip_name2", "clip_name3", "clip_name4", "vae_name", "lora_name",
    "ckpt_name", "model_name", "model", "lora", "t5_model", "control_net_name", "style_model_name",
})

# --------------------------------------------------------------------------- what a workflow needs


def _core_nodes() -> frozenset[str]:
    path = Path(__file__).parents[1] / "data" / "core_nodes.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def _looks_like_model(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(_MODEL_EXTENSIONS)


def _widget_strings(values: Any) -> Iterable[tuple[str | None, Any]]:
    if isinstance(values, Mapping):
        yield from ((str(k), v) for k, v in values.items())
    elif isinstance(values, list):
        yield from ((None, v) for v in values)


def workflow_needs(path: str | Path) -> dict[str, Any]:
    """What a workflow file (API or UI format) needs: node classes, custom nodes, models, muted nodes."""
    p = Path(path)
    try:
        data = unwrap_prompt(json.loads(p.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"cannot read workflow {p}: {exc}; check the path and that it is JSON") from exc
    core = _core_nodes()
    rows: list[dict[str, Any]] = []  # id, class_type, title, mode, inputs or widgets, subgraph, cnr_id
    subgraphs = {"definitions": 0, "instances": 0, "inner_nodes": 0}
    if is_ui_format(data):
        fmt = "ui"
        definitions = data.get("definitions")
        defs = definitions.get("subgraphs", []) if isinstance(definitions, Mapping) else []
        def_ids = {d.get("id"): d.get("name") for d in defs if isinstance(d, Mapping)}
        subgraphs["definitions"] = len(def_ids)

        def add_ui(nodes: list[Any], where: str | None) -> None:
            for n in nodes:
                if not isinstance(n, Mapping):
                    continue
                props = n.get("properties")
                rows.append({"id": str(n.get("id")), "class_type": str(n.get("type")),
                             "title": n.get("title"), "mode": n.get("mode", 0),
                             "values": list(_widget_strings(n.get("widgets_values"))), "subgraph": where,
                             "cnr_id": props.get("cnr_id") if isinstance(props, Mapping) else None})

        add_ui(data["nodes"], None)
        top_count = len(data["nodes"])
        for d in defs:
            inner = d.get("nodes", []) if isinstance(d, Mapping) else []
            subgraphs["inner_nodes"] += len(inner)
            add_ui(inner, d.get("name") or d.get("id"))
        subgraphs["instances"] = sum(1 for r in rows if r["class_type"] in def_ids)
        rows = [r for r in rows if r["class_type"] not in def_ids]
    elif isinstance(data, Mapping) and data and all(isinstance(v, Mapping) and "class_type" in v
                                                    for v in data.values()):
        fmt = "api"
        top_count = len(data)
        for node_id, n in data.items():
            inputs = n.get("inputs", {}) if isinstance(n.get("inputs"), Mapping) else {}
            rows.append({"id": str(node_id), "class_type": str(n["class_type"]), "title": title_of(n),
                         "mode": 0, "values": list(inputs.items()), "subgraph": None, "cnr_id": None})
        prefixes = {str(i).split(":")[0] for i in data if ":" in str(i)}
        subgraphs["instances"] = len(prefixes)
        subgraphs["inner_nodes"] = sum(1 for i in data if ":" in str(i))
    else:
        raise WorkflowError(f"{p} is neither an API-format workflow (node id -> {{class_type, inputs}}) nor "
                            "a UI-format one (nodes/links lists); re-save it from ComfyUI")

    counts = Counter(r["class_type"] for r in rows)
    model_refs = []
    for r in rows:
        for name, value in r["values"]:
            named = fmt == "api" and name in _MODEL_INPUT_NAMES and isinstance(value, str)
            if _looks_like_model(value) or (named and value not in ("", "none")):
                model_refs.append({"node_id": r["id"], "class_type": r["class_type"], "input": name,
                                   "file": value, "subgraph": r["subgraph"],
                                   "active": r["mode"] not in (2, 4)})
    # Muted (2) and bypassed (4) nodes never reach the server: what they need is reported apart.
    active = {r["class_type"] for r in rows if r["mode"] not in (2, 4)} - FRONTEND_ONLY
    inactive = {r["class_type"] for r in rows if r["mode"] in (2, 4)} - FRONTEND_ONLY - active
    custom = sorted(c for c in active if c not in core)
    cnr = {r["class_type"]: r["cnr_id"] for r in rows if r["cnr_id"] and r["cnr_id"] != "comfy-core"}

    def flagged(mode: int) -> list[dict[str, Any]]:
        return [{"id": r["id"], "class_type": r["class_type"], "title": r["title"], "subgraph": r["subgraph"]}
                for r in rows if r["mode"] == mode]

    return {
        "path": str(p),
        "name": p.stem,
        "format": fmt,
        "node_count": top_count,
        "class_types": sorted(counts),
        "class_counts": dict(sorted(counts.items())),
        "model_files": sorted({m["file"] for m in model_refs if m["active"]}),
        "model_files_inactive": sorted({m["file"] for m in model_refs if not m["active"]}
                                       - {m["file"] for m in model_refs if m["active"]}),
        "model_refs": model_refs,
        "custom_nodes": custom,
        "custom_nodes_inactive": sorted(c for c in inactive if c not in core),
        "custom_node_packs": {c: node_pack(c) or cnr.get(c) for c in sorted({*custom, *inactive} - core)},
        "frontend_only": sorted(c for c in counts if c in FRONTEND_ONLY),
        "muted": flagged(2),
        "bypassed": flagged(4),
        "subgraphs": subgraphs,
    }

