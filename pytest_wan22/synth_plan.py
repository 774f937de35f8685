"""What a workflow needs the synthetic set to stand in for: every model file its core loaders name, with the
layout the loader and the graph imply, and every image, video and audio file it loads.

`model_needs` and `media_needs` are pure: they read an API prompt and return plans; `ensure_for` has the missing
files written (by synth.py, run in ComfyUI's interpreter). A layout is
inferred from the file name first (`wan2.2_fun_control_5B_bf16`: the 5B fun control model in bf16) and from the
graph where the name says nothing (the conditioning node feeding the samplers a model drives, the VAE's latent
channels, the model a LoRA patches). A file whose layout cannot be inferred raises LayoutError naming the file,
its loader and what is missing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LayoutError
from .preflight import INPUT_MEDIA
from .synth import (
    DIT_SIZES,
    GGUF_FILE_TYPES,
    GGUF_TINY_DIT,
    RIFE_ARCH,
    RIFE_MARKER,
    FileJob,
    ensure_files,
    ensure_media,
    ensure_rife,
    rife_path,
    rife_stamp_matches,
)

__all__ = ["LOADERS", "MediaNeed", "ModelNeed", "ensure_for", "media_needs", "model_needs"]

Graph = Mapping[str, Mapping[str, Any]]

#: Core loaders whose file the synthetic set can write: class -> (input naming the file, models/ folder).
LOADERS: Mapping[str, tuple[str, str]] = {
    "UNETLoader": ("unet_name", "diffusion_models"),
    "UnetLoaderGGUF": ("unet_name", "diffusion_models"),  # city96/ComfyUI-GGUF
    "UnetLoaderGGUFAdvanced": ("unet_name", "diffusion_models"),
    "LoraLoaderModelOnly": ("lora_name", "loras"),
    "LoraLoader": ("lora_name", "loras"),
    "VAELoader": ("vae_name", "vae"),
    "CLIPLoader": ("clip_name", "text_encoders"),
    "CLIPLoaderGGUF": ("clip_name", "text_encoders"),  # city96/ComfyUI-GGUF: GGUF or safetensors
    "CLIPVisionLoader": ("clip_name", "clip_vision"),
    "AudioEncoderLoader": ("audio_encoder_name", "audio_encoders"),
    # kijai/ComfyUI-WanVideoWrapper's loaders read the same folders
    "WanVideoModelLoader": ("model", "diffusion_models"),
    "WanVideoLoraSelect": ("lora", "loras"),
    "WanVideoVAELoader": ("model_name", "vae"),
    "LoadWanVideoT5TextEncoder": ("model_name", "text_encoders"),
}
SAMPLERS = frozenset({"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "WanVideoSampler"})
#: Loaders of a diffusion model: core UNETLoader (safetensors), ComfyUI-GGUF's (.gguf files) and WanVideoWrapper's
#: WanVideoModelLoader; the walks up a sampler's `model` input stop at them.
DIT_LOADERS = frozenset({"UNETLoader", "UnetLoaderGGUF", "UnetLoaderGGUFAdvanced", "WanVideoModelLoader"})
GGUF_LOADERS = frozenset({"UnetLoaderGGUF", "UnetLoaderGGUFAdvanced"})
#: The Wan 2.2 models, by the conditioning or latent node that feeds their samplers.
CONDITIONING_FAMILIES: Mapping[str, str] = {
    "WanImageToVideo": "i2v", "WanFirstLastFrameToVideo": "i2v", "WanFunInpaintToVideo": "inpaint",
    "Wan22FunControlToVideo": "control", "WanCameraImageToVideo": "camera", "WanSoundImageToVideo": "s2v",
    "WanSoundImageToVideoExtend": "s2v", "WanAnimateToVideo": "animate", "Wan22ImageToVideoLatent": "ti2v",
    "EmptyHunyuanLatentVideo": "t2v", "WanVideoImageToVideoEncode": "i2v",
}
#: Words of a file name that say which model it is (checked in this order, whole words only).
NAME_FAMILIES: tuple[tuple[str, str], ...] = (
    ("s2v", "s2v"), ("animate", "animate"), ("camera", "camera"), ("control", "control"),
    ("inpaint", "inpaint"), ("inp", "inpaint"), ("ti2v", "ti2v"), ("i2v", "i2v"), ("flf2v", "i2v"),
    ("t2v", "t2v"),
)
FAMILY_WORDS = {"t2v": "text-to-video", "i2v": "image-to-video", "ti2v": "TI2V", "inpaint": "fun inpaint",
                "control": "fun control", "camera": "fun camera", "s2v": "sound-to-video", "animate": "animate"}
#: (family, size) -> in_dim and what the model adds to WanModel.
DIT_FAMILIES: Mapping[tuple[str, str], dict[str, Any]] = {
    ("t2v", "14B"): {"in_dim": 16},
    ("i2v", "14B"): {"in_dim": 36},
    ("inpaint", "14B"): {"in_dim": 36},
    ("control", "14B"): {"in_dim": 52, "ref_conv": 16},
    ("camera", "14B"): {"in_dim": 36, "cam_adapter": 24},
    ("s2v", "14B"): {"in_dim": 16, "extra": "s2v"},
    ("animate", "14B"): {"in_dim": 36, "clip": True, "extra": "animate"},
    ("ti2v", "5B"): {"in_dim": 48},
    ("t2v", "5B"): {"in_dim": 48},
    ("i2v", "5B"): {"in_dim": 48},
    ("inpaint", "5B"): {"in_dim": 100},
    ("control", "5B"): {"in_dim": 148, "ref_conv": 48},
}
TINY_LORA_RANK = 16
#: The tiny DiT for WanVideoWrapper, which reads the width from the file but takes 12 heads and 30 layers for any
#: width it does not know (5120, 3072, 4096): width 96 (head width 8), 30 layers.
WRAPPER_TINY_DIT = (96, 192, 30)
WRAPPER_VAE_DIM = 96  # WanVideoVAELoader builds the Wan 2.1 VAE at its full width whatever the file holds
DEFAULT_LORA_RANK = 64  # LightX2V's


@dataclass(frozen=True)
class ModelNeed:
    """A model file the graph names: where it goes, the layout to write, and who loads it."""

    folder: str
    name: str
    layout: Mapping[str, Any]
    node: str
    loader: str
    what: str
    patches: Mapping[str, Any] | None = None  # a LoRA's: the layout of the model it patches

    @property
    def relpath(self) -> str:
        """Its path under the synthetic set's base folder."""
        return f"models/{self.folder}/{self.name}"


@dataclass(frozen=True)
class MediaNeed:
    """An input file the graph loads, at the size the graph asks for."""

    name: str
    kind: str  # image | video | audio
    node: str
    loader: str
    width: int = 64
    height: int = 64
    frames: int = 1
    fps: float = 16.0
    sample_rate: int = 16000
    seconds: float = 1.0
    spec: Mapping[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """What was written, for the run record."""
        if self.kind == "image":
            return f"image {self.width}x{self.height}"
        if self.kind == "video":
            return f"video {self.width}x{self.height}, {self.frames} frames at {self.fps:g} fps"
        return f"audio {self.seconds:g} s at {self.sample_rate} Hz"

    def job(self) -> dict[str, Any]:
        """What the media writer is given."""
        return {"name": self.name, "kind": self.kind, "width": self.width, "height": self.height,
                "frames": self.frames, "fps": self.fps, "sample_rate": self.sample_rate, "seconds": self.seconds}


# --------------------------------------------------------------------------- graph walking


def _is_link(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _upstream(g: Graph, start: str) -> set[str]:
    """Every node `start` depends on."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for value in (g.get(todo.pop(), {}).get("inputs") or {}).values():
            if _is_link(value) and str(value[0]) not in seen and str(value[0]) in g:
                seen.add(str(value[0]))
                todo.append(str(value[0]))
    return seen


def _model_loader(g: Graph, node_id: str, via: str = "model") -> str | None:
    """The diffusion model loader (UNETLoader, UnetLoaderGGUF, WanVideoModelLoader) a node's `model` input leads
    to (through LoRAs, model patches, shift and block-swap nodes)."""
    seen: set[str] = set()
    link: Any = (g.get(node_id, {}).get("inputs") or {}).get(via)
    while _is_link(link) and str(link[0]) not in seen:
        current = str(link[0])
        seen.add(current)
        node = g.get(current, {})
        if node.get("class_type") in DIT_LOADERS:
            return current
        link = (node.get("inputs") or {}).get("model")
    return None


def _wrapper_lora_target(g: Graph, node_id: str) -> str | None:
    """The WanVideoModelLoader a WanVideoLoraSelect patches: through the `prev_lora` chain to a WanVideoSetLoRAs
    (then up its `model` input) or to the loader's own `lora` input; None unless that is one loader."""
    found: set[str] = set()
    todo, seen = [node_id], {node_id}
    while todo:
        current = todo.pop()
        for consumer, node in g.items():
            for name, value in (node.get("inputs") or {}).items():
                if not (_is_link(value) and str(value[0]) == current) or consumer in seen:
                    continue
                cls = node.get("class_type")
                if cls == "WanVideoLoraSelect" and name == "prev_lora":
                    seen.add(consumer)
                    todo.append(consumer)
                elif cls == "WanVideoModelLoader" and name == "lora":
                    found.add(consumer)
                elif cls == "WanVideoSetLoRAs" and name == "lora":
                    loader = _model_loader(g, consumer)
                    found.add(loader or "?")
    return next(iter(found)) if len(found) == 1 and "?" not in found else None


def _describe(g: Graph, node_id: str) -> str:
    node = g.get(node_id, {})
    title = (node.get("_meta") or {}).get("title") or node.get("class_type")
    return f"{node.get('class_type')} {title!r} (node {node_id})" if title != node.get("class_type") else \
        f"{node.get('class_type')} (node {node_id})"


def _words(name: str) -> list[str]:
    """The lower-case words of a file name (split at anything but letters and digits)."""
    return [w for w in re.split(r"[^a-z0-9]+", name.lower().rsplit(".", 1)[0]) if w]


def weight_format(name: str, default: str) -> str:
    """The weight format a file name says: fp8_scaled, fp8_e4m3fn, fp8_e5m2, fp16, bf16, fp32, else default."""
    words = set(_words(name))
    if "fp8" in words or "e4m3fn" in words or "e5m2" in words:
        if "scaled" in words:
            return "fp8_scaled"
        return "fp8_e5m2" if "e5m2" in words else "fp8_e4m3fn"
    for fmt in ("bf16", "fp16", "fp32"):
        if fmt in words:
            return fmt
    return default


def gguf_file_type(name: str) -> str | None:
    """The GGUF file type a name says, as QuantStack and city96 name their files (Q4_K_M, Q8_0, Q6_K, F16,
    BF16, ...), or None."""
    found = re.findall(r"(?<![a-z0-9])(q[2-8]_k_[sml]|q[2-8]_k|q[4-8]_[01]|bf16|f16|f32)(?![a-z0-9])", name.lower())
    return found[-1].upper() if found else None


def _name_size(name: str) -> str | None:
    words = set(_words(name))
    if words & {"14b", "a14b"}:
        return "14B"
    if "5b" in words:
        return "5B"
    if re.search(r"1[._]3b", name.lower()):
        return "1.3B"
    return None


def _name_family(name: str) -> str | None:
    words = _words(name)
    return next((family for word, family in NAME_FAMILIES if word in words), None)


def _wan_version(name: str) -> str | None:
    m = re.search(r"wan[_-]?2[._-]?([12])", name.lower())
    return f"2.{m.group(1)}" if m else None


# --------------------------------------------------------------------------- model files


class _Planner:
    def __init__(self, g: Graph, size: str) -> None:
        self.g, self.size = g, size
        self.dits: dict[str, tuple[dict[str, Any], str]] = {}
        self.patched: dict[str, dict[str, Any]] = {}  # LoRA node -> the layout of the model it patches

    def fail(self, node_id: str, name: str, missing: str) -> LayoutError:
        return LayoutError(f"cannot tell the layout of {name!r}, which {_describe(self.g, node_id)} loads: "
                           f"{missing}")

    def samplers_of(self, loader: str) -> list[str]:
        return [i for i, n in self.g.items() if n.get("class_type") in SAMPLERS
                and loader in (_model_loader(self.g, i), _model_loader(self.g, i, "guider"))]

    def graph_family(self, loader: str) -> tuple[set[str], set[str]]:
        """The families the conditioning nodes upstream of the loader's samplers imply, and their classes."""
        classes: set[str] = set()
        for sampler in self.samplers_of(loader):
            classes |= {str(self.g[i].get("class_type")) for i in _upstream(self.g, sampler)}
        found = classes & set(CONDITIONING_FAMILIES)
        return {CONDITIONING_FAMILIES[c] for c in found}, found

    def latent_channels(self) -> int | None:
        """48 when the graph's VAE is the Wan 2.2 VAE, 16 for the Wan 2.1 VAE, None when it cannot tell."""
        versions = {_wan_version(str(n["inputs"].get("vae_name", ""))) for n in self.g.values()
                    if n.get("class_type") == "VAELoader"}
        if versions == {"2.2"}:
            return 48
        if versions == {"2.1"}:
            return 16
        return None

    def gguf_format(self, node_id: str, name: str) -> str | None:
        """The GGUF file type of a diffusion model file, None for a safetensors one; the loader must fit."""
        loader = str(self.g[node_id].get("class_type"))
        if not name.lower().endswith(".gguf"):
            if loader in GGUF_LOADERS:
                raise self.fail(node_id, name, f"{loader} (city96/ComfyUI-GGUF) loads .gguf files only; name a "
                                               "GGUF file (e.g. Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf) or load it "
                                               "with UNETLoader")
            return None
        if loader == "WanVideoModelLoader":
            raise self.fail(node_id, name, "the synthetic set writes GGUF experts as ComfyUI-GGUF's UnetLoaderGGUF "
                                           "reads them, not for WanVideoModelLoader; give it a safetensors model")
        if loader not in GGUF_LOADERS:
            raise self.fail(node_id, name, f"{loader} does not load GGUF files; load it with UnetLoaderGGUF "
                                           "(city96/ComfyUI-GGUF)")
        return self.gguf_type(node_id, name, "QuantStack and city96 do (e.g. Wan2.2-I2V-A14B-HighNoise-Q4_K_M.gguf)")

    def gguf_type(self, node_id: str, name: str, example: str) -> str:
        """The GGUF type a file's name says, one the synthetic set writes (else the error says how to name it)."""
        file_type = gguf_file_type(name)
        if file_type is None or file_type not in GGUF_FILE_TYPES:
            raise self.fail(node_id, name, "the name says none of the GGUF types the synthetic set writes ("
                                           f"{', '.join(GGUF_FILE_TYPES)}); name the file after its type, as "
                                           + example)
        return file_type

    def dit(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        if node_id in self.dits:
            return self.dits[node_id]
        gguf = self.gguf_format(node_id, name)
        version = _wan_version(name)
        if version == "2.1" or _name_size(name) == "1.3B":
            raise self.fail(node_id, name, "the name says Wan 2.1; the synthetic set writes the Wan 2.2 models "
                                           "(14B t2v, i2v, fun inpaint, fun control, fun camera, s2v, animate; 5B "
                                           "TI2V, fun inpaint, fun control)")
        by_graph, classes = self.graph_family(node_id)
        family = _name_family(name)
        if family is None:
            if len(by_graph) != 1:
                seen = (f"its samplers are fed by {', '.join(sorted(classes))}, which disagree" if by_graph else
                        "no sampler it drives is fed by a Wan 2.2 conditioning or latent node "
                        f"({', '.join(sorted(CONDITIONING_FAMILIES))})")
                raise self.fail(node_id, name, f"the name says none of {', '.join(w for w, _ in NAME_FAMILIES)} "
                                               f"and {seen}; name the file after its model "
                                               "(e.g. wan2.2_i2v_high_noise_14B_fp16.safetensors)")
            family = next(iter(by_graph))
        model_size = _name_size(name)
        if model_size is None:
            channels = self.latent_channels()
            model_size = "5B" if family == "ti2v" or channels == 48 or "ti2v" in by_graph else "14B"
        spec = DIT_FAMILIES.get((family, model_size))
        if spec is None:
            known = ", ".join(f"{s} {f}" for f, s in DIT_FAMILIES)
            raise self.fail(node_id, name, f"there is no {model_size} {FAMILY_WORDS[family]} model in Wan 2.2 "
                                           f"as ComfyUI 0.8.0 loads it (known: {known})")
        dim, ffn, layers = DIT_SIZES["tiny" if self.size == "tiny" else model_size]
        if self.size == "tiny" and gguf is not None:
            dim, ffn, layers = GGUF_TINY_DIT  # wide enough for every block Linear to hold K-type blocks
        if self.size == "tiny" and self.g[node_id].get("class_type") == "WanVideoModelLoader":
            dim, ffn, layers = WRAPPER_TINY_DIT
        if self.size == "tiny" and spec.get("extra") == "animate":
            layers = 5  # one face adapter block per 5 layers: ComfyUI detects animate by the first one
        fmt = gguf or weight_format(name, "bf16")
        layout = {"kind": "wan_dit", "dim": dim, "ffn_dim": ffn, "layers": layers,
                  "out_dim": 48 if model_size == "5B" else 16, **spec, "format": fmt,
                  **({"container": "gguf"} if gguf else {})}
        extras = [f"{k} {v}" for k, v in spec.items() if k in ("ref_conv", "cam_adapter")]
        what = (f"Wan 2.2 {model_size} {FAMILY_WORDS[family]} model (in_dim {spec['in_dim']}"
                + "".join(f", {e}" for e in extras) + (", CLIP image input" if spec.get("clip") else "")
                + f"), {'GGUF ' if gguf else ''}{fmt}" + (", tiny" if self.size == "tiny" else ""))
        self.dits[node_id] = (layout, what)
        return layout, what

    def lora(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        if self.g[node_id].get("class_type") == "WanVideoLoraSelect":
            loader = _wrapper_lora_target(self.g, node_id)
            if loader is None:
                raise self.fail(node_id, name, "it feeds no WanVideoSetLoRAs or WanVideoModelLoader that leads to "
                                               "one model loader, so the model it patches (and so its shapes) is "
                                               "unknown")
        else:
            loader = _model_loader(self.g, node_id)
            if loader is None:
                raise self.fail(node_id, name, "its model input does not lead to a UNETLoader or UnetLoaderGGUF, "
                                               "so the model it patches (and so its shapes) is unknown")
        key = LOADERS[str(self.g[loader]["class_type"])][0]
        target, what = self.dit(loader, str(self.g[loader]["inputs"].get(key)))
        m = re.search(r"(?:rank|_r)[_-]?(\d+)", name.lower())
        rank = int(m.group(1)) if m else DEFAULT_LORA_RANK
        if self.size == "tiny":
            rank = min(rank, TINY_LORA_RANK)
        fmt = weight_format(name, "bf16")
        # LightX2V's Wan 2.1 image-to-video LoRAs (named for 480p or 720p) also patch the CLIP image projections
        # of the 2.1 model, which a Wan 2.2 model lacks (its loader skips those keys)
        words = set(_words(name))
        wan21_i2v = _name_family(name) == "i2v" and bool(words & {"480p", "720p"})
        blocks = {"dim": target["dim"], "ffn_dim": target["ffn_dim"], "layers": target["layers"],
                  "clip": bool(target.get("clip")) or wan21_i2v}  # all a LoRA of the blocks depends on
        layout = {"kind": "lora", "rank": rank, "format": fmt, "blocks": blocks}
        self.patched[node_id] = target
        return layout, f"LoRA of rank {rank} ({fmt}) for the {what.split(' (')[0]} of {_describe(self.g, loader)}"

    def vae(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        version = _wan_version(name)
        if version is None:
            outs = {layout["out_dim"] for layout, _ in self.dits.values()}
            if len(outs) != 1:
                raise self.fail(node_id, name, "the name says neither Wan 2.1 nor Wan 2.2 and the graph's "
                                               "diffusion models do not tell (48 latent channels: 2.2, 16: 2.1)")
            version = "2.2" if outs == {48} else "2.1"
        fmt = weight_format(name, "bf16")
        if fmt not in ("bf16", "fp16", "fp32"):
            fmt = "bf16"
        if version == "2.2":  # ComfyUI builds the Wan 2.2 VAE at its full size whatever the file holds
            return {"kind": "wan22_vae", "format": fmt}, f"Wan 2.2 VAE (48 latent channels), {fmt}"
        dim = 8 if self.size == "tiny" and self.g[node_id].get("class_type") == "VAELoader" else WRAPPER_VAE_DIM
        return ({"kind": "wan21_vae", "dim": dim, "format": fmt},
                f"Wan 2.1 VAE (16 latent channels, base width {dim}), {fmt}")

    def text_encoder(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        kind = (self.g[node_id].get("inputs") or {}).get("type", "wan")
        if kind != "wan":
            raise self.fail(node_id, name, f"{self.g[node_id].get('class_type')} type {kind!r}: the synthetic set "
                                           "writes only the Wan "
                                           "text encoder (type 'wan', UMT5-XXL)")
        if self.size == "tiny":
            raise self.fail(node_id, name, "ComfyUI builds UMT5-XXL at its full 5.7B parameters whatever the file "
                                           "holds, too big for a CPU; the tiny set replaces the text path with "
                                           "precomputed conditioning, which needs the CLIPTextEncode nodes to "
                                           "share this one loader and the loader to feed nothing else")
        loader = str(self.g[node_id].get("class_type"))
        if name.lower().endswith(".gguf"):
            if loader != "CLIPLoaderGGUF":
                raise self.fail(node_id, name, f"{loader} does not load GGUF files; load it with CLIPLoaderGGUF "
                                               "(city96/ComfyUI-GGUF)")
            file_type = self.gguf_type(node_id, name, "city96 does (e.g. umt5-xxl-encoder-Q8_0.gguf)")
            return ({"kind": "umt5_xxl", "format": file_type, "container": "gguf"},
                    f"UMT5-XXL text encoder, GGUF {file_type}")
        fmt = weight_format(name, "fp8_scaled")
        if loader == "CLIPLoaderGGUF" and fmt == "fp8_scaled":
            raise self.fail(node_id, name, "CLIPLoaderGGUF (city96/ComfyUI-GGUF) refuses scaled fp8 text encoders; "
                                           "name a GGUF, fp16 or bf16 file, or load it with CLIPLoader")
        return {"kind": "umt5_xxl", "format": fmt}, f"UMT5-XXL text encoder, {fmt}"

    def wrapper_t5(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        if self.size == "tiny":
            raise self.fail(node_id, name, "WanVideoWrapper builds UMT5-XXL at its full 5.7B parameters whatever "
                                           "the file holds, too big for a CPU; the tiny set replaces the text path "
                                           "with precomputed conditioning through WanVideoTextEmbedBridge, which "
                                           "needs the WanVideoTextEncode nodes to share this one loader")
        fmt = weight_format(name, "bf16")
        if fmt not in ("bf16", "fp16", "fp32"):
            raise self.fail(node_id, name, f"the name says {fmt}; LoadWanVideoT5TextEncoder reads bf16, fp16 or "
                                           "fp32 weights (it refuses scaled fp8)")
        return ({"kind": "wanvideo_t5", "format": fmt},
                f"UMT5-XXL text encoder in WanVideoWrapper's layout, {fmt}")

    def clip_vision(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        words = set(_words(name))
        if not words & {"h", "vith", "huge"} and "vit-h" not in name.lower():
            raise self.fail(node_id, name, "the synthetic set writes the ViT-H/14 CLIP vision model Wan uses "
                                           "(clip_vision_h); the name does not say ViT-H")
        fmt = weight_format(name, "fp16")
        return {"kind": "clip_vision_h", "format": fmt}, f"CLIP ViT-H/14 vision model, {fmt}"

    def audio_encoder(self, node_id: str, name: str) -> tuple[dict[str, Any], str]:
        words = set(_words(name))
        if "wav2vec2" not in words or "large" not in words:
            raise self.fail(node_id, name, "the synthetic set writes the wav2vec2-large audio encoder Wan 2.2 "
                                           "S2V uses; the name does not say wav2vec2 large")
        fmt = weight_format(name, "fp16")
        return {"kind": "wav2vec2_large", "format": fmt}, f"wav2vec2-large audio encoder, {fmt}"


def model_needs(g: Graph, size: str) -> list[ModelNeed]:
    """Every model file the prompt's core loaders name, with the layout to write at `size` (tiny or full):
    diffusion models first (LoRAs and VAEs follow from them), then the rest, each file once."""
    planner = _Planner(g, size)
    kinds = {"UNETLoader": planner.dit, "UnetLoaderGGUF": planner.dit, "UnetLoaderGGUFAdvanced": planner.dit,
             "LoraLoaderModelOnly": planner.lora, "LoraLoader": planner.lora,
             "VAELoader": planner.vae, "CLIPLoader": planner.text_encoder, "CLIPLoaderGGUF": planner.text_encoder,
             "CLIPVisionLoader": planner.clip_vision, "AudioEncoderLoader": planner.audio_encoder,
             "WanVideoModelLoader": planner.dit, "WanVideoLoraSelect": planner.lora,
             "WanVideoVAELoader": planner.vae, "LoadWanVideoT5TextEncoder": planner.wrapper_t5}
    order = [*(k for k in kinds if k in DIT_LOADERS), *(k for k in kinds if k not in DIT_LOADERS)]
    nodes = sorted((i for i, n in g.items() if n.get("class_type") in kinds),
                   key=lambda i: (order.index(str(g[i]["class_type"])), i))
    needs: dict[str, ModelNeed] = {}
    for node_id in nodes:
        cls = str(g[node_id]["class_type"])
        key, folder = LOADERS[cls]
        name = (g[node_id].get("inputs") or {}).get(key)
        if not isinstance(name, str) or not name:
            continue  # linked or empty: the preflight names it
        layout, what = kinds[cls](node_id, name)
        need = ModelNeed(folder, name, layout, node_id, cls, what, planner.patched.get(node_id))
        previous = needs.get(need.relpath)
        if previous is not None and previous.layout != layout:
            raise LayoutError(f"{name!r} is loaded by {_describe(g, previous.node)} as {previous.what} and by "
                              f"{_describe(g, node_id)} as {what}; one file cannot be both")
        needs.setdefault(need.relpath, need)
    return list(needs.values())


# --------------------------------------------------------------------------- input media


def _int_value(g: Graph, value: Any) -> int | None:
    """An int input, or the value of the primitive node it is linked to."""
    if _is_link(value):
        source = g.get(str(value[0]), {}).get("inputs") or {}
        value = next((source[k] for k in ("value", "int") if k in source), None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ints(g: Graph, classes: Iterable[str], key: str) -> list[int]:
    wanted = set(classes)
    return [v for n in g.values() if n.get("class_type") in wanted
            for v in [_int_value(g, (n.get("inputs") or {}).get(key))] if v is not None]


def media_needs(g: Graph, width: int, height: int, frames: int | None, fps: float | None) -> list[MediaNeed]:
    """Every image, video and audio file the prompt loads, at the clip's size: images at width x height, videos
    with the clip's frames, audio as long as every sound-to-video chunk together (16 kHz, what the audio encoder
    resamples to)."""
    rate = float(fps or 16.0)
    length = max([frames or 1, *_ints(g, CONDITIONING_FAMILIES, "length")])
    sound = sum(_ints(g, ("WanSoundImageToVideo", "WanSoundImageToVideoExtend"), "length"))
    seconds = math.ceil(max(sound or length, 1) / rate) + 1.0
    found: dict[str, MediaNeed] = {}
    for node_id, node in sorted(g.items()):
        cls = str(node.get("class_type"))
        for (media_cls, key), kind in INPUT_MEDIA.items():
            value = (node.get("inputs") or {}).get(key)
            if media_cls != cls or not isinstance(value, str) or not value:
                continue
            name = value.removesuffix(" [input]")
            found.setdefault(name, MediaNeed(name, kind, node_id, cls, width=width, height=height,
                                             frames=length if kind == "video" else 1, fps=rate,
                                             seconds=seconds))
    return list(found.values())


# --------------------------------------------------------------------------- bringing them about


def ensure_for(g: Graph, root: Path, *, size: str, python: str, device: str = "cpu", clip: Mapping[str, Any],
               timeout: float = 600, log_dir: Path | None = None) -> list[str]:
    """Write into the synthetic set at root every model file the prompt names that the set lacks (with the
    layout inferred for it), and every input it loads (in root/input, at the clip's size: `clip` holds width,
    height, length and fps, as Variant.describe gives them). Returns what was written now."""
    jobs = [FileJob(n.relpath, n.layout) for n in model_needs(g, size)]
    written = ensure_files(python, root, jobs, device=device, timeout=timeout,
                           log_path=log_dir / "synth-files.log" if log_dir else None)
    media = media_needs(g, int(clip.get("width") or 64), int(clip.get("height") or 64), clip.get("length"),
                        clip.get("fps"))
    written += ensure_media(python, root, [dict(m.job(), describe=m.describe()) for m in media], timeout=timeout,
                            log_path=log_dir / "synth-media.log" if log_dir else None)
    rife = {str((n.get("inputs") or {}).get("ckpt_name")) for n in g.values() if n.get("class_type") == "RIFE VFI"}
    for pack in sorted(p for p in (root / "custom_nodes").glob("*") if (p / RIFE_MARKER).is_file()):
        for ckpt in sorted(rife & set(RIFE_ARCH)):
            if not (rife_path(pack, ckpt).is_file() and not rife_stamp_matches(pack, ckpt)):
                ensure_rife(python, pack, ckpt=ckpt, device=device, log_path=log_dir / "rife-synth.log"
                            if log_dir else None)
    return written
