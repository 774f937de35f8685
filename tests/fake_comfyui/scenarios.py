"""Behaviour knobs of the fake ComfyUI (read from FAKE_COMFYUI_* variables) and the errors it raises.

FAKE_COMFYUI_START_DELAY     seconds before it listens (slow start)
FAKE_COMFYUI_CRASH_ON_START  exit code: print a start-up traceback and exit with it
FAKE_COMFYUI_HANG            1: accept connections, never answer
FAKE_COMFYUI_NODE_SECONDS    time per executed node (0.01)
FAKE_COMFYUI_STEP_SECONDS    time per sampler step (0.01)
FAKE_COMFYUI_SCENARIO        success | oom | error | crash_during_run | hang_during_run | offload |
                             vae_oom_retry | drop_websockets | swap
FAKE_COMFYUI_FAIL_NODE       node id, title or class where oom/error strike (first KSamplerAdvanced)
FAKE_COMFYUI_MODELS          JSON {folder: [file names]} for loader combos and /models/{folder}
FAKE_COMFYUI_MISSING_NODES   comma list of classes left out of /object_info
FAKE_COMFYUI_CUSTOM_NODES    comma list of node packs to add: frame-interpolation ("RIFE VFI"), wanvideowrapper
                             (WanVideoWrapper, KJNodes and VideoHelperSuite nodes of its Wan 2.2 i2v example)
FAKE_COMFYUI_VRAM_MIB        device memory in system_stats
FAKE_COMFYUI_GPU_NAME        device name in system_stats (NVIDIA GeForce RTX 5090)
FAKE_COMFYUI_TORCH_PEAK_MIB  allocator peak /wan22/memory reports after a sampler ran (12288); each loaded model
                             holds a third of it as `reserved` until /free is applied
FAKE_COMFYUI_FREE_SECONDS    how long applying /free takes (the models moving to host memory; 0)
FAKE_COMFYUI_INPUT_IMAGES    comma list of images put into input/ at start (the Wan start frames)
FAKE_COMFYUI_VIDEO           what SaveVideo writes: ok (an MP4 with the graph's frames, size and fps) | empty
                             (0 bytes) | missing (no file) | frames:N | fps:F (a wrong frame count or rate)
FAKE_COMFYUI_FRAMES          the pixels of that MP4, an uncompressed RGB track written where it takes at most 1 MiB
                             (else one placeholder byte a frame): seeded (a pattern of the samplers' seeds: one seed
                             gives one video) | noise:N (seeded, plus noise of +-N a value: another output) | black
FAKE_COMFYUI_WHEN            JSON {"FLAG [VALUE...]": {"FAKE_COMFYUI_...": value}}: knobs that apply when the
                             server is launched with that flag (and those values after it), e.g.
                             {"--fast fp8_matrix_mult": {"FAKE_COMFYUI_SCENARIO": "oom"}}: one install whose
                             launch profiles behave differently

A fake_knobs.json ({"FAKE_COMFYUI_...": value}) beside main.py overrides the environment: a copy of the fake
folder with one is another ComfyUI install.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SCENARIOS = (
    "success",
    "oom",
    "error",
    "crash_during_run",
    "hang_during_run",
    "offload",
    "vae_oom_retry",
    "drop_websockets",  # closes every websocket after the first sampler step; the run itself succeeds
    "swap",  # the low-noise pass partially unloads the high-noise model to make room
)

DEFAULT_MODELS: dict[str, list[str]] = {
    "diffusion_models": [
        "wan22_tiny_i2v_high_noise.safetensors",
        "wan22_tiny_i2v_low_noise.safetensors",
        "wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors",
        "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
        "wan2.2_ti2v_5B_fp16.safetensors",
    ],
    "text_encoders": [
        "umt5_xxl_tiny_stub.safetensors",
        "umt5_xxl_tiny_full.safetensors",
        "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
        "umt5_xxl_fp16.safetensors",
    ],
    "vae": [
        "wan21_tiny_vae.safetensors",
        "wan_2.1_vae.safetensors",
        "wan2.2_vae.safetensors",
    ],
    "loras": [
        "wan22_tiny_lora_high_noise.safetensors",
        "wan22_tiny_lora_low_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
        "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
    ],
    "clip_vision": ["clip_vision_h.safetensors"],
}

DEFAULT_INPUT_IMAGES = ("wan22_tiny_start.png", "wan22_i2v_start.png")


class KnobError(ValueError):
    """A FAKE_COMFYUI_* variable has a value the fake cannot use."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise KnobError(f"{name}={raw!r} is not a number") from exc
    if value < 0:
        raise KnobError(f"{name}={raw!r} must be >= 0")
    return value


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in env.get(name, "").split(",") if p.strip())


@dataclass(frozen=True)
class Knobs:
    """Everything FAKE_COMFYUI_* can change."""

    start_delay: float = 0.0
    crash_on_start: int | None = None
    hang: bool = False
    node_seconds: float = 0.01
    step_seconds: float = 0.01
    scenario: str = "success"
    fail_node: str | None = None
    models: dict[str, list[str]] = field(default_factory=lambda: {k: list(v) for k, v in DEFAULT_MODELS.items()})
    missing_nodes: tuple[str, ...] = ()
    custom_nodes: tuple[str, ...] = ()
    vram_mib: float | None = None
    torch_peak_mib: float = 12288.0
    free_seconds: float = 0.0
    gpu_name: str = "NVIDIA GeForce RTX 5090"
    input_images: tuple[str, ...] = DEFAULT_INPUT_IMAGES
    video: str = "ok"
    frames: str = "seeded"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Knobs:
        """Read the knobs; raise KnobError on a bad value."""
        env = os.environ if env is None else env
        crash = env.get("FAKE_COMFYUI_CRASH_ON_START", "").strip()
        crash_code: int | None = None
        if crash:
            try:
                crash_code = int(crash)
            except ValueError as exc:
                raise KnobError(f"FAKE_COMFYUI_CRASH_ON_START={crash!r} is not an exit code") from exc
        scenario = env.get("FAKE_COMFYUI_SCENARIO", "").strip() or "success"
        if scenario not in SCENARIOS:
            raise KnobError(f"FAKE_COMFYUI_SCENARIO={scenario!r} is not one of {', '.join(SCENARIOS)}")
        models = {k: list(v) for k, v in DEFAULT_MODELS.items()}
        raw_models = env.get("FAKE_COMFYUI_MODELS", "").strip()
        if raw_models:
            try:
                parsed = json.loads(raw_models)
            except ValueError as exc:
                raise KnobError(f"FAKE_COMFYUI_MODELS is not JSON: {exc}") from exc
            if not isinstance(parsed, dict) or not all(
                isinstance(v, list) and all(isinstance(n, str) for n in v) for v in parsed.values()
            ):
                raise KnobError("FAKE_COMFYUI_MODELS must be a JSON object: folder -> list of file names")
            models = {str(k): list(v) for k, v in parsed.items()}
        vram = env.get("FAKE_COMFYUI_VRAM_MIB", "").strip()
        video = env.get("FAKE_COMFYUI_VIDEO", "").strip() or "ok"
        if not re.fullmatch(r"ok|empty|missing|frames:\d+|fps:\d+(\.\d+)?", video):
            raise KnobError(f"FAKE_COMFYUI_VIDEO={video!r} is not ok, empty, missing, frames:N or fps:F")
        frames = env.get("FAKE_COMFYUI_FRAMES", "").strip() or "seeded"
        if not re.fullmatch(r"seeded|black|noise:\d+", frames):
            raise KnobError(f"FAKE_COMFYUI_FRAMES={frames!r} is not seeded, black or noise:N")
        images = env.get("FAKE_COMFYUI_INPUT_IMAGES")
        return cls(
            start_delay=_float(env, "FAKE_COMFYUI_START_DELAY", 0.0),
            crash_on_start=crash_code,
            hang=env.get("FAKE_COMFYUI_HANG", "").strip().lower() not in ("", "0", "false", "no"),
            node_seconds=_float(env, "FAKE_COMFYUI_NODE_SECONDS", 0.01),
            step_seconds=_float(env, "FAKE_COMFYUI_STEP_SECONDS", 0.01),
            scenario=scenario,
            fail_node=env.get("FAKE_COMFYUI_FAIL_NODE", "").strip() or None,
            models=models,
            missing_nodes=_list(env, "FAKE_COMFYUI_MISSING_NODES"),
            custom_nodes=_list(env, "FAKE_COMFYUI_CUSTOM_NODES"),
            vram_mib=_float(env, "FAKE_COMFYUI_VRAM_MIB", 0.0) if vram else None,
            torch_peak_mib=_float(env, "FAKE_COMFYUI_TORCH_PEAK_MIB", 12288.0),
            free_seconds=_float(env, "FAKE_COMFYUI_FREE_SECONDS", 0.0),
            gpu_name=env.get("FAKE_COMFYUI_GPU_NAME", "").strip() or "NVIDIA GeForce RTX 5090",
            input_images=DEFAULT_INPUT_IMAGES if images is None else _list(env, "FAKE_COMFYUI_INPUT_IMAGES"),
            video=video,
            frames=frames,
        )


def when_flags(env: Mapping[str, str], argv: list[str]) -> dict[str, str]:
    """The knobs FAKE_COMFYUI_WHEN sets for a server launched with `argv` (a flag and the values after it)."""
    raw = env.get("FAKE_COMFYUI_WHEN", "").strip()
    if not raw:
        return {}
    try:
        table = json.loads(raw)
    except ValueError as exc:
        raise KnobError(f"FAKE_COMFYUI_WHEN is not JSON: {exc}") from exc
    out: dict[str, str] = {}
    for key, knobs in table.items():
        flag, *values = str(key).split()
        if flag not in argv:
            continue
        start = argv.index(flag) + 1
        end = next((i for i in range(start, len(argv)) if argv[i].startswith("--")), len(argv))
        if all(v in argv[start:end] for v in values):
            out.update({str(k): str(v) for k, v in knobs.items()})
    return out


# --------------------------------------------------------------------------- node failures

OOM_TIPS = (
    "This error means you ran out of memory on your GPU.\n\nTIPS: If the workflow worked before you "
    "might have accidentally set the batch_size to a large number."
)


class NodeFailure(Exception):
    """A node raised: carries what ComfyUI puts into execution_error."""

    def __init__(self, exception_type: str, exception_message: str, traceback: list[str], log_lines: list[str]) -> None:
        super().__init__(exception_message)
        self.exception_type = exception_type
        self.exception_message = exception_message
        self.traceback = traceback
        self.log_lines = log_lines


def _traceback(where: str, line: str) -> list[str]:
    return [
        '  File "<comfyui>/execution.py", line 518, in execute\n    output_data, output_ui, has_subgraph, '
        "has_pending_tasks = await get_output_data(prompt_id, unique_id, obj, input_data_all)\n",
        '  File "<comfyui>/execution.py", line 291, in process_inputs\n    result = f(**inputs)\n',
        f'  File "<comfyui>/{where}"\n    {line}\n',
    ]


def gpu_oom(device_index: int = 0) -> NodeFailure:
    """torch.OutOfMemoryError as the cudaMallocAsync allocator words it, plus ComfyUI's hint."""
    torch_message = (
        f"Allocation on device {device_index} would exceed allowed memory. (out of memory)\n"
        "Currently allocated     : 30.71 GiB\n"
        "Requested               : 1.27 GiB\n"
        "Device limit            : 31.36 GiB\n"
        "Free (according to CUDA): 19.88 MiB\n"
        "PyTorch limit (set by user-supplied memory fraction)\n"
        "                        : 17179869184.00 GiB"
    )
    message = f"{torch_message}\n{OOM_TIPS}"
    lines = [
        f"!!! Exception during processing !!! {torch_message}",
        "Traceback (most recent call last):",
        *[t.rstrip("\n") for t in _traceback("comfy/ldm/wan/model.py", "x = self.ffn(x)")],
        f"torch.OutOfMemoryError: {torch_message}",
        "",
        "Memory summary: |===========================================================================|",
        "Got an OOM, unloading all loaded models.",
    ]
    return NodeFailure(
        "torch.OutOfMemoryError", message, _traceback("comfy/ldm/wan/model.py", "x = self.ffn(x)"), lines
    )


def runtime_error() -> NodeFailure:
    """The IndexError of d_runtime_error (ImageToMask on an RGB image)."""
    text = "index 3 is out of bounds for dimension 3 with size 3"
    tb = _traceback("comfy_extras/nodes_mask.py", "mask = image[:, :, :, channels.index(channel)]")
    lines = [
        f"!!! Exception during processing !!! {text}",
        "Traceback (most recent call last):",
        *[t.rstrip("\n") for t in tb],
        f"IndexError: {text}",
        "",
    ]
    return NodeFailure("IndexError", text + "\n", tb, lines)


def current_inputs(inputs: Mapping[str, Any]) -> dict[str, list[str]]:
    """str() of each input value, listed, as execution_error's current_inputs has them."""
    out: dict[str, list[str]] = {}
    for name, value in inputs.items():
        if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
            out[name] = [f"<output {value[1]} of node {value[0]}>"]
        else:
            out[name] = [str(value)]
    return out
