"""Fixtures: the server for the session, a client per test, and `wan22_run`, which runs and judges a variant.

The work is done below the pytest layer (servers.py, rounds.py); here its errors.Fail and errors.Skip become
pytest's failure and skip, and pytest's hooks become the callables it takes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest

from . import benchmarking
from .client import ComfyClient
from .collect import CASE_KEY
from .errors import Fail, Skip, Wan22Error
from .rounds import FirstRounds, Gate, RoundPlan, VariantResult, empty_queue, judge, run_variant
from .servers import Server, ServerPool, SyntheticModels, synthetic_models
from .settings import Settings
from .stash import state_of
from .tiers import Profile, Tier, make_profile
from .tune import Tuner, tune_sides
from .workflows import Variant, Workflow, load_workflow

if TYPE_CHECKING:
    from .gpu import DeviceInfo
    from .session import State

__all__ = ["Server", "ServerPool", "SyntheticModels", "VariantResult", "Workflows", "fail_now", "outcomes"]


def fail_now(message: str, *, pytrace: bool = False) -> NoReturn:
    """pytest.fail for use inside an except block: without the exception being handled chained to it, which
    pytest would print first, then "During handling of the above exception, another exception occurred", then
    the same message again."""
    raise pytest.fail.Exception(message, pytrace=pytrace) from None


@contextlib.contextmanager
def outcomes() -> Iterator[None]:
    """errors.Fail and errors.Skip from below the pytest layer as pytest's failure (no traceback) and skip."""
    try:
        yield
    except Skip as exc:
        raise pytest.skip.Exception(exc.reason) from None
    except Fail as exc:
        fail_now(exc.message)


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
    """ComfyUI's launch arguments and environment for this tier (the user's --wan22-server-args and a test's own
    flags are added at each launch: servers.launch_command); override it in a conftest to try others."""
    s = _state(pytestconfig).settings
    gpu = None
    if wan22_device is not None and (s.gpu_index is not None or os.environ.get("PYTEST_XDIST_WORKER")
                                     or "CUDA_VISIBLE_DEVICES" not in os.environ):
        gpu = wan22_device.uuid or str(wan22_device.index)
    try:
        return make_profile(
            wan22_tier, gpu=gpu,
            device_name=wan22_device.name if wan22_device else None,
            device_memory_mib=wan22_device.memory_total_mib if wan22_device else None,
            emulate=s.emulate_tier is not None)
    except Wan22Error as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.fixture(scope="session")
def wan22_models(wan22_settings: Settings, wan22_tier: Tier) -> SyntheticModels | None:
    """The synthetic model set this session runs on, generated once and kept (None: the user's models)."""
    with outcomes():
        return synthetic_models(wan22_settings, wan22_tier)


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


class _Servers(ServerPool):
    """The pool as tests see it: a server that cannot start fails or skips the test that asked for it."""

    def get(self, extra: tuple[str, ...] = (), side: str | None = None) -> Server:
        """The running server of a side for these extra flags: launched when needed, started again if it died."""
        with outcomes():
            return super().get(extra, side)


def _follow(state: State) -> Callable[[ServerPool, Server | None], None]:
    """Keep the session's State on the pool's servers: the one the log tail and the summary speak of."""

    def changed(pool: ServerPool, launched: Server | None) -> None:
        if launched is None:
            state.server = None
            return
        state.server = pool.current or launched
        state.machine = state.machine or launched.environment
        state.server_start_s += launched.start_s

    return changed


@pytest.fixture(scope="session")
def wan22_servers(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory, wan22_profile: Profile,
                  wan22_models: SyntheticModels | None, wan22_device: DeviceInfo | None
                  ) -> Generator[ServerPool, None, None]:
    """The session's ComfyUI launcher: `.get(extra_flags)` gives the running server for a profile variation."""
    config = pytestconfig
    state = _state(config)

    def launch_hook(tier: Tier, args: list[str], env: dict[str, str]) -> None:
        config.hook.pytest_wan22_server_command(config=config, tier=tier, args=args, env=env)

    pool = _Servers(state.settings, wan22_profile, _work_dir(config, tmp_path_factory), wan22_models, wan22_device,
                    launch_hook=launch_hook, on_change=_follow(state))
    try:
        yield pool
    finally:
        pool.stop()


@pytest.fixture(scope="session")
def wan22_tuner(pytestconfig: pytest.Config, wan22_servers: ServerPool, wan22_profile: Profile, wan22_tier: Tier,
                wan22_models: SyntheticModels | None) -> Generator[Tuner, None, None]:
    """--wan22-tune: the session's tuner, with a pool of its own (side A the incumbent profile, side B the
    candidate) launched like the session's servers; it stops them at the end."""
    config = pytestconfig
    state = _state(config)
    base = wan22_servers
    base.stop()  # the tuner's sides are the only servers on the card
    pool = ServerPool(state.settings, wan22_profile, base.work / "tune", wan22_models, base.device,
                      launch_hook=base.launch_hook, on_change=base.on_change, sides=tune_sides(state.settings))

    def run_finished(record: Any) -> None:
        config.hook.pytest_wan22_run_finished(config=config, record=record)

    gate = Gate(state, pool, wan22_tier, wan22_models, run_finished=run_finished)
    state.tuner = Tuner(gate, wan22_profile, RoundPlan.of(state.settings))
    try:
        yield state.tuner
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
        empty_queue(client)
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
    marker = request.node.get_closest_marker("wan22_budget")
    if state.settings.tune:
        return _tuned_run(request, marker)
    # Every test gets a server that is alive: the default one is restarted here if it died.
    request.getfixturevalue("wan22_server")
    benchmarked: list[str] = []

    def run_finished(record: Any) -> None:
        config.hook.pytest_wan22_run_finished(config=config, record=record)

    def compare(summary: Any, baseline: Any) -> Any:
        return config.hook.pytest_wan22_compare(config=config, summary=summary, baseline=baseline)

    gate = Gate(state, wan22_servers, wan22_tier, wan22_models, run_finished=run_finished, compare=compare)

    def run(variant: Variant, *, rounds: int | None = None, warmup_rounds: int | None = None,
            budget_gib: float | None = None, allow_offload: bool | None = None,
            server_args: tuple[str, ...] = ()) -> VariantResult:
        bench: list[Any] = []

        def first_rounds() -> FirstRounds | None:  # asked only once rounds start: an unused fixture is a warning
            found = benchmarking.fixture_for(request) if not benchmarked else None
            if found is None:
                return None
            benchmarked.append(variant.variant_id)
            bench.append(found)
            return lambda one_round, timed, warmups: benchmarking.run_rounds(found, one_round, timed, warmups)

        with outcomes():
            ran = run_variant(gate, variant, RoundPlan.of(state.settings, rounds, warmup_rounds),
                              server_args=tuple(server_args), test_id=request.node.nodeid,
                              as_written=request.node.stash.get(CASE_KEY, None) is not None,
                              first_rounds=first_rounds)
            if bench:
                benchmarking.describe(bench[0], ran.summary, wan22_tier.name)
            judge(gate, ran, budget_gib if budget_gib is not None else (marker.args[0] if marker else None),
                  allow_offload)
        return ran.result

    return run


def _tuned_run(request: pytest.FixtureRequest, marker: pytest.Mark | None) -> Callable[..., VariantResult]:
    """wan22_run under --wan22-tune: the variant tunes the profile (or is skipped where a variant of its class of
    work already did); returns the incumbent profile's rounds."""
    tuner: Tuner = request.getfixturevalue("wan22_tuner")

    def run(variant: Variant, *, rounds: int | None = None, warmup_rounds: int | None = None,
            budget_gib: float | None = None, allow_offload: bool | None = None,
            server_args: tuple[str, ...] = ()) -> VariantResult:
        with outcomes():
            return tuner.tune(variant, test_id=request.node.nodeid, server_args=tuple(server_args),
                              budget_gib=budget_gib if budget_gib is not None else (
                                  marker.args[0] if marker else None), allow_offload=allow_offload)

    return run
