"""Judge synthetic layouts with ComfyUI's own loaders, in ComfyUI's interpreter (it has torch and comfy):

    <comfyui-python> tests/real/comfy_judge.py COMFYUI_DIR LAYOUTS.json

LAYOUTS.json is a list of {"id", "layout"[, "path"][, "target"]} (the layouts synth.layout_specs writes). Each layout is
turned into a state dict of zeros with the layout's names, shapes and dtypes (on the meta device where it is too
big for this machine's memory), or read from the file at "path" as ComfyUI reads it, and handed to the loader
ComfyUI uses for its kind: load_diffusion_model_state_dict (or, on the meta device, model detection and
load_model_weights), VAE, load_clipvision_from_sd, load_audio_encoder_from_sd, the text encoder detection,
load_lora against the model it patches ("target", a DiT layout); a GGUF DiT (container "gguf") is read by
city96/ComfyUI-GGUF's own loader (gguf_sd_loader) and loaded with its GGMLOps as UnetLoaderGGUF does, then run once
on random inputs to see its output finite (a full-size one is judged by detection and keys on the meta device;
without the pack in COMFYUI_DIR/custom_nodes it is reported as skipped); input media go through LoadImage's,
LoadVideo's and LoadAudio's code. What ComfyUI detected and every warning it logged (missing, unexpected or not
loaded keys) is printed as one JSON line per layout.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any

META_BYTES = 3 * 2**30  # bigger state dicts are judged on the meta device


class Skip(Exception):
    """The layout cannot be judged here; out["skipped"] says why."""


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage()[:2000])


def start_comfy(comfyui: str) -> types.ModuleType:
    """Make ComfyUI at `comfyui` importable as it runs on a CPU, and return the plugin's synth module loaded by path
    (the plugin itself is not installed in ComfyUI's interpreter). The wrapper's judge starts the same way."""
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfyui)
    import comfy.options

    comfy.options.enable_args_parsing()
    spec = importlib.util.spec_from_file_location(
        "wan22_synth", Path(__file__).resolve().parents[2] / "pytest_wan22" / "synth.py")
    assert spec is not None
    assert spec.loader is not None
    synth = importlib.util.module_from_spec(spec)
    sys.modules["wan22_synth"] = synth
    spec.loader.exec_module(synth)
    return synth


def main() -> None:
    comfyui, layouts_file = sys.argv[1], sys.argv[2]
    synth = start_comfy(comfyui)
    import comfy.clip_vision
    import comfy.lora
    import comfy.model_detection
    import comfy.sd
    import comfy.utils
    import torch
    from comfy.audio_encoders.audio_encoders import load_audio_encoder_from_sd

    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F8_E4M3": torch.float8_e4m3fn,
              "F8_E5M2": torch.float8_e5m2, "U8": torch.uint8}
    collect = Collect()
    logging.getLogger().addHandler(collect)

    def state_dict(layout: dict[str, Any], meta: bool) -> dict[str, Any]:
        if path:  # a file the writer wrote, read as ComfyUI reads it
            return dict(comfy.utils.load_torch_file(path))
        specs = synth.layout_specs(layout, tokenizer_bytes=16)
        return {t.name: torch.zeros(t.shape, dtype=dtypes[t.dtype], device="meta" if meta and t.shape else "cpu")
                for t in specs}  # scalars (LoRA alphas, fp8 scales) are read with .item(): never on meta

    def dit(layout: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        meta = synth.layout_bytes(layout) > META_BYTES and not path
        sd = state_dict(layout, meta)
        if not meta:
            patcher = comfy.sd.load_diffusion_model_state_dict(sd)
            if patcher is None:
                return None, None, {"detected": None}
            model = patcher.model
        else:
            sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata={})
            config = comfy.model_detection.model_config_from_unet(sd, "", metadata=metadata)
            if config is None:
                return None, None, {"detected": None}
            config.set_inference_dtype(torch.bfloat16, None)
            with torch.device("meta"):  # some modules make tensors without the device argument
                model = config.get_model(sd, "", device=torch.device("meta"))
            model.load_model_weights(sd, "")
            patcher = None
        unet = model.model_config.unet_config
        return model, patcher, {"detected": type(model.model_config).__name__, "model": type(model).__name__,
                         "net": type(model.diffusion_model).__name__, "meta": meta,
                         **{k: unet.get(k) for k in ("model_type", "in_dim", "out_dim", "dim", "num_layers",
                                                     "in_dim_ref_conv", "flf_pos_embed_token_number")}}

    def gguf_pack() -> tuple[Any, Any, Any] | None:
        """ComfyUI-GGUF's loader, ops and nodes modules (imported as a package of another name)."""
        folder = Path(comfyui) / "custom_nodes" / "ComfyUI-GGUF"
        if not (folder / "loader.py").is_file():
            return None
        if "wan22_comfyui_gguf" not in sys.modules:
            package = types.ModuleType("wan22_comfyui_gguf")
            package.__path__ = [str(folder)]
            sys.modules["wan22_comfyui_gguf"] = package
        return (importlib.import_module("wan22_comfyui_gguf.loader"),
                importlib.import_module("wan22_comfyui_gguf.ops"),
                importlib.import_module("wan22_comfyui_gguf.nodes"))

    def run_once(net: Any, in_dim: int) -> dict[str, Any]:
        """One forward pass on random inputs: is the output finite?"""
        gen = torch.Generator().manual_seed(0)
        x = torch.randn((1, in_dim, 2, 8, 8), generator=gen)
        context = torch.randn((1, 16, 4096), generator=gen)
        with torch.no_grad():
            y = net(x, torch.tensor([500.0]), context)
        return {"finite": bool(torch.isfinite(y).all()), "output_std": round(float(y.float().std()), 4)}

    def gguf_dit(layout: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
        pack = gguf_pack()
        if pack is None:
            return None, None, {
                "skipped": f"city96/ComfyUI-GGUF is not installed in {comfyui}/custom_nodes (git clone "
                           "https://github.com/city96/ComfyUI-GGUF there and pip install gguf into ComfyUI's "
                           "interpreter)"}
        loader, ops, nodes = pack
        if not path and synth.layout_bytes(layout) > META_BYTES:  # detection and keys of the same tensors
            sd = {t.name: torch.empty(t.shape, dtype=torch.bfloat16, device="meta") for t in synth.gguf_specs(layout)}
            return None, None, dit_from(sd)
        with tempfile.TemporaryDirectory() as tmp:
            file = path or str(Path(tmp) / "model.gguf")
            if not path:
                synth.write_gguf(Path(file), layout, seed=1)
            sd = loader.gguf_sd_loader(file)
            types_found = sorted({getattr(v, "tensor_type", None).name for v in sd.values()
                                  if getattr(v, "tensor_type", None) is not None})
            patcher = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"custom_operations": ops.GGMLOps()})
            if patcher is None:
                return None, None, {"detected": None}
            patcher = nodes.GGUFModelPatcher.clone(patcher)  # as UnetLoaderGGUF hands it on
            model = patcher.model
            unet = model.model_config.unet_config
            return model, patcher, {
                "detected": type(model.model_config).__name__, "model": type(model).__name__,
                "net": type(model.diffusion_model).__name__, "meta": False, "gguf_types": types_found,
                **run_once(model.diffusion_model, unet["in_dim"]),
                **{k: unet.get(k) for k in ("model_type", "in_dim", "out_dim", "dim", "num_layers")}}

    def gguf_text_encoder(layout: dict[str, Any], out: dict[str, Any]) -> dict[str, Any] | None:
        """A GGUF UMT5-XXL read as CLIPLoaderGGUF reads it (written to a temporary file unless given): its state
        dict, the tokenizer ComfyUI-GGUF rebuilds from the metadata, and the text encoder ComfyUI builds with
        GGMLOps; None (with out["skipped"]) where the pack cannot be used."""
        pack = gguf_pack()
        if pack is None:
            out["skipped"] = (f"city96/ComfyUI-GGUF is not installed in {comfyui}/custom_nodes (git clone "
                              "https://github.com/city96/ComfyUI-GGUF there and pip install gguf into ComfyUI's "
                              "interpreter)")
            return None
        loader, ops, _ = pack
        folder = tempfile.mkdtemp()
        file = Path(path or Path(folder) / "umt5.gguf")
        try:
            if not path:
                synth.write_gguf(file, layout, seed=1)
            try:
                sd: dict[str, Any] = loader.gguf_clip_loader(str(file))
            except TypeError as exc:
                if "0-dimensional" not in str(exc):
                    raise
                import numpy

                out["skipped"] = (f"this ComfyUI-GGUF cannot read a GGUF tokenizer's integer metadata with numpy "
                                  f"{numpy.__version__} ({exc}); city96/ComfyUI-GGUF#394 (merged 2026-01-11) "
                                  "fixes it: update the pack")
                return None
        finally:
            if not path:
                file.unlink(missing_ok=True)
                Path(folder).rmdir()
        import comfy.text_encoders.wan as wan

        tokens = wan.WanT5Tokenizer(tokenizer_data={"spiece_model": sd["spiece_model"]}).tokenize_with_weights(
            "a red fox trots through fresh snow, 色调艳丽")["umt5xxl"][0]
        clip = comfy.sd.load_text_encoder_state_dicts(
            clip_type=comfy.sd.CLIPType.WAN, state_dicts=[dict(sd)],
            model_options={"custom_operations": ops.GGMLOps, "initial_device": torch.device("cpu")})
        out.update(gguf_types=sorted({v.tensor_type.name for v in sd.values()
                                      if getattr(v, "tensor_type", None) is not None}),
                   tokens=[int(t[0]) for t in tokens if int(t[0]) != 0][:24],
                   encoder=type(clip.cond_stage_model).__name__)
        return {k: v for k, v in sd.items() if k != "spiece_model"}

    def dit_from(sd: dict[str, Any]) -> dict[str, Any]:
        sd, metadata = comfy.utils.convert_old_quants(sd, "", metadata={})
        config = comfy.model_detection.model_config_from_unet(sd, "", metadata=metadata)
        if config is None:
            return {"detected": None}
        config.set_inference_dtype(torch.bfloat16, None)
        with torch.device("meta"):
            model = config.get_model(sd, "", device=torch.device("meta"))
        model.load_model_weights(sd, "")
        unet = model.model_config.unet_config
        return {"detected": type(model.model_config).__name__, "model": type(model).__name__,
                "net": type(model.diffusion_model).__name__, "meta": True,
                **{k: unet.get(k) for k in ("model_type", "in_dim", "out_dim", "dim", "num_layers")}}

    path = ""
    for entry in json.loads(Path(layouts_file).read_text()):
        layout, out = entry["layout"], {"id": entry["id"]}
        path = entry.get("path", "")
        collect.lines.clear()
        try:
            kind = layout["kind"]
            if kind == "media":  # an input file, read by LoadImage's, LoadVideo's and LoadAudio's own code
                if layout["media"] == "video":
                    from comfy_api.input_impl import VideoFromFile

                    images = VideoFromFile(path).get_components().images
                    out.update(frames=images.shape[0], height=images.shape[1], width=images.shape[2])
                elif layout["media"] == "audio":
                    from comfy_extras.nodes_audio import load as load_audio

                    waveform, rate = load_audio(path)
                    out.update(sample_rate=rate, seconds=round(waveform.shape[-1] / rate, 2))
                else:
                    from PIL import Image

                    with Image.open(path) as im:
                        out.update(width=im.size[0], height=im.size[1], format=im.format)
            elif kind == "wan_dit" and synth.is_gguf(layout):
                out.update(gguf_dit(layout)[2])
            elif kind == "wan_dit":
                out.update(dit(layout)[2])
            elif kind in ("wan21_vae", "wan22_vae"):
                vae = comfy.sd.VAE(sd=state_dict(layout, False))
                out.update(detected=type(vae.first_stage_model).__module__, latent_channels=vae.latent_channels)
            elif kind == "clip_vision_h":
                clip = comfy.clip_vision.load_clipvision_from_sd(state_dict(layout, False))
                out.update(detected=None if clip is None else type(clip.model).__name__,
                           layers=None if clip is None else len(clip.model.vision_model.encoder.layers))
            elif kind == "wav2vec2_large":
                enc = load_audio_encoder_from_sd(state_dict(layout, False))
                out.update(detected=type(enc.model).__name__, layers=len(enc.model.encoder.layers),
                           embed_dim=enc.model.encoder.layer_norm.weight.shape[0])
            elif kind == "umt5_xxl":
                sd = gguf_text_encoder(layout, out) if synth.is_gguf(layout) else state_dict(layout, True)
                if sd is None:
                    raise Skip
                out.update(detected=comfy.sd.detect_te_model(sd).name,
                           t5=comfy.text_encoders.sd3_clip.t5_xxl_detect(sd, "").get("dtype_t5") is not None)
                import comfy.text_encoders.wan as wan

                with torch.device("meta"):
                    te = wan.WanT5Model(device="meta", dtype=torch.bfloat16)
                want = {k: tuple(v.shape) for k, v in te.umt5xxl.transformer.state_dict().items()}
                have = {k: tuple(v.shape) for k, v in sd.items() if k in want or not k.endswith(
                    ("scale_weight", "spiece_model", "scaled_fp8"))}
                out.update(missing=sorted(set(want) - set(have))[:20], unexpected=sorted(set(have) - set(want))[:20],
                           wrong_shape=sorted(k for k in set(want) & set(have) if want[k] != have[k])[:20])
            elif kind == "lora":
                lora_path, path = path, ""
                target = entry.get("target") or {"kind": "wan_dit", "in_dim": 16, "out_dim": 16,
                                                 "format": "bf16", **layout["blocks"]}
                if synth.is_gguf(target) and synth.layout_bytes(target) > META_BYTES:  # its keys, on meta
                    target = {**{k: v for k, v in target.items() if k != "container"}, "format": "bf16"}
                model, patcher, found = gguf_dit(target) if synth.is_gguf(target) else dit(target)
                path = lora_path
                out["target"] = found
                if "skipped" in found:
                    out["skipped"] = found["skipped"]
                else:
                    key_map = comfy.lora.model_lora_keys_unet(model, {})
                    meta = patcher is None
                    patches = comfy.lora.load_lora(state_dict(layout, meta), key_map)
                    out["patched"] = len(patches)
                    if meta:  # too big to patch here: every patch's up @ down must have its weight's shape
                        weights = model.state_dict()
                        out["wrong_shape"] = sorted(
                            k for k, patch in patches.items()
                            if (patch.weights[0].shape[0], patch.weights[1].shape[1]) != tuple(weights[k].shape))[:20]
                    else:
                        patcher.add_patches(patches, 1.0)
                        patcher.patch_model()
                        if synth.is_gguf(target):  # ComfyUI-GGUF applies the patches as it dequantizes
                            out["patched_run"] = run_once(model.diffusion_model, target["in_dim"])
            else:
                out["error"] = f"unknown kind {kind}"
        except Skip:
            pass
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"[:2000]
            out["traceback"] = traceback.format_exc()[-3000:]
        out["warnings"] = list(collect.lines)
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    main()
