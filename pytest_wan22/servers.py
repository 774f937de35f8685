"""The session's ComfyUI servers, below the pytest layer: synthetic model sets, a launched or attached server,
the one place a launch command is assembled, and the pool that keeps a server per side (two in A/B mode).

What would end a test raises errors.Fail or errors.Skip; the pytest layer (fixtures.py) turns them into pytest's
failure or skip.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import preflight
from .client import ComfyClient
from .errors import Fail, ServerStartError, Skip, Wan22Error
from .launcher import ComfyServer, ServerHandle, ServerSpec, public_argv
from .records import Environment
from .settings import Settings, Side
from .tiers import Profile, Tier, merge_args

if TYPE_CHECKING:
    from .gpu import DeviceInfo
    from .synth import ModelSet
    from .workflows import Variant

LaunchHook = Callable[[Tier, list[str], dict[str, str]], None]
"""Edits a launch command's arguments and environment in place (the pytest_wan22_server_command hook)."""


# --------------------------------------------------------------------------- synthetic model sets

@dataclass(frozen=True)
class SyntheticModels:
    """A synthetic model set on disk: the base directory ComfyUI is pointed at, and its files by role."""

    root: Path
    set: ModelSet
    python: str = sys.executable  # the interpreter that generates sets (ComfyUI's)
    device: str = "cpu"

    @property
    def preset(self) -> str:
        """tiny or a14b."""
        return self.set.preset

    @property
    def files(self) -> dict[str, str]:
        """role -> path under root."""
        return self.set.files

    @property
    def size(self) -> str:
        """tiny (CPU stand-ins) or full (the real models' sizes)."""
        return "tiny" if self.preset.endswith("tiny") else "full"


def synthetic_models(settings: Settings, tier: Tier) -> SyntheticModels | None:
    """The synthetic model set a session runs on (None: the user's models): a tiny preset's precomputed
    conditioning is generated once and kept; every model file a graph names is written before its first run
    (write_synthetic)."""
    preset = settings.synthetic or tier.synthetic
    if preset is None:
        return None
    from .synth import ModelSet, ensure_models, model_set

    root = (settings.models_dir or Path.home() / ".cache" / "pytest-wan22" / "models") / preset
    device = "cuda" if tier.is_gpu else "cpu"
    if not preset.endswith("tiny"):
        return SyntheticModels(root, ModelSet(preset, {}), settings.python, device)
    if settings.attach:  # the attached server must have the set already
        return SyntheticModels(root, model_set("tiny"), settings.python, device)
    try:  # the conditioning that stands in for the text encoder (and the small files of the tiny preset)
        models = ensure_models(settings.python, root, "tiny", device=device, log_path=root / "generate.log")
    except Wan22Error as exc:
        raise Fail(str(exc)) from None
    return SyntheticModels(root, models, settings.python, device)


def write_synthetic(models: SyntheticModels, variant: Variant, pool: ServerPool, label: str = "") -> str | None:
    """Write the model files and inputs the variant's graph names that the synthetic set lacks, before its first
    run (synth_plan.ensure_for: layouts from the file names and the graph); the servers list them anew. Returns
    what was written and how long it took, for the session's notes under `label` (default: the variant's id;
    None: the set had it all)."""
    from .synth_plan import ensure_for

    t0 = time.perf_counter()
    try:
        written = ensure_for(variant.build(), models.root, size=models.size, python=models.python,
                             device=models.device, clip=variant.describe(),
                             timeout=1800 if models.device != "cpu" else 600, log_dir=models.root)
    except Wan22Error as exc:
        raise Fail(str(exc)) from None
    if not written:
        return None
    for server in pool.servers.values():
        server.object_info = {}
    return written_note(models.root, label or variant.variant_id, written, time.perf_counter() - t0)


def written_note(root: Path, variant_id: str, written: list[str], seconds: float) -> str:
    """One line on what a variant's first run had written into the synthetic set: files, new bytes, time."""
    inodes: dict[int, int] = {}
    for rel in written:
        try:
            st = (root / rel).stat()
        except OSError:
            continue
        inodes[st.st_ino] = st.st_size  # a layout written once and linked to several names counts once
    gb = sum(inodes.values()) / 1e9
    return (f"{variant_id}: {len(written)} synthetic files written in {seconds:.1f} s ({gb:.2f} GB, "
            f"{len(inodes)} distinct): {', '.join(Path(r).name for r in written)} (writer log: "
            f"{root / 'synth-files.log'})")


def synthetic_rife(custom_nodes: Path, python: str, work: Path) -> None:
    """A synthetic RIFE checkpoint for each frame-interpolation pack under the synthetic set's custom_nodes,
    where no real checkpoint lies (the pack would otherwise download one on first use)."""
    from .synth import DEFAULT_RIFE_CKPT, RIFE_MARKER, ensure_rife, rife_path, rife_stamp_matches

    for pack in sorted(p for p in custom_nodes.iterdir() if (p / RIFE_MARKER).is_file()):
        real = rife_path(pack, DEFAULT_RIFE_CKPT)
        if real.is_file() and not rife_stamp_matches(pack, DEFAULT_RIFE_CKPT):
            continue  # a checkpoint we did not write: never replace it
        try:
            ensure_rife(python, pack, log_path=work / "rife-synth.log")
        except Wan22Error as exc:
            raise Fail(str(exc)) from None


# --------------------------------------------------------------------------- a server

class Launcher(Protocol):
    """What the pool needs of a launcher (launcher.ComfyServer)."""

    spec: ServerSpec
    handle: ServerHandle | None

    def start(self) -> ServerHandle: ...
    def alive(self) -> bool: ...
    def exit_code(self) -> int | None: ...
    def ensure_running(self) -> bool: ...
    def stop(self, grace: float = 10.0) -> None: ...


@dataclass
class Server:
    """A ComfyUI of the session: its handle, the launcher behind it (None when attached) and what it told us."""

    handle: ServerHandle
    launcher: Launcher | None
    output_dir: Path | None
    environment: Environment
    object_info: dict[str, Any] = field(default_factory=dict)
    restarts: int = 0
    side: str = ""
    warm_shape: str | None = None  # the models and graph shape of the last successful run: loaded and warm
    start_s: float = 0.0
    records_dir: Path | None = None
    unknown: str = ""  # what an attached server cannot tell us, said once in the first record
    places: preflight.Places = field(default_factory=preflight.Places)  # the folders fix hints name
    log_start: int = 0  # the size its log file had when it was launched: what it wrote comes after

    def alive(self) -> bool:
        """True while the server process runs (always True when attached)."""
        return self.launcher.alive() if self.launcher else True

    def stop(self) -> None:
        """Stop a launched server; an attached one is left alone."""
        if self.launcher:
            self.launcher.stop()


def side_words(side: str) -> str:
    """' (side A)' for a side of an A/B session, '' otherwise."""
    return f" (side {side})" if side else ""


def environment(client: ComfyClient, device: DeviceInfo | None, profile: Profile, models: str) -> Environment:
    """The machine and software a server runs on, as its records carry it."""
    stats = client.system_stats()
    system = stats.get("system", {})
    devices = stats.get("devices") or [{}]
    return Environment(
        gpu_name=device.name if device else None, gpu_uuid=device.uuid if device else None,
        gpu_memory_mib=device.memory_total_mib if device else None, driver=device.driver if device else None,
        cuda=device.cuda if device else None, torch=system.get("pytorch_version"),
        comfyui=system.get("comfyui_version"), python=(system.get("python_version") or "").split(" ")[0] or None,
        os=system.get("os") or platform.system(), device=devices[0].get("name"),
        argv=public_argv(system.get("argv")), tier=profile.tier.name, profile=profile.name,
        emulated_tier=profile.tier.name if profile.emulated_on else None, models=models,
        scale=profile.tier.scale_text())


def launch_command(profile: Profile, side: Side, test_args: tuple[str, ...] = (),
                   hook: LaunchHook | None = None) -> tuple[tuple[str, ...], dict[str, str]]:
    """The arguments and environment a server is launched with, assembled here only: the tier's profile, then the
    side's flags (--wan22-server-args; --wan22-ab-args on side A), then a test's own flags, each replacing the
    earlier flags of its exclusive group (tiers.EXCLUSIVE_FLAGS); the hook edits the result last."""
    args = list(merge_args(merge_args(profile.args, side.server_args), test_args))
    env = dict(profile.env)
    if hook is not None:
        hook(profile.tier, args, env)
    return tuple(args), env


# -- attach mode (--wan22-url): what a server we did not start can and cannot tell --------------------------
def attached(url: str, env: Environment, argv: list[str], work: Path) -> Server:
    """The Server for --wan22-url: its PID (and output folder) when it runs on this machine."""
    from urllib.parse import urlsplit

    from .launcher import listening_pid, output_dir_of

    parts = urlsplit(url)
    pid = listening_pid(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
    output = output_dir_of(pid, argv) if pid is not None else None
    unknown = ["attached server: its log is not ours, so offloads, model swaps, OOM retries and recompiles are "
               "not seen and failures carry no log tail"]
    if pid is None:
        unknown.append("no local process listens on that port, so VRAM is the whole device's and the saved "
                       "video is not read")
    return Server(ServerHandle(url=url, pid=pid), None, output, env, records_dir=work / "records",
                  unknown="; ".join(unknown))


# ComfyUI's own words when an attention backend's package is missing (it then exits during start).
_MISSING_PACKAGE = re.compile(r"the `(?P<package>[\w.-]+)` package must be installed first")


# --------------------------------------------------------------------------- the pool

class ServerPool:
    """The process's ComfyUI servers: one per side (two in A/B mode), each with the tier's profile or a variation
    with extra launch flags (one variation at a time, since two 14B servers rarely share a card).

    `launch_hook` edits each launch command (the pytest_wan22_server_command hook); `on_change` hears of each
    server launched, and of the pool left with none (the session's State follows it); `launcher` and `client`
    make the launcher of a spec and the client of a URL."""

    def __init__(self, settings: Settings, profile: Profile, work: Path, models: SyntheticModels | None = None,
                 device: DeviceInfo | None = None, *, launch_hook: LaunchHook | None = None,
                 on_change: Callable[[ServerPool, Server | None], None] | None = None,
                 launcher: Callable[[ServerSpec], Launcher] = ComfyServer,
                 client: Callable[[str], ComfyClient] = ComfyClient,
                 sides: Mapping[str, Side] | None = None) -> None:
        self.settings, self.profile, self.work, self.models, self.device = settings, profile, work, models, device
        self.launch_hook, self.on_change, self.launcher, self.client = launch_hook, on_change, launcher, client
        self.sides: Mapping[str, Side] = settings.sides if sides is None else dict(sides)
        self.profiles: dict[str, Profile] = {}  # a side launched with a profile of its own (use_profile)
        self.servers: dict[str, Server] = {}
        self.extras: dict[str, tuple[str, ...]] = {}
        # (side, extra flags) -> how the first test that tried found it failing to start: the tests after it
        # are failed (or skipped) with one line instead of launching it again and printing the same log
        self.failed: dict[tuple[str, tuple[str, ...]], tuple[bool, str]] = {}

    def profile_of(self, side: str) -> Profile:
        """The profile a side's servers are launched with: its own (use_profile), else the pool's."""
        return self.profiles.get(side, self.profile)

    def use_profile(self, side: str, profile: Profile) -> None:
        """Launch this side's next server with `profile`; a running server of another profile is stopped, and
        what was remembered of the side's failed starts is forgotten."""
        if self.profile_of(side) == profile:
            return
        self.profiles[side] = profile
        if side in self.servers:
            self.stop(side)
        self.failed = {k: v for k, v in self.failed.items() if k[0] != side}

    @property
    def default_side(self) -> str:
        """The side a plain test runs on: the only one, or the candidate (B) in A/B mode."""
        return "B" if "B" in self.sides else ""

    @property
    def current(self) -> Server | None:
        """The default side's running server."""
        return self.servers.get(self.default_side)

    def get(self, extra: tuple[str, ...] = (), side: str | None = None) -> Server:
        """The running server of a side for these extra flags: launched when needed, started again if it died."""
        name = self.default_side if side is None else side
        if (name, extra) in self.failed:
            skipped, message = self.failed[name, extra]
            raise Skip(message) if skipped else Fail(message)
        server = self.servers.get(name)
        if server is not None and self.extras.get(name) == extra:
            if server.launcher is not None and not server.alive():
                code = server.launcher.exit_code()
                try:
                    server.launcher.ensure_running()
                except Wan22Error as exc:
                    self._remember(name, extra, False)
                    raise Fail(f"ComfyUI{side_words(server.side)} had exited (code {code}) and did not start "
                               f"again: {exc}") from None
                server.handle = server.launcher.handle or server.handle
                server.restarts += 1
                server.object_info = {}
                server.warm_shape = None
            return server
        self.stop(name)
        try:
            server = self._launch(extra, self.sides[name])
        except Skip as exc:
            self.failed[name, extra] = (True, exc.reason)
            raise
        except Fail:
            self._remember(name, extra, False)
            raise
        self.servers[name], self.extras[name] = server, extra
        if self.on_change is not None:
            self.on_change(self, server)
        return server

    def _remember(self, name: str, extra: tuple[str, ...], skipped: bool) -> None:
        """Note that this server did not start, in one line naming the test whose failure says why."""
        first = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0] or "an earlier test"
        flags = f" with {' '.join(extra)}" if extra else ""
        self.failed[name, extra] = (skipped, f"ComfyUI{side_words(name)}{flags} did not start, so it is not "
                                    f"started again for this test; the failure of {first} says why")

    def stop(self, side: str | None = None) -> None:
        """Stop a side's server, or every server (an attached one is left alone)."""
        for name in list(self.servers) if side is None else [side]:
            server = self.servers.pop(name, None)
            if server is not None:
                server.stop()
        if not self.servers and self.on_change is not None:
            self.on_change(self, None)

    def _launch(self, extra: tuple[str, ...], side: Side) -> Server:
        s = self.settings
        models = f"synthetic:{self.models.preset}" if self.models else "user"
        if s.attach:
            assert s.url is not None
            if extra:
                raise Skip(f"launch flags {' '.join(extra)} need a launched server; drop --wan22-url")
            with self.client(s.url) as client:
                try:
                    env = environment(client, self.device, self.profile, models)
                    argv = client.system_stats().get("system", {}).get("argv") or []
                except Wan22Error as exc:
                    raise Fail(f"no ComfyUI answers at {s.url} ({exc}); start it or fix --wan22-url") from None
            return attached(s.url, env, [str(a) for a in argv], self.work)
        if side.comfyui_dir is None:
            raise Fail("no ComfyUI to run: pass --wan22-comfyui-dir (ini wan22_comfyui_dir, env "
                       "WAN22_COMFYUI_DIR) or attach to a running one with --wan22-url")
        profile = self.profile_of(side.name)
        args, launch_env = launch_command(profile, side, extra, self.launch_hook)
        work = self.work / side.name if side.name else self.work
        base = None
        custom_nodes: tuple[Path, ...] = ()
        if self.models is not None:
            base = self.models.root
            (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
            cond = self.models.files.get("conditioning")
            if cond:  # LoadTrainingDataset reads from the output folder, which is the session's own
                shutil.copytree(base / cond, work / cond, dirs_exist_ok=True)
            synthetic_rife(base / "custom_nodes", side.python, work)
            own = side.comfyui_dir / "custom_nodes"
            if own.is_dir():  # the install under test is the whole install: its own node packs load too
                custom_nodes = (own,)
        name = "comfyui" + ("-" + "_".join(a.lstrip("-") for a in extra) if extra else "")
        spec = ServerSpec(comfyui_dir=side.comfyui_dir, work_dir=work, python=side.python, host=s.host,
                          port=s.port if not side.name or side.name == "B" else 0, args=args, env=launch_env,
                          base_directory=base, startup_timeout=s.startup_timeout, name=name,
                          custom_nodes=custom_nodes)
        launcher = self.launcher(spec)
        log_start = spec.log_path.stat().st_size if spec.log_path.is_file() else 0
        started = time.monotonic()
        try:
            handle = launcher.start()
        except ServerStartError as exc:
            missing = _MISSING_PACKAGE.search(exc.log_tail)
            if extra and missing:  # an optional profile variation whose package is not installed
                raise Skip(f"ComfyUI{side_words(side.name)} cannot start with {' '.join(extra)}: the "
                           f"{missing['package']} package is not installed in {side.python}") from None
            raise Fail(f"{side.label + ': ' if side.name else ''}{exc}") from None
        except Wan22Error as exc:
            raise Fail(f"{side.label + ': ' if side.name else ''}{exc}") from None
        start_s = time.monotonic() - started
        with self.client(handle.url) as client:
            env = environment(client, self.device, profile, models)
        places = preflight.launched_places(side.comfyui_dir, spec.input_dir, (self.models.preset, self.models.root)
                                           if self.models is not None else None)
        return Server(handle, launcher, work / "output", env, side=side.name, start_s=start_s,
                      records_dir=work / "records", places=places, log_start=log_start)
