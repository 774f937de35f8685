"""Settings: every option resolved once (CLI > WAN22_* env > ini > default) into a frozen dataclass."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import Tolerance, tolerances
from .errors import ConfigError
from .options import OPTIONS, Option
from .tiers import Tier, check_tier, load_tiers


@dataclass(frozen=True)
class Settings:
    """Everything the plugin was told, resolved and checked."""

    rootdir: Path
    tiers: Mapping[str, Tier]
    comfyui_dir: Path | None = None
    python: str = sys.executable
    url: str | None = None
    host: str = "127.0.0.1"
    port: int = 0
    tier: str | None = None
    server_args: tuple[str, ...] = ()
    startup_timeout: float = 180.0
    run_timeout: float | None = None
    workflows_dir: Path = Path("workflows")
    workflows: tuple[str, ...] = ()  # --wan22-workflows entries: paths (resolved later) or template:GLOB
    baselines_dir: Path = Path("baselines")
    update_baselines: bool = False
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    rounds: int = 3
    warmup_rounds: int = 1
    log_dir: Path | None = None
    models_dir: Path | None = None
    synthetic: str | None = None
    missing: str = "fail"
    vram_interval: float = 0.02
    emulate_tier: str | None = None
    gpu_index: int | None = None
    nvml_accounting: bool = False

    @property
    def attach(self) -> bool:
        """True when a running server is used and nothing is launched."""
        return self.url is not None


Getter = Callable[[Option], Any]


def _raw(opt: Option, cli: Getter, ini: Getter, env: Mapping[str, str]) -> tuple[Any, str]:
    """The first value set, CLI > env > ini, and where it came from; `is None` decides, not truthiness."""
    value = cli(opt)
    if value is not None and value != []:
        return value, opt.cli
    if opt.env in env:
        text = env[opt.env]
        return (text.splitlines() if opt.multiple else text), opt.env
    value = ini(opt)
    if value not in (None, "", []):
        return value, f"ini {opt.dest}"
    return None, "default"


def _parse(opt: Option, value: Any, source: str) -> Any:
    if not isinstance(value, str) and not isinstance(value, list):
        return value  # already parsed by argparse
    try:
        if opt.multiple:
            items = value if isinstance(value, list) else [value]
            return [v if not isinstance(v, str) else opt.parse(v.strip()) for v in items if str(v).strip()]
        return opt.parse(str(value).strip())
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}; set it with {opt.where()}") from None


def _path(value: str | Path | None, rootdir: Path) -> Path | None:
    if value is None:
        return None
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else rootdir / path


def resolve(rootdir: Path, cli: Getter, ini: Getter, env: Mapping[str, str] | None = None) -> Settings:
    """Resolve every option; bad values raise ConfigError naming the flag, ini key and variable."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for opt in OPTIONS:
        raw, source = _raw(opt, cli, ini, env)
        values[opt.name] = opt.default if raw is None else _parse(opt, raw, source)

    tiers = load_tiers(_path(values["tiers_file"], rootdir))
    for key in ("tier", "emulate_tier"):
        if values[key] is not None:
            check_tier(values[key], tiers, "--wan22-" + key.replace("_", "-"))
    if values["emulate_tier"] and tiers[values["emulate_tier"]].emulate_memory_gib is None:
        raise ConfigError(f"tier {values['emulate_tier']!r} has no emulate_memory_gib in the tier table, so it "
                          "cannot be emulated (--wan22-emulate-tier)")
    if values["update_baselines"] and values["emulate_tier"]:
        raise ConfigError("--wan22-update-baselines with --wan22-emulate-tier would store emulated timings as "
                          f"the {values['emulate_tier']} tier's baselines; drop one of the two flags")
    comfyui_dir = _path(values["comfyui_dir"], rootdir)
    if comfyui_dir is not None and values["url"] is None and not (comfyui_dir / "main.py").is_file():
        what = "does not exist" if not comfyui_dir.exists() else "has no main.py"
        raise ConfigError(f"ComfyUI folder {comfyui_dir} {what}; point --wan22-comfyui-dir (ini "
                          "wan22_comfyui_dir, env WAN22_COMFYUI_DIR) at the checkout that holds main.py, "
                          "or attach to a running server with --wan22-url")
    python = values["python"] or sys.executable
    if values["python"] is not None and not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise ConfigError(f"Python interpreter {python} is not an executable file; fix --wan22-python "
                          "(ini wan22_python, env WAN22_PYTHON)")
    url = values["url"]
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"--wan22-url {url!r} must start with http:// or https://")
    try:
        server_args = tuple(shlex.split(values["server_args"] or ""))
    except ValueError as exc:
        raise ConfigError(f"--wan22-server-args: {exc}") from None
    try:
        tols = tolerances([])
        tols.update({t.metric: t for t in values["tolerance"] or []})
    except ValueError as exc:  # pragma: no cover - parsed above
        raise ConfigError(str(exc)) from None
    return Settings(
        rootdir=rootdir, tiers=tiers, comfyui_dir=comfyui_dir, python=python,
        url=url.rstrip("/") if url else None, host=values["host"], port=values["port"], tier=values["tier"],
        server_args=server_args, startup_timeout=values["startup_timeout"], run_timeout=values["run_timeout"],
        workflows_dir=_path(values["workflows_dir"], rootdir) or rootdir / "workflows",
        workflows=tuple(values["workflows"] or ()),
        baselines_dir=_path(values["baselines_dir"], rootdir) or rootdir / "baselines",
        update_baselines=values["update_baselines"], tolerances=tols, rounds=values["rounds"],
        warmup_rounds=values["warmup_rounds"], log_dir=_path(values["log_dir"], rootdir),
        models_dir=_path(values["models_dir"], rootdir), synthetic=values["synthetic"], missing=values["missing"],
        vram_interval=values["vram_interval"], emulate_tier=values["emulate_tier"],
        gpu_index=values["gpu_index"], nvml_accounting=values["nvml_accounting"],
    )
