"""Fixtures: the server for the session, a client per test, and `wan22_run`, which runs and judges a variant."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import sys
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from . import benchmarking, fit, preflight
from .baselines import BaselineStore, drift, machine_mismatch, same_gpu, session_spread, version_changes
from .client import ComfyClient
from .compare import MACHINE_SPREAD, Summary, Verdict, compare, more_rounds, summarise
from .errors import ServerStartError, Wan22Error
from .launcher import ComfyServer, ServerHandle, ServerSpec, public_argv
from .records import Environment, Neighbour, RunRecord, round_name
from .runner import RunContext, ensure_inputs, fresh_seed, run_prompt
from .settings import Settings
from .stash import state_of
from .tiers import Profile, Tier, make_profile, merge_args
from .workflows import Variant, Workflow, load_workflow
from .workflows.roles import expert_loaders, synthetic_roles

if TYPE_CHECKING:
    from .gpu import DeviceInfo
    from .session import State
    from .synth import ModelSet


def fail_now(message: str, *, pytrace: bool = False) -> NoReturn:
    """pytest.fail for use inside an except block: without the exception being handled chained to it, which
    pytest would print first, then "During handling of the above exception, another exception occurred", then
    the same message again."""
    raise pytest.fail.Exception(message, pytrace=pytrace) from None


def _state(config: pytest.Config) -> State:
    return state_of(config)


@pytest.fixture(scope="session")
def wan22_settings(pytestconfig: pytest.Config) -> Settings:
    """The resolved pytest-wan22 settings (CLI > WAN22_* env > ini > default)."""
    return _state(pytestconfig).settings


@pytest.fixture(scope="session")
def wan22_tier(pytestconfig: pytest.Config) -> Tier:
    """The tier this session runs as (detected through NVML, forced, or emulated)."""
    state = _state(pytestconfig)
    if state.tier is None:
        pytest.skip(f"this machine is {state.detection}; add a row to the tier table (--wan22-tiers-file) "
                    "or force a tier with --wan22-tier")
    return state.tier


@pytest.fixture(scope="session")
def wan22_device(pytestconfig: pytest.Config) -> DeviceInfo | None:
    """The GPU this session runs on, as NVML sees it (None without a GPU or NVML)."""
    return _state(pytestconfig).device


@pytest.fixture(scope="session")
def wan22_profile(pytestconfig: pytest.Config, wan22_tier: Tier, wan22_device: DeviceInfo | None) -> Profile:
    """ComfyUI's launch arguments and environment for this tier; override it in a conftest to try others."""
    s = _state(pytestconfig).settings
    gpu = None
    if wan22_device is not None and (s.gpu_index is not None or os.environ.get("PYTEST_XDIST_WORKER")
                                     or "CUDA_VISIBLE_DEVICES" not in os.environ):
        gpu = wan22_device.uuid or str(wan22_device.index)
    try:
        return make_profile(
            wan22_tier, extra_args=s.server_args, gpu=gpu,
            device_name=wan22_device.name if wan22_device else None,
            device_memory_mib=wan22_device.memory_total_mib if wan22_device else None,
            emulate=s.emulate_tier is not None)
    except Wan22Error as exc:
        raise pytest.UsageError(str(exc)) from None


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


@pytest.fixture(scope="session")
def wan22_models(wan22_settings: Settings, wan22_tier: Tier) -> SyntheticModels | None:
    """The synthetic model set this session runs on, generated once and kept (None: the user's models)."""
    preset = wan22_settings.synthetic or wan22_tier.synthetic
    if preset is None:
        return None
    from .synth import ensure_models, model_set

    root = (wan22_settings.models_dir or Path.home() / ".cache" / "pytest-wan22" / "models") / preset
    gpu = wan22_tier.is_gpu
    if wan22_settings.attach:  # the attached server must have the set already: the preflight names what is missing
        return SyntheticModels(root, model_set(preset, lora_rank=64 if preset == "a14b" else 0))
    try:
        models = ensure_models(wan22_settings.python, root, preset, device="cuda" if gpu else "cpu",
                               lora_rank=64 if preset == "a14b" else 0, timeout=1800 if gpu else 600,
                               log_path=root / "generate.log")
    except Wan22Error as exc:
        fail_now(str(exc), pytrace=False)
    return SyntheticModels(root, models, wan22_settings.python, "cuda" if gpu else "cpu")


# --- single-expert (TI2V 5B) graphs run on the matching 5B set, generated beside the session's set so the
# --- launched server (whose base directory is that root) lists it
def _ti2v_models(models: SyntheticModels) -> SyntheticModels:
    from .synth import TI2V_PRESETS, ensure_models

    preset = TI2V_PRESETS[models.preset]
    gpu = models.device != "cpu"
    try:
        ms = ensure_models(models.python, models.root, preset, device=models.device, timeout=1800 if gpu else 600,
                           log_path=models.root / f"generate-{preset}.log")
    except Wan22Error as exc:
        fail_now(str(exc), pytrace=False)
    return SyntheticModels(models.root, ms, models.python, models.device)


def prepare_synthetic(variant: Variant, models: SyntheticModels | None, server: Server) -> None:
    """Generate the synthetic set a single-expert graph needs before its first run; the server lists it anew."""
    if models is not None and len(expert_loaders(variant.workflow.graph)) == 1:
        _ti2v_models(models)
        server.object_info = {}
# --- end of the single-expert part


@dataclass
class Server:
    """The session's ComfyUI: its handle, the launcher behind it (None when attached) and what it told us."""

    handle: ServerHandle
    launcher: ComfyServer | None
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


def _environment(client: ComfyClient, device: DeviceInfo | None, profile: Profile, models: str) -> Environment:
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


def _work_dir(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    """This process's folder for server logs and run records: <session folder>/<worker> (see plugin._run_dir);
    the session folders under .wan22/runs beyond the newest runs.KEEP are removed when a new one is made."""
    state = _state(config)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if state.run_dir is None:  # pragma: no cover - set in pytest_configure
        return factory.mktemp(f"wan22-{worker}", numbered=True)
    path = state.run_dir / worker
    path.mkdir(parents=True, exist_ok=True)
    if state.settings.log_dir is None:
        from .runs import prune

        prune(state.run_dir.parent, current=state.run_dir)
    return path


@dataclass(frozen=True)
class Side:
    """An environment servers are launched from: the session's one, or side A (current) or B (candidate) of an
    A/B session."""

    name: str
    comfyui_dir: Path | None
    python: str
    args: tuple[str, ...]

    @property
    def label(self) -> str:
        """How messages name the side."""
        return {"A": "A (current)", "B": "B (candidate)"}.get(self.name, "")


def sides(settings: Settings, profile: Profile) -> dict[str, Side]:
    """The session's sides by name: one ('') normally, A and B in A/B mode (--wan22-ab-*)."""
    if settings.ab is None:
        return {"": Side("", settings.comfyui_dir, settings.python, profile.args)}
    return {"A": Side("A", settings.ab.comfyui_dir, settings.ab.python,
                      merge_args(profile.base_args or profile.args, settings.ab.server_args)),
            "B": Side("B", settings.comfyui_dir, settings.python, profile.args)}


class ServerPool:
    """The process's ComfyUI servers: one per side (two in A/B mode), each with the tier's profile or a variation
    with extra launch flags (one variation at a time, since two 14B servers rarely share a card)."""

    def __init__(self, config: pytest.Config, work: Path, profile: Profile, models: SyntheticModels | None,
                 device: DeviceInfo | None) -> None:
        self.config, self.work, self.profile, self.models, self.device = config, work, profile, models, device
        self.sides = sides(_state(config).settings, profile)
        self.servers: dict[str, Server] = {}
        self.extras: dict[str, tuple[str, ...]] = {}
        # (side, extra flags) -> how the first test that tried found it failing to start: the tests after it
        # are failed (or skipped) with one line instead of launching it again and printing the same log
        self.failed: dict[tuple[str, tuple[str, ...]], tuple[bool, str]] = {}

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
            if skipped:
                pytest.skip(message)
            pytest.fail(message, pytrace=False)
        server = self.servers.get(name)
        if server is not None and self.extras.get(name) == extra:
            if server.launcher is not None and not server.alive():
                code = server.launcher.exit_code()
                try:
                    server.launcher.ensure_running()
                except Wan22Error as exc:
                    self._remember(name, extra, False)
                    fail_now(f"ComfyUI{_side_words(server.side)} had exited (code {code}) and did not start "
                                f"again: {exc}", pytrace=False)
                server.handle = server.launcher.handle or server.handle
                server.restarts += 1
                server.object_info = {}
                server.warm_shape = None
            return server
        self.stop(name)
        try:
            server = self._launch(extra, self.sides[name])
        except pytest.skip.Exception as exc:
            self.failed[name, extra] = (True, exc.msg or "")
            raise
        except pytest.fail.Exception:
            self._remember(name, extra, False)
            raise
        self.servers[name], self.extras[name] = server, extra
        state = _state(self.config)
        state.server = self.current or server
        state.machine = state.machine or server.environment
        state.server_start_s += server.start_s
        return server

    def _remember(self, name: str, extra: tuple[str, ...], skipped: bool) -> None:
        """Note that this server did not start, in one line naming the test whose failure says why."""
        first = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0] or "an earlier test"
        flags = f" with {' '.join(extra)}" if extra else ""
        self.failed[name, extra] = (skipped, f"ComfyUI{_side_words(name)}{flags} did not start, so it is not "
                                    f"started again for this test; the failure of {first} says why")

    def stop(self, side: str | None = None) -> None:
        """Stop a side's server, or every server (an attached one is left alone)."""
        for name in list(self.servers) if side is None else [side]:
            server = self.servers.pop(name, None)
            if server is not None:
                server.stop()
        if not self.servers:
            _state(self.config).server = None

    def _launch(self, extra: tuple[str, ...], side: Side) -> Server:
        s = _state(self.config).settings
        models = f"synthetic:{self.models.preset}" if self.models else "user"
        if s.attach:
            assert s.url is not None
            if extra:
                pytest.skip(f"launch flags {' '.join(extra)} need a launched server; drop --wan22-url")
            with ComfyClient(s.url) as client:
                try:
                    environment = _environment(client, self.device, self.profile, models)
                    argv = client.system_stats().get("system", {}).get("argv") or []
                except Wan22Error as exc:
                    fail_now(f"no ComfyUI answers at {s.url} ({exc}); start it or fix --wan22-url",
                                pytrace=False)
            return _attached(s.url, environment, [str(a) for a in argv], self.work)
        if side.comfyui_dir is None:
            pytest.fail("no ComfyUI to run: pass --wan22-comfyui-dir (ini wan22_comfyui_dir, env "
                        "WAN22_COMFYUI_DIR) or attach to a running one with --wan22-url", pytrace=False)
        args, env = list(merge_args(side.args, extra)), dict(self.profile.env)
        self.config.hook.pytest_wan22_server_command(config=self.config, tier=self.profile.tier, args=args,
                                                     env=env)
        work = self.work / side.name if side.name else self.work
        base = None
        custom_nodes: tuple[Path, ...] = ()
        if self.models is not None:
            base = self.models.root
            (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
            cond = self.models.files.get("conditioning")
            if cond:  # LoadTrainingDataset reads from the output folder, which is the session's own
                shutil.copytree(base / cond, work / cond, dirs_exist_ok=True)
            _synthetic_rife(base / "custom_nodes", side.python, work)
            own = side.comfyui_dir / "custom_nodes"
            if own.is_dir():  # the install under test is the whole install: its own node packs load too
                custom_nodes = (own,)
        name = "comfyui" + ("-" + "_".join(a.lstrip("-") for a in extra) if extra else "")
        spec = ServerSpec(comfyui_dir=side.comfyui_dir, work_dir=work, python=side.python, host=s.host,
                          port=s.port if not side.name or side.name == "B" else 0, args=tuple(args), env=env,
                          base_directory=base, startup_timeout=s.startup_timeout, name=name,
                          custom_nodes=custom_nodes)
        launcher = ComfyServer(spec)
        log_start = spec.log_path.stat().st_size if spec.log_path.is_file() else 0
        started = time.monotonic()
        try:
            handle = launcher.start()
        except ServerStartError as exc:
            missing = _MISSING_PACKAGE.search(exc.log_tail)
            if extra and missing:  # an optional profile variation whose package is not installed
                pytest.skip(f"ComfyUI{_side_words(side.name)} cannot start with {' '.join(extra)}: the "
                            f"{missing['package']} package is not installed in {side.python}")
            fail_now(f"{side.label + ': ' if side.name else ''}{exc}", pytrace=False)
        except Wan22Error as exc:
            fail_now(f"{side.label + ': ' if side.name else ''}{exc}", pytrace=False)
        start_s = time.monotonic() - started
        with ComfyClient(handle.url) as client:
            environment = _environment(client, self.device, self.profile, models)
        places = preflight.launched_places(side.comfyui_dir, spec.input_dir, (self.models.preset, self.models.root)
                                           if self.models is not None else None)
        return Server(handle, launcher, work / "output", environment, side=side.name, start_s=start_s,
                      records_dir=work / "records", places=places, log_start=log_start)


def _side_words(side: str) -> str:
    return f" (side {side})" if side else ""


# -- attach mode (--wan22-url): what a server we did not start can and cannot tell --------------------------
def _attached(url: str, environment: Environment, argv: list[str], work: Path) -> Server:
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
    return Server(ServerHandle(url=url, pid=pid), None, output, environment, records_dir=work / "records",
                  unknown="; ".join(unknown))


# ComfyUI's own words when an attention backend's package is missing (it then exits during start).
_MISSING_PACKAGE = re.compile(r"the `(?P<package>[\w.-]+)` package must be installed first")


def _synthetic_rife(custom_nodes: Path, python: str, work: Path) -> None:
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
            fail_now(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def wan22_servers(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, wan22_profile: Profile,
                  wan22_models: SyntheticModels | None, wan22_device: DeviceInfo | None
                  ) -> Generator[ServerPool, None, None]:
    """The session's ComfyUI launcher: `.get(extra_flags)` gives the running server for a profile variation."""
    pool = ServerPool(pytestconfig, _work_dir(pytestconfig, tmp_path_factory), wan22_profile, wan22_models,
                      wan22_device)
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def wan22_server(wan22_servers: ServerPool) -> Server:
    """The session's ComfyUI with the tier's profile (launched once, or attached with --wan22-url); a server
    that died is started again for the next test."""
    return wan22_servers.get()


@pytest.fixture
def wan22_client(wan22_server: Server) -> Generator[ComfyClient, None, None]:
    """A client bound to the session's server, with an empty queue."""
    with ComfyClient(wan22_server.handle.url) as client:
        _empty_queue(client)
        yield client


def _empty_queue(client: ComfyClient) -> None:
    queue = client.queue()
    if queue.get("queue_running") or queue.get("queue_pending"):
        client.clear_queue()
        client.interrupt()


@dataclass(frozen=True)
class Workflows:
    """The workflow library: API-format graphs in the workflows folder, loaded by name."""

    root: Path

    def load(self, name: str) -> Workflow:
        """Load workflows/<name>.json."""
        path = self.root / (name if name.endswith(".json") else f"{name}.json")
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in self.root.glob("*.json"))) or "none"
            raise Wan22Error(f"workflow {path} does not exist (known: {known}); fix the name or "
                             "--wan22-workflows-dir (ini wan22_workflows_dir)")
        return load_workflow(path)

    def variant(self, name: str) -> Variant:
        """A Variant builder over a workflow."""
        return Variant(self.load(name))


@pytest.fixture(scope="session")
def wan22_workflows(wan22_settings: Settings) -> Workflows:
    """The workflow library (`.load(name)`, `.variant(name)`) over --wan22-workflows-dir."""
    return Workflows(wan22_settings.workflows_dir)


@dataclass(frozen=True)
class VariantResult:
    """What `wan22_run` returns: every round's record, the summary of the timed ones, and the verdict."""

    records: tuple[RunRecord, ...]
    summary: Summary
    verdict: Verdict

    @property
    def last(self) -> RunRecord:
        """The last round's record."""
        return self.records[-1]


def adapt(variant: Variant, tier: Tier, models: SyntheticModels | None) -> Variant:
    """The variant as this tier runs it: synthetic model files swapped in, and the tier's scale applied."""
    if models is not None:
        if len(expert_loaders(variant.workflow.graph)) == 1:
            models = _ti2v_models(models)
        roles = synthetic_roles(variant.workflow.graph, models.files)
        variant = variant.models({k: models.set.name(k) for k in models.files if k in roles})
        if "conditioning" in models.files and "text_encoder" not in models.files:
            candidate = variant.precomputed_conditioning(models.set.name("conditioning"))
            try:
                candidate.build()
                variant = candidate
            except Wan22Error:
                pass  # no core text-encoder path to replace: the preflight names the encoder the graph needs
    if tier.scale:
        variant = variant.scaled(**tier.scale)
    return variant


OPTIONAL_NODES = frozenset({"RIFE VFI", "FILM VFI", "FrameInterpolate", "FrameInterpolationModelLoader"})


def _vram_monitor(state: State, server: Server, interval: float) -> Callable[[], Any] | None:
    """Per process when the server's PID is known (launched, or attached on this machine), else device-wide."""
    if state.nvml is None or state.device is None:
        return None
    from .gpu import VramMonitor
    from .processes import process_tree

    pid = server.handle.pid
    device = state.device
    pids = (lambda: process_tree(pid)) if pid is not None else None
    return lambda: VramMonitor(state.nvml, device, pids=pids, interval=interval, own=_own_pids)


def _own_pids() -> set[int]:
    """This session's processes, never neighbours: pytest's process tree, with every server it launched."""
    from .processes import process_tree

    return process_tree(os.getpid())


def _gpu_state(state: State) -> Callable[[], dict[str, float | None]] | None:
    if state.nvml is None or state.device is None:
        return None
    from .gpu import accounting_peak_mib, environment_readings
    from .processes import process_tree

    nvml, device = state.nvml, state.device
    server = state.server

    def read() -> dict[str, float | None]:
        h = nvml.handle(device.index)
        readings = {k: v for k, v in environment_readings(nvml, h).items() if k not in ("driver", "cuda")}
        if state.settings.nvml_accounting and server is not None and server.handle.pid:
            readings["accounting_peak_mib"] = accounting_peak_mib(nvml, h, process_tree(server.handle.pid))
        return readings

    return read


def _preflight(server: Server, client: ComfyClient, prompt: dict[str, Any], variant_id: str, missing: str) -> None:
    if not server.object_info:
        server.object_info = client.object_info()
    problems = preflight.find_problems(prompt, server.object_info, server.places)
    if not problems:
        return
    text = f"{variant_id} cannot run on this server:\n{preflight.format_problems(problems)}"
    optional = all(p.kind == "node" and p.class_type in OPTIONAL_NODES for p in problems)
    if optional or missing == "skip":
        pytest.skip(text)
    pytest.fail(text + "\n(--wan22-missing=skip skips such variants instead)", pytrace=False)


def baseline_key(variant_id: str, server_args: tuple[str, ...]) -> str:
    """The baseline key: the variant id, plus the extra launch flags of a profile variation."""
    return "+".join([variant_id, *(a.lstrip("-") for a in server_args)])


def warm_shape(graph: Mapping[str, Any]) -> str:
    """What a warm-up round warms: the model files, compilation, and the shapes of the graph's latents. Two runs
    with the same shape on one server need one warm-up between them."""
    parts = []
    for _, node in sorted(graph.items()):
        cls = str(node.get("class_type", ""))
        inputs = node.get("inputs") or {}
        if "Loader" in cls or "Compile" in cls:
            parts.append((cls, sorted((k, v) for k, v in inputs.items() if not isinstance(v, list))))
        size = {k: inputs[k] for k in ("width", "height", "length", "batch_size") if k in inputs}
        if size and not any(isinstance(v, list) for v in size.values()):
            parts.append((cls, sorted(size.items())))
    return json.dumps(parts, sort_keys=True, default=str)


class SideRunner:
    """Runs rounds of one variant on one server: a fresh seed each, records saved, failures fail the test."""

    def __init__(self, config: pytest.Config, server: Server, client: ComfyClient, tier: Tier, variant: Variant,
                 key: str, workflow: str) -> None:
        state = _state(config)
        s = state.settings
        self.config, self.state, self.server, self.variant, self.key, self.workflow = (
            config, state, server, variant, key, workflow)
        self.ctx = RunContext(
            client=client, tier=tier.name, timeout=s.run_timeout or tier.run_timeout_s,
            environment=server.environment, is_alive=server.alive, log_size=server.handle.log_size,
            log_since=server.handle.log_since, output_dir=server.output_dir,
            monitor=state.progress.track(_vram_monitor(state, server, s.vram_interval)),
            gpu_state=_gpu_state(state), on_event=state.progress.on_event,
            input_dir=server.launcher.spec.input_dir if server.launcher else None,
            user_input_dir=server.launcher.spec.comfyui_dir / "input" if server.launcher else None)
        self.records: list[RunRecord] = []
        self.graph = variant.seed(0).build()
        self.shape = warm_shape(self.graph)

    @property
    def timed(self) -> list[RunRecord]:
        """The timed rounds so far."""
        return [r for r in self.records if not r.warmup]

    def prepare(self, missing: str) -> None:
        """Bring in the input files the server lacks, then check the graph against the server before any run."""
        for cls in ensure_inputs(self.ctx, self.graph, self.variant.image_size()):
            if self.server.object_info:  # its file list has changed
                self.server.object_info.update(self.ctx.client.object_info(cls))
        _preflight(self.server, self.ctx.client, self.graph, self.key, missing)

    def warmups_needed(self, wanted: int, explicit: bool) -> int:
        """Warm-up rounds for this variant: none when the server last ran the same models and shape."""
        if wanted and not explicit and self.server.warm_shape == self.shape:
            self.state.skipped_warmups.append(self.key + _side_words(self.server.side))
            return 0
        return wanted

    def round(self, warmup: bool) -> RunRecord:
        """One run with a fresh seed; the test fails on anything but success or on a wrong video."""
        i = len(self.records)
        seed = fresh_seed()
        with self.state.progress.round(self.key, i, None, warmup=warmup, prompt=self.graph,  # adaptive: no total
                                       side=self.server.side):
            record = run_prompt(self.ctx, self.variant.seed(seed).build(), variant_id=self.key,
                                workflow=self.workflow, seed=seed, round_index=i, warmup=warmup)
        if self.server.side:
            record = replace(record, side=self.server.side)
        if record.vram is not None and record.vram.neighbours:
            record = replace(record, warnings=(*record.warnings, "neighbour: other compute processes on the GPU "
                                               "during this round: " + _names(record.vram.neighbours)))
        if self.server.unknown:  # said once, in the session's first record
            record = replace(record, warnings=(*record.warnings, f"attach: {self.server.unknown}"))
            self.server.unknown = ""
        self.records.append(record)
        self.state.records.append(record)
        _save_record(self.server, record)
        self.config.hook.pytest_wan22_run_finished(config=self.config, record=record)
        who = f"{self.key}{_side_words(self.server.side)}"
        if not record.ok:
            self.server.warm_shape = None
            pytest.fail(f"{who} round {round_name(record)}: {record.outcome}: {record.message}", pytrace=False)
        self.server.warm_shape = self.shape
        _fail_if(fit.check_output(record, self.variant.expected_output()))
        return record


@pytest.fixture
def wan22_run(request: pytest.FixtureRequest, wan22_servers: ServerPool, wan22_tier: Tier,
              wan22_models: SyntheticModels | None) -> Callable[..., VariantResult]:
    """Run a Variant: warm-up and timed rounds with a fresh seed each, on the tier's server (or a variation
    with `server_args`). Timed rounds stop once the verdict is decided (between --wan22-min-rounds and
    --wan22-rounds); the warm-up is skipped when the server last ran the same models and shape. Fails the test
    on OOM, error, a variant that does not fit (offload, model swap, OOM retry, a peak past the profile's
    allowance or your budget), a wrong video, or a slowdown against the stored baseline (in A/B mode: of side B
    against side A); returns the records, their summary and the verdict."""
    config = request.config
    state = _state(config)
    s = state.settings
    marker = request.node.get_closest_marker("wan22_budget")
    # Every test gets a server that is alive: the default one is restarted here if it died.
    request.getfixturevalue("wan22_server")
    benchmarked: list[str] = []

    def run(variant: Variant, *, rounds: int | None = None, warmup_rounds: int | None = None,
            budget_gib: float | None = None, allow_offload: bool | None = None,
            server_args: tuple[str, ...] = ()) -> VariantResult:
        v = adapt(variant, wan22_tier, wan22_models)
        key = baseline_key(variant.variant_id, tuple(server_args))
        state.test_variants.setdefault(request.node.nodeid, []).append((variant.workflow.name, key))
        most = s.rounds if rounds is None else rounds
        fewest = most if rounds is not None else s.fewest_rounds
        n_warm = s.warmup_rounds if warmup_rounds is None else warmup_rounds
        bench: list[Any] = []

        def bench_of() -> Any | None:  # asked only once rounds start: an unused fixture is a warning
            found = benchmarking.fixture_for(request) if not benchmarked else None
            if found is not None:
                benchmarked.append(key)
                bench.append(found)
            return found

        if s.ab is not None:
            records, summary, verdict, note = _run_ab(config, wan22_servers, wan22_tier, v, variant, key,
                                                tuple(server_args), (n_warm, warmup_rounds is not None),
                                                (fewest, most))
        else:
            records, summary, verdict, note = _run_one(config, wan22_servers, wan22_tier, v, variant, key,
                                                 tuple(server_args), (n_warm, warmup_rounds is not None),
                                                 (fewest, most), bench_of)
        if bench:
            benchmarking.describe(bench[0], summary, wan22_tier.name)
        for name in {r.side for r in records}:  # each side against its own server's allowance (no relaunch)
            _fail_if(_check_vram([r for r in records if r.side == name], key, wan22_tier, wan22_servers.profile,
                                 wan22_servers.servers[name], budget_gib if budget_gib is not None else
                                 (marker.args[0] if marker else None), allow_offload))
        state.verdicts[(variant.workflow.name, key)] = verdict
        if verdict.failed:
            pytest.fail(verdict.message + (f"\n{note}" if note else ""), pytrace=False)
        return VariantResult(tuple(records), summary, verdict)

    return run


def _run_one(config: pytest.Config, pool: ServerPool, tier: Tier, v: Variant, variant: Variant, key: str,
             extra: tuple[str, ...], warm: tuple[int, bool], bounds: tuple[int, int],
             bench_of: Callable[[], Any]) -> tuple[list[RunRecord], Summary, Verdict, str]:
    """The usual run: one server, judged against the stored baseline, rounds until the verdict is decided."""
    state = _state(config)
    s = state.settings
    server = pool.get(extra)
    stored = _stored_baseline(state, tier, variant.workflow.name, key, server.environment)
    fewest, most = bounds
    tols = s.tolerances_for(tier)

    def verdict_now(timed: list[RunRecord]) -> Verdict:
        summary = summarise(key, timed, variant.digest)
        if s.update_baselines:
            return Verdict(key, "new")
        if server.environment.emulated_tier:
            return Verdict(key, "insufficient")  # emulated timings are never compared
        base = stored.summary if stored else None
        found = config.hook.pytest_wan22_compare(config=config, summary=summary, baseline=base)
        if found is not None:
            return found  # type: ignore[no-any-return]
        if stored is None:
            return compare(summary, None, tols)
        return compare(summary, stored.summary, tols, machine_spread=stored.spread,
                       session_spread=stored.sessions, judge_timings=tier.judges_timings, max_rounds=most)

    if s.update_baselines and not s.allow_neighbours:  # before any GPU time is spent on a baseline
        _refuse_neighbours(key, _neighbours_now(state, server))
    with ComfyClient(server.handle.url) as client:
        _empty_queue(client)
        side = SideRunner(config, server, client, tier, v, key, variant.workflow.name)
        side.prepare(s.missing)
        n_warm = side.warmups_needed(*warm)
        bench = bench_of()
        if bench is not None:  # pytest-benchmark times the fewest rounds (it allows one call per test)
            benchmarking.run_rounds(bench, lambda: side.round(len(side.records) < n_warm), fewest, n_warm)
        else:
            for _ in range(n_warm):
                side.round(warmup=True)
        while len(side.timed) < most and (
                len(side.timed) < fewest or (stored is not None and not s.update_baselines
                                             and more_rounds(verdict_now(side.timed), len(side.timed), fewest,
                                                             most))):
            side.round(warmup=False)
    records = side.records
    summary = summarise(key, records, variant.digest)
    verdict = _with_neighbours(verdict_now(side.timed), records)
    if s.update_baselines:
        if not s.allow_neighbours:
            _refuse_neighbours(key, _seen_neighbours(records))
        state.summaries[(variant.workflow.name, key)] = summary
    if stored is not None:
        if shifts := drift(stored.history, summary, tols):
            verdict = replace(verdict, notes=(*verdict.notes, *shifts))
        changes = version_changes(stored.machine, server.environment)
        return records, summary, verdict, f"changed since the baseline: {', '.join(changes)}" if changes else ""
    return records, summary, verdict, ""


@dataclass(frozen=True)
class StoredBaseline:
    """A variant's stored baseline as a comparison uses it: the summary, the machine it was recorded on, the
    spread added for another GPU of the same model, and the spread of its recorded sessions."""

    summary: Summary
    machine: Environment
    spread: float | Mapping[str, float]
    sessions: Mapping[str, float]
    history: tuple[Any, ...]


def _stored_baseline(state: State, tier: Tier, workflow: str, key: str, env: Environment) -> StoredBaseline | None:
    """The variant's stored baseline (None when recording or there is none); another GPU model fails the test
    here, before any round runs."""
    s = state.settings
    if s.update_baselines or env.emulated_tier:
        return None
    stored = BaselineStore(s.baselines_dir).load(tier.name, workflow)
    entry = stored.entries.get(key) if stored else None
    if stored is None or entry is None:
        return None
    machine = stored.machine_of(key)
    why = machine_mismatch(machine, env)
    if why:
        pytest.fail(f"{key}: {why}", pytrace=False)
    spread = 0.0 if same_gpu(machine, env) else MACHINE_SPREAD  # another GPU of the same model
    return StoredBaseline(entry.summary, machine, spread, session_spread(entry.history, entry.summary),
                          tuple(entry.history))


def _fits_both(state: State, first: list[RunRecord]) -> bool:
    """True when side B can load beside side A's loaded models: the device's free memory now exceeds A's peak
    with a margin (no NVML: nothing to run out of, as on the cpu tier)."""
    if state.nvml is None or state.device is None:
        return True
    peaks = [r.vram.peak_mib for r in first if r.vram and r.vram.available and r.vram.peak_mib is not None]
    if not peaks:
        return True
    _total, _used, free = state.nvml.memory_info(state.nvml.handle(state.device.index))
    return bool(free / 2**20 > 1.1 * max(peaks))


def _run_ab(config: pytest.Config, pool: ServerPool, tier: Tier, v: Variant, variant: Variant, key: str,
            extra: tuple[str, ...], warm: tuple[int, bool], bounds: tuple[int, int]
            ) -> tuple[list[RunRecord], Summary, Verdict, str]:
    """A/B: the variant on side A (current) and side B (candidate) of one GPU, rounds interleaved A B A B where
    both fit in VRAM at once, else in blocks with the idle side's models freed; B is judged against A."""
    state = _state(config)
    s = state.settings
    assert s.ab is not None
    fewest, most = bounds
    servers = {name: pool.get(extra, name) for name in ("A", "B")}
    with contextlib.ExitStack() as stack:
        runners: dict[str, SideRunner] = {}
        for name, server in servers.items():
            client = stack.enter_context(ComfyClient(server.handle.url))
            _empty_queue(client)
            runners[name] = SideRunner(config, server, client, tier, v, key, variant.workflow.name)
            runners[name].prepare(s.missing)
        a, b = runners["A"], runners["B"]

        def verdict_now() -> Verdict:
            return compare(summarise(key, b.timed, variant.digest), summarise(key, a.timed, variant.digest),
                           s.tolerances_for(tier), label="B vs A", judge_timings=tier.judges_timings,
                           max_rounds=most)

        def more() -> bool:
            return len(b.timed) < fewest or (len(b.timed) < most and more_rounds(verdict_now(), len(b.timed),
                                                                               fewest, most))

        for _ in range(a.warmups_needed(*warm)):
            a.round(warmup=True)
        interleaved = _fits_both(state, a.records)
        if interleaved:
            how = "rounds interleaved A B A B"
            for _ in range(b.warmups_needed(*warm)):
                b.round(warmup=True)
            while more():
                a.round(warmup=False)
                b.round(warmup=False)
        else:
            releases: list[str] = []
            loaded = a
            while more():
                block = min(fewest, most - len(b.timed))
                for this, other in ((a, b), (b, a)):
                    if loaded is not this:  # unload the other side and wait for its memory, then warm this one
                        release = other.ctx.client.free_and_wait()
                        releases.append(f"{other.server.side}: {release.describe()}")
                        other.server.warm_shape = None
                        for _ in range(max(1, warm[0])):
                            this.round(warmup=True)
                        loaded = this
                    for _ in range(block):
                        this.round(warmup=False)
            how = ("in blocks, the idle side's models freed before each block (" + "; ".join(releases)
                   + "): both sides do not fit in VRAM at once, so drift between blocks is not cancelled")
    records = [*a.records, *b.records]
    verdict = _with_neighbours(verdict_now(), records)
    differs = "; ".join(s.ab.describe(s.comfyui_dir, s.python, s.server_args))
    verdict = replace(verdict, notes=(f"B (candidate) vs A (current), {how}; {differs}", *verdict.notes))
    return records, summarise(key, b.records, variant.digest), verdict, ""


def _names(neighbours: Sequence[Neighbour]) -> str:
    return ", ".join(n.describe() for n in neighbours)


def _seen_neighbours(records: Sequence[RunRecord]) -> tuple[Neighbour, ...]:
    """Other compute processes the VRAM monitor saw on the GPU during any of these rounds."""
    from .gpu import merge_neighbours

    return merge_neighbours(r.vram.neighbours for r in records if r.vram is not None)


def _neighbours_now(state: State, server: Server) -> tuple[Neighbour, ...]:
    """Other compute processes on the GPU now (none known without NVML or without the server's PID)."""
    if state.nvml is None or state.device is None or server.handle.pid is None:
        return ()
    from .gpu import neighbours
    from .processes import process_tree

    try:
        handle = (state.nvml.handle_by_uuid(state.device.uuid) if state.device.uuid
                  else state.nvml.handle(state.device.index))
        return neighbours(state.nvml, handle, process_tree(server.handle.pid) | _own_pids())
    except Exception:  # NVML trouble is the VRAM monitor's to report
        return ()


def _with_neighbours(verdict: Verdict, records: Sequence[RunRecord]) -> Verdict:
    """The verdict with a note naming the compute processes that shared the GPU with its rounds."""
    seen = _seen_neighbours(records)
    if not seen:
        return verdict
    note = (f"other compute processes shared the GPU during these rounds: {_names(seen)}; their work slows this "
            "run's, so a change may be theirs")
    return replace(verdict, notes=(*verdict.notes, note))


def _refuse_neighbours(key: str, seen: Sequence[Neighbour]) -> None:
    """Fail the test before a baseline is recorded beside other compute processes."""
    if seen:
        pytest.fail(f"{key}: not recording a baseline beside other compute processes on the GPU: {_names(seen)}. "
                    "Their work slows this one's and every later comparison would inherit it; stop them, or "
                    "pass --wan22-allow-neighbours (ini wan22_allow_neighbours) to record anyway (the records "
                    "name them)", pytrace=False)


def _save_record(server: Server, record: RunRecord) -> None:
    if server.records_dir is None:
        return
    server.records_dir.mkdir(parents=True, exist_ok=True)
    side = f".{record.side}" if record.side else ""
    # The start time keeps sessions that share a log folder from overwriting each other's records.
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(record.started_at)) + f"{record.started_at % 1:.3f}"[1:]
    path = server.records_dir / f"{record.variant_id}{side}.{record.round}.{stamp}.json"
    path.write_text(record.to_json(), encoding="utf-8")


def _fail_if(message: str | None) -> None:
    if message is not None:
        pytest.fail(message, pytrace=False)


def _check_vram(records: list[RunRecord], variant_id: str, tier: Tier, profile: Profile, server: Server,
                budget_gib: float | None, allow_offload: bool | None) -> str | None:
    """fit.check_vram with this session's budget, offload rule and allowance (the server's own argv)."""
    env = server.environment
    return fit.check_vram(
        records, variant_id, tier.name,
        budget_gib=budget_gib if budget_gib is not None else tier.budget_gib(variant_id),
        allowed=fit.allowance(env.gpu_memory_mib, env.argv or profile.args, profile.memory_cap_gib),
        allow_offload=tier.allows_offload(variant_id) if allow_offload is None else allow_offload)


