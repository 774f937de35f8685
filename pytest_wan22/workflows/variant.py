"""The Variant builder: a workflow plus named changes, built immutably into an API prompt."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any, Literal

from pytest_wan22.errors import WorkflowError

from .frame_count import int_input, video_frames
from .frozen import canonical, freeze, short_digest, thaw
from .graph import Workflow, validate_graph
from .nodes import Graph, describe_node, is_link, matches, select, title_of
from .roles import (
    DECODE_CLASSES,
    EXPERT_LOADERS,
    LATENT_NODES,
    ROLE_SELECTORS,
    VIDEO_NODES,
    expert_loader_of,
    expert_loaders,
    expert_pair,
    frame_interpolation,
    graph_summary,
    latent_node,
    role_files,
    role_nodes,
    sampler_nodes,
    video_nodes,
)

__all__ = ["ExpectedOutput", "Variant"]

PassOrder = Literal["high_low", "low_high"]

LIGHTX2V_LORAS: Mapping[str, str] = MappingProxyType({
    "high": "wan2.2_i2v_lightx2v_4steps_lora_v1_high_noise.safetensors",
    "low": "wan2.2_i2v_lightx2v_4steps_lora_v1_low_noise.safetensors",
})

#: Named schedules: (steps, cfg, split step, LightX2V LoRAs inserted).
SCHEDULES: Mapping[str, tuple[int, float, int, bool]] = MappingProxyType({
    "default": (20, 3.5, 10, False),
    "lightx2v_4step": (4, 1.0, 2, True),
})

RESOLUTION_LABELS: Mapping[tuple[int, int], str] = MappingProxyType({
    (832, 480): "480p",
    (640, 640): "640p",
    (1280, 720): "720p",
})

DEFAULT_FPS = 16.0
DEFAULT_VFI_CKPT = "rife47.pth"
_END_OF_SCHEDULE = 10000
_LABEL_RE = re.compile(r"^[A-Za-z0-9_.+]+$")

# --------------------------------------------------------------------------- Variant


@dataclass(frozen=True)
class ExpectedOutput:
    """What the saved video should be: frame count, frame rate, size and duration."""

    frames: int | None
    fps: float | None
    width: int | None
    height: int | None
    seconds: float | None


@dataclass(frozen=True)
class _State:
    pass_order: str = "high_low"
    seconds: float | None = None
    fps: float | None = None
    resolution: tuple[int, int] | None = None
    schedule: tuple[str, int, float, int, bool] | None = None
    compile_backend: str | None = None
    interpolation: tuple[str, int, str | None] | None = None
    models: tuple[tuple[str, str], ...] = ()
    conditioning_folder: str | None = None
    sets: tuple[tuple[str, str, str, bool], ...] = ()
    seed: int | None = None
    labels: tuple[str, ...] = ()
    scale: tuple[tuple[str, int], ...] = ()
    cpu: bool = False


def _fmt_num(value: float) -> str:
    return f"{value:g}"


class Variant:
    """A workflow plus named changes; every method returns a new Variant, `build()` gives the prompt."""

    __slots__ = ("_cache", "_state", "_workflow")
    _cache: dict[str, Any]
    _state: _State
    _workflow: Workflow

    def __init__(self, workflow: Workflow, _state: _State | None = None) -> None:
        if not isinstance(workflow, Workflow):
            raise WorkflowError("Variant needs a Workflow (from load_workflow), got "
                                f"{type(workflow).__name__}")
        object.__setattr__(self, "_workflow", workflow)
        object.__setattr__(self, "_state", _state or _State())
        object.__setattr__(self, "_cache", {})

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"Variant is immutable; methods return a new Variant (tried to set {key!r})")

    def __delattr__(self, key: str) -> None:
        raise AttributeError("Variant is immutable")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Variant):
            return NotImplemented
        return self._workflow == other._workflow and self._state == other._state

    def __hash__(self) -> int:
        return hash((self._workflow, self._state))

    def __repr__(self) -> str:
        return f"Variant({self._workflow.name!r}, id={self.variant_id!r}, digest={self.digest})"

    def _with(self, **changes: Any) -> Variant:
        return Variant(self._workflow, replace(self._state, **changes))

    # ----------------------------------------------------------------- builder methods

    @property
    def workflow(self) -> Workflow:
        """The workflow this variant patches."""
        return self._workflow

    def set(self, selector: str, input: str, value: Any, *, create: bool = False,
            label: str | None = None) -> Variant:
        """Set one input of the node a selector names (applied last, so it can override any other change).

        The input must already exist on the node unless `create` is true. `label` adds an id part.
        """
        try:
            encoded = json.dumps(value, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise WorkflowError(f"value for {selector!r}.{input} is not JSON-serialisable ({exc}); pass "
                                "str, int, float, bool, None, or a [\"id\", index] link") from exc
        sets = tuple(s for s in self._state.sets if (s[0], s[1]) != (selector, input))
        new = self._with(sets=(*sets, (selector, input, encoded, create)))
        return new.label(label) if label else new

    def pass_order(self, order: PassOrder) -> Variant:
        """'high_low' (official) or 'low_high' (first pass on the low-noise expert, second on the high)."""
        if order not in ("high_low", "low_high"):
            raise WorkflowError(f"pass order {order!r} is unknown; use 'high_low' or 'low_high'")
        return self._with(pass_order=order)

    def duration(self, seconds: float, fps: float = DEFAULT_FPS) -> Variant:
        """Clip length: the latent node's length = seconds * fps + 1 frames, the video node(s) at `fps`.

        The latent node is WanImageToVideo, Wan22ImageToVideoLatent, WanFirstLastFrameToVideo, ... (roles.LATENT_NODES).
        """
        if seconds <= 0 or fps <= 0:
            raise WorkflowError(f"duration({seconds}, fps={fps}) must be positive; the suites use 5 or 10 s")
        frames = seconds * fps
        if abs(frames - round(frames)) > 1e-9 or round(frames) % 4:
            raise WorkflowError(
                f"duration({seconds}, fps={fps}) gives {frames:g} + 1 frames; Wan needs seconds * fps to be "
                "a whole multiple of 4 (e.g. 5 s or 10 s at 16 fps)")
        return self._with(seconds=float(seconds), fps=float(fps))

    def resolution(self, width: int, height: int) -> Variant:
        """The latent node's width and height (multiples of 16)."""
        for v in (width, height):
            if not isinstance(v, int) or isinstance(v, bool) or v < 16 or v % 16:
                raise WorkflowError(f"resolution({width}, {height}): both sides must be whole multiples of "
                                    "16 (WanImageToVideo's step), e.g. 832x480, 640x640, 1280x720")
        return self._with(resolution=(width, height))

    def schedule(self, name: str | None = None, *, steps: int | None = None, cfg: float | None = None,
                 split: int | None = None) -> Variant:
        """'default' (20 steps, cfg 3.5, split 10/10), 'lightx2v_4step' (4 steps, cfg 1, 2/2 + LoRAs),
        or a custom schedule via steps/cfg/split (split defaults to steps // 2)."""
        custom = (steps, cfg, split) != (None, None, None)
        if name is not None and custom:
            raise WorkflowError(f"schedule({name!r}, ...) takes a name or steps/cfg/split, not both")
        if name is not None:
            if name not in SCHEDULES:
                raise WorkflowError(f"schedule {name!r} is unknown; use one of {sorted(SCHEDULES)} or "
                                    "schedule(steps=, cfg=, split=)")
            s, c, p, lora = SCHEDULES[name]
            return self._with(schedule=(name, s, c, p, lora))
        if steps is None:
            raise WorkflowError("schedule() needs a name ('default', 'lightx2v_4step') or steps=")
        cfg = 3.5 if cfg is None else float(cfg)
        split = steps // 2 if split is None else split
        if steps < 1 or not 0 < split < steps or cfg < 0:
            raise WorkflowError(f"schedule(steps={steps}, cfg={cfg}, split={split}): need steps >= 1, "
                                "0 < split < steps and cfg >= 0")
        return self._with(schedule=("custom", steps, cfg, split, False))

    def torch_compile(self, backend: str = "inductor") -> Variant:
        """Insert a TorchCompileModel node in front of each sampler's model input."""
        if backend not in ("inductor", "cudagraphs"):
            raise WorkflowError(f"torch_compile backend {backend!r} is unknown; TorchCompileModel offers "
                                "'inductor' and 'cudagraphs'")
        return self._with(compile_backend=backend)

    def interpolate(self, multiplier: int = 2, node: str = "RIFE VFI", ckpt: str | None = None) -> Variant:
        """Insert frame interpolation between the decode and the video node(s) and multiply their fps.

        node='RIFE VFI' uses Fannovel16/ComfyUI-Frame-Interpolation; node='core' uses the core
        FrameInterpolationModelLoader + FrameInterpolate pair (ComfyUI newer than 0.8.0). Either one turns
        n frames into (n - 1) * multiplier + 1, so the clip keeps its duration at `multiplier` times the fps.
        """
        if node not in ("RIFE VFI", "core"):
            raise WorkflowError(f"interpolate(node={node!r}) is unknown; use 'RIFE VFI' or 'core'")
        if not isinstance(multiplier, int) or isinstance(multiplier, bool) or multiplier < 2:
            raise WorkflowError(f"interpolate(multiplier={multiplier!r}) must be an int >= 2")
        return self._with(interpolation=(node, multiplier, ckpt))

    def seed(self, n: int) -> Variant:
        """noise_seed of the samplers that add noise; not part of variant_id or digest."""
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < 2**64:
            raise WorkflowError(f"seed {n!r} must be an int in [0, 2**64)")
        return self._with(seed=n)

    def models(self, mapping: Mapping[str, str]) -> Variant:
        """Swap model files by role: high, low (two experts), model (one), text_encoder, vae, image, lora_high,
        lora_low, vfi.

        Roles whose node this variant lacks are ignored (LoRAs without schedule('lightx2v_4step'), vfi
        without interpolate(), text_encoder under precomputed_conditioning()), so a tier can pass its whole
        model set. Not part of variant_id; part of digest.
        """
        merged = dict(self._state.models)
        for role, filename in mapping.items():
            if role not in ROLE_SELECTORS:
                raise WorkflowError(f"model role {role!r} is unknown; use one of {sorted(ROLE_SELECTORS)}")
            if not isinstance(filename, str) or not filename:
                raise WorkflowError(f"model file for role {role!r} must be a non-empty file name")
            merged[role] = filename
        return self._with(models=tuple(sorted(merged.items())))

    def precomputed_conditioning(self, folder: str) -> Variant:
        """Replace the text encoder with core LoadTrainingDataset(folder) + ConditioningZeroOut nodes."""
        if not isinstance(folder, str) or not folder:
            raise WorkflowError("precomputed_conditioning() needs the dataset folder name under output/")
        return self._with(conditioning_folder=folder)

    def on_cpu(self) -> Variant:
        """Run on a server without a GPU: WanVideoWrapper options that need CUDA take their CPU equivalent.

        SageAttention (or another CUDA attention) becomes sdpa, fp16_fast (CUDA fp16 accumulation) fp16, fp8
        `_fast` quantization (fp8 matmuls) plain fp8, and torch.compile settings and block swapping are unlinked
        (a CPU has no Triton and nothing to swap to); part of digest, not of variant_id.
        """
        return self._with(cpu=True)

    def label(self, text: str) -> Variant:
        """Add a free part to variant_id (letters, digits, '_', '.', '+')."""
        if not isinstance(text, str) or not _LABEL_RE.match(text):
            raise WorkflowError(f"label {text!r} may hold only letters, digits, '_', '.', '+' ('-' joins "
                                "the id's parts)")
        if text in self._state.labels:
            return self
        return self._with(labels=(*self._state.labels, text))

    def scaled(self, **sizes: int) -> Variant:
        """Shrink the graph for a small tier (width, height, frames, steps, split), applied after all else.

        The cpu tier runs the real graph this way at a size a CPU finishes in seconds; variant_id of the
        scaled variant changes with it, so keep the unscaled variant's id as the baseline key.
        """
        allowed = ("width", "height", "frames", "steps", "split")
        for key, value in sizes.items():
            if key not in allowed:
                raise WorkflowError(f"scaled({key}=...) is unknown; use {', '.join(allowed)} "
                                    "(the tier's scale in tiers.toml)")
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise WorkflowError(f"scaled({key}={value!r}) must be a positive int")
        merged = dict(self._state.scale)
        merged.update(sizes)
        return self._with(scale=tuple(sorted(merged.items())))

    # ----------------------------------------------------------------- outputs

    def image_size(self) -> tuple[int, int]:
        """(width, height) for the start image: the latent node's size, or 512x512 without one."""
        d = self.describe()
        if d["width"] and d["height"]:
            return int(d["width"]), int(d["height"])
        return 512, 512

    @property
    def seed_value(self) -> int | None:
        """The seed set with seed(), if any."""
        return self._state.seed

    def build(self) -> Graph:
        """The API prompt (a fresh deep copy) with every change applied."""
        cached = self._cache.get("prompt")
        if cached is None:
            cached = freeze(_Builder(self._workflow, self._state).run())
            self._cache["prompt"] = cached
        return thaw(cached)  # type: ignore[no-any-return]

    @property
    def digest(self) -> str:
        """Short sha256 of the built graph without the seed: a changed graph under the same id shows here."""
        cached = self._cache.get("digest")
        if cached is None:
            unseeded = _Builder(self._workflow, replace(self._state, seed=None)).run()
            cached = short_digest(canonical(unseeded))
            self._cache["digest"] = cached
        return str(cached)

    @property
    def variant_id(self) -> str:
        """Readable, deterministic id (the baseline key): pass order, duration, resolution, schedule, ..."""
        cached = self._cache.get("id")
        if cached is None:
            cached = "-".join(self._id_parts(self.describe())) or "base"
            self._cache["id"] = cached
        return str(cached)

    @property
    def id(self) -> str:
        """Same as variant_id (fit for pytest.param(..., id=...))."""
        return self.variant_id

    def _id_parts(self, d: Mapping[str, Any]) -> list[str]:
        parts: list[str] = []
        if d["pass_order"]:
            parts.append(d["pass_order"])
        if d["length"] is not None and d["fps"]:
            secs = (d["length"] - 1) / d["fps"]
            parts.append(f"{secs:g}s" if abs(secs - round(secs)) < 1e-9 else f"{d['length']}f")
        if d["resolution"]:
            parts.append(d["resolution"])
        if d["schedule"]:
            parts.append(d["schedule"])
        if d["compile"]:
            parts.append("compile" if d["compile"] == "inductor" else f"compile_{d['compile']}")
        vfi = d["interpolation"]
        if vfi:
            prefix = "rife" if vfi["node"] == "RIFE VFI" else "interp"
            parts.append(f"{prefix}{vfi['multiplier']}x")
        parts.extend(d["labels"])
        return parts

    def describe(self) -> dict[str, Any]:
        """The measured parameters, read back from the built graph, plus the expected output."""
        cached = self._cache.get("describe")
        if cached is None:
            cached = freeze(self._describe())
            self._cache["describe"] = cached
        return thaw(cached)  # type: ignore[no-any-return]

    def _describe(self) -> dict[str, Any]:
        g = self.build()
        passes = sampler_nodes(g)
        first = g[passes[0]]["inputs"] if passes else {}
        steps = int_input(g, g[passes[0]], "steps") if passes else None
        cfg = first.get("cfg") if isinstance(first.get("cfg"), (int, float)) else None
        split = None
        if len(passes) > 1:  # KSamplerAdvanced's end_at_step, WanVideoSampler's end_step (or the primitive's)
            split = int_input(g, g[passes[0]], "end_at_step" if "end_at_step" in first else "end_step")
        latent = latent_node(g)
        keys = LATENT_NODES[str(g[latent]["class_type"])] if latent else ("", "", "")
        width, height, length = (int_input(g, g[latent], k) if latent else None for k in keys)
        vfi_node, multiplier = frame_interpolation(g)
        videos = video_nodes(g)
        out_fps = g[videos[0]]["inputs"].get(VIDEO_NODES[str(g[videos[0]]["class_type"])]) if videos else None
        out_fps = float(out_fps) if isinstance(out_fps, (int, float)) and out_fps is not True else None
        base_fps = out_fps / multiplier if out_fps else None
        loras = [g[i]["inputs"].get("lora_name") for i in matches(g, "class:LoraLoaderModelOnly")] + [
            g[i]["inputs"].get("lora") for i in matches(g, "class:WanVideoLoraSelect")]
        compiles = sorted({str(g[i]["inputs"].get("backend"))
                           for i in matches(g, "class:TorchCompileModel") + matches(
                               g, "class:WanVideoTorchCompileSettings")})
        resolution = None
        if width and height:
            resolution = RESOLUTION_LABELS.get((width, height), f"{width}x{height}")
        out_frames = video_frames(g, g[videos[0]]["inputs"].get("images")) if videos else None
        if out_frames is None and length is not None:  # a node the count cannot be followed through: the latent's
            out_frames = (length - 1) * multiplier + 1 if vfi_node else length
        d: dict[str, Any] = {
            "workflow": self._workflow.name,
            "pass_order": self._detect_pass_order(g, passes),
            "passes": len(passes),
            "steps": steps,
            "cfg": float(cfg) if cfg is not None else None,
            "split": split,
            "sampler": first.get("sampler_name"),
            "scheduler": first.get("scheduler"),
            "shift": [g[i]["inputs"].get("shift") for i in matches(g, "class:ModelSamplingSD3")],
            "width": width,
            "height": height,
            "resolution": resolution,
            "length": length,
            "fps": base_fps,
            "seconds": (length - 1) / base_fps if length and base_fps else None,
            "lora": loras,
            "compile": compiles[0] if compiles else None,
            "interpolation": {"node": vfi_node, "multiplier": multiplier} if vfi_node else None,
            "precomputed_conditioning": self._state.conditioning_folder,
            "seed": self._state.seed,
            "models": role_files(g, self._workflow.graph),
            "labels": list(self._state.labels),
            "output_frames": out_frames,
            "output_fps": out_fps,
        }
        d["schedule"] = _schedule_label(steps, d["cfg"], split, bool(loras)) if steps is not None else None
        return d

    def _detect_pass_order(self, g: Graph, passes: list[str]) -> str | None:
        if len(passes) != 2:
            return None
        loader = expert_loader_of(g, passes[0])
        try:
            high, _low = expert_pair(self._workflow.graph)
        except WorkflowError:
            return self._state.pass_order
        if loader is None:
            return self._state.pass_order
        return "high_low" if loader == high else "low_high"

    def expected_output(self) -> ExpectedOutput:
        """Frames, fps, size and duration the saved video should have."""
        d = self.describe()
        frames, fps = d["output_frames"], d["output_fps"]
        seconds = (frames - 1) / fps if frames and fps else None
        return ExpectedOutput(frames=frames, fps=fps, width=d["width"], height=d["height"], seconds=seconds)


_MODEL_FILE = re.compile(r"\.(safetensors|sft|ckpt|pt|pt2|pth|bin|gguf)$", re.IGNORECASE)


def native_model_paths(g: Graph, sep: str = os.sep) -> None:
    """Model file names with sub-folders in the separator of the server's platform: a workflow saved on Windows
    names `WanVideo\\2_2\\model.safetensors`, which ComfyUI on Linux lists as `WanVideo/2_2/model.safetensors`."""
    other = "\\" if sep == "/" else "/"
    for node in g.values():
        for name, value in node["inputs"].items():
            if isinstance(value, str) and other in value and _MODEL_FILE.search(value):
                node["inputs"][name] = value.replace(other, sep)


def _schedule_label(steps: int, cfg: float | None, split: int | None, lora: bool) -> str:
    for name, (s, c, p, has_lora) in SCHEDULES.items():
        if (steps, cfg, split, lora) == (s, c, p, has_lora):
            return name
    text = f"{steps}steps_cfg{_fmt_num(cfg) if cfg is not None else 'na'}"
    if split is not None:
        text += f"_split{split}"
    return text + ("_lora" if lora else "")



# --------------------------------------------------------------------------- building


class _Builder:
    """Applies a _State to a copy of a workflow graph in a fixed order."""

    def __init__(self, workflow: Workflow, state: _State) -> None:
        self.wf = workflow
        self.state = state
        self.g: Graph = workflow.graph
        self.where = f"workflow {workflow.name!r}"

    # helpers ---------------------------------------------------------------

    def new_id(self) -> str:
        numeric = [int(i) for i in self.g if i.isdigit()]
        return str(max(numeric, default=0) + 1)

    def add(self, class_type: str, inputs: dict[str, Any], title: str) -> str:
        if matches(self.g, title):
            raise WorkflowError(f"{self.where} already has a node titled {title!r}; rename it, the variant "
                                "builder adds a node with that title")
        node_id = self.new_id()
        self.g[node_id] = {"class_type": class_type, "inputs": inputs, "_meta": {"title": title}}
        return node_id

    def rewire(self, old: list[Any], new: list[Any], skip: str) -> None:
        for node_id, node in self.g.items():
            if node_id == skip:
                continue
            for name, value in node["inputs"].items():
                if is_link(value) and value[0] == old[0] and value[1] == old[1]:
                    node["inputs"][name] = list(new)

    def select(self, selector: str) -> str:
        return select(self.g, selector, self.where)

    def passes(self) -> list[str]:
        return sampler_nodes(self.g)

    # steps -----------------------------------------------------------------

    def run(self) -> Graph:
        s = self.state
        experts = self.experts() if self.needs_experts() else None
        if s.conditioning_folder is not None:
            self.precomputed_conditioning(s.conditioning_folder)
        if s.cpu:
            self.cpu_equivalents()
        if s.schedule is not None:
            self.schedule(*s.schedule[1:], experts=experts)
        self.models(experts)
        if s.pass_order == "low_high":
            self.swap_experts()
        if s.seconds is not None:
            wan, (_w, _h, length) = self.latent("duration")
            self.g[wan]["inputs"][length] = round(s.seconds * (s.fps or DEFAULT_FPS)) + 1
        if s.resolution is not None:
            wan, (width, height, _n) = self.latent("resolution")
            self.g[wan]["inputs"][width], self.g[wan]["inputs"][height] = s.resolution
        if s.compile_backend is not None:
            self.torch_compile(s.compile_backend)
        self.video(s)
        for selector, name, encoded, create in s.sets:
            node_id = self.select(selector)
            inputs = self.g[node_id]["inputs"]
            if name not in inputs and not create:
                raise WorkflowError(
                    f"{self.where}: node {describe_node(self.g, node_id)} has no input {name!r} (inputs: "
                    f"{', '.join(inputs) or 'none'}); check the name, or pass create=True to add it")
            inputs[name] = json.loads(encoded)
        if s.scale:
            self.apply_scale(dict(s.scale))
        if s.seed is not None:
            self.apply_seed(s.seed)
        native_model_paths(self.g)
        validate_graph(self.g, f"variant of {self.where}")
        return self.g

    def needs_experts(self) -> bool:
        s = self.state
        roles = {r for r, _ in s.models}
        return bool(s.pass_order == "low_high" or (s.schedule and s.schedule[4]) or roles & {"high", "low"})

    def experts(self) -> tuple[str, str]:
        s = self.state
        method = ("pass_order('low_high')" if s.pass_order == "low_high" else
                  f"schedule({s.schedule[0]!r})" if s.schedule and s.schedule[4] else "models(high=/low=)")
        try:
            return expert_pair(self.g)
        except WorkflowError as exc:
            raise WorkflowError(f"{self.where}: {method} {exc}") from None

    def inapplicable(self, method: str, looked_for: str) -> WorkflowError:
        """The error of a builder method the graph has nothing for."""
        return WorkflowError(f"{self.where}: {method}() does not apply: it looks for {looked_for}, and the graph "
                             f"has none. Nodes: {graph_summary(self.g)}")

    def latent(self, method: str) -> tuple[str, tuple[str, str, str]]:
        """The latent/conditioning node that sets the clip's size, and its width/height/length inputs."""
        found = latent_node(self.g)
        if found is None:
            candidates = [i for i, n in self.g.items() if n.get("class_type") in LATENT_NODES]
            if candidates:
                raise WorkflowError(
                    f"{self.where}: {method}() found {len(candidates)} latent nodes "
                    f"({', '.join(describe_node(self.g, i) for i in candidates)}) and cannot tell which sets "
                    "the clip; give the one to change a title containing 'latent'")
            raise self.inapplicable(method, "a latent/conditioning node (" + ", ".join(sorted(LATENT_NODES)) + ")")
        return found, LATENT_NODES[str(self.g[found]["class_type"])]

    def precomputed_conditioning(self, folder: str) -> None:
        encoders = matches(self.g, "class:CLIPTextEncode")
        if not encoders and matches(self.g, "class:WanVideoTextEncode"):
            self.wrapper_conditioning(folder)
            return
        if not encoders:
            raise WorkflowError(f"{self.where} has no CLIPTextEncode node to replace with precomputed "
                                "conditioning; drop precomputed_conditioning() for this workflow")
        loaders = {self.g[e]["inputs"].get("clip", [None])[0] for e in encoders}
        if len(loaders) != 1 or None in loaders:
            raise WorkflowError(f"{self.where}: the CLIPTextEncode nodes must share one linked CLIPLoader "
                                "for precomputed_conditioning()")
        loader = str(next(iter(loaders)))
        users = {i for i, n in self.g.items() for v in n["inputs"].values() if is_link(v) and v[0] == loader}
        if not users <= set(encoders):
            raise WorkflowError(f"{self.where}: the text encoder {loader} also feeds nodes other than "
                                "CLIPTextEncode; precomputed_conditioning() can only replace the text path")
        self.g[loader] = {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": folder},
                          "_meta": {"title": "Precomputed Conditioning"}}
        for e in encoders:
            node = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": [loader, 1]}}
            if "_meta" in self.g[e]:
                node["_meta"] = self.g[e]["_meta"]
            self.g[e] = node

    def wrapper_conditioning(self, folder: str) -> None:
        """WanVideoWrapper's text path (LoadWanVideoT5TextEncoder into WanVideoTextEncode) replaced by the
        precomputed conditioning through the wrapper's WanVideoTextEmbedBridge."""
        encoders = matches(self.g, "class:WanVideoTextEncode")
        loaders = {str(self.g[e]["inputs"].get("t5", [None])[0]) for e in encoders}
        if len(loaders) != 1 or any(self.g.get(i, {}).get("class_type") != "LoadWanVideoT5TextEncoder"
                                    for i in loaders):
            raise WorkflowError(f"{self.where}: the WanVideoTextEncode nodes must share one linked "
                                "LoadWanVideoT5TextEncoder for precomputed_conditioning()")
        loader = next(iter(loaders))
        users = {i for i, n in self.g.items() for v in n["inputs"].values() if is_link(v) and v[0] == loader}
        if not users <= set(encoders):
            raise WorkflowError(f"{self.where}: the text encoder {loader} also feeds nodes other than "
                                "WanVideoTextEncode; precomputed_conditioning() can only replace the text path")
        self.g[loader] = {"class_type": "LoadTrainingDataset", "inputs": {"folder_name": folder},
                          "_meta": {"title": "Precomputed Conditioning"}}
        zero = self.add("ConditioningZeroOut", {"conditioning": [loader, 1]}, "Precomputed Conditioning (zero)")
        for e in encoders:
            node: dict[str, Any] = {"class_type": "WanVideoTextEmbedBridge",
                                    "inputs": {"positive": [zero, 0], "negative": [zero, 0]}}
            if "_meta" in self.g[e]:
                node["_meta"] = self.g[e]["_meta"]
            self.g[e] = node

    def cpu_equivalents(self) -> None:
        """WanVideoWrapper options that need CUDA, set to what runs on a CPU (see Variant.on_cpu)."""
        for node_id in matches(self.g, "class:WanVideoModelLoader"):
            inputs = self.g[node_id]["inputs"]
            if isinstance(inputs.get("attention_mode"), str) and inputs["attention_mode"] != "sdpa":
                inputs["attention_mode"] = "sdpa"
            if inputs.get("base_precision") == "fp16_fast":
                inputs["base_precision"] = "fp16"
            quant = inputs.get("quantization")
            if isinstance(quant, str) and quant.endswith("_fast"):
                inputs["quantization"] = quant.removesuffix("_fast")
        unlinked: set[str] = set()
        for node in self.g.values():
            if node.get("class_type", "").startswith("WanVideo") or node.get("class_type") == \
                    "LoadWanVideoT5TextEncoder":
                for name in ("compile_args", "block_swap_args", "vram_management_args"):
                    if is_link(node["inputs"].get(name)):
                        unlinked.add(str(node["inputs"].pop(name)[0]))
        for node_id in matches(self.g, "class:WanVideoSetBlockSwap"):
            self.rewire([node_id, 0], list(self.g[node_id]["inputs"]["model"]), skip=node_id)
            del self.g[node_id]
        for node_id in unlinked:  # the settings nodes now feed nothing
            if not any(is_link(v) and v[0] == node_id for n in self.g.values() for v in n["inputs"].values()):
                self.g.pop(node_id, None)

    def schedule(self, steps: int, cfg: float, split: int, lora: bool,
                 experts: tuple[str, str] | None) -> None:
        passes = self.passes()
        others = [i for i in passes if self.g[i]["class_type"] not in ("KSampler", "KSamplerAdvanced")]
        if not passes or others:
            raise self.inapplicable("schedule", "KSampler or KSamplerAdvanced passes") if not passes else \
                WorkflowError(f"{self.where}: schedule() sets KSampler/KSamplerAdvanced steps and cfg; the graph "
                              f"samples with {', '.join(describe_node(self.g, i) for i in others)}")
        if len(passes) == 2:
            for index, node_id in enumerate(passes):
                inputs = self.g[node_id]["inputs"]
                if "start_at_step" not in inputs:
                    raise WorkflowError(f"{self.where}: sampler {describe_node(self.g, node_id)} has no "
                                        "start/end steps; a split schedule needs KSamplerAdvanced passes")
                inputs["steps"], inputs["cfg"] = steps, cfg
                inputs["start_at_step"], inputs["end_at_step"] = (0, split) if index == 0 else (
                    split, _END_OF_SCHEDULE)
        elif len(passes) == 1:
            self.g[passes[0]]["inputs"]["steps"] = steps
            self.g[passes[0]]["inputs"]["cfg"] = cfg
        else:
            raise WorkflowError(f"{self.where} has {len(passes)} sampler nodes; schedule() handles one "
                                "or two passes")
        if lora and experts is not None:
            for loader in experts:
                if self.g[loader]["class_type"] not in ("UNETLoader", "UnetLoaderGGUF", "UnetLoaderGGUFAdvanced"):
                    raise WorkflowError(f"{self.where}: schedule() inserts LoraLoaderModelOnly after UNETLoader "
                                        f"experts; the graph loads them with {describe_node(self.g, loader)}")
            for role, loader in (("high", experts[0]), ("low", experts[1])):
                lora_id = self.add("LoraLoaderModelOnly",
                                   {"model": [loader, 0], "lora_name": LIGHTX2V_LORAS[role],
                                    "strength_model": 1.0},
                                   f"LoRA ({role} noise)")
                self.rewire([loader, 0], [lora_id, 0], skip=lora_id)

    def models(self, experts: tuple[str, str] | None) -> None:
        for role, filename in self.state.models:
            if role in ("high", "low"):
                assert experts is not None
                loader = experts[0 if role == "high" else 1]
                self.g[loader]["inputs"][EXPERT_LOADERS[str(self.g[loader]["class_type"])]] = filename
            elif role == "model":
                single = expert_loaders(self.g)
                if len(single) != 1:
                    raise WorkflowError(
                        f"{self.where}: models(model=...) swaps the one diffusion model of a single-expert graph; "
                        f"this graph's samplers use {len(single)} model loaders ({', '.join(single) or 'none'}); "
                        "use high=/low= for a two-expert graph")
                self.g[single[0]]["inputs"][EXPERT_LOADERS[str(self.g[single[0]]["class_type"])]] = filename
            elif role == "vfi":
                continue  # applied with the interpolation node
            elif role in ("text_encoder", "vae", "image"):
                nodes = role_nodes(self.g, role)
                if not nodes and role == "text_encoder":
                    continue  # no text encoder (precomputed conditioning): nothing to swap
                if len(nodes) != 1:
                    raise WorkflowError(
                        f"{self.where}: models({role}=...) needs exactly one {role} loader, found {len(nodes)}"
                        f" ({', '.join(i for i, _ in nodes) or 'none'}); set the file with set('id:N', ...) "
                        "instead")
                self.g[nodes[0][0]]["inputs"][nodes[0][1]] = filename
            else:
                selector, name = ROLE_SELECTORS[role]
                found = matches(self.g, selector)
                if not found:
                    continue  # the variant has no LoRA: nothing to swap
                if len(found) != 1:
                    raise WorkflowError(f"{self.where}: model role {role!r} needs exactly one node matching "
                                        f"{selector!r}, found {len(found)}; give that node this title")
                self.g[found[0]]["inputs"][name] = filename

    def chain_consumer(self, sampler: str) -> tuple[str, str]:
        """The node (and input) that takes the expert model (UNETLoader or its LoRA) in a pass's chain."""
        current = sampler
        seen: set[str] = set()
        while current not in seen:
            seen.add(current)
            link = self.g[current]["inputs"].get("model")
            if not is_link(link):
                break
            if self.g[link[0]]["class_type"] in (*EXPERT_LOADERS, "LoraLoaderModelOnly"):
                return current, "model"
            current = link[0]
        raise WorkflowError(f"{self.where}: cannot follow the model chain of sampler "
                            f"{describe_node(self.g, sampler)} up to a UNETLoader; pass_order() needs one")

    def swap_experts(self) -> None:
        passes = self.passes()
        if len(passes) != 2:
            raise WorkflowError(f"{self.where}: pass_order() does not apply: it swaps the experts of two sampler "
                                f"passes, and the graph has {len(passes)} pass(es). Nodes: {graph_summary(self.g)}")
        (a, ia), (b, ib) = self.chain_consumer(passes[0]), self.chain_consumer(passes[1])
        if a == b:
            raise WorkflowError(f"{self.where}: both passes share node {a}; pass_order() cannot swap experts")
        self.g[a]["inputs"][ia], self.g[b]["inputs"][ib] = self.g[b]["inputs"][ib], self.g[a]["inputs"][ia]

    def torch_compile(self, backend: str) -> None:
        for index, sampler in enumerate(self.passes()):
            title = title_of(self.g[sampler]) or ""
            m = re.search(r"\(([^)]*)\)\s*$", title)
            suffix = m.group(1) if m else f"pass {index + 1}"
            link = self.g[sampler]["inputs"].get("model")
            if not is_link(link):
                raise WorkflowError(f"{self.where}: sampler {describe_node(self.g, sampler)} has no linked "
                                    "model input for torch_compile()")
            node_id = self.add("TorchCompileModel", {"model": list(link), "backend": backend},
                               f"Torch Compile ({suffix})")
            self.g[sampler]["inputs"]["model"] = [node_id, 0]

    def video(self, s: _State) -> None:
        if s.fps is None and s.interpolation is None:
            return
        method = "interpolate" if s.interpolation is not None else "duration"
        videos = video_nodes(self.g)
        if not videos:
            raise self.inapplicable(method, "a video node (" + ", ".join(sorted(VIDEO_NODES)) + ")")
        rate = {v: VIDEO_NODES[str(self.g[v]["class_type"])] for v in videos}
        first = self.g[videos[0]]["inputs"].get(rate[videos[0]], DEFAULT_FPS)
        fps = s.fps if s.fps is not None else float(first)
        if s.interpolation is None:
            for v in videos:
                self.g[v]["inputs"][rate[v]] = fps
            return
        kind, multiplier, ckpt = s.interpolation
        ckpt = dict(s.models).get("vfi") or ckpt or DEFAULT_VFI_CKPT
        sources = {tuple(self.g[v]["inputs"]["images"]) if is_link(self.g[v]["inputs"].get("images")) else None
                   for v in videos}
        source = next(iter(sources)) if len(sources) == 1 else None
        if source is None or self.g[str(source[0])]["class_type"] not in DECODE_CLASSES:
            raise WorkflowError(
                f"{self.where}: interpolate() inserts between the decode node ({', '.join(sorted(DECODE_CLASSES))})"
                " and the video node(s), whose images input must be linked to one decode output; the video "
                f"nodes {', '.join(describe_node(self.g, v) for v in videos)} take "
                f"{sorted(str(x) for x in sources)}")
        if kind == "RIFE VFI":
            vfi = self.add("RIFE VFI", {"ckpt_name": ckpt, "frames": list(source),
                                        "clear_cache_after_n_frames": 10, "multiplier": multiplier,
                                        "fast_mode": True, "ensemble": True, "scale_factor": 1.0,
                                        # required since the pack's 2026 release; older ones ignore them
                                        "dtype": "float32", "torch_compile": False, "batch_size": 1},
                           "Interpolate Frames")
        else:
            loader = self.add("FrameInterpolationModelLoader", {"model_name": ckpt},
                              "Load Frame Interpolation Model")
            vfi = self.add("FrameInterpolate", {"interp_model": [loader, 0], "images": list(source),
                                                "multiplier": multiplier}, "Interpolate Frames")
        for v in videos:
            self.g[v]["inputs"]["images"] = [vfi, 0]
            self.g[v]["inputs"][rate[v]] = fps * multiplier

    def apply_scale(self, scale: Mapping[str, int]) -> None:
        if scale.keys() & {"width", "height", "frames"}:
            wan, names = self.latent("scaled")
            for key, name in zip(("width", "height", "frames"), names, strict=True):
                if key in scale:
                    self.set_size(wan, name, scale[key])
        passes = self.passes()
        wrapper = [i for i in passes if self.g[i]["class_type"] == "WanVideoSampler"]
        if wrapper:
            self.scale_wrapper_passes(wrapper, scale)
            passes = [i for i in passes if i not in wrapper]
        if "steps" in scale:
            for node_id in passes:
                self.g[node_id]["inputs"]["steps"] = scale["steps"]
        if len(passes) == 2 and ("split" in scale or "steps" in scale):
            first, second = (self.g[i]["inputs"] for i in passes)
            steps = first.get("steps")
            end = first.get("end_at_step")
            if "split" in scale:
                split = scale["split"]
            elif isinstance(steps, int) and isinstance(end, int):
                split = min(end, max(steps - 1, 1))
            else:
                return  # the split is linked to another node (a primitive): the graph keeps deciding it
            if "start_at_step" in first:
                first["end_at_step"] = split
                second["start_at_step"] = split

    def scale_wrapper_passes(self, passes: list[str], scale: Mapping[str, int]) -> None:
        """WanVideoSampler passes: steps, and for two passes the first one's end_step and the second's
        start_step at the split (each set where it is held, so a primitive shared by both moves for both)."""
        if "steps" in scale:
            for node_id in passes:
                self.set_size(node_id, "steps", scale["steps"])
        if len(passes) == 2 and "split" in scale:
            first, second = passes
            self.set_size(first, "end_step", scale["split"])
            self.set_size(second, "start_step", scale["split"])

    def set_size(self, node_id: str, name: str, value: int) -> None:
        """Set a size input; one linked to a node that holds it (a primitive, WanCameraEmbedding's width, height
        and length) is set there, so every node that node feeds gets the same size."""
        link = self.g[node_id]["inputs"].get(name)
        source = self.g.get(str(link[0]), {}).get("inputs", {}) if is_link(link) else {}
        for key in (name, "value"):
            if isinstance(source.get(key), int) and not isinstance(source.get(key), bool):
                source[key] = value
                return
        self.g[node_id]["inputs"][name] = value

    def apply_seed(self, seed: int) -> None:
        done = 0
        for sampler in self.passes():
            inputs = self.g[sampler]["inputs"]
            if inputs.get("add_noise", "enable") in ("disable", False):
                continue
            for name in ("noise_seed", "seed"):
                if name in inputs and not is_link(inputs[name]):
                    inputs[name] = seed
                    done += 1
                elif name in inputs:  # linked to a primitive (PrimitiveInt, INTConstant, ...): set its value
                    source = self.g.get(str(inputs[name][0]), {}).get("inputs", {})
                    for key in ("value", "seed", "noise_seed", "int"):
                        if isinstance(source.get(key), int) and not isinstance(source.get(key), bool):
                            source[key] = seed
                            done += 1
                            break
        if not done:
            raise WorkflowError(f"{self.where} has no sampler that adds noise with a seed input or a seed linked "
                                "to a primitive node; seed() cannot apply")


