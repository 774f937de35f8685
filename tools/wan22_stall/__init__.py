"""wan22_stall: a ComfyUI custom node pack that makes every sampler model call slower by a set time, to measure
what the gate catches (a driver or torch regression of a known size, on demand).

Copy this folder into ComfyUI's custom_nodes/. Before each model call it reads a delay in seconds from the
file named by WAN22_STALL_FILE (default: `stall_s` beside this file); no file, an empty one or 0 means no delay,
so a running server can be slowed and restored between sessions. With CUDA it synchronises first: a CPU-side
sleep alone mostly vanishes into the GPU's queue, while a sleep after a synchronise is GPU idle time that shows
in every step. At cfg 1 a step makes one model call, so 1% of a 2.7 s step is a delay of 0.027.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import comfy.samplers  # type: ignore[import-not-found]

NODE_CLASS_MAPPINGS: dict[str, Any] = {}
NODE_DISPLAY_NAME_MAPPINGS: dict[str, str] = {}

_FILE = Path(os.environ.get("WAN22_STALL_FILE") or Path(__file__).with_name("stall_s"))
_inner = comfy.samplers.sampling_function


def _delay() -> float:
    try:
        return max(0.0, float(_FILE.read_text().strip() or 0))
    except (OSError, ValueError):
        return 0.0


def _stalled(*args: Any, **kwargs: Any) -> Any:
    delay = _delay()
    if delay:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        time.sleep(delay)
    return _inner(*args, **kwargs)


comfy.samplers.sampling_function = _stalled
