"""Roles in a Wan 2.2 graph: samplers in pass order, expert loaders, model files by role."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .errors import WorkflowError
from .graph import Workflow, _id_key, _is_link, _matches, _title, _upstream

__all__ = ["ROLE_SELECTORS", "SAMPLER_CLASSES", "node_titles", "sampler_nodes"]

#: Node classes that run a sampling pass; `sampler_nodes` orders them by execution.
SAMPLER_CLASSES: frozenset[str] = frozenset({
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "WanVideoSampler",
})


#: Default selectors for the model roles `Variant.models` understands.
ROLE_SELECTORS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "high": ("Load Diffusion Model (high noise)", "unet_name"),
    "low": ("Load Diffusion Model (low noise)", "unet_name"),
    "text_encoder": ("class:CLIPLoader", "clip_name"),
    "vae": ("class:VAELoader", "vae_name"),
    "image": ("class:LoadImage", "image"),
    "lora_high": ("LoRA (high noise)", "lora_name"),
    "lora_low": ("LoRA (low noise)", "lora_name"),
    "vfi": ("", ""),  # resolved by Variant: RIFE VFI ckpt_name or the core loader's model_name
})


def sampler_nodes(prompt: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Sampler node ids in the order their passes run (a pass fed by another sampler comes after it)."""
    ids = [i for i, n in prompt.items() if n.get("class_type") in SAMPLER_CLASSES]
    idset = set(ids)

    def key(node_id: str) -> tuple[int, int, tuple[int, int | str]]:
        depth = len(_upstream(prompt, node_id) & idset)
        start = prompt[node_id].get("inputs", {}).get("start_at_step", 0)
        return (depth, start if isinstance(start, int) else 0, _id_key(node_id))

    return sorted(ids, key=key)


def node_titles(prompt: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Map node id to (class_type, title); an untitled node's title is its class_type."""
    out: dict[str, tuple[str, str]] = {}
    for node_id, node in prompt.items():
        cls = str(node.get("class_type", ""))
        out[node_id] = (cls, _title(node) or cls)
    return out



def _find_vfi(g: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, int]:
    for node in g.values():
        if node.get("class_type") in ("RIFE VFI", "FrameInterpolate"):
            m = node["inputs"].get("multiplier", 2)
            return str(node["class_type"]), int(m) if isinstance(m, int) else 2
    return None, 1



def _expert_loader_of(g: Mapping[str, Mapping[str, Any]], sampler: str) -> str | None:
    """Follow a sampler's `model` input upstream to its UNETLoader."""
    seen: set[str] = set()
    current = sampler
    while current not in seen:
        seen.add(current)
        node = g.get(current)
        if node is None:
            return None
        if node.get("class_type") == "UNETLoader":
            return current
        link = node.get("inputs", {}).get("model")
        if not _is_link(link):
            return None
        current = link[0]
    return None


def _expert_loaders(g: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """The (high, low) UNETLoader ids: by title, else by the pass each one feeds."""
    by_title = [_matches(g, ROLE_SELECTORS[r][0]) for r in ("high", "low")]
    if all(len(m) == 1 for m in by_title):
        return by_title[0][0], by_title[1][0]
    passes = sampler_nodes(g)
    loaders = [_expert_loader_of(g, s) for s in passes]
    if len(passes) == 2 and None not in loaders and loaders[0] != loaders[1]:
        return str(loaders[0]), str(loaders[1])
    raise WorkflowError(
        "cannot tell the high-noise and low-noise UNETLoader apart: title them "
        "'Load Diffusion Model (high noise)' and 'Load Diffusion Model (low noise)' in the workflow file")


def _role_files(g: Mapping[str, Mapping[str, Any]], wf: Workflow) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        high, low = _expert_loaders(wf.graph)
        for role, nid in (("high", high), ("low", low)):
            if nid in g and g[nid].get("class_type") == "UNETLoader":
                out[role] = g[nid]["inputs"].get("unet_name")
    except WorkflowError:
        pass
    for role in ("text_encoder", "vae", "image", "lora_high", "lora_low"):
        selector, inp = ROLE_SELECTORS[role]
        found = _matches(g, selector)
        if len(found) == 1 and isinstance(g[found[0]]["inputs"].get(inp), str):
            out[role] = g[found[0]]["inputs"][inp]
    for node in g.values():
        if node.get("class_type") == "RIFE VFI":
            out["vfi"] = node["inputs"].get("ckpt_name")
        elif node.get("class_type") == "FrameInterpolationModelLoader":
            out["vfi"] = node["inputs"].get("model_name")
    return out


