"""Fixtures: the server for the session, a client per test, and `wan22_run`, which runs and judges a variant."""

from __future__ import annotations

import os
import platform
import re
import shutil
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import benchmarking, preflight
from .baselines import BaselineStore, machine_mismatch, version_changes
from .client import ComfyClient
from .compare import Summary, Verdict, compare, summarise
from .errors import ServerStartError, Wan22Error
from .launcher import ComfyServer, ServerHandle, ServerSpec, public_argv
from .records import Environment, RunRecord
from .roles import expert_loaders, synthetic_roles
from .runner import RunContext, ensure_input_images, fresh_seed, run_prompt, warnings_of
from .settings import Settings
from .tiers import Profile, Tier, make_profile
from .workflows import Variant, Workflow, load_workflow

if TYPE_CHECKING:
    from .gpu import DeviceInfo
    from .plugin import State
    from .synth import ModelSet


def _state(config: pytest.Config) -> State:
    from .plugin import state_of

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
    if wan22_settings.attach:
        pytest.fail(f"synthetic models ({preset}) need a launched server; drop --wan22-url or run the "
                    "tier with your own models", pytrace=False)
    from .synth import ensure_models

    root = (wan22_settings.models_dir or Path.home() / ".cache" / "pytest-wan22" / "models") / preset
    gpu = wan22_tier.is_gpu
    try:
        models = ensure_models(wan22_settings.python, root, preset, device="cuda" if gpu else "cpu",
                               lora_rank=64 if preset == "a14b" else 0, timeout=1800 if gpu else 600,
                               log_path=root / "generate.log")
    except Wan22Error as exc:
        pytest.fail(str(exc), pytrace=False)
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
        pytest.fail(str(exc), pytrace=False)
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
        emulated_tier=profile.tier.name if profile.emulated_on else None, models=models)


def _work_dir(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    s = _state(config).settings
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if s.log_dir is not None:
        path = s.log_dir / worker
        path.mkdir(parents=True, exist_ok=True)
        return path
    return factory.mktemp(f"wan22-{worker}", numbered=True)


class ServerPool:
    """The process's one ComfyUI: the tier's profile, or a variation with extra launch flags (one at a time,
    since two 14B servers do not share a card)."""

    def __init__(self, config: pytest.Config, work: Path, profile: Profile, models: SyntheticModels | None,
                 device: DeviceInfo | None) -> None:
        self.config, self.work, self.profile, self.models, self.device = config, work, profile, models, device
        self.current: Server | None = None
        self.extra: tuple[str, ...] = ()

    def get(self, extra: tuple[str, ...] = ()) -> Server:
        """The running server for these extra flags: launched when needed, started again if it died."""
        server = self.current
        if server is not None and self.extra == extra:
            if server.launcher is not None and not server.alive():
                code = server.launcher.exit_code()
                try:
                    server.launcher.ensure_running()
                except Wan22Error as exc:
                    pytest.fail(f"ComfyUI had exited (code {code}) and did not start again: {exc}", pytrace=False)
                server.handle = server.launcher.handle or server.handle
                server.restarts += 1
                server.object_info = {}
            return server
        self.stop()
        self.current, self.extra = self._launch(extra), extra
        state = _state(self.config)
        state.server = self.current
        state.machine = state.machine or self.current.environment
        return self.current

    def stop(self) -> None:
        """Stop the running server (an attached one is left alone)."""
        if self.current is not None:
            self.current.stop()
            self.current = None
            _state(self.config).server = None

    def _launch(self, extra: tuple[str, ...]) -> Server:
        s = _state(self.config).settings
        models = f"synthetic:{self.models.preset}" if self.models else "user"
        if s.attach:
            assert s.url is not None
            if extra:
                pytest.skip(f"launch flags {' '.join(extra)} need a launched server; drop --wan22-url")
            with ComfyClient(s.url) as client:
                try:
                    environment = _environment(client, self.device, self.profile, models)
                except Wan22Error as exc:
                    pytest.fail(f"no ComfyUI answers at {s.url} ({exc}); start it or fix --wan22-url",
                                pytrace=False)
            return Server(ServerHandle(url=s.url), None, None, environment)
        if s.comfyui_dir is None:
            pytest.fail("no ComfyUI to run: pass --wan22-comfyui-dir (ini wan22_comfyui_dir, env "
                        "WAN22_COMFYUI_DIR) or attach to a running one with --wan22-url", pytrace=False)
        args, env = [*self.profile.args, *extra], dict(self.profile.env)
        self.config.hook.pytest_wan22_server_command(config=self.config, tier=self.profile.tier, args=args,
                                                     env=env)
        base = None
        if self.models is not None:
            base = self.models.root
            (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
            cond = self.models.files.get("conditioning")
            if cond:  # LoadTrainingDataset reads from the output folder, which is the session's own
                shutil.copytree(base / cond, self.work / cond, dirs_exist_ok=True)
            _synthetic_rife(base / "custom_nodes", s.python, self.work)
        name = "comfyui" + ("-" + "_".join(a.lstrip("-") for a in extra) if extra else "")
        spec = ServerSpec(comfyui_dir=s.comfyui_dir, work_dir=self.work, python=s.python, host=s.host,
                          port=s.port, args=tuple(args), env=env, base_directory=base,
                          startup_timeout=s.startup_timeout, name=name)
        launcher = ComfyServer(spec)
        try:
            handle = launcher.start()
        except ServerStartError as exc:
            missing = _MISSING_PACKAGE.search(exc.log_tail)
            if extra and missing:  # an optional profile variation whose package is not installed
                pytest.skip(f"ComfyUI cannot start with {' '.join(extra)}: the {missing['package']} package is "
                            f"not installed in {s.python}")
            pytest.fail(str(exc), pytrace=False)
        except Wan22Error as exc:
            pytest.fail(str(exc), pytrace=False)
        with ComfyClient(handle.url) as client:
            environment = _environment(client, self.device, self.profile, models)
        return Server(handle, launcher, self.work / "output", environment)


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
            pytest.fail(str(exc), pytrace=False)


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
    if state.nvml is None or state.device is None or server.launcher is None:
        return None
    from .gpu import VramMonitor, process_tree

    pid = server.handle.pid
    device = state.device
    assert pid is not None
    return lambda: VramMonitor(state.nvml, device, pids=lambda: process_tree(pid), interval=interval)


def _gpu_state(state: State) -> Callable[[], dict[str, float | None]] | None:
    if state.nvml is None or state.device is None:
        return None
    from .gpu import accounting_peak_mib, environment_readings, process_tree

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
    elif "LoadImage" not in server.object_info:
        server.object_info.update(client.object_info("LoadImage"))
    problems = preflight.check(prompt, server.object_info)
    if not problems:
        return
    text = f"{variant_id} cannot run on this server:\n{preflight.format_problems(problems)}"
    optional = all(p.kind == "node" and p.class_type in OPTIONAL_NODES for p in problems)
    if optional or missing == "skip":
        pytest.skip(text)
    pytest.fail(text + "\n(--wan22-missing=skip skips such variants instead)", pytrace=False)


def _check_output(record: RunRecord, expected: Any) -> None:
    videos = [o for o in record.outputs if o.frames is not None]
    if not record.outputs:
        pytest.fail(f"{record.variant_id} round {record.round}: the run succeeded but saved no file", pytrace=False)
    if not videos:
        return  # not an MP4 we can read (another container, or attached without the output folder)
    v = videos[0]
    if not v.bytes:
        pytest.fail(f"{record.variant_id}: {v.filename} is empty", pytrace=False)
    if expected.frames is not None and v.frames != expected.frames:
        pytest.fail(f"{record.variant_id}: {v.filename} has {v.frames} frames, the variant should give "
                    f"{expected.frames}", pytrace=False)
    if expected.fps is not None and v.fps is not None and abs(v.fps - expected.fps) > 0.01:
        pytest.fail(f"{record.variant_id}: {v.filename} plays at {v.fps:g} fps, the variant should give "
                    f"{expected.fps:g}", pytrace=False)


def baseline_key(variant_id: str, server_args: tuple[str, ...]) -> str:
    """The baseline key: the variant id, plus the extra launch flags of a profile variation."""
    return "+".join([variant_id, *(a.lstrip("-") for a in server_args)])


@pytest.fixture
def wan22_run(request: pytest.FixtureRequest, wan22_servers: ServerPool, wan22_tier: Tier,
              wan22_models: SyntheticModels | None) -> Callable[..., VariantResult]:
    """Run a Variant: warm-up and timed rounds with a fresh seed each, on the tier's server (or a variation
    with `server_args`). Fails the test on OOM, error, VRAM over budget, offload, a wrong video, or a
    slowdown against the stored baseline; returns the records, their summary and the verdict."""
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
        server = wan22_servers.get(tuple(server_args))
        v = adapt(variant, wan22_tier, wan22_models)
        key = baseline_key(variant.variant_id, tuple(server_args))
        with ComfyClient(server.handle.url) as client:
            _empty_queue(client)
            ctx = RunContext(
                client=client, tier=wan22_tier.name, timeout=s.run_timeout or wan22_tier.run_timeout_s,
                environment=server.environment, is_alive=server.alive, log_size=server.handle.log_size,
                log_since=server.handle.log_since, output_dir=server.output_dir,
                monitor=_vram_monitor(state, server, s.vram_interval), gpu_state=_gpu_state(state))
            graph = v.seed(0).build()
            if ensure_input_images(ctx, graph, v.image_size()):
                server.object_info.pop("LoadImage", None)  # its image list has changed
            _preflight(server, client, graph, key, s.missing)
            n_warm = s.warmup_rounds if warmup_rounds is None else warmup_rounds
            n_timed = s.rounds if rounds is None else rounds
            records: list[RunRecord] = []

            def one_round() -> None:
                i = len(records)
                seed = fresh_seed()
                record = run_prompt(ctx, v.seed(seed).build(), variant_id=key, workflow=variant.workflow.name,
                                    seed=seed, round_index=i, warmup=i < n_warm)
                records.append(record)
                state.records.append(record)
                _save_record(server, record)
                config.hook.pytest_wan22_run_finished(config=config, record=record)
                if not record.ok:
                    pytest.fail(f"{key} round {i}: {record.outcome}: {record.message}", pytrace=False)
                _check_output(record, v.expected_output())

            bench = benchmarking.fixture_for(request) if not benchmarked else None
            if bench is not None:  # pytest-benchmark times the same rounds (once per test: it allows one)
                benchmarked.append(key)
                benchmarking.run_rounds(bench, one_round, n_timed, n_warm)
            else:
                for _ in range(n_warm + n_timed):
                    one_round()
        summary = summarise(key, records, variant.digest)
        if bench is not None:
            benchmarking.describe(bench, summary, wan22_tier.name)
        _check_vram(records, key, wan22_tier, budget_gib if budget_gib is not None else
                    (marker.args[0] if marker else None), allow_offload)
        verdict = _judge(config, state, wan22_tier, variant.workflow.name, summary, server.environment)
        return VariantResult(tuple(records), summary, verdict)

    return run


def _save_record(server: Server, record: RunRecord) -> None:
    if server.output_dir is None:
        return
    folder = server.output_dir.parent / "records"
    folder.mkdir(exist_ok=True)
    (folder / f"{record.variant_id}.{record.round}.json").write_text(record.to_json(), encoding="utf-8")


def _check_vram(records: list[RunRecord], variant_id: str, tier: Tier, budget_gib: float | None,
                allow_offload: bool | None) -> None:
    budget = budget_gib if budget_gib is not None else tier.budget_gib(variant_id)
    allowed = tier.allows_offload(variant_id) if allow_offload is None else allow_offload
    for r in records:
        peak = r.vram.peak_mib if r.vram and r.vram.available else None
        if budget is not None and peak is not None and peak > budget * 1024:
            pytest.fail(f"{variant_id} round {r.round}: peak VRAM {peak / 1024:.2f} GiB is over the budget of "
                        f"{budget:g} GiB ({tier.name}); the budget comes from the tier table "
                        "(vram_budget_gib / budgets) or @pytest.mark.wan22_budget", pytrace=False)
        offloads = warnings_of(r, "offload")
        if offloads and not allowed:
            at = f" at {peak / 1024:.2f} GiB" if peak is not None else ""
            pytest.fail(f"{variant_id} round {r.round} does not fit on {tier.name}{at}: ComfyUI had to "
                        f"offload ({'; '.join(w.split(': ', 1)[1] for w in offloads)})", pytrace=False)


def _judge(config: pytest.Config, state: State, tier: Tier, workflow: str, summary: Summary,
           env: Environment) -> Verdict:
    s = state.settings
    if s.update_baselines:
        state.summaries[(workflow, summary.variant_id)] = summary
        verdict = Verdict(summary.variant_id, "new")
    elif env.emulated_tier:
        verdict = Verdict(summary.variant_id, "insufficient")  # emulated timings are never compared
    else:
        stored = BaselineStore(s.baselines_dir).load(tier.name, workflow)
        base = stored.variants.get(summary.variant_id) if stored else None
        if stored is not None and base is not None:
            why = machine_mismatch(stored.machine, env)
            if why:
                pytest.fail(f"{summary.variant_id}: {why}", pytrace=False)
        verdict = config.hook.pytest_wan22_compare(config=config, summary=summary, baseline=base) or compare(
            summary, base, s.tolerances)
        if verdict.failed:
            changes = version_changes(stored.machine, env) if stored else []
            extra = f"\nchanged since the baseline: {', '.join(changes)}" if changes else ""
            state.verdicts[summary.variant_id] = verdict
            pytest.fail(verdict.message + extra, pytrace=False)
    state.verdicts[summary.variant_id] = verdict
    return replace(verdict)
