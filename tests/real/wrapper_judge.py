"""Judge synthetic layouts against kijai/ComfyUI-WanVideoWrapper's own modules, in ComfyUI's interpreter:

    <comfyui-python> tests/real/wrapper_judge.py COMFYUI_DIR PACK_DIR LAYOUTS.json

LAYOUTS.json is a list of {"id", "layout"}. Each layout's tensors (synth.layout_specs) are set against the module
the wrapper builds for it, on the meta device: a DiT against WanModel with the config WanVideoModelLoader derives
from the file's shapes (width from patch_embedding, 40 heads and layers at 5120 and 12 heads and 30 layers at
widths it does not know, i2v cross-attention where k_img is present, ffn width from ffn.0), the Wan 2.1 VAE against
WanVideoVAE (which WanVideoVAELoader builds at full width, under a "model." prefix), UMT5-XXL in the wrapper's
layout against the encoder LoadWanVideoT5TextEncoder builds (umt5_xxl, encoder only). One JSON line per layout:
missing keys (the module has them, the file not), unexpected ones, and shape mismatches (a DiT by names: WanModel
builds its cross-attention k and v with a placeholder input width that loading replaces).

A LoRA entry also carries "patches", the layout of the DiT it patches: its tensors go through WanVideoSetLoRAs onto
that model (on the meta device), and its line counts the file's keys, the keys the patches apply, the key families
left unapplied (block numbers as *) and the warnings the wrapper and ComfyUI log for keys they do not load.
"""

from __future__ import annotations

import importlib
import json
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

SCALE_KEYS = (".scale_weight", ".weight_scale")


def main() -> None:
    comfyui, pack, layouts_file = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
    from comfy_judge import start_comfy  # beside this file: run by path, its folder is on sys.path

    synth = start_comfy(comfyui)
    import torch
    from accelerate import init_empty_weights

    package = types.ModuleType("wanvideowrapper")  # the pack's modules, without its node registrations
    package.__path__ = [str(pack)]
    sys.modules["wanvideowrapper"] = package

    def module_shapes(module: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
        return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}

    def wan_model(shapes: dict[str, tuple[int, ...]]) -> Any:
        model = importlib.import_module("wanvideowrapper.wanvideo.modules.model")
        dim, in_dim = shapes["patch_embedding.weight"][:2]
        heads, layers = {5120: (40, 40), 3072: (24, 30), 4096: (32, 48)}.get(dim, (12, 30))
        with init_empty_weights():
            net = model.WanModel(
                model_type="i2v" if "blocks.0.cross_attn.k_img.weight" in shapes else "t2v", in_dim=in_dim, dim=dim,
                in_features=shapes["blocks.0.self_attn.k.weight"][1],
                out_features=shapes["blocks.0.self_attn.k.weight"][0], ffn_dim=shapes["blocks.0.ffn.0.bias"][0],
                ffn2_dim=shapes["blocks.0.ffn.2.weight"][1], out_dim=48 if dim == 3072 else 16, num_heads=heads,
                num_layers=layers, main_device=torch.device("cpu"), dtype=torch.bfloat16)
        return net

    def dit(layout: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        net = wan_model(shapes)
        # what load_weights assigns: each parameter once, by name; WanModel builds cross-attention k and v with a
        # placeholder input width that the file's tensors replace, so a DiT is judged by its names
        return {name: shapes.get(name, tuple(p.shape)) for name, p in net.named_parameters()}

    def vae(layout: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        wan_vae = importlib.import_module("wanvideowrapper.wanvideo.wan_video_vae")
        return module_shapes(wan_vae.WanVideoVAE(dtype=torch.bfloat16))

    def t5(layout: dict[str, Any], shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        t5_module = importlib.import_module("wanvideowrapper.wanvideo.modules.t5")
        with init_empty_weights():
            net = t5_module.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=torch.bfloat16, device="cpu")
        return module_shapes(net)

    warnings: list[str] = []

    class Unloaded(logging.Handler):
        """Keeps what the wrapper (NOT LOADED) and ComfyUI (lora key not loaded) log for keys they skip."""

        def emit(self, record: logging.LogRecord) -> None:
            if "not loaded" in record.getMessage().lower():
                warnings.append(record.getMessage())

    logging.getLogger().addHandler(Unloaded(logging.WARNING))

    def lora(layout: dict[str, Any], patches: dict[str, Any]) -> dict[str, Any]:
        import comfy.model_patcher

        nodes = importlib.import_module("wanvideowrapper.nodes_model_loading")
        net = wan_model({s.name: tuple(s.shape) for s in synth.layout_specs(patches)})
        model = nodes.WanVideoModel(nodes.WanVideoModelConfig(), transformer=net)
        patcher = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
        # each tensor a zero-stride view of one element, so a full-size LoRA costs nothing to hold
        file = {s.name: torch.tensor(s.value) if s.init == "const" else torch.zeros((), dtype=torch.bfloat16)
                .expand(s.shape) for s in synth.layout_specs(layout)}
        nodes.load_torch_file = lambda *args, **kwargs: dict(file)  # what WanVideoSetLoRAs reads for the file
        warnings.clear()
        (patched,) = nodes.WanVideoSetLoRAs().setlora(patcher, [
            {"path": "synthetic", "name": "synthetic", "strength": 1.0, "blocks": {}, "merge_loras": False}])
        applied = {k for weight in patched.patches.values() for patch in weight for k in patch[1].loaded_keys}
        families = {re.sub(r"\.blocks\.\d+\.", ".blocks.*.", k) for k in set(file) - applied}
        return {"keys": len(file), "applied": len(applied & set(file)), "patched": len(patched.patches),
                "unapplied": sorted(families)[:40], "warnings": warnings[:20]}

    def tensors(layout: dict[str, Any]) -> dict[str, Any]:
        shapes = {s.name: tuple(s.shape) for s in synth.layout_specs(layout)
                  if s.name != "scaled_fp8" and not s.name.endswith(SCALE_KEYS)}
        if layout["kind"] == "wan21_vae":  # WanVideoVAELoader adds the prefix to a file without it
            shapes = {"model." + k: v for k, v in shapes.items()}
        judges = {"wan_dit": dit, "wan21_vae": vae, "wanvideo_t5": t5}
        wanted = judges[layout["kind"]](layout, {k.removeprefix("model."): v for k, v in shapes.items()})
        return {"missing": sorted(set(wanted) - set(shapes))[:20], "unexpected": sorted(set(shapes) - set(wanted))[:20],
                "shapes": sorted(f"{k}: file {shapes[k]}, module {wanted[k]}" for k in set(wanted) & set(shapes)
                                 if wanted[k] != shapes[k])[:20],
                "tensors": len(wanted)}

    for entry in json.loads(Path(layouts_file).read_text(encoding="utf-8")):
        layout = entry["layout"]
        verdict: dict[str, Any] = {"id": entry["id"]}
        try:
            verdict.update(lora(layout, entry["patches"]) if layout["kind"] == "lora" else tensors(layout))
        except Exception as exc:  # one bad layout must not hide the verdicts of the others
            verdict["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        print(json.dumps(verdict), flush=True)


if __name__ == "__main__":
    main()
