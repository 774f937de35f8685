"""wan22-check: what a Wan 2.2 workflow file needs (node packs, model files), before any GPU time is spent;
converts UI-format files to the API prompt ComfyUI runs (--to-api)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_wan22.client import ComfyClient
from pytest_wan22.errors import Wan22Error, WorkflowError
from pytest_wan22.preflight import PACK_REQUIREMENTS, find_problems, format_problems, model_folder
from pytest_wan22.workflows import load_workflow, workflow_needs
from pytest_wan22.workflows.convert import Conversion, convert_ui, is_ui_format
from pytest_wan22.workflows.graph import read_graph

__all__ = ["build_report", "main", "model_location"]

#: The model input of a loader, for UI-format files (their widget values carry no input names).
_LOADER_INPUTS = {
    "UNETLoader": "unet_name", "UnetLoaderGGUF": "unet_name", "UnetLoaderGGUFAdvanced": "unet_name",
    "CLIPLoader": "clip_name",
    "CLIPLoaderGGUF": "clip_name", "CLIPVisionLoader": "clip_name", "VAELoader": "vae_name",
    "LoraLoader": "lora_name", "LoraLoaderModelOnly": "lora_name", "CheckpointLoaderSimple": "ckpt_name",
    "UpscaleModelLoader": "model_name",
}
#: kijai/ComfyUI-WanVideoWrapper loaders: the folder their file lists come from.
_WRAPPER_FOLDERS = {
    "WanVideoModelLoader": "models/diffusion_models", "WanVideoVAELoader": "models/vae",
    "LoadWanVideoT5TextEncoder": "models/text_encoders", "WanVideoLoraSelect": "models/loras",
    "WanVideoLoraSelectMulti": "models/loras",
}
_PACK_HINTS = {
    "comfyanonymous/ComfyUI": "  (core nodes of a newer ComfyUI: update ComfyUI)",
    "unknown": "  (ComfyUI-Manager finds the pack by class name)",
}
EXIT_OK, EXIT_PROBLEMS, EXIT_BAD_INPUT = 0, 1, 2


def model_location(class_type: str, input_name: str | None) -> str | None:
    """The folder (relative to <comfyui>) a model file of this node input belongs in, if known."""
    name = input_name or _LOADER_INPUTS.get(class_type) or ("ckpt_name" if class_type.endswith(" VFI") else "")
    return model_folder(class_type, name) or _WRAPPER_FOLDERS.get(class_type)


def build_report(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary plus custom nodes grouped by pack and each model file with its folder."""
    packs: dict[str, list[str]] = {}
    for cls in summary["custom_nodes"]:
        packs.setdefault(summary["custom_node_packs"].get(cls) or "unknown pack", []).append(cls)
    models: dict[str, dict[str, Any]] = {}
    for ref in summary["model_refs"]:
        entry = models.setdefault(ref["file"], {"file": ref["file"], "folder": None, "nodes": [],
                                                "active": False})
        entry["folder"] = entry["folder"] or model_location(ref["class_type"], ref["input"])
        entry["nodes"].append(f"{ref['node_id']} {ref['class_type']}")
        entry["active"] = entry["active"] or ref["active"]
    return {**summary, "packs": packs, "models": sorted(models.values(), key=lambda m: m["file"])}


def _model_line(model: dict[str, Any]) -> str:
    folder = model["folder"] or "folder unknown (see the node pack's README)"
    line = f"  {model['file']}  ->  {folder}/  (node {', '.join(model['nodes'])})"
    if "\\" in model["file"]:
        posix = model["file"].replace("\\", "/")
        line += f"\n    a Windows sub-folder path: a server on Linux or macOS lists it as {posix!r}"
    return line


def render(report: dict[str, Any]) -> str:
    """The human-readable report."""
    counts = report["class_counts"]
    sub = report["subgraphs"]
    out = [f"workflow: {report['path']}",
           f"format: {report['format'].upper()}, {report['node_count']} nodes, "
           f"{len(report['class_types'])} node classes"]
    if report["packs"]:
        out.append("custom nodes, by the pack that provides them:")
        for pack, classes in sorted(report["packs"].items(), key=lambda item: item[0].lower()):
            shown = ", ".join(c + (f" x{counts[c]}" if counts.get(c, 1) > 1 else "") for c in classes)
            requirement = PACK_REQUIREMENTS.get(pack.split(" ")[0])
            hint = f"  (and pip install {requirement} into ComfyUI's interpreter)" if requirement else ""
            out.append(f"  {pack}: {shown}{_PACK_HINTS.get(pack.split(' ')[0], hint)}")
        if any("/" in pack and pack.split(" ")[0] not in _PACK_HINTS for pack in report["packs"]):
            out.append("  (install an owner/repo pack: git clone https://github.com/<owner>/<repo> inside "
                       "<comfyui>/custom_nodes/, then restart ComfyUI)")
    else:
        out.append("custom nodes: none (core ComfyUI nodes only)")
    active = [m for m in report["models"] if m["active"]]
    out.append("model files:" if active else "model files: none referenced")
    out += [_model_line(m) for m in active]
    inactive_nodes = [("muted", n) for n in report["muted"]] + [("bypassed", n) for n in report["bypassed"]]
    if inactive_nodes:
        out.append("inactive nodes (muted or bypassed: never sent to the server):")
        for how, n in inactive_nodes:
            where = f" in subgraph {n['subgraph']!r}" if n["subgraph"] else ""
            title = f" {n['title']!r}" if n["title"] else ""
            out.append(f"  {how}: node {n['id']} {n['class_type']}{title}{where}")
        packs = report["custom_node_packs"]
        needs = [f"{c} ({packs.get(c) or 'unknown pack'})" for c in report["custom_nodes_inactive"]]
        needs += [f"{m['file']} ({m['folder'] or 'folder unknown'})" for m in report["models"] if not m["active"]]
        out.append("  they would also need: " + ("; ".join(needs) if needs else "nothing beyond the above"))
    if report["frontend_only"]:
        out.append("frontend-only nodes (the editor keeps them, the server never sees them): "
                   + ", ".join(report["frontend_only"]))
    if sub["definitions"]:
        out.append(f"subgraphs: {sub['definitions']} definitions, {sub['instances']} instances, "
                   f"{sub['inner_nodes']} inner nodes")
    elif sub["instances"]:
        out.append(f"subgraphs: {sub['instances']} instance(s) flattened into {sub['inner_nodes']} nodes "
                   "(ids 'instance:inner')")
    return "\n".join(out)


def fetch_object_info(url: str) -> dict[str, Any]:
    """The server's /object_info (raises Wan22Error naming the cause)."""
    with ComfyClient(url, timeout=30.0) as client:
        return dict(client.object_info())


def load_object_info(path: str) -> dict[str, Any]:
    """A saved /object_info (JSON file), for converting without a server."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise WorkflowError(f"cannot read --object-info {path}: {exc}; save it with "
                            "`curl http://HOST:PORT/object_info > FILE`") from exc
    if not isinstance(data, dict):
        raise WorkflowError(f"--object-info {path} is not a JSON object of node classes")
    return data


def to_prompt(path: str, object_info: Mapping[str, Any] | None) -> tuple[dict[str, Any], Conversion | None]:
    """The API prompt of a workflow file and, for a UI-format file, its conversion."""
    data = read_graph(path)
    if not is_ui_format(data):
        return load_workflow(path).to_prompt(), None
    if object_info is None:
        raise WorkflowError(f"{path} is in UI format: converting it needs the server's node list; add --url "
                            "http://HOST:PORT of a running ComfyUI (or --object-info FILE)")
    conversion = convert_ui(data, object_info)
    return conversion.prompt, conversion


def check_server(prompt: Mapping[str, Any], where: str,
                 object_info: Mapping[str, Any]) -> tuple[int, str, list[dict[str, Any]]]:
    """(exit code, text, problems) of checking an API prompt against an object_info: a server's ('server URL')
    or a saved one ('saved object_info FILE')."""
    problems = find_problems(prompt, object_info)
    rows = [dataclasses.asdict(p) for p in problems]
    if not problems:
        return EXIT_OK, f"{where}: everything the workflow needs is installed", rows
    return EXIT_PROBLEMS, (f"{where}: {len(problems)} problem(s), each with its fix:\n"
                           + format_problems(problems)), rows


def _conversion_text(conversion: Conversion) -> str:
    head = f"UI to API conversion: {len(conversion.prompt)} nodes"
    if conversion.dropped:
        head += f", left out {len(conversion.dropped)} (" + "; ".join(conversion.dropped) + ")"
    if conversion.ok:
        return head + "; every node and input named"
    return (head + f"; {len(conversion.issues)} thing(s) it could not decide (node, input, why):\n"
            + "\n".join(f"  {i}" for i in conversion.issues))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the wan22-check console script; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="wan22-check", description="Show what a Wan 2.2 ComfyUI workflow file needs: custom node packs, "
        "model files and their folders; with --url, convert a UI-format file against a running ComfyUI and "
        "check the prompt against it.",
        epilog="exit codes: 0 nothing missing (or no server asked), 1 the server (or the saved object_info) lacks "
        "something or the conversion could not decide something, 2 bad input")
    parser.add_argument("workflow", help="workflow JSON file (API or UI format)")
    parser.add_argument("--url", help="a running ComfyUI, e.g. http://127.0.0.1:8188: check against its /object_info")
    parser.add_argument("--object-info", metavar="FILE", help="a saved /object_info (curl http://HOST:PORT/object_info "
                        "> FILE) to convert and check against, without a server")
    parser.add_argument("--to-api", metavar="OUT", help="write the API prompt ComfyUI would run to OUT (JSON)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    try:
        report = build_report(workflow_needs(args.workflow))
    except Wan22Error as exc:
        print(f"wan22-check: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    code, server_text, conversion = EXIT_OK, "", None
    if args.url or args.object_info or args.to_api:
        try:
            info = (fetch_object_info(args.url) if args.url
                    else load_object_info(args.object_info) if args.object_info else None)
            prompt, conversion = to_prompt(args.workflow, info)
        except Wan22Error as exc:
            text = str(exc).replace("--wan22-url (ini wan22_url)", "--url")
            where = f"cannot check against {args.url}: " if args.url else ""
            print(render(report) if not args.json else json.dumps(report, indent=2, default=str))
            print(f"wan22-check: {where}{text}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if conversion is not None:
            report["conversion"] = {"nodes": len(conversion.prompt), "dropped": list(conversion.dropped),
                                    "issues": [dataclasses.asdict(i) for i in conversion.issues]}
            if conversion.issues:
                code = EXIT_PROBLEMS
        if args.to_api:
            Path(args.to_api).write_text(json.dumps(prompt, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
            report["api_file"] = args.to_api
        if info is not None:  # a running server's node list, or one saved from it (--object-info)
            where = f"server {args.url}" if args.url else f"saved object_info {args.object_info}"
            server_code, server_text, problems = check_server(prompt, where, info)
            code = max(code, server_code)
            report["server"] = {"url": args.url, "object_info": None if args.url else args.object_info,
                                "exit_code": server_code, "message": server_text, "problems": problems}
    report["exit_code"] = code
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return code
    print(render(report))
    if conversion is not None:
        print(_conversion_text(conversion))
    if args.to_api:
        print(f"API prompt written to {args.to_api}")
    if server_text:
        print(server_text)
    else:
        print("not checked against a server: add --url http://HOST:PORT of a running ComfyUI (or --object-info "
              "FILE, its saved /object_info) to check it")
    return code


if __name__ == "__main__":
    sys.exit(main())
