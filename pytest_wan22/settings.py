"""Settings: every option resolved once (CLI > WAN22_* env > ini > default) into a frozen dataclass."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import platforms
from .compare import Tolerance, tolerances
from .errors import ConfigError, PortInUse
from .interpreter import RUNNING_PYTEST, CheckResult, Interpreter, find, problem, required_modules
from .interpreter import check as check_interpreter
from .launcher import port_in_use
from .options import BY_NAME, OPTIONS, Option
from .tiers import Tier, check_tier, load_tiers, parse_tune_items


@dataclass(frozen=True)
class Settings:
    """Everything the plugin was told, resolved and checked."""

    rootdir: Path
    tiers: Mapping[str, Tier]
    comfyui_dir: Path | None = None
    python: str = sys.executable
    python_why: str = RUNNING_PYTEST  # how `python` was chosen (interpreter.find), said in the report header
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
    allow_neighbours: bool = False
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    user_tolerances: tuple[Tolerance, ...] = ()  # the --wan22-tolerance ones, over a tier row's
    rounds: int = 10
    min_rounds: int = 3
    warmup_rounds: int = 1
    log_dir: Path | None = None
    models_dir: Path | None = None
    synthetic: str | None = None
    missing: str = "fail"
    vram_interval: float = 0.02
    emulate_tier: str | None = None
    gpu_index: int | None = None
    nvml_accounting: bool = False
    ab: Side | None = None  # side A of an A/B session (--wan22-ab-*)
    progress: str = "auto"
    progress_interval: float = 5.0
    report_dir: Path | None = None
    tune: bool = False  # --wan22-tune: search the tier's profile space instead of gating
    tune_budget: float | None = None  # seconds
    tune_out: Path | None = None
    tune_space: tuple[str, ...] = ()

    def tolerances_for(self, tier: Tier | None) -> dict[str, Tolerance]:
        """The tolerances a tier judges with: the defaults, the tier row's `tolerances`, then --wan22-tolerance."""
        tols = tolerances(tier.tolerances if tier is not None else ())
        tols.update({t.metric: t for t in self.user_tolerances})
        return tols

    @property
    def attach(self) -> bool:
        """True when a running server is used and nothing is launched."""
        return self.url is not None

    @property
    def sides(self) -> dict[str, Side]:
        """The session's sides by name: one ('') normally, A (current) and B (candidate) in A/B mode."""
        own = Side(self.comfyui_dir, self.python, self.server_args, self.python_why)
        if self.ab is None:
            return {"": own}
        return {"A": self.ab, "B": replace(own, name="B")}

    @property
    def fewest_rounds(self) -> int:
        """Timed rounds before a verdict may stop them: all of them when recording baselines."""
        return self.rounds if self.update_baselines else min(self.min_rounds, self.rounds)


@dataclass(frozen=True)
class Side:
    """An environment servers are launched from, with the launch flags its user gave: the session's one (name
    ''), or in an A/B session side A, the current environment (--wan22-ab-*), or side B, the candidate (what
    --wan22-comfyui-dir, --wan22-python and --wan22-server-args name)."""

    comfyui_dir: Path | None
    python: str
    server_args: tuple[str, ...]
    python_why: str = ""
    name: str = ""

    @property
    def label(self) -> str:
        """How messages name the side."""
        return {"A": "A (current)", "B": "B (candidate)"}.get(self.name, "")

    def describe(self, b_dir: Path | None, b_python: str, b_args: tuple[str, ...]) -> list[str]:
        """What differs between this side (A) and B, one phrase each."""
        out = []
        if self.comfyui_dir != b_dir:
            out.append(f"ComfyUI {self.comfyui_dir} -> {b_dir}")
        if self.python != b_python:
            out.append(f"Python {self.python} -> {b_python}")
        if self.server_args != b_args:
            out.append(f"launch args {' '.join(self.server_args) or '(tier only)'} -> "
                       f"{' '.join(b_args) or '(tier only)'}")
        return out


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
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        raw, source = _raw(opt, cli, ini, env)
        values[opt.name] = opt.default if raw is None else _parse(opt, raw, source)
        sources[opt.name] = source
    if sources["min_rounds"] != "default" and values["min_rounds"] > values["rounds"]:
        rounds = f"{sources['rounds']} = {values['rounds']}" if sources["rounds"] != "default" else \
            f"--wan22-rounds (default {values['rounds']})"
        raise ConfigError(f"{sources['min_rounds']} = {values['min_rounds']} is above {rounds}: the fewest timed "
                          f"rounds cannot exceed the most; lower {BY_NAME['min_rounds'].where()} or raise "
                          f"{BY_NAME['rounds'].where()}")

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
    interpreter = find(comfyui_dir, values["python"], sources["python"])
    python = interpreter.path
    if values["python"] is not None and not (Path(python).is_file() and os.access(python, os.X_OK)):
        raise ConfigError(f"Python interpreter {python} is not an executable file; fix --wan22-python "
                          "(ini wan22_python, env WAN22_PYTHON)")
    url = values["url"]
    if url is not None and not url.startswith(("http://", "https://")):
        raise ConfigError(f"--wan22-url {url!r} must start with http:// or https://")
    server_args = _split(values["server_args"], "--wan22-server-args")
    ab = _ab_side(values, sources, rootdir, comfyui_dir, interpreter, server_args)
    _check_tune(values, ab, rootdir)
    try:
        tols = tolerances([])
        tols.update({t.metric: t for t in values["tolerance"] or []})
    except ValueError as exc:  # pragma: no cover - parsed above
        raise ConfigError(str(exc)) from None
    return Settings(
        rootdir=rootdir, tiers=tiers, comfyui_dir=comfyui_dir, python=python, python_why=interpreter.why,
        url=url.rstrip("/") if url else None, host=values["host"], port=values["port"], tier=values["tier"],
        server_args=server_args, startup_timeout=values["startup_timeout"], run_timeout=values["run_timeout"],
        workflows_dir=_path(values["workflows_dir"], rootdir) or rootdir / "workflows",
        workflows=tuple(values["workflows"] or ()),
        baselines_dir=_path(values["baselines_dir"], rootdir) or rootdir / "baselines",
        update_baselines=values["update_baselines"], tolerances=tols, rounds=values["rounds"],
        user_tolerances=tuple(values["tolerance"] or ()),
        allow_neighbours=values["allow_neighbours"], warmup_rounds=values["warmup_rounds"],
        log_dir=_path(values["log_dir"], rootdir),
        models_dir=_path(values["models_dir"], rootdir), synthetic=values["synthetic"], missing=values["missing"],
        vram_interval=values["vram_interval"], emulate_tier=values["emulate_tier"],
        gpu_index=values["gpu_index"], nvml_accounting=values["nvml_accounting"], min_rounds=values["min_rounds"],
        ab=ab, progress=values["progress"], progress_interval=values["progress_interval"],
        report_dir=_path(values["report"], rootdir),
        tune=values["tune"], tune_budget=values["tune_budget"], tune_out=_path(values["tune_out"], rootdir),
        tune_space=tuple(values["tune_space"] or ()),
    )


def _check_tune(values: Mapping[str, Any], ab: Side | None, rootdir: Path) -> None:
    """What a tuning session (--wan22-tune) cannot run with, checked before anything starts."""
    if not values["tune"]:
        return
    for flag, bad in (("the --wan22-ab-* options", ab is not None), ("--wan22-url", values["url"] is not None),
                      ("--wan22-update-baselines", values["update_baselines"]),
                      ("--wan22-emulate-tier", values["emulate_tier"] is not None)):
        if bad:
            raise ConfigError(f"--wan22-tune runs A/Bs of its own, on servers it launches on the real card, and "
                              f"writes no baselines; drop {flag}")
    parse_tune_items(values["tune_space"] or ())
    out = _path(values["tune_out"], rootdir)
    if out is not None and out.resolve() == (Path(__file__).parent / "tiers.toml").resolve():
        raise ConfigError("--wan22-tune-out names the plugin's own tier table; write the tuned row to a file of "
                          "your own and load it with --wan22-tiers-file")


def _split(text: str | None, flag: str) -> tuple[str, ...]:
    """Arguments typed as one string, split as this platform's shell does (a Windows path keeps its backslashes)."""
    try:
        return tuple(platforms.split_args(text or ""))
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}") from None


def _ab_side(values: Mapping[str, Any], sources: Mapping[str, str], rootdir: Path, b_dir: Path | None,
             b: Interpreter, b_args: tuple[str, ...]) -> Side | None:
    """Side A when any --wan22-ab-* option is set; checked here, before anything starts."""
    if values["ab_python"] is None and values["ab_comfyui_dir"] is None and values["ab_args"] is None:
        return None
    if values["url"] is not None:
        raise ConfigError("A/B mode (--wan22-ab-*) launches both environments itself; drop --wan22-url")
    if values["update_baselines"]:
        raise ConfigError("A/B mode judges B against A from the same session and neither reads nor writes "
                          "baselines; drop --wan22-update-baselines or the --wan22-ab-* options")
    if values["emulate_tier"]:
        raise ConfigError("A/B mode does not run on an emulated tier (--wan22-emulate-tier): two capped servers "
                          "would not share the card as two real ones do")
    a_dir = _path(values["ab_comfyui_dir"], rootdir) if values["ab_comfyui_dir"] is not None else b_dir
    if values["ab_comfyui_dir"] is not None and not (a_dir is not None and (a_dir / "main.py").is_file()):
        raise ConfigError(f"A/B: ComfyUI folder {a_dir} has no main.py; point --wan22-ab-comfyui-dir (ini "
                          "wan22_ab_comfyui_dir, env WAN22_AB_COMFYUI_DIR) at the current environment's checkout")
    b_python = b.path
    a = find(a_dir if values["ab_comfyui_dir"] is not None else None, values["ab_python"], sources["ab_python"])
    if a.why == RUNNING_PYTEST:  # neither named nor found in side A's own folder: side B's, as before
        a = Interpreter(b.path, f"side B's: {b.why}")
    a_python = a.path
    if values["ab_python"] is not None and not (Path(a_python).is_file() and os.access(a_python, os.X_OK)):
        raise ConfigError(f"A/B: interpreter {a_python} is not an executable file; fix --wan22-ab-python (ini "
                          "wan22_ab_python, env WAN22_AB_PYTHON)")
    a_args = _split(values["ab_args"], "--wan22-ab-args") if values["ab_args"] is not None else b_args
    side = Side(a_dir, a_python, a_args, a.why, name="A")
    if not side.describe(b_dir, b_python, b_args):
        raise ConfigError("A/B: side A (--wan22-ab-*) is the same as side B (--wan22-comfyui-dir, --wan22-python, "
                          "--wan22-server-args); point one of them at the other environment")
    return side


def check_folder(path: Path, option: str) -> None:
    """Check that the session can write into a folder: create it and a probe file in it, then remove what was
    created (the session makes it when it writes). ConfigError naming the option when that fails, so a bad path
    stops the session at start rather than after every test has run."""
    created = path
    while not created.parent.exists() and created.parent != created:
        created = created.parent  # the outermost folder this check makes
    made = not created.exists()
    probe = path / f".wan22-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"{BY_NAME[option].cli} {path}: cannot write there ({exc.strerror or exc}); point "
                          f"{BY_NAME[option].where()} at a folder you can write") from None
    if made:
        for folder in [path, *path.parents]:
            folder.rmdir()
            if folder == created:
                break


Checker = Callable[[str, Sequence[str], Path | None], CheckResult]


def check_before_start(settings: Settings, checker: Checker = check_interpreter) -> None:
    """What would stop every test, checked once before anything runs; ConfigError with one message naming the
    cause and the fix. The folders written to (--wan22-report, --wan22-log-dir), and in launch mode the port and
    ComfyUI's interpreter (side A's too in A/B mode). Attach mode launches nothing, so checks neither."""
    if settings.report_dir is not None:
        check_folder(settings.report_dir, "report")
    if settings.log_dir is not None:
        check_folder(settings.log_dir, "log_dir")
    if settings.attach or settings.comfyui_dir is None:
        return
    if settings.port and port_in_use(settings.host, settings.port):
        raise ConfigError(str(PortInUse.at(settings.host, settings.port)))
    sides: list[tuple[Path | None, Interpreter, Option, str]] = [
        (settings.comfyui_dir, Interpreter(settings.python, settings.python_why), BY_NAME["python"], "")]
    if settings.ab is not None:
        sides.append((settings.ab.comfyui_dir, Interpreter(settings.ab.python, settings.ab.python_why),
                      BY_NAME["ab_python"], "A/B side A (current): "))
    seen: set[tuple[str, Path | None]] = set()
    for folder, interpreter, opt, label in sides:
        if (interpreter.path, folder) in seen:
            continue
        seen.add((interpreter.path, folder))
        wanted = required_modules(folder)
        result = checker(interpreter.path, [m for _, m in wanted], folder)
        message = problem(result, interpreter, folder, wanted, option=opt.where(),
                          what=f"{label}ComfyUI's interpreter")
        if message is not None:
            raise ConfigError(message)
