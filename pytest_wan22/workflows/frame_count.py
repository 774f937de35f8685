"""How many frames a graph's video node gets: walked back from its `images` through decode, batch and
interpolation nodes to the latent, and from the latent through samplers, concatenations and cuts to the node that
sets its length (a Wan 2.1/2.2 latent frame is 4 video frames, the first one 1). None where a node on the way is
not one of these (a node pack's, say): then nobody can tell without running it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .nodes import is_link

__all__ = ["int_input", "latent_frames", "video_frames"]

Graph = Mapping[str, Mapping[str, Any]]

#: Nodes whose output latent starts a clip: class -> (the output index of the latent, the input holding the length).
LATENT_SOURCES: Mapping[str, tuple[int, str]] = {
    **{cls: (2, "length") for cls in (
        "WanImageToVideo", "WanFirstLastFrameToVideo", "WanFunControlToVideo", "Wan22FunControlToVideo",
        "WanFunInpaintToVideo", "WanCameraImageToVideo", "WanPhantomSubjectToVideo", "WanTrackToVideo",
        "WanSoundImageToVideo", "WanSoundImageToVideoExtend", "WanHuMoImageToVideo", "WanVaceToVideo")},
    "Wan22ImageToVideoLatent": (0, "length"), "EmptyHunyuanLatentVideo": (0, "length"),
    # WanVideoWrapper's image embeds carry the clip's length to its sampler
    "WanVideoImageToVideoEncode": (0, "num_frames"), "WanVideoEmptyEmbeds": (0, "num_frames"),
}
SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom"})


def _link(value: Any) -> tuple[str, int] | None:
    return (str(value[0]), int(value[1])) if is_link(value) else None


def int_input(g: Graph, node: Mapping[str, Any], name: str) -> int | None:
    """An int input, or the int it is linked to: a primitive's value, or the same-named input of the node that
    passes it on (WanCameraEmbedding's width, height and length)."""
    value = (node.get("inputs") or {}).get(name)
    link = _link(value)
    if link is not None:
        source = g.get(link[0], {}).get("inputs") or {}
        value = next((source[k] for k in (name, "value", "int") if k in source and not _link(source[k])), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def latent_frames(g: Graph, value: Any, depth: int = 0) -> int | None:
    """Latent frames of the latent a (linked) input receives."""
    link = _link(value)
    if link is None or depth > 64:
        return None
    node = g.get(link[0], {})
    cls, inputs = str(node.get("class_type")), node.get("inputs") or {}
    if cls in LATENT_SOURCES:
        output, key = LATENT_SOURCES[cls]
        length = int_input(g, node, key)
        return (length - 1) // 4 + 1 if link[1] == output and length else None
    if cls in SAMPLERS or cls == "SamplerCustomAdvanced":
        return latent_frames(g, inputs.get("latent_image"), depth + 1)
    if cls == "WanVideoSampler":  # a later pass samples the earlier one's latent, the first the image embeds
        return latent_frames(g, inputs.get("samples") or inputs.get("image_embeds"), depth + 1)
    if cls == "LatentConcat" and inputs.get("dim") in ("t", "-t"):
        a, b = latent_frames(g, inputs.get("samples1"), depth + 1), latent_frames(g, inputs.get("samples2"), depth + 1)
        return a + b if a is not None and b is not None else None
    if cls == "LatentCut" and inputs.get("dim") == "t":
        total, index, amount = latent_frames(g, inputs.get("samples"), depth + 1), int_input(g, node, "index"), \
            int_input(g, node, "amount")
        if total is None or index is None or amount is None:
            return None
        if index >= 0:  # as LatentCut clamps them
            return min(total - min(index, total - 1), amount)
        return min(-max(index, -total), amount)
    if cls == "TrimVideoLatent":
        total, trim = latent_frames(g, inputs.get("samples"), depth + 1), int_input(g, node, "trim_amount")
        return max(0, total - trim) if total is not None and trim is not None else None
    return None


def video_frames(g: Graph, value: Any, depth: int = 0) -> int | None:
    """Frames of the images a (linked) input receives."""
    link = _link(value)
    if link is None or depth > 64:
        return None
    node = g.get(link[0], {})
    cls, inputs = str(node.get("class_type")), node.get("inputs") or {}
    if cls in ("VAEDecode", "VAEDecodeTiled", "WanVideoDecode"):
        t = latent_frames(g, inputs.get("samples"), depth + 1)
        return (t - 1) * 4 + 1 if t else None
    if cls == "GetImageSizeAndCount" and link[1] == 0:  # KJNodes: the images pass through
        return video_frames(g, inputs.get("image"), depth + 1)
    if cls == "ImageFromBatch":
        frames, start = video_frames(g, inputs.get("image"), depth + 1), int_input(g, node, "batch_index")
        length = int_input(g, node, "length")
        if frames is None or start is None or length is None:
            return None
        return min(frames - min(frames - 1, start), length)  # as ImageFromBatch clamps them
    if cls == "ImageBatch":
        a, b = video_frames(g, inputs.get("image1"), depth + 1), video_frames(g, inputs.get("image2"), depth + 1)
        return a + b if a is not None and b is not None else None
    if cls in ("RIFE VFI", "FILM VFI", "FrameInterpolate"):
        frames, m = video_frames(g, inputs.get("frames", inputs.get("images")), depth + 1), int_input(
            g, node, "multiplier")
        return (frames - 1) * m + 1 if frames is not None and m is not None else None
    return None
