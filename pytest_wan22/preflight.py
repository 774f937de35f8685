"""Check an API prompt against a server's /object_info before spending GPU time on it."""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import PreflightError

__all__ = [
    "Places",
    "Problem",
    "find_problems",
    "format_problems",
    "launched_places",
    "model_folder",
    "node_pack",
    "raise_if_problems",
]

ProblemKind = Literal["node", "model", "value", "link"]

#: Model-file inputs by name: the folder under <comfyui>/models/ that ComfyUI lists for them.
MODEL_INPUT_FOLDERS: Mapping[str, str] = {
    "unet_name": "diffusion_models",
    "clip_name": "text_encoders",
    "clip_name1": "text_encoders",
    "clip_name2": "text_encoders",
    "clip_name3": "text_encoders",
    "clip_name4": "text_encoders",
    "vae_name": "vae",
    "lora_name": "loras",
    "ckpt_name": "checkpoints",
    "control_net_name": "controlnet",
    "style_model_name": "style_models",
    "gligen_name": "gligen",
    "clip_vision": "clip_vision",
    "hypernetwork_name": "hypernetworks",
    "audio_encoder_name": "audio_encoders",
    "unclip_name": "checkpoints",
}
#: Exceptions to MODEL_INPUT_FOLDERS for particular classes.
CLASS_INPUT_FOLDERS: Mapping[tuple[str, str], str] = {
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("FrameInterpolationModelLoader", "model_name"): "frame_interpolation",
    ("UnetLoaderGGUF", "unet_name"): "diffusion_models",
    ("UnetLoaderGGUFAdvanced", "unet_name"): "diffusion_models",
    ("CLIPLoaderGGUF", "clip_name"): "text_encoders",
    # kijai/ComfyUI-WanVideoWrapper loaders
    ("WanVideoModelLoader", "model"): "diffusion_models",
    ("WanVideoVAELoader", "model_name"): "vae",
    ("LoadWanVideoT5TextEncoder", "model_name"): "text_encoders",
    ("WanVideoLoraSelect", "lora"): "loras",
    **{("WanVideoLoraSelectMulti", f"lora_{i}"): "loras" for i in range(5)},
}
#: ComfyUI-Frame-Interpolation nodes keep their checkpoints inside the node pack, one folder per model type.
VFI_MODEL_TYPES: Mapping[str, str] = {
    "RIFE VFI": "rife", "FILM VFI": "film", "GMFSS Fortuna VFI": "gmfss_fortuna", "IFRNet VFI": "ifrnet",
    "IFUnet VFI": "ifunet", "M2M VFI": "m2m", "AMT VFI": "amt", "Sepconv VFI": "sepconv",
    "STMFNet VFI": "stmfnet", "FLAVR VFI": "flavr", "CAIN VFI": "cain",
}
_VFI_PACK_DIR = "custom_nodes/ComfyUI-Frame-Interpolation/ckpts"
#: Inputs that name a file in <comfyui>/input/ (uploaded media): (class, input) -> what it is.
INPUT_MEDIA: Mapping[tuple[str, str], str] = {
    ("LoadImage", "image"): "image", ("LoadImageMask", "image"): "image", ("LoadVideo", "file"): "video",
    ("LoadAudio", "audio"): "audio",
}

#: Node classes by exact name -> the pack that provides them.
_PACKS_EXACT: Mapping[str, str] = {
    "INTConstant": "kijai/ComfyUI-KJNodes",
    "FloatConstant": "kijai/ComfyUI-KJNodes",
    "StringConstant": "kijai/ComfyUI-KJNodes",
    "GetImageSizeAndCount": "kijai/ComfyUI-KJNodes",
    "SetNode": "kijai/ComfyUI-KJNodes",
    "GetNode": "kijai/ComfyUI-KJNodes",
    "PathchSageAttentionKJ": "kijai/ComfyUI-KJNodes",
    "ModelPatchTorchSettings": "kijai/ComfyUI-KJNodes",
    "CreateCFGScheduleFloatList": "kijai/ComfyUI-WanVideoWrapper",
    "mxSlider": "Smirnov75/ComfyUI-mxToolkit",
    "mxSlider2D": "Smirnov75/ComfyUI-mxToolkit",
    "Textbox": "chibiace/ComfyUI-Chibi-Nodes",
    "UnetLoaderGGUF": "city96/ComfyUI-GGUF",
    "UnetLoaderGGUFAdvanced": "city96/ComfyUI-GGUF",
    "CLIPLoaderGGUF": "city96/ComfyUI-GGUF",
    "DualCLIPLoaderGGUF": "city96/ComfyUI-GGUF",
    "Make Interpolation State List": "Fannovel16/ComfyUI-Frame-Interpolation",
    # what ComfyUI's Wan 2.2 animate template preprocesses the driving video with
    "PointsEditor": "kijai/ComfyUI-KJNodes",
    "DrawMaskOnImage": "kijai/ComfyUI-KJNodes",
    "BlockifyMask": "kijai/ComfyUI-KJNodes",
    "GrowMaskWithBlur": "kijai/ComfyUI-KJNodes",
    "DownloadAndLoadSAM2Model": "kijai/ComfyUI-segment-anything-2",
    "Sam2Segmentation": "kijai/ComfyUI-segment-anything-2",
    "DWPreprocessor": "Fannovel16/comfyui_controlnet_aux",
    "PixelPerfectResolution": "Fannovel16/comfyui_controlnet_aux",
}
#: (prefix or suffix test, pack), checked in order.
_PACKS_PATTERN: tuple[tuple[str, str, str], ...] = (
    ("suffix", " VFI", "Fannovel16/ComfyUI-Frame-Interpolation"),
    ("prefix", "WanVideo", "kijai/ComfyUI-WanVideoWrapper"),
    ("prefix", "LoadWanVideo", "kijai/ComfyUI-WanVideoWrapper"),
    ("prefix", "VHS_", "Kosinkadink/ComfyUI-VideoHelperSuite"),
    ("suffix", "KJ", "kijai/ComfyUI-KJNodes"),
    ("suffix", "KJv2", "kijai/ComfyUI-KJNodes"),
    ("prefix", "easy ", "yolain/ComfyUI-Easy-Use"),
    ("prefix", "Anything Everywhere", "chrisgoringe/cg-use-everywhere"),
    ("suffix", "|pysssss", "pythongosssss/ComfyUI-Custom-Scripts"),
    ("prefix", "CRT_", "plugcrypt/CRT-Nodes"),
)
#: Python packages a node pack needs in the server's interpreter (its requirements.txt), said in the fix.
PACK_REQUIREMENTS: Mapping[str, str] = {"city96/ComfyUI-GGUF": "gguf"}
#: Core classes that ComfyUI 0.8.0 lacks (added later); updating ComfyUI is the fix.
NEWER_CORE: frozenset[str] = frozenset({"FrameInterpolate", "FrameInterpolationModelLoader",
                                        "ComfyMathExpression"})

_ANY_TYPES = frozenset({"*", "COMFY_MATCHTYPE_V3"})


@dataclass(frozen=True)
class Places:
    """Where the checked server finds files, as fix hints name them. The defaults speak of any install
    (`<comfyui>/models/...`); `launched_places` names the folders a launched server really reads."""

    comfyui: str = "<comfyui>"  # the install: its custom_nodes/ (frame-interpolation checkpoints)
    models: str = "<comfyui>/models"  # the folder whose models/<kind>/ folders the server lists
    models_note: str = ""  # said after a missing model file's fix
    extra_paths: str = "extra_model_paths.yaml"  # the file that can point the server at other model folders
    input: str = "<comfyui>/input"  # where to put an input image, video or audio file
    input_note: str = ""  # said after a missing input file's fix


def launched_places(comfyui_dir: Path, server_input: Path, synthetic: tuple[str, Path] | None = None) -> Places:
    """The folders of a server the plugin launched from `comfyui_dir`: it reads inputs from its own folder
    `server_input`, filled from <comfyui_dir>/input before each test, and models from <comfyui_dir>/models, or
    from the synthetic set (preset, base folder) it runs on; <comfyui_dir>/extra_model_paths.yaml applies to
    both."""
    note = ""
    models = comfyui_dir / "models"
    if synthetic is not None:
        preset, root = synthetic
        models = root / "models"
        note = (f"; the server reads models from the synthetic set {preset!r} ({root}), which has no such file: "
                "it writes the files of core loaders (UNETLoader, LoraLoaderModelOnly, VAELoader, CLIPLoader, "
                "CLIPVisionLoader, AudioEncoderLoader) and of ComfyUI-GGUF's UnetLoaderGGUF and CLIPLoaderGGUF "
                "before a run, not another node pack's (a tier with "
                'models = "user" runs such a graph on your own models)')
    return Places(comfyui=str(comfyui_dir), models=str(models), models_note=note,
                  extra_paths=str(comfyui_dir / "extra_model_paths.yaml"),
                  input=str(comfyui_dir / "input"),
                  input_note=f" (before each test the plugin copies the files a workflow names from there into "
                             f"the server's own input folder, {server_input})")


@dataclass(frozen=True)
class Problem:
    """One reason the server would reject or fail the prompt, with the fix."""

    kind: ProblemKind
    node_id: str
    class_type: str
    title: str
    input: str | None
    value: Any
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"node {self.node_id} {self.title!r} ({self.class_type})" if self.node_id else "workflow"
        if self.input:
            where += f" input {self.input!r}"
        return f"[{self.kind}] {where}: {self.message}; fix: {self.fix}"


def node_pack(class_type: str) -> str | None:
    """The custom node pack (GitHub owner/repo) known to provide a node class, if any."""
    if class_type in NEWER_CORE:
        return "comfyanonymous/ComfyUI (core, newer than 0.8.0)"
    if class_type in _PACKS_EXACT:
        return _PACKS_EXACT[class_type]
    for how, text, pack in _PACKS_PATTERN:
        if class_type.startswith(text) if how == "prefix" else class_type.endswith(text):
            return pack
    return None


def model_folder(class_type: str, input_name: str) -> str | None:
    """Where a model-file input's value must be, relative to <comfyui> ('models/<folder>', 'input', ...)."""
    if class_type in VFI_MODEL_TYPES and input_name == "ckpt_name":
        return f"{_VFI_PACK_DIR}/{VFI_MODEL_TYPES[class_type]}"
    if (class_type, input_name) in INPUT_MEDIA:
        return "input"
    folder = CLASS_INPUT_FOLDERS.get((class_type, input_name)) or MODEL_INPUT_FOLDERS.get(input_name)
    return f"models/{folder}" if folder else None


def split_spec(spec: Any) -> tuple[Any, list[Any] | None, Mapping[str, Any]]:
    """(type, combo options or None, extra) from an object_info input spec, old or v3 encoding."""
    if not isinstance(spec, (list, tuple)) or not spec:
        return None, None, {}
    head = spec[0]
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if isinstance(head, (list, tuple)):
        return "COMBO", list(head), extra
    if head == "COMBO":
        return "COMBO", list(extra.get("options", [])), extra
    return head, None, extra


def _is_link(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2


def _types_match(received: Any, wanted: Any) -> bool:
    if received == wanted:
        return True
    if not isinstance(received, str) or not isinstance(wanted, str):
        return True  # a combo list on either side: ComfyUI's frontend decides, not a preflight matter
    got = {t.strip() for t in received.split(",")}
    want = {t.strip() for t in wanted.split(",")}
    if got & _ANY_TYPES or want & _ANY_TYPES:
        return True
    if any(t.startswith("COMFY_") and t.endswith("_V3") for t in got | want):
        return True
    return bool(got & want)


def _short(options: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(repr(o) for o in options[:limit])
    return shown + (f", ... ({len(options)} in all)" if len(options) > limit else "")


class _Checker:
    def __init__(self, prompt: Mapping[str, Any], object_info: Mapping[str, Any], places: Places) -> None:
        self.prompt = prompt
        self.info = object_info
        self.places = places
        self.problems: list[Problem] = []

    def add(self, kind: ProblemKind, node_id: str, node: Mapping[str, Any], input_name: str | None,
            value: Any, message: str, fix: str) -> None:
        cls = str(node.get("class_type", ""))
        meta = node.get("_meta")
        title = cls
        if isinstance(meta, Mapping) and isinstance(meta.get("title"), str):
            title = str(meta["title"])
        self.problems.append(Problem(kind, node_id, cls, title, input_name, value, message, fix))

    def run(self) -> list[Problem]:
        known_all = True
        has_output = False
        for node_id, node in self.prompt.items():
            node_id = str(node_id)
            if not isinstance(node, Mapping):
                continue
            cls = str(node.get("class_type"))
            if cls not in self.info:
                known_all = False
                self.missing_class(node_id, node)
                continue
            has_output = has_output or bool(self.info[cls].get("output_node"))
            self.check_node(node_id, node, self.info[cls])
        if known_all and self.prompt and not has_output:
            self.problems.append(Problem(
                "node", "", "", "", None, None, "the workflow has no output node (SaveVideo, SaveImage, ...)",
                "add an output node; ComfyUI rejects a prompt without one (prompt_no_outputs)"))
        return self.problems

    def missing_class(self, node_id: str, node: Mapping[str, Any]) -> None:
        cls = str(node.get("class_type"))
        pack = node_pack(cls)
        if cls in NEWER_CORE:
            fix = ("it is a core node of ComfyUI releases newer than 0.8.0: update ComfyUI"
                   + ("; or use interpolate(node='RIFE VFI') with Fannovel16/ComfyUI-Frame-Interpolation"
                      if cls.startswith("FrameInterpolat") else ""))
        elif pack:
            fix = (f"install {pack} into {self.places.comfyui}/custom_nodes/ (git clone "
                   f"https://github.com/{pack}) and restart the server")
            if pack in PACK_REQUIREMENTS:
                fix += (f"; it needs the Python package {PACK_REQUIREMENTS[pack]} in the server's interpreter "
                        f"(<comfyui-python> -m pip install -r custom_nodes/{pack.split('/')[1]}/requirements.txt)")
        else:
            fix = ("install the custom node pack that provides it (ComfyUI-Manager finds packs by class "
                   "name) and restart the server, or remove the node")
        self.add("node", node_id, node, None, cls, f"node class {cls!r} is not installed on the server", fix)

    def check_node(self, node_id: str, node: Mapping[str, Any], info: Mapping[str, Any]) -> None:
        cls = str(node["class_type"])
        spec_all = info.get("input", {}) if isinstance(info.get("input"), Mapping) else {}
        inputs = node.get("inputs", {}) if isinstance(node.get("inputs"), Mapping) else {}
        for category in ("required", "optional"):
            specs = spec_all.get(category, {})
            if not isinstance(specs, Mapping):
                continue
            for name, spec in specs.items():
                kind, options, extra = split_spec(spec)
                if name not in inputs:
                    if category == "required" and not (isinstance(kind, str) and kind.startswith("COMFY_")):
                        widget = kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
                        what = "a value" if widget else f"a link to a node with a {kind} output"
                        self.add("value" if widget else "link", node_id, node, name, None,
                                 "required input is missing", f"set {name!r} ({what}) in the workflow")
                    continue
                value = inputs[name]
                if _is_link(value):
                    self.check_link(node_id, node, name, value, kind)
                elif kind == "COMBO" and options is not None:
                    self.check_combo(node_id, node, cls, name, value, options, extra)
                elif kind in ("INT", "FLOAT"):
                    self.check_number(node_id, node, name, value, kind, extra)

    def check_link(self, node_id: str, node: Mapping[str, Any], name: str, value: Any, kind: Any) -> None:
        source_id, slot = value
        source = self.prompt.get(str(source_id)) if isinstance(source_id, (str, int)) else None
        if not isinstance(source_id, str) or not isinstance(source, Mapping):
            self.add("link", node_id, node, name, list(value),
                     f"links to node {source_id!r}, which is not in the prompt",
                     "relink the input to an existing node (ids are strings)")
            return
        src_cls = str(source.get("class_type"))
        src_info = self.info.get(src_cls)
        if not isinstance(src_info, Mapping):
            return  # reported as a missing class
        outputs = src_info.get("output", [])
        if not isinstance(slot, int) or isinstance(slot, bool) or not 0 <= slot < len(outputs):
            self.add("link", node_id, node, name, list(value),
                     f"links to output {slot!r} of node {source_id} ({src_cls}), which has {len(outputs)} "
                     "outputs", f"use an output index from 0 to {len(outputs) - 1}")
            return
        if kind is not None and kind != "COMBO" and not _types_match(outputs[slot], kind):
            self.add("link", node_id, node, name, list(value),
                     f"gets {outputs[slot]} from node {source_id} ({src_cls}) but wants {kind}",
                     f"link it to a node that outputs {kind}")

    def check_combo(self, node_id: str, node: Mapping[str, Any], cls: str, name: str, value: Any,
                    options: list[Any], extra: Mapping[str, Any]) -> None:
        if extra.get("multiselect") and isinstance(value, list):
            bad = [v for v in value if v not in options]
            if not bad:
                return
            value = bad[0]
        elif value in options:
            return
        folder = model_folder(cls, name)
        if folder is not None and isinstance(value, str):
            message, fix = self.missing_file(value, folder, options, INPUT_MEDIA.get((cls, name), "file"))
            self.add("model", node_id, node, name, value, message, fix)
            return
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        self.add("value", node_id, node, name, value, f"{value!r} is not one of the allowed values{hint}",
                 f"use one of {_short(options)}" if options else "the server offers no values for it")

    def missing_file(self, value: str, folder: str, options: list[Any], media: str = "image") -> tuple[str, str]:
        base = value.replace("\\", "/").rsplit("/", 1)[-1]
        same = [o for o in options if isinstance(o, str) and o.replace("\\", "/").rsplit("/", 1)[-1] == base]
        if not options:
            listed = "the server lists none there"
        elif len(options) <= 3:
            listed = "the server lists only " + ", ".join(repr(o) for o in options)
        else:
            listed = f"the server lists {len(options)} others there"
        if same:
            listed += f"; {same[0]!r} has the same file name, use that name"
        where = self.places
        if folder == "input":
            fix = f"put it in {where.input}/{where.input_note}"
            return (f"input {media} {value!r} not in input/ ({listed})",
                    "upload it with POST /upload/image or " + fix if media == "image" else fix)
        if folder.startswith("custom_nodes/"):
            return (f"model file {value!r} not in {folder}/ ({listed})",
                    f"put it in {where.comfyui}/{folder}/ (the node pack downloads it on first use only when the "
                    "server is online)")
        sub = folder.removeprefix("models/")
        return (f"model file {value!r} not in {folder} ({listed})",
                f"put it in {where.models}/{sub}/ or point {where.extra_paths} at it{where.models_note}")

    def check_number(self, node_id: str, node: Mapping[str, Any], name: str, value: Any, kind: str,
                     extra: Mapping[str, Any]) -> None:
        try:
            if isinstance(value, bool) or value is None:
                raise ValueError(value)
            number = int(value) if kind == "INT" else float(value)
        except (TypeError, ValueError):
            self.add("value", node_id, node, name, value, f"{value!r} is not a valid {kind}",
                     f"give a number{self.range_text(extra)}")
            return
        lo, hi = extra.get("min"), extra.get("max")
        if (isinstance(lo, (int, float)) and number < lo) or (isinstance(hi, (int, float)) and number > hi):
            self.add("value", node_id, node, name, value, f"{value!r} is outside the allowed range",
                     f"set it{self.range_text(extra)}")

    @staticmethod
    def range_text(extra: Mapping[str, Any]) -> str:
        lo, hi = extra.get("min"), extra.get("max")
        if lo is not None and hi is not None:
            return f" between {lo} and {hi}"
        if lo is not None:
            return f" >= {lo}"
        if hi is not None:
            return f" <= {hi}"
        return ""


def find_problems(prompt: Mapping[str, Any], object_info: Mapping[str, Any],
                  places: Places | None = None) -> list[Problem]:
    """Every reason the server (as `object_info` describes it) would reject the prompt, in node order; fixes name
    the folders of `places` (a launched server's: `launched_places`)."""
    if isinstance(prompt.get("prompt"), Mapping) and "class_type" not in prompt["prompt"]:
        prompt = prompt["prompt"]
    return _Checker(prompt, object_info, places or Places()).run()


def format_problems(problems: Sequence[Problem]) -> str:
    """One line per problem."""
    return "\n".join(str(p) for p in problems) if problems else "no problems"


def raise_if_problems(problems: Sequence[Problem], where: str = "the workflow") -> None:
    """Raise PreflightError listing every problem, if there are any."""
    if not problems:
        return
    counts = Counter(p.kind for p in problems)
    summary = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items()))
    raise PreflightError(
        f"preflight found {len(problems)} problem(s) in {where} ({summary}) before anything ran on the GPU; "
        "each line names the fix:\n" + format_problems(problems),
        problems=[str(p) for p in problems])
