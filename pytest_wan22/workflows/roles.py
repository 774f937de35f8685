"""Roles in a Wan 2.2 graph: samplers in pass order, expert loaders, model files by role."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from pytest_wan22.errors import WorkflowError

from .nodes import id_key, is_link, matches, title_of, upstream

__all__ = [
    "DECODE_CLASSES",
    "EXPERT_LOADERS",
    "LATENT_NODES",
    "ROLE_SELECTORS",
    "SAMPLER_CLASSES",
    "VIDEO_NODES",
    "expert_loader_of",
    "expert_loaders",
    "expert_pair",
    "frame_interpolation",
    "graph_summary",
    "latent_node",
    "node_titles",
    "nodes_of",
    "role_files",
    "role_nodes",
    "sampler_nodes",
    "video_nodes",
]

#: Node classes that run a sampling pass; `sampler_nodes` orders them by execution.
SAMPLER_CLASSES: frozenset[str] = frozenset({
    "KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "WanVideoSampler",
})


#: Default selectors for the model roles `Variant.models` understands.
ROLE_SELECTORS: Mapping[str, tuple[str, str]] = MappingProxyType({
    "high": ("Load Diffusion Model (high noise)", "unet_name"),
    "low": ("Load Diffusion Model (low noise)", "unet_name"),
    "model": ("", ""),  # the one diffusion model of a single-expert graph (TI2V 5B), found by structure
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
        depth = len(upstream(prompt, node_id) & idset)
        start = prompt[node_id].get("inputs", {}).get("start_at_step", 0)
        return (depth, start if isinstance(start, int) else 0, id_key(node_id))

    return sorted(ids, key=key)


def node_titles(prompt: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, str]]:
    """Map node id to (class_type, title); an untitled node's title is its class_type."""
    out: dict[str, tuple[str, str]] = {}
    for node_id, node in prompt.items():
        cls = str(node.get("class_type", ""))
        out[node_id] = (cls, title_of(node) or cls)
    return out



def frame_interpolation(g: Mapping[str, Mapping[str, Any]]) -> tuple[str | None, int]:
    """The frame-interpolation node's class (RIFE VFI or FrameInterpolate) and multiplier; (None, 1) without one."""
    for node in g.values():
        if node.get("class_type") in ("RIFE VFI", "FrameInterpolate"):
            m = node["inputs"].get("multiplier", 2)
            return str(node["class_type"]), int(m) if isinstance(m, int) else 2
    return None, 1



#: Latent/conditioning nodes that set a clip's size: class -> (width, height, frame count) input names.
LATENT_NODES: Mapping[str, tuple[str, str, str]] = MappingProxyType({
    **{cls: ("width", "height", "length") for cls in (
        "WanImageToVideo", "Wan22ImageToVideoLatent", "WanFirstLastFrameToVideo", "WanFunControlToVideo",
        "Wan22FunControlToVideo", "WanFunInpaintToVideo", "WanVaceToVideo", "WanCameraImageToVideo",
        "WanPhantomSubjectToVideo", "WanTrackToVideo", "WanSoundImageToVideo", "WanHuMoImageToVideo",
        "WanAnimateToVideo", "EmptyHunyuanLatentVideo")},
    "WanVideoImageToVideoEncode": ("width", "height", "num_frames"),
    "WanVideoEmptyEmbeds": ("width", "height", "num_frames"),
})
#: Nodes that write the video: class -> its frame-rate input (all take `images`).
VIDEO_NODES: Mapping[str, str] = MappingProxyType({
    "CreateVideo": "fps", "SaveAnimatedWEBP": "fps", "SaveWEBM": "fps", "SaveAnimatedPNG": "fps",
    "VHS_VideoCombine": "frame_rate",
})
DECODE_CLASSES: frozenset[str] = frozenset({"VAEDecode", "VAEDecodeTiled", "WanVideoDecode"})
#: Model loaders by role: class -> the input naming its file.
EXPERT_LOADERS: Mapping[str, str] = MappingProxyType({
    "UNETLoader": "unet_name", "UnetLoaderGGUF": "unet_name", "UnetLoaderGGUFAdvanced": "unet_name",
    "WanVideoModelLoader": "model",
    "CheckpointLoaderSimple": "ckpt_name"})
TEXT_ENCODER_LOADERS: Mapping[str, str] = MappingProxyType({
    "CLIPLoader": "clip_name", "CLIPLoaderGGUF": "clip_name", "LoadWanVideoT5TextEncoder": "model_name"})
VAE_LOADERS: Mapping[str, str] = MappingProxyType({"VAELoader": "vae_name", "WanVideoVAELoader": "model_name"})
IMAGE_LOADERS: Mapping[str, str] = MappingProxyType({"LoadImage": "image"})


def graph_summary(g: Mapping[str, Mapping[str, Any]]) -> str:
    """The graph's node classes with counts, for error messages."""
    counts = Counter(str(n.get("class_type")) for n in g.values())
    return ", ".join(f"{c} x{k}" if k > 1 else c for c, k in sorted(counts.items()))


def nodes_of(g: Mapping[str, Mapping[str, Any]], classes: Iterable[str]) -> list[str]:
    """Ids of the nodes whose class is one of `classes`, in id order."""
    wanted = set(classes)
    return sorted((i for i, n in g.items() if n.get("class_type") in wanted), key=id_key)


def _prefer(g: Mapping[str, Mapping[str, Any]], ids: list[str], near: set[str], words: tuple[str, ...]) -> list[str]:
    """Narrow ambiguous candidates: those feeding the samplers first, then a title naming the role."""
    if len(ids) > 1:
        feeding = [i for i in ids if i in near]
        ids = feeding or ids
    if len(ids) > 1:
        titled = [i for i in ids if any(w in (title_of(g[i]) or "").lower() for w in words)]
        ids = titled or ids
    return ids


def latent_node(g: Mapping[str, Mapping[str, Any]]) -> str | None:
    """The node that sets the clip's width, height and length (the one feeding the samplers if several)."""
    near: set[str] = set()
    for s in sampler_nodes(g):
        near |= upstream(g, s)
    found = _prefer(g, nodes_of(g, LATENT_NODES), near, ("latent", "video"))
    return found[0] if len(found) == 1 else None


def video_nodes(g: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Every node that writes the clip (CreateVideo, SaveWEBM, VHS_VideoCombine, ...)."""
    return nodes_of(g, VIDEO_NODES)


_CONTROL_INPUTS = frozenset({"index", "select", "switch", "boolean", "condition"})


def expert_loader_of(g: Mapping[str, Mapping[str, Any]], sampler: str) -> str | None:
    """Follow a sampler's `model` input upstream (through LoRA, shift, block-swap and switch nodes) to its loader.

    A node without a `model` input (a switch such as ComfySwitchNode or easy anythingIndexSwitch) is followed
    along every linked value input; they must all lead to the same loader.
    """
    def walk(node_id: str, seen: frozenset[str]) -> set[str]:
        node = g.get(node_id)
        if node is None or node_id in seen:
            return set()
        if node.get("class_type") in EXPERT_LOADERS:
            return {node_id}
        inputs = node.get("inputs", {})
        link = inputs.get("model")
        branches = [link] if is_link(link) else [
            v for k, v in inputs.items() if is_link(v) and k not in _CONTROL_INPUTS]
        found: set[str] = set()
        for branch in branches:
            found |= walk(str(branch[0]), seen | {node_id})
        return found

    start = g.get(sampler, {}).get("inputs", {}).get("model")
    loaders = walk(str(start[0]), frozenset({sampler})) if is_link(start) else set()
    return next(iter(loaders)) if len(loaders) == 1 else None


def expert_loaders(g: Mapping[str, Mapping[str, Any]]) -> tuple[str, ...]:
    """The diffusion-model loaders in the order their passes run (high then low noise for the 14B pair)."""
    out: list[str] = []
    for s in sampler_nodes(g):
        loader = expert_loader_of(g, s)
        if loader is not None and loader not in out:
            out.append(loader)
    return tuple(out)


def expert_pair(g: Mapping[str, Mapping[str, Any]]) -> tuple[str, str]:
    """The (high, low) expert loader ids: by the pass each one feeds; titles break a tie."""
    passes = sampler_nodes(g)
    loaders = [expert_loader_of(g, s) for s in passes]
    if len(passes) == 2 and None not in loaders and loaders[0] != loaders[1]:
        return str(loaders[0]), str(loaders[1])
    by_title = [matches(g, ROLE_SELECTORS[r][0]) for r in ("high", "low")]
    if all(len(m) == 1 for m in by_title):
        return by_title[0][0], by_title[1][0]
    found = nodes_of(g, EXPERT_LOADERS)
    raise WorkflowError(
        f"needs two experts (a high-noise and a low-noise diffusion model, each feeding one of two sampler "
        f"passes); the graph has {len(passes)} sampler pass(es) and {len(found)} model loader(s) "
        f"({', '.join(found) or 'none'}). Nodes: {graph_summary(g)}")


def role_nodes(g: Mapping[str, Mapping[str, Any]], role: str) -> list[tuple[str, str]]:
    """(node id, file input) of the nodes that load a role's file: text_encoder, vae, image."""
    table = {"text_encoder": TEXT_ENCODER_LOADERS, "vae": VAE_LOADERS, "image": IMAGE_LOADERS}[role]
    return [(i, table[str(g[i]["class_type"])]) for i in nodes_of(g, table)]


def role_files(g: Mapping[str, Mapping[str, Any]], original: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The file each model role loads in the built graph g; high and low are the experts of the original graph
    (the workflow before its changes), so a swapped pass order keeps their names."""
    out: dict[str, str] = {}
    try:
        high, low = expert_pair(original)
        for role, nid in (("high", high), ("low", low)):
            if nid in g and g[nid].get("class_type") in EXPERT_LOADERS:
                out[role] = g[nid]["inputs"].get(EXPERT_LOADERS[str(g[nid]["class_type"])])
    except WorkflowError:
        experts = expert_loaders(g)
        if len(experts) == 1:
            out["model"] = g[experts[0]]["inputs"].get(EXPERT_LOADERS[str(g[experts[0]]["class_type"])])
    for role in ("text_encoder", "vae", "image"):
        loaders = role_nodes(g, role)
        if len(loaders) == 1 and isinstance(g[loaders[0][0]]["inputs"].get(loaders[0][1]), str):
            out[role] = g[loaders[0][0]]["inputs"][loaders[0][1]]
    for role in ("lora_high", "lora_low"):
        selector, inp = ROLE_SELECTORS[role]
        found = matches(g, selector)
        if len(found) == 1 and isinstance(g[found[0]]["inputs"].get(inp), str):
            out[role] = g[found[0]]["inputs"][inp]
    for node in g.values():
        if node.get("class_type") == "RIFE VFI":
            out["vfi"] = node["inputs"].get("ckpt_name")
        elif node.get("class_type") == "FrameInterpolationModelLoader":
            out["vfi"] = node["inputs"].get("model_name")
    return out
