"""The tier table: which GPU class a machine is, and how ComfyUI is launched and judged on it."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import platforms
from .compare import parse_tolerance
from .errors import ConfigError
from .synth import PRESETS
from .workflows.variant import RESOLUTION_LABELS, SCHEDULES, PassOrder

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

GIB = 1024.0  # MiB per GiB


#: Launch flags of each attention backend a suite row may name (a profile variation: it needs its own server).
ATTENTION_FLAGS: Mapping[str, tuple[str, ...]] = {
    "sage": ("--use-sage-attention",),
    "flash": ("--use-flash-attention",),
    "split": ("--use-split-cross-attention",),
}
RESOLUTIONS: Mapping[str, tuple[int, int]] = {label: size for size, label in RESOLUTION_LABELS.items()}


def resolution_size(name: str) -> tuple[int, int]:
    """Width and height of a suite resolution: a name ('480p', '640p', '720p') or 'WxH'."""
    if name in RESOLUTIONS:
        return RESOLUTIONS[name]
    width, height = name.lower().split("x")
    return int(width), int(height)


@dataclass(frozen=True)
class Suite:
    """What the project's suite (suites/) runs on a tier: the `[tiers.<name>.suite]` table, with these defaults
    for a row that says nothing."""

    resolutions: tuple[str, ...] = ("640p",)
    pass_orders: tuple[PassOrder, ...] = ("high_low", "low_high")
    durations: tuple[float, ...] = (5.0, 10.0)
    interpolation: tuple[bool, ...] = (False, True)
    schedule: str = "lightx2v_4step"
    full_schedule: bool = True  # the 20-step schedule beside a fast one (nothing when `schedule` is "default")
    compile: bool = True
    attention: tuple[str, ...] = ()


#: What a tuning session (--wan22-tune) may try, by option class; the values each class takes (tune.py turns them
#: into launch flags, environment or a graph change).
TUNE_ATTENTION: Mapping[str, tuple[str, ...]] = {
    "pytorch": ("--use-pytorch-cross-attention",), **ATTENTION_FLAGS, "quad": ("--use-quad-cross-attention",)}
TUNE_FAST = ("fp16_accumulation", "fp8_matrix_mult", "cublas_ops", "autotune")
TUNE_VRAM = ("gpu_only", "highvram", "normalvram", "lowvram", "novram")
TUNE_COMPILE = ("inductor", "cudagraphs")
TUNE_VAE = ("bf16", "fp16", "fp32", "cpu")
TUNE_UNET = ("fp8_e4m3fn", "fp8_e5m2", "bf16", "fp16", "fp32")
TUNE_PREVIEW = ("none", "auto", "latent2rgb", "taesd")
TUNE_CACHE = re.compile(r"classic|none|lru:[1-9]\d*|ram(:\d+(\.\d+)?)?")
TUNE_CLASSES = ("attention", "fast", "vram", "reserve_vram", "alloc", "env", "compile", "vae", "unet", "cache",
                "preview", "args")


@dataclass(frozen=True)
class TuneSpace:
    """A row's `[tiers.<name>.tune]` table: what --wan22-tune tries against the row's profile, one list per option
    class, the output difference each class may make (`min_psnr`, dB, by class) and the smallest speed-up worth a
    change of profile (`min_gain`, a fraction of wall time)."""

    attention: tuple[str, ...] = ()
    fast: tuple[str, ...] = ()
    vram: tuple[str, ...] = ()
    reserve_vram: tuple[float, ...] = ()
    alloc: tuple[str, ...] = ()  # PYTORCH_CUDA_ALLOC_CONF values; "" leaves it unset
    env: tuple[str, ...] = ()  # other variables, "NAME=VALUE" ("NAME=" unsets it)
    compile: tuple[str, ...] = ()
    vae: tuple[str, ...] = ()
    unet: tuple[str, ...] = ()
    cache: tuple[str, ...] = ()
    preview: tuple[str, ...] = ()
    args: tuple[str, ...] = ()  # other launch flags, each with its value: "--async-offload", "--cache-lru 8"
    min_psnr: Mapping[str, float] = field(default_factory=dict)
    min_gain: float = 0.02


@dataclass(frozen=True)
class PlatformSettings:
    """A row's `[tiers.<name>.windows]` or `[tiers.<name>.linux]` table: launch arguments and environment for that
    platform only, over the row's own (an argument replaces the row's flag of the same name or exclusive group)."""

    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


#: The platforms a row may have a table for.
PLATFORMS = ("windows", "linux")

#: Allocator options a platform's PyTorch does not support: (platform, variable) -> {option: why}. They are left
#: out of the launch environment there, and the session header says so.
_NO_EXPANDABLE = {"expandable_segments": "PyTorch on Windows does not support expandable segments"}
UNSUPPORTED_ENV_OPTIONS: Mapping[tuple[str, str], Mapping[str, str]] = {
    ("windows", "PYTORCH_CUDA_ALLOC_CONF"): _NO_EXPANDABLE,
    ("windows", "PYTORCH_ALLOC_CONF"): _NO_EXPANDABLE,
}


@dataclass(frozen=True)
class Tier:
    """One row of the tier table."""

    name: str
    description: str = ""
    match: tuple[str, ...] = ()
    min_memory_gib: float | None = None
    max_memory_gib: float | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    vram_budget_gib: float | None = None
    budgets: Mapping[str, float] = field(default_factory=dict)
    allow_offload_labels: tuple[str, ...] = ()
    run_timeout_s: float = 1800.0
    models: str = "user"
    emulate_memory_gib: float | None = None
    scale: Mapping[str, int] = field(default_factory=dict)
    judge_timings: bool | None = None
    suite: Suite = field(default_factory=Suite)
    tolerances: tuple[str, ...] = ()  # METRIC:LIMIT over the defaults; --wan22-tolerance overrides them
    windows: PlatformSettings | None = None  # [tiers.<name>.windows]: more arguments and environment there
    linux: PlatformSettings | None = None
    torch_compile: str | None = None  # every variant runs through torch.compile with this backend
    tune: TuneSpace | None = None  # [tiers.<name>.tune]: what --wan22-tune tries (None: tune.py's defaults)

    @property
    def is_gpu(self) -> bool:
        """False for the cpu tier, which never touches a GPU."""
        return "--cpu" not in self.args

    @property
    def judges_timings(self) -> bool:
        """Whether timings fail tests on this tier: the row's `judge_timings`, by default true on a GPU and false
        on the cpu tier (a shared CPU's rounds swing by more than any tolerance); vram is judged either way."""
        return self.is_gpu if self.judge_timings is None else self.judge_timings

    @property
    def synthetic(self) -> str | None:
        """The synthetic model preset this tier runs with, or None for the user's own models."""
        return None if self.models == "user" else self.models

    def matches(self, device_name: str, memory_mib: float | None) -> bool:
        """True when an NVML device of this name and memory belongs to the tier."""
        if not any(re.search(p, device_name, re.IGNORECASE) for p in self.match):
            return False
        if memory_mib is None:
            return True
        gib = memory_mib / GIB
        lo = self.min_memory_gib if self.min_memory_gib is not None else 0.0
        hi = self.max_memory_gib if self.max_memory_gib is not None else float("inf")
        return lo <= gib <= hi

    def budget_gib(self, variant_id: str) -> float | None:
        """The peak-VRAM budget for a variant: its own entry, else its most specific label, else the tier's."""
        if variant_id in self.budgets:
            return self.budgets[variant_id]
        parts = set(variant_id.split("-"))
        hits = [(len(k), v) for k, v in self.budgets.items() if set(k.split("-")) <= parts]
        return max(hits)[1] if hits else self.vram_budget_gib

    def scale_text(self) -> str | None:
        """How this tier shrinks every variant ('64x64, 9 frames, 4 steps split 2'), or None when it runs them
        as written. Test ids and baseline keys keep naming the variant as written."""
        if not self.scale:
            return None
        s = self.scale
        parts = []
        if "width" in s or "height" in s:
            parts.append(f"{s.get('width', '?')}x{s.get('height', '?')}")
        if "frames" in s:
            parts.append(f"{s['frames']} frames")
        if "steps" in s:
            parts.append(f"{s['steps']} steps" + (f" split {s['split']}" if "split" in s else ""))
        return ", ".join(parts) or None

    def allows_offload(self, variant_id: str) -> bool:
        """True when the variant may offload on this tier (block-swap style variants)."""
        return bool(set(variant_id.split("-")) & set(self.allow_offload_labels))


# ---------------------------------------------------------------- the row schema: every key a row may have
# A key is one line: its name and a check that turns the TOML value into the Tier field's value, or raises _Bad
# saying what the value must be. load_tiers names the file and the key (tiers.<name>.<key>) of a bad value.

Check = Callable[[Any], Any]


class _Bad(ValueError):
    """A value a tier row cannot use: what it must be, the value, and where below the key (`[1]`, `.steps`)."""

    def __init__(self, expected: str, value: Any, path: str = "", unknown: Sequence[str] = ()) -> None:
        super().__init__(expected)
        self.expected, self.value, self.path, self.unknown = expected, value, path, tuple(unknown)


def _text(choices: Iterable[str] = ()) -> Check:
    allowed = tuple(choices)

    def check(value: Any) -> str:
        if not isinstance(value, str) or (allowed and value not in allowed):
            raise _Bad(f"one of {', '.join(json.dumps(c) for c in allowed)}" if allowed else "a string", value)
        return value
    return check


def _env_value(value: Any) -> str:
    if isinstance(value, (str, int, float)):  # numbers become their text, as environment values are
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise _Bad("a string", value)


def _number(unit: str, *, positive: bool = True) -> Check:
    def check(value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (value <= 0 if positive else value < 0):
            raise _Bad(f"a number {'>' if positive else '>='} 0 ({unit})", value)
        return float(value)
    return check


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _Bad("a whole number >= 1", value)
    return value


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Bad("true or false", value)
    return value


def _regex(value: Any) -> str:
    text = _text()(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise _Bad(f"a regular expression ({exc})", value) from None
    return str(text)


def _tolerance(value: Any) -> str:
    text = _text()(value)
    try:
        parse_tolerance(text)
    except ValueError as exc:
        raise _Bad(f"a tolerance METRIC:LIMIT ({exc})", value) from None
    return str(text)


def _resolution(value: Any) -> str:
    text = _text()(value)
    m = re.fullmatch(r"(\d+)x(\d+)", text.lower())
    if text in RESOLUTIONS or (m and all(int(g) >= 16 and int(g) % 16 == 0 for g in m.groups())):
        return str(text)
    raise _Bad(f"one of {', '.join(json.dumps(r) for r in RESOLUTIONS)} or \"WxH\" in multiples of 16", value)


def _duration(value: Any) -> float:
    seconds = float(_number("seconds")(value))
    if abs(seconds * 4 - round(seconds * 4)) > 1e-9:  # Wan needs seconds * 16 fps to be a multiple of 4 frames
        raise _Bad("seconds > 0 in steps of 0.25 (whole multiples of 4 frames at 16 fps), e.g. 5 or 10", value)
    return seconds


def _cache(value: Any) -> str:
    text = _text()(value)
    if not TUNE_CACHE.fullmatch(str(text)):
        raise _Bad('one of "classic", "none", "lru:N", "ram" or "ram:GB"', value)
    return str(text)


def _assignment(value: Any) -> str:
    text = str(_text()(value))
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", text):
        raise _Bad('"NAME=VALUE" (an environment variable; "NAME=" unsets it)', value)
    return text


def _psnr_table(value: Any) -> dict[str, float]:
    table = _table(_number("dB"))(value)
    unknown = sorted(set(table) - set(TUNE_CLASSES))
    if unknown:
        raise _Bad(f"a table of option classes ({', '.join(TUNE_CLASSES)})", value, f".{unknown[0]}")
    return {k: float(v) for k, v in table.items()}


def _fraction(value: Any) -> float:
    number = float(_number("a fraction", positive=False)(value))
    if number >= 1:
        raise _Bad("a fraction >= 0 and < 1 (0.02 is 2%)", value)
    return number


def _list(item: Check, *, empty: bool = True) -> Check:
    def check(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or (not empty and not value):
            raise _Bad("a list" if empty else "a non-empty list", value)
        out = []
        for i, v in enumerate(value):
            try:
                out.append(item(v))
            except _Bad as bad:
                raise _Bad(bad.expected, bad.value, f"[{i}]{bad.path}", bad.unknown) from None
        return tuple(out)
    return check


def _table(item: Check) -> Check:
    """A table of free keys, each value checked by `item`."""
    def check(value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise _Bad("a table ({ key = value, ... })", value)
        out = {}
        for k, v in value.items():
            try:
                out[str(k)] = item(v)
            except _Bad as bad:
                raise _Bad(bad.expected, bad.value, f".{k}{bad.path}", bad.unknown) from None
        return out
    return check


def _fields(keys: Mapping[str, Check], build: Callable[..., Any] = dict) -> Check:
    """A table of known keys, each checked by its own check; `build` makes the field's value of them."""
    def check(value: Any) -> Any:
        if not isinstance(value, dict):
            raise _Bad("a table", value)
        unknown = sorted(set(value) - set(keys))
        if unknown:
            raise _Bad("", value[unknown[0]], f".{unknown[0]}", unknown=tuple(keys))
        return build(**_table_fields(value, keys))
    return check


def _table_fields(value: Mapping[str, Any], keys: Mapping[str, Check]) -> dict[str, Any]:
    out = {}
    for k, v in value.items():
        try:
            out[k] = keys[k](v)
        except _Bad as bad:
            raise _Bad(bad.expected, bad.value, f".{k}{bad.path}", bad.unknown) from None
    return out


SUITE_KEYS: Mapping[str, Check] = {
    "resolutions": _list(_resolution, empty=False),
    "pass_orders": _list(_text(("high_low", "low_high")), empty=False),
    "durations": _list(_duration, empty=False),
    "interpolation": _list(_boolean, empty=False),
    "schedule": _text(SCHEDULES),
    "full_schedule": _boolean,
    "compile": _boolean,
    "attention": _list(_text(ATTENTION_FLAGS)),
}
TUNE_KEYS: Mapping[str, Check] = {
    "attention": _list(_text(TUNE_ATTENTION)),
    "fast": _list(_text(TUNE_FAST)),
    "vram": _list(_text(TUNE_VRAM)),
    "reserve_vram": _list(_number("GB", positive=False)),
    "alloc": _list(_text()),
    "env": _list(_assignment),
    "compile": _list(_text(TUNE_COMPILE)),
    "vae": _list(_text(TUNE_VAE)),
    "unet": _list(_text(TUNE_UNET)),
    "cache": _list(_cache),
    "preview": _list(_text(TUNE_PREVIEW)),
    "args": _list(_text()),
    "min_psnr": _psnr_table,
    "min_gain": _fraction,
}
def parse_tune_items(items: Sequence[str], flag: str = "--wan22-tune-space") -> list[tuple[str, str | None]]:
    """Entries that narrow a tuning session's space: 'CLASS' (the class's values from the tier's tune table) or
    'CLASS=VALUE' (that value), comma separated; ConfigError naming a bad one."""
    out: list[tuple[str, str | None]] = []
    for item in (p.strip() for entry in items for p in entry.split(",")):
        if not item:
            continue
        klass, sep, value = (part.strip() for part in item.partition("="))
        if klass not in TUNE_CLASSES:
            raise ConfigError(f"{flag} {item!r}: {klass!r} is no option class; known: {', '.join(TUNE_CLASSES)}")
        if sep:
            raw: Any = value
            if klass == "reserve_vram" and re.fullmatch(r"\d+(\.\d*)?", value):
                raw = float(value)
            try:
                TUNE_KEYS[klass]([raw])
            except _Bad as bad:
                raise ConfigError(f"{flag} {item!r}: the value is not {bad.expected}") from None
        out.append((klass, value if sep else None))
    return out


SCALE_KEYS: Mapping[str, Check] = {k: _whole for k in ("width", "height", "frames", "steps", "split")}
PLATFORM_KEYS: Mapping[str, Check] = {"args": _list(_text()), "env": _table(_env_value)}

#: Every key of a `[tiers.<name>]` row: the Tier field of that name gets the checked value.
ROW_KEYS: Mapping[str, Check] = {
    "description": _text(),
    "match": _list(_regex),
    "min_memory_gib": _number("GiB", positive=False),
    "max_memory_gib": _number("GiB", positive=False),
    "args": _list(_text()),
    "env": _table(_env_value),
    "vram_budget_gib": _number("GiB"),
    "budgets": _table(_number("GiB")),
    "allow_offload_labels": _list(_text()),
    "run_timeout_s": _number("seconds"),
    "models": _text(("user", *PRESETS)),
    "emulate_memory_gib": _number("GiB"),
    "scale": _fields(SCALE_KEYS),
    "suite": _fields(SUITE_KEYS, Suite),
    "judge_timings": _boolean,
    "tolerances": _list(_tolerance),
    **{name: _fields(PLATFORM_KEYS, PlatformSettings) for name in PLATFORMS},
    "torch_compile": _text(TUNE_COMPILE),
    "tune": _fields(TUNE_KEYS, TuneSpace),
}

_FIX = "fix it in that file (the tier table: --wan22-tiers-file, ini wan22_tiers_file)"


def _tier_from_row(name: str, row: Mapping[str, Any], source: str) -> Tier:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"{source}: tier name {name!r} must be lower-case letters, digits and _ "
                          "(it becomes a pytest marker)")
    where = f"tiers.{name}"
    if not isinstance(row, dict):
        raise ConfigError(f"{source}: {where} must be a table ([{where}]); {_FIX}")
    try:
        kw = _fields(ROW_KEYS)(row)
    except _Bad as bad:
        key = where + bad.path
        if bad.unknown:
            raise ConfigError(f"{source}: unknown key {key}; known keys there: {', '.join(bad.unknown)}; "
                              f"{_FIX}") from None
        raise ConfigError(f"{source}: {key} = {json.dumps(bad.value, default=str)} is not {bad.expected}; "
                          f"{_FIX}") from None
    lo, hi = kw.get("min_memory_gib"), kw.get("max_memory_gib")
    if lo is not None and hi is not None and lo > hi:
        raise ConfigError(f"{source}: {where}.min_memory_gib ({lo:g}) is above {where}.max_memory_gib ({hi:g}); "
                          f"{_FIX}")
    scale = kw.get("scale", {})
    if "split" in scale and scale["split"] >= scale.get("steps", scale["split"] + 1):
        raise ConfigError(f"{source}: {where}.scale.split ({scale['split']}) must be below {where}.scale.steps "
                          f"({scale['steps']}): each expert needs a step; {_FIX}")
    return Tier(name=name, **kw)


def _read(path: Path | None) -> tuple[dict[str, Any], str]:
    if path is None:
        text = resources.files(__package__).joinpath("tiers.toml").read_text(encoding="utf-8")
        return tomllib.loads(text), "pytest_wan22/tiers.toml"
    if not path.is_file():
        raise ConfigError(f"tier table {path} does not exist; fix --wan22-tiers-file (ini wan22_tiers_file)")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8")), str(path)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"tier table {path} is not valid TOML: {exc}") from exc


def load_tiers(extra: Path | None = None) -> dict[str, Tier]:
    """The shipped table, with rows from `extra` replacing or adding tiers."""
    table: dict[str, Tier] = {}
    for path in (None, extra) if extra else (None,):
        data, source = _read(path)
        if set(data) - {"tiers"}:
            raise ConfigError(f"{source}: unknown table or key {sorted(set(data) - {'tiers'})[0]!r}; every row is "
                              f"a [tiers.<name>] table; {_FIX}")
        rows = data.get("tiers")
        if not isinstance(rows, dict):
            raise ConfigError(f"{source}: expected [tiers.<name>] tables")
        for name, row in rows.items():
            table[name] = _tier_from_row(name, row, source)
    return table


def detect_tier(tiers: Mapping[str, Tier], device_name: str | None, memory_mib: float | None) -> str | None:
    """The first GPU tier whose row matches the device, or None."""
    if device_name is None:
        return None
    for tier in tiers.values():
        if tier.is_gpu and tier.matches(device_name, memory_mib):
            return tier.name
    return None


def cpu_tier(tiers: Mapping[str, Tier]) -> str | None:
    """The name of the tier that needs no GPU."""
    return next((t.name for t in tiers.values() if not t.is_gpu), None)


def skip_hint(tiers: Mapping[str, Tier], wanted: Iterable[str], device_memory_mib: float | None) -> str:
    """What a test marked for other tiers can do instead, for its skip reason: a machine with that GPU, an
    attached server, emulation where this GPU is big enough, or the cpu tier where this machine has no GPU.

    Forcing a GPU tier's profile on a machine without a GPU only makes ComfyUI fail to start, so that is never
    suggested there.
    """
    names = sorted(wanted)
    where = f"run it where {' or '.join(names)} is the GPU, or attach to a server there (--wan22-url)"
    if device_memory_mib is None:
        cpu = cpu_tier(tiers)
        return where + (f"; here, -m {cpu} runs the same graphs on tiny synthetic models" if cpu else "")
    fits = [n for n in names if n in tiers and tiers[n].is_gpu
            and (tiers[n].emulate_memory_gib or float("inf")) * 1024 <= device_memory_mib]
    ways = [where]
    if fits:
        ways.append(f"emulate it on this GPU with --wan22-emulate-tier={fits[0]} (VRAM and fit judged, timings "
                    "not compared)")
    ways.append(f"force its launch profile on this GPU with --wan22-tier={names[0]}")
    return "; ".join(ways)


def item_tiers(marker_names: Iterable[str], tiers: Mapping[str, Tier]) -> set[str]:
    """The tier markers among a test's markers."""
    return {m for m in marker_names if m in tiers}


def check_tier(name: str, tiers: Mapping[str, Tier], flag: str = "--wan22-tier") -> Tier:
    """Return the named tier or fail with the list of known ones."""
    try:
        return tiers[name]
    except KeyError:
        raise ConfigError(
            f"unknown tier {name!r} ({flag}); known tiers: {', '.join(tiers)}. Add a row to your tier table "
            "(--wan22-tiers-file, ini wan22_tiers_file) to define a new one") from None


def marker_lines(tiers: Mapping[str, Tier]) -> Sequence[str]:
    """The `markers` ini lines that register each tier."""
    return [f"{t.name}: run on the {t.name} tier ({t.description})" for t in tiers.values()]


@dataclass(frozen=True)
class Profile:
    """How ComfyUI is launched for a tier on this machine: arguments, environment, emulation."""

    tier: Tier
    args: tuple[str, ...]
    env: Mapping[str, str]
    emulated_on: str | None = None
    memory_cap_gib: float | None = None
    notes: tuple[str, ...] = ()  # what this platform changed in the tier's settings or left out of them

    @property
    def name(self) -> str:
        """The tier's name, with the real device when emulated."""
        return f"{self.tier.name}@{self.emulated_on}" if self.emulated_on else self.tier.name


# ComfyUI's mutually exclusive launch flags (comfy/cli_args.py): a flag added to a profile replaces the profile's
# flag of the same group, since ComfyUI refuses two of one group ("not allowed with argument ...").
EXCLUSIVE_FLAGS: tuple[frozenset[str], ...] = (
    frozenset({"--use-split-cross-attention", "--use-quad-cross-attention", "--use-pytorch-cross-attention",
               "--use-sage-attention", "--use-flash-attention"}),
    frozenset({"--gpu-only", "--highvram", "--normalvram", "--lowvram", "--novram", "--cpu"}),
    frozenset({"--cache-classic", "--cache-lru", "--cache-none", "--cache-ram"}),
    frozenset({"--force-upcast-attention", "--dont-upcast-attention"}),
    frozenset({"--cuda-malloc", "--disable-cuda-malloc"}),
    frozenset({"--force-fp32", "--force-fp16"}),
    frozenset({"--fp32-unet", "--fp64-unet", "--bf16-unet", "--fp16-unet", "--fp8_e4m3fn-unet", "--fp8_e5m2-unet",
               "--fp8_e8m0fnu-unet"}),
    frozenset({"--fp16-vae", "--fp32-vae", "--bf16-vae"}),
    frozenset({"--fp8_e4m3fn-text-enc", "--fp8_e5m2-text-enc", "--fp16-text-enc", "--fp32-text-enc",
               "--bf16-text-enc"}),
)


def merge_args(base: Sequence[str], extra: Sequence[str], *, same_flags: bool = False) -> tuple[str, ...]:
    """`base` followed by `extra`, where a flag of `extra` drops the flags of its exclusive group from `base`
    (with their values): `--use-sage-attention` added to a profile with `--use-pytorch-cross-attention`
    replaces it. With `same_flags`, a flag of `extra` also drops the same flag from `base` (`--reserve-vram 1.5`
    replaces `--reserve-vram 1.0`)."""
    groups = [g for g in EXCLUSIVE_FLAGS if g & set(extra)]
    drop = frozenset().union(*groups) if groups else frozenset()
    if same_flags:
        drop |= {a for a in extra if a.startswith("--")}
    kept: list[str] = []
    skipping = False
    for arg in base:
        if skipping and not arg.startswith("--"):
            continue  # the value of a dropped flag (--cache-lru 8)
        skipping = arg in drop
        if not skipping:
            kept.append(arg)
    return (*kept, *extra)


def _without(args: Sequence[str], flag: str) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a == flag:
            skip = True
            continue
        out.append(a)
    return out


def _allowed_options(platform: str, name: str, value: str) -> tuple[str | None, list[str]]:
    """An environment value without the options `platform` does not support (None when none is left), and why
    each one left out was."""
    unsupported = UNSUPPORTED_ENV_OPTIONS.get((platform, name))
    if not unsupported:
        return value, []
    kept, why = [], []
    for option in (o.strip() for o in value.split(",")):
        key = option.split(":", 1)[0].strip()
        if key in unsupported:
            why.append(f"{name} option {option} is not passed on {platform}: {unsupported[key]}")
        elif option:
            kept.append(option)
    return (",".join(kept) or None), why


def platform_settings(tier: Tier, platform: str | None = None) -> tuple[tuple[str, ...], dict[str, str], list[str]]:
    """The tier's launch arguments and environment on `platform` (this one by default): its row's, with the
    platform's table over them, less the settings the platform's PyTorch does not support; and one note for each
    setting the platform changed or left out, for the session header."""
    platform = platforms.name() if platform is None else platform
    table: PlatformSettings | None = getattr(tier, platform, None) if platform in PLATFORMS else None
    args, env, notes = tier.args, dict(tier.env), []
    if table is not None:
        args = merge_args(tier.args, table.args, same_flags=True)
        env.update(table.env)
        said = [f"arguments {platforms.command_text(table.args)}"] if table.args else []
        said += [f"environment {' '.join(f'{k}={v}' for k, v in table.env.items())}"] if table.env else []
        if said:
            notes.append(f"the {tier.name} tier's {platform} settings apply: {'; '.join(said)}")
    for name in list(env):
        value, why = _allowed_options(platform, name, env[name])
        notes += why
        if value is None:
            del env[name]
        else:
            env[name] = value
    return args, env, notes


def make_profile(tier: Tier, *, gpu: str | None = None, device_name: str | None = None,
                 device_memory_mib: float | None = None, emulate: bool = False,
                 platform: str | None = None) -> Profile:
    """The launch profile: the tier's arguments and environment on this platform, the GPU pinned, the card's memory
    emulated (the user's and a test's launch flags are added per side and server by servers.launch_command)."""
    tier_args, tier_env, notes = platform_settings(tier, platform)
    args = list(tier_args)
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", **tier_env} if tier.is_gpu else dict(tier_env)
    if tier.is_gpu and gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    cap = None
    if emulate:
        if tier.emulate_memory_gib is None or device_memory_mib is None:
            raise ConfigError(f"cannot emulate {tier.name}: it needs emulate_memory_gib in the tier table and a "
                              "GPU that NVML can read (--wan22-emulate-tier)")
        cap = tier.emulate_memory_gib
        total_gib = device_memory_mib / GIB
        if cap >= total_gib:
            raise ConfigError(f"cannot emulate {tier.name} ({cap:g} GiB) on {device_name} ({total_gib:.1f} GiB): "
                              "the card is not bigger (--wan22-emulate-tier)")
        # ComfyUI plans with total - reserve; the cap inside the process makes the limit hard.
        args = [*_without(args, "--reserve-vram"), "--reserve-vram", f"{total_gib - cap:.2f}"]
        env["WAN22_MEMORY_CAP_GIB"] = f"{cap:g}"
    return Profile(tier, tuple(args), env, device_name if emulate else None, cap, tuple(notes))
