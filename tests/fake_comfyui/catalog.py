"""Node classes of the fake (a subset of ComfyUI 0.8.0's /object_info) and ComfyUI-like validation."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "object_info.json"

#: (class_type, input) -> models/ folder whose files fill the combo.
MODEL_COMBOS: dict[tuple[str, str], str] = {
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("LoraLoader", "lora_name"): "loras",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("WanVideoModelLoader", "model"): "diffusion_models",
    ("WanVideoVAELoader", "model_name"): "vae",
    ("LoadWanVideoT5TextEncoder", "model_name"): "text_encoders",
    ("WanVideoLoraSelect", "lora"): "loras",
}

#: File endings LoadVideo's combo lists from input/.
VIDEO_SUFFIXES = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif", ".m4v")

#: What GET /models lists (ComfyUI 0.8.0, captured).
MODEL_FOLDERS = (
    "checkpoints",
    "configs",
    "loras",
    "vae",
    "text_encoders",
    "diffusion_models",
    "clip_vision",
    "style_models",
    "embeddings",
    "diffusers",
    "vae_approx",
    "controlnet",
    "gligen",
    "upscale_models",
    "latent_upscale_models",
    "custom_nodes",
    "hypernetworks",
    "photomaker",
    "classifiers",
    "model_patches",
    "audio_encoders",
)
#: Extra directories (under models/) searched for a folder, as ComfyUI's folder_paths does.
FOLDER_ALIASES = {"text_encoders": ("clip",), "diffusion_models": ("unet",)}

RIFE_VFI: dict[str, Any] = {
    "input": {
        "required": {
            "ckpt_name": [["rife47.pth", "rife49.pth"], {"default": "rife47.pth"}],
            "frames": ["IMAGE"],
            "clear_cache_after_n_frames": ["INT", {"default": 10, "min": 1, "max": 1000}],
            "multiplier": ["INT", {"default": 2, "min": 1}],
            "fast_mode": ["BOOLEAN", {"default": True}],
            "ensemble": ["BOOLEAN", {"default": True}],
            "scale_factor": [[0.25, 0.5, 1.0, 2.0, 4.0], {"default": 1.0}],
            "dtype": [["float32", "float16", "bfloat16"], {"default": "float32"}],
            "torch_compile": ["BOOLEAN", {"default": False}],
            "batch_size": ["INT", {"default": 1, "min": 1, "max": 64}],
        },
        "optional": {"optional_interpolation_states": ["INTERPOLATION_STATES"]},
    },
    "input_order": {
        "required": [
            "ckpt_name",
            "frames",
            "clear_cache_after_n_frames",
            "multiplier",
            "fast_mode",
            "ensemble",
            "scale_factor",
            "dtype",
            "torch_compile",
            "batch_size",
        ],
        "optional": ["optional_interpolation_states"],
    },
    "output": ["IMAGE"],
    "output_is_list": [False],
    "output_name": ["IMAGE"],
    "name": "RIFE VFI",
    "display_name": "RIFE VFI (recommend rife47 and rife49)",
    "description": "",
    "python_module": "custom_nodes.ComfyUI-Frame-Interpolation",
    "category": "ComfyUI-Frame-Interpolation/VFI",
    "output_node": False,
}

#: kijai/ComfyUI-WanVideoWrapper 60a3875 with the KJNodes and VideoHelperSuite nodes its Wan 2.2 i2v example uses,
#: as the real packs' /object_info gives them (a cut of tests/data/object_info_packs.json)
WANVIDEOWRAPPER: dict[str, dict[str, Any]] = json.loads(
    (DATA.parent / "object_info_wrapper.json").read_text(encoding="utf-8"))
CUSTOM_NODE_PACKS: dict[str, dict[str, dict[str, Any]]] = {"frame-interpolation": {"RIFE VFI": RIFE_VFI},
                                                           "wanvideowrapper": WANVIDEOWRAPPER}


class Catalog:
    """The node classes the fake knows, with model combos filled from a file lister."""

    def __init__(
        self,
        list_files: Callable[[str], list[str]],
        list_inputs: Callable[[], list[str]],
        missing: tuple[str, ...] = (),
        custom_nodes: tuple[str, ...] = (),
    ) -> None:
        base: dict[str, Any] = json.loads(DATA.read_text(encoding="utf-8"))
        for pack in custom_nodes:
            base.update(copy.deepcopy(CUSTOM_NODE_PACKS.get(pack, {})))
        for name in missing:
            base.pop(name, None)
        self._base = base
        self._list_files = list_files
        self._list_inputs = list_inputs

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._base

    def names(self) -> list[str]:
        """Class names, as /object_info lists them."""
        return list(self._base)

    def info(self, class_type: str) -> dict[str, Any]:
        """One class's object_info entry, combos filled with the files present now."""
        info: dict[str, Any] = copy.deepcopy(self._base[class_type])
        for section in ("required", "optional"):
            for name, spec in info.get("input", {}).get(section, {}).items():
                options: list[str] | None = None
                folder = MODEL_COMBOS.get((class_type, name))
                if folder is not None:
                    options = self._list_files(folder)
                    if class_type == "VAELoader":
                        options = [*options, "pixel_space"]
                elif class_type == "LoadImage" and name == "image":
                    options = self._list_inputs()
                elif class_type == "LoadVideo" and name == "file":  # ComfyUI lists only the videos there
                    options = [f for f in self._list_inputs() if f.lower().endswith(VIDEO_SUFFIXES)]
                if options is None:
                    continue
                if spec and spec[0] == "COMBO":
                    spec[1]["options"] = options
                else:
                    spec[0] = options
        return info

    def all_info(self) -> dict[str, Any]:
        """The whole /object_info answer."""
        return {name: self.info(name) for name in self._base}

    def is_output(self, class_type: str) -> bool:
        """True for output nodes (SaveVideo, SaveImage, PreviewImage...)."""
        return bool(self._base.get(class_type, {}).get("output_node"))

    def output_types(self, class_type: str) -> list[Any]:
        """RETURN_TYPES of a class."""
        return list(self._base.get(class_type, {}).get("output") or [])


def is_link(value: Any) -> bool:
    """A [node_id, slot] link, as API-format prompts write them."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _types_match(received: Any, wanted: Any) -> bool:
    if isinstance(wanted, list) or wanted == "COMBO":
        return True
    if received == "*" or wanted == "*" or received == wanted:
        return True
    if isinstance(received, str) and isinstance(wanted, str):
        return bool(set(received.split(",")) & set(wanted.split(",")))
    return False


class Validator:
    """validate_prompt of ComfyUI 0.8.0, for the fake's classes: returns (ok, error, outputs, node_errors)."""

    def __init__(self, catalog: Catalog, input_exists: Callable[[str], bool]) -> None:
        self.catalog = catalog
        self.input_exists = input_exists

    def validate(self, prompt: Mapping[str, Any]) -> tuple[bool, dict[str, Any] | None, list[str], dict[str, Any]]:
        """Check a prompt as POST /prompt does."""
        outputs: list[str] = []
        for node_id, node in prompt.items():
            if not isinstance(node, Mapping) or "class_type" not in node:
                return (
                    False,
                    _error(
                        "invalid_prompt",
                        "Cannot execute because a node is missing the class_type property.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            class_type = node["class_type"]
            if class_type not in self.catalog:
                return (
                    False,
                    _error(
                        "invalid_prompt",
                        f"Cannot execute because node {class_type} does not exist.",
                        f"Node ID '#{node_id}'",
                    ),
                    [],
                    {},
                )
            if self.catalog.is_output(class_type):
                outputs.append(node_id)
        if not outputs:
            return False, _error("prompt_no_outputs", "Prompt has no outputs", ""), [], {}
        validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        node_errors: dict[str, Any] = {}
        good: list[str] = []
        failed: list[tuple[str, list[dict[str, Any]]]] = []
        for out in outputs:
            ok, reasons = self._validate_node(prompt, out, validated)
            if ok:
                good.append(out)
                continue
            failed.append((out, reasons))
            for node_id, (node_ok, node_reasons) in validated.items():
                if node_ok or not node_reasons:
                    continue
                entry = node_errors.setdefault(
                    node_id,
                    {
                        "errors": node_reasons,
                        "dependent_outputs": [],
                        "class_type": prompt[node_id]["class_type"],
                    },
                )
                entry["dependent_outputs"].append(out)
        if not good:
            details = "\n".join(f"{r['message']}: {r['details']}" for _, reasons in failed for r in reasons)
            return (
                False,
                _error("prompt_outputs_failed_validation", "Prompt outputs failed validation", details),
                [],
                node_errors,
            )
        return True, None, good, node_errors

    def _validate_node(
        self, prompt: Mapping[str, Any], node_id: str, validated: dict[str, tuple[bool, list[dict[str, Any]]]]
    ) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in validated:
            return validated[node_id]
        validated[node_id] = (True, [])  # cycle guard
        node = prompt[node_id]
        class_type = node["class_type"]
        inputs = node.get("inputs") or {}
        spec = self.catalog.info(class_type).get("input", {})
        errors: list[dict[str, Any]] = []
        valid = True
        for section in ("required", "optional"):
            for name, input_spec in (spec.get(section) or {}).items():
                wanted = input_spec[0]
                extra = input_spec[1] if len(input_spec) > 1 and isinstance(input_spec[1], dict) else {}
                config = [wanted, extra]
                if name not in inputs:
                    if section == "required":
                        errors.append(
                            {
                                "type": "required_input_missing",
                                "message": "Required input is missing",
                                "details": name,
                                "extra_info": {"input_name": name},
                            }
                        )
                    continue
                value = inputs[name]
                if isinstance(value, list):
                    if not is_link(value) or value[0] not in prompt:
                        errors.append(
                            {
                                "type": "bad_linked_input",
                                "message": ("Bad linked input, must be a length-2 list of [node_id, slot_index]"),
                                "details": name,
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": config,
                                    "received_value": value,
                                },
                            }
                        )
                        continue
                    source = prompt[value[0]]["class_type"]
                    returns = self.catalog.output_types(source)
                    received = returns[value[1]] if 0 <= value[1] < len(returns) else None
                    if not _types_match(received, wanted):
                        errors.append(
                            {
                                "type": "return_type_mismatch",
                                "message": "Return type mismatch between linked nodes",
                                "details": f"{name}, received_type({received}) mismatch input_type({wanted})",
                                "extra_info": {
                                    "input_name": name,
                                    "input_config": config,
                                    "received_type": received,
                                    "linked_node": value,
                                },
                            }
                        )
                        continue
                    if not self._validate_node(prompt, value[0], validated)[0]:
                        valid = False
                    continue
                error = self._check_value(class_type, name, wanted, extra, config, value)
                if error is not None:
                    errors.append(error)
        result = (valid and not errors, errors)
        validated[node_id] = result
        return result

    def _check_value(
        self, class_type: str, name: str, wanted: Any, extra: Mapping[str, Any], config: list[Any], value: Any
    ) -> dict[str, Any] | None:
        converters: dict[str, Callable[[Any], Any]] = {
            "INT": int,
            "FLOAT": float,
            "STRING": str,
            "BOOLEAN": bool,
        }
        if isinstance(wanted, str) and wanted in converters:
            try:
                value = converters[wanted](value)
            except (TypeError, ValueError) as exc:
                return {
                    "type": "invalid_input_type",
                    "message": f"Failed to convert an input value to a {wanted} value",
                    "details": f"{name}, {value}, {exc}",
                    "extra_info": {
                        "input_name": name,
                        "input_config": config,
                        "received_value": value,
                        "exception_message": str(exc),
                    },
                }
        if (class_type, name) in (("LoadImage", "image"), ("LoadVideo", "file")):
            if self.input_exists(str(value)):
                return None
            return {
                "type": "custom_validation_failed",
                "message": "Custom validation failed for node",
                "details": f"{name} - Invalid {'image' if name == 'image' else 'video'} file: {value}",
                "extra_info": {"input_name": name},
            }
        if "min" in extra and isinstance(value, (int, float)) and value < extra["min"]:
            return {
                "type": "value_smaller_than_min",
                "message": f"Value {value} smaller than min of {extra['min']}",
                "details": name,
                "extra_info": {"input_name": name, "input_config": config, "received_value": value},
            }
        if "max" in extra and isinstance(value, (int, float)) and value > extra["max"]:
            return {
                "type": "value_bigger_than_max",
                "message": f"Value {value} bigger than max of {extra['max']}",
                "details": name,
                "extra_info": {"input_name": name, "input_config": config, "received_value": value},
            }
        options: list[Any] | None = None
        if isinstance(wanted, list):
            options = wanted
        elif wanted == "COMBO":
            options = list(extra.get("options") or [])
        if options is not None and value not in options:
            shown_config: list[Any] | None = config
            if len(options) > 20:
                listing = f"(list of length {len(options)})"
                shown_config = None
            else:
                listing = str(options)
            return {
                "type": "value_not_in_list",
                "message": "Value not in list",
                "details": f"{name}: '{value}' not in {listing}",
                "extra_info": {"input_name": name, "input_config": shown_config, "received_value": value},
            }
        return None


def _error(etype: str, message: str, details: str) -> dict[str, Any]:
    return {"type": etype, "message": message, "details": details, "extra_info": {}}
