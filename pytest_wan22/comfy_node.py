"""A ComfyUI custom node package that the launcher installs into its own temporary custom_nodes folder.

It runs inside the ComfyUI process (torch is there), adds no node classes, and does two things:

* with WAN22_MEMORY_CAP_GIB set, it caps what PyTorch may allocate on the device
  (torch.cuda.set_per_process_memory_fraction), so a smaller card is emulated on a bigger GPU;
* it serves GET /wan22/memory (the allocator's peak since the last reset, no sampling gap) and
  POST /wan22/memory/reset, so a run's in-process peak is exact.
"""

from __future__ import annotations

import logging
import os
from typing import Any

NODE_CLASS_MAPPINGS: dict[str, Any] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

log = logging.getLogger("wan22")


def _cuda() -> Any:
    try:
        import torch
    except ImportError:  # pragma: no cover - ComfyUI always has torch
        return None
    return torch if torch.cuda.is_available() else None


def _apply_cap() -> None:
    cap = os.environ.get("WAN22_MEMORY_CAP_GIB")
    torch = _cuda()
    if not cap or torch is None:
        return
    device = torch.cuda.current_device()
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, float(cap) * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    log.warning("wan22: PyTorch memory on cuda:%d capped at %s GiB (fraction %.4f of %.1f GiB)",
                device, cap, fraction, total / 2**30)


def _memory() -> dict[str, Any]:
    torch = _cuda()
    if torch is None:
        return {"available": False}
    device = torch.cuda.current_device()
    return {
        "available": True,
        "device": device,
        "allocated": torch.cuda.memory_allocated(device),
        "reserved": torch.cuda.memory_reserved(device),
        "max_allocated": torch.cuda.max_memory_allocated(device),
        "max_reserved": torch.cuda.max_memory_reserved(device),
        "total": torch.cuda.get_device_properties(device).total_memory,
        "cap_gib": float(os.environ["WAN22_MEMORY_CAP_GIB"]) if os.environ.get("WAN22_MEMORY_CAP_GIB") else None,
    }


def _routes() -> None:
    try:
        from aiohttp import web
        from server import PromptServer
    except ImportError:  # pragma: no cover - outside ComfyUI
        return

    routes = PromptServer.instance.routes

    @routes.get("/wan22/memory")
    async def memory(request: Any) -> Any:
        return web.json_response(_memory())

    @routes.post("/wan22/memory/reset")
    async def reset(request: Any) -> Any:
        torch = _cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats(torch.cuda.current_device())
        return web.json_response(_memory())


_apply_cap()
_routes()
