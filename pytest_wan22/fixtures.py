"""Fixtures: the server for the session, a client per test, and `wan22_run`, which runs and judges a variant."""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from . import preflight
from .baselines import BaselineStore, machine_mismatch, version_changes
from .client import ComfyClient
from .compare import Summary, Verdict, compare, summarise
from .errors import Wan22Error
from .launcher import ComfyServer, ServerHandle, ServerSpec
from .records import Environment, RunRecord
from .runner import RunContext, fresh_seed, run_prompt, warnings_of
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


@pytest.fixture(scope="session")
def wan22_models(wan22_settings: Settings, wan22_tier: Tier) -> ModelSet | None:
    """The synthetic model set this session runs on, generated once and kept (None: the user's models)."""
    preset = wan22_settings.synthetic or wan22_tier.synthetic
    if preset is None:
        return None
    if wan22_settings.attach:
        pytest.fail(f"synthetic models ({preset}) need a launched server; drop --wan22-url or run the "
                    "tier with your own models", pytrace=False)
    from .synth import ensure_models

    root = wan22_settings.models_dir or Path.home() / ".cache" / "pytest-wan22" / "models"
    device = "cuda" if wan22_tier.is_gpu else "cpu"
    try:
        return ensure_models(wan22_settings.python, root / preset, preset, device=device)
    except Wan22Error as exc:
        pytest.fail(str(exc), pytrace=False)


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
        argv=tuple(system.get("argv") or ()), tier=profile.tier.name, profile=profile.name,
        emulated_tier=profile.tier.name if profile.emulated_on else None, models=models)


def _work_dir(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    s = _state(config).settings
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    if s.log_dir is not None:
        path = s.log_dir / worker
        path.mkdir(parents=True, exist_ok=True)
        return path
    return factory.mktemp(f"wan22-{worker}", numbered=True)


@pytest.fixture(scope="session")
def wan22_server(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, wan22_profile: Profile,
                 wan22_models: ModelSet | None, wan22_device: DeviceInfo | None) -> Generator[Server, None, None]:
    """The session's ComfyUI, launched with the tier's profile (or attached with --wan22-url); stopped at the end."""
    state = _state(pytestconfig)
    s = state.settings
    models = f"synthetic:{wan22_models.preset}" if wan22_models else "user"
    if s.attach:
        assert s.url is not None
        handle = ServerHandle(url=s.url)
        with ComfyClient(s.url) as client:
            try:
                env = _environment(client, wan22_device, wan22_profile, models)
            except Wan22Error as exc:
                pytest.fail(f"no ComfyUI answers at {s.url} ({exc}); start it or fix --wan22-url", pytrace=False)
        server = Server(handle, None, None, env)
    else:
        if s.comfyui_dir is None:
            pytest.fail("no ComfyUI to run: pass --wan22-comfyui-dir (ini wan22_comfyui_dir, env WAN22_COMFYUI_DIR) "
                        "or attach to a running one with --wan22-url", pytrace=False)
        work = _work_dir(pytestconfig, tmp_path_factory)
        args, env = list(wan22_profile.args), dict(wan22_profile.env)
        pytestconfig.hook.pytest_wan22_server_command(config=pytestconfig, tier=wan22_profile.tier, args=args,
                                                      env=env)
        base = None
        if wan22_models is not None:
            base = Path(wan22_models.root)
            (base / "custom_nodes").mkdir(parents=True, exist_ok=True)
            cond = wan22_models.files.get("conditioning")
            if cond:  # LoadTrainingDataset reads from the output folder, which is the session's own
                shutil.copytree(base / cond, work / cond, dirs_exist_ok=True)
        spec = ServerSpec(comfyui_dir=s.comfyui_dir, work_dir=work, python=s.python, host=s.host, port=s.port,
                          args=tuple(args), env=env, base_directory=base, startup_timeout=s.startup_timeout)
        launcher = ComfyServer(spec)
        state.server = None
        try:
            handle = launcher.start()
        except Wan22Error as exc:
            pytest.fail(str(exc), pytrace=False)
        with ComfyClient(handle.url) as client:
            server = Server(handle, launcher, work / "output", _environment(client, wan22_device, wan22_profile,
                                                                             models))
    state.server = server
    state.machine = state.machine or server.environment
    try:
        yield server
    finally:
        server.stop()
        state.server = None


@pytest.fixture
def wan22_client(wan22_server: Server) -> Generator[ComfyClient, None, None]:
    """A client bound to the session's server: restarted first if it died, with an empty queue."""
    if wan22_server.launcher is not None and not wan22_server.alive():
        code = wan22_server.launcher.exit_code()
        try:
            wan22_server.launcher.ensure_running()
        except Wan22Error as exc:
            pytest.fail(f"ComfyUI had exited (code {code}) and did not start again: {exc}", pytrace=False)
        wan22_server.handle = wan22_server.launcher.handle or wan22_server.handle
        wan22_server.restarts += 1
        wan22_server.object_info = {}
    with ComfyClient(wan22_server.handle.url) as client:
        queue = client.queue()
        if queue.get("queue_running") or queue.get("queue_pending"):
            client.clear_queue()
            client.interrupt()
        yield client


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


def adapt(variant: Variant, tier: Tier, models: ModelSet | None) -> Variant:
    """The variant as this tier runs it: synthetic model files swapped in, and the tier's scale applied."""
    if models is not None:
        variant = variant.models({k: v.rsplit("/", 1)[-1] for k, v in models.files.items()
                                  if k in ("high", "low", "vae", "text_encoder", "lora_high", "lora_low")})
        if "conditioning" in models.files and "text_encoder" not in models.files:
            variant = variant.precomputed_conditioning(Path(models.files["conditioning"]).name)
    if tier.scale:
        variant = variant.scaled(**tier.scale)
    return variant


def _vram_monitor(state: State, server: Server, interval: float) -> Callable[[], Any] | None:
    if state.nvml is None or state.device is None or server.launcher is None:
        return None
    from .gpu import VramMonitor, process_tree

    pid = server.handle.pid
    assert pid is not None
    return lambda: VramMonitor(state.nvml, state.device.index, pids=lambda: process_tree(pid), interval=interval)


@pytest.fixture
def wan22_run(request: pytest.FixtureRequest, wan22_server: Server, wan22_client: ComfyClient, wan22_tier: Tier,
              wan22_models: ModelSet | None) -> Callable[..., VariantResult]:
    """Run a Variant (warm-up + timed rounds, fresh seed each) and fail the test on OOM, error, VRAM over
    budget, offload, or a slowdown against the stored baseline."""
    config = request.config
    state = _state(config)
    s = state.settings
    marker = request.node.get_closest_marker("wan22_budget")

    def run(variant: Variant, *, rounds: int | None = None, warmup_rounds: int | None = None,
            budget_gib: float | None = None, allow_offload: bool | None = None) -> VariantResult:
        v = adapt(variant, wan22_tier, wan22_models)
        variant_id = variant.variant_id
        prompt = v.seed(0).build()
        if not wan22_server.object_info:
            wan22_server.object_info = wan22_client.object_info()
        problems = preflight.check(prompt, wan22_server.object_info)
        if problems:
            text = f"{variant_id} cannot run on this server:\n{preflight.format_problems(problems)}"
            if s.missing == "skip":
                pytest.skip(text)
            pytest.fail(text + "\n(--wan22-missing=skip skips such variants instead)", pytrace=False)
        ctx = RunContext(
            client=wan22_client, tier=wan22_tier.name,
            timeout=s.run_timeout or wan22_tier.run_timeout_s, environment=wan22_server.environment,
            is_alive=wan22_server.alive, log_size=wan22_server.handle.log_size,
            log_since=wan22_server.handle.log_since, output_dir=wan22_server.output_dir,
            monitor=_vram_monitor(state, wan22_server, s.vram_interval))
        from .runner import ensure_input_images

        ensure_input_images(ctx, prompt, v.image_size())
        n_warm = s.warmup_rounds if warmup_rounds is None else warmup_rounds
        n_timed = s.rounds if rounds is None else rounds
        records: list[RunRecord] = []
        for i in range(n_warm + n_timed):
            seed = fresh_seed()
            record = run_prompt(ctx, v.seed(seed).build(), variant_id=variant_id, workflow=variant.workflow.name,
                                seed=seed, round_index=i, warmup=i < n_warm)
            records.append(record)
            state.records.append(record)
            config.hook.pytest_wan22_run_finished(config=config, record=record)
            if not record.ok:
                pytest.fail(f"{variant_id} round {i}: {record.outcome}: {record.message}", pytrace=False)
        summary = summarise(variant_id, records, variant.digest)
        _check_vram(records, variant_id, wan22_tier, budget_gib if budget_gib is not None else
                    (marker.args[0] if marker else None), allow_offload)
        verdict = _judge(config, state, wan22_tier, variant.workflow.name, summary, wan22_server.environment)
        return VariantResult(tuple(records), summary, verdict)

    return run


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
