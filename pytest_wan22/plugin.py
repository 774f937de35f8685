"""The pytest layer: options, markers, tier detection and skips, log sections, the summary (state: session.py)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Generator, Mapping
from pathlib import Path
from typing import Any

import pytest

from . import hookspecs
from ._xdist import pytest_xdist_auto_num_workers  # noqa: F401 - found through this module, before configure
from .baselines import BaselineStore
from .collect import CASE_KEY
from .errors import BaselineError, NvmlUnavailable, Wan22Error
from .fixtures import (  # noqa: F401 - fixtures are found through this module
    wan22_client,
    wan22_device,
    wan22_models,
    wan22_profile,
    wan22_run,
    wan22_server,
    wan22_servers,
    wan22_settings,
    wan22_tier,
    wan22_tuner,
    wan22_workflows,
)
from .gpu import disable_accounting, enable_accounting, load_backend, probe, vram_source
from .interpreter import portable_build
from .launcher import tail
from .options import OPTIONS
from .progress import Progress, choose_mode
from .records import Environment, RunRecord
from .report import TestOutcome, cost, first_line, render, tune_summary
from .runs import KEEP, session_dir
from .session import (  # noqa: F401 - State and the writers are part of the plugin's API
    State,
    finish_tuning,
    merge_worker_output,
    session_tests,
    worker_output,
    write_baselines,
    write_report,
)
from .settings import Settings, check_before_start, resolve
from .stash import ACCOUNTING_KEY, STATE_KEY, state_of
from .tiers import Tier, cpu_tier, detect_tier, item_tiers, marker_lines, platform_settings, skip_hint

FIXTURES = frozenset({"wan22_client", "wan22_device", "wan22_models", "wan22_profile", "wan22_run", "wan22_server",
                      "wan22_servers", "wan22_settings", "wan22_tier", "wan22_tuner", "wan22_workflows"})

def tier_table(config: pytest.Config) -> Mapping[str, Tier]:
    """The tier table this session resolved (the shipped rows and those of --wan22-tiers-file): what a suite
    parametrizes from at collection, in its pytest_generate_tests (suites/test_wan22_i2v.py)."""
    return state_of(config).settings.tiers


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)
    from . import collect  # --wan22-workflows: user workflow files as tests

    pluginmanager.register(collect, "wan22-collect")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wan22", "Wan 2.2 image-to-video gate (pytest-wan22)")
    for opt in OPTIONS:
        default = f"default {opt.default}; " if opt.default not in (None, "", False) else ""
        text = f"{opt.help} [{default}env {opt.env}, ini {opt.dest}]".replace("%", "%%")
        if opt.flag:
            group.addoption(opt.cli, dest=opt.dest, action="store_true", default=None, help=text)
        else:
            group.addoption(opt.cli, dest=opt.dest, action="append" if opt.multiple else "store",
                            type=opt.argparse_type(), default=None, metavar=opt.metavar, help=text)
        if opt.multiple:
            parser.addini(opt.dest, opt.help, type="linelist", default=[])
        else:
            parser.addini(opt.dest, opt.help, type="string", default="")


def _worker_index() -> int | None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def _xdist_workers(config: pytest.Config) -> int:
    """How many xdist workers this process starts: 0 in a worker or without -n."""
    n = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not isinstance(n, int):
        return 0
    most = getattr(config.option, "maxprocesses", None)
    return min(n, most) if isinstance(most, int) and most > 0 else n


def _detect(config: pytest.Config, settings: Settings) -> State:
    nvml = config.hook.pytest_wan22_nvml_backend(config=config)
    reason = ""
    if nvml is None:
        try:
            nvml = load_backend()
        except NvmlUnavailable as exc:
            reason = str(exc)
    device = None
    if nvml is not None:
        index = settings.gpu_index if settings.gpu_index is not None else (_worker_index() or 0)
        try:
            count = nvml.device_count()
            workers = _xdist_workers(config)
            if count and settings.gpu_index is None and workers > count:
                raise pytest.UsageError(
                    f"-n {workers} starts {workers} xdist workers, one GPU each, but this machine has {count} "
                    f"GPU(s); run at most {count} xdist workers (-n {count} or -n auto), or put every worker on "
                    "one GPU with --wan22-gpu-index")
            if count and index >= count:
                raise pytest.UsageError(
                    f"GPU index {index} does not exist: this machine has {count} GPU(s). Run at most {count} "
                    "xdist workers (-n), or fix --wan22-gpu-index")
            device = probe(nvml, index) if count else None
            reason = "" if count else "NVML sees no GPU"
        except Wan22Error as exc:
            reason = str(exc)
        if device is not None and settings.nvml_accounting:
            try:  # opt-in: changes a device setting, so only ever on the user's explicit request
                if not enable_accounting(nvml, nvml.handle(device.index)):
                    config.stash[ACCOUNTING_KEY] = device.index  # switched on by us: switched off at the end
            except Wan22Error as exc:
                raise pytest.UsageError(f"--wan22-nvml-accounting: {exc}") from None
    tiers = settings.tiers
    if settings.emulate_tier:
        on = device.name if device else "no GPU"
        return State(settings, tiers[settings.emulate_tier], f"{settings.emulate_tier} emulated on {on}",
                     device, nvml, reason)
    if settings.tier:
        on = f"{device.name}, {device.memory_total_mib:.0f} MiB" if device else "no GPU found"
        return State(settings, tiers[settings.tier], f"{settings.tier} (forced by --wan22-tier; {on})", device,
                     nvml, reason)
    if device is None:
        name = cpu_tier(tiers)
        why = "NVML is unavailable" if nvml is None else "NVML sees no GPU"
        return State(settings, tiers[name] if name else None, f"{name or 'no tier'} (no GPU: {why})", None, nvml,
                     reason)
    found = config.hook.pytest_wan22_detect_tier(config=config, device_name=device.name,
                                                 memory_mib=device.memory_total_mib)
    found = found or detect_tier(tiers, device.name, device.memory_total_mib)
    desc = f"{device.name}, {device.memory_total_mib:.0f} MiB"
    if found is None:
        return State(settings, None, f"{desc}, which matches no tier", device, nvml, reason)
    return State(settings, tiers[found], f"{found} ({desc})", device, nvml, reason)


def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = resolve(config.rootpath, lambda o: config.getoption(o.dest),
                           lambda o: config.getini(o.dest))
    except Wan22Error as exc:
        raise pytest.UsageError(str(exc)) from None
    for line in marker_lines(settings.tiers):
        config.addinivalue_line("markers", line)
    config.addinivalue_line("markers", "wan22_budget(gib): peak-VRAM budget for this test's variants, "
                            "instead of the tier table's")
    if settings.tune and _xdist_workers(config):
        raise pytest.UsageError("--wan22-tune runs its A/Bs one after another on one GPU: drop -n (xdist)")
    state = config.stash[STATE_KEY] = _detect(config, settings)
    state.run_dir = _run_dir(config, settings)
    if not hasattr(config, "workerinput") and _runs_tests(config):
        _check_session(settings)  # once, on the controller, before anything is collected or launched
    if state.tier is not None and not hasattr(config, "workerinput"):  # once, before any ComfyUI starts
        try:
            state.baseline_notes = BaselineStore(settings.baselines_dir).check(state.tier.name,
                                                                              settings.update_baselines)
        except BaselineError as exc:
            raise pytest.UsageError(str(exc)) from None
    state.progress = _progress(config, settings)
    config.pluginmanager.register(TestOutcomes(config), "wan22-outcomes")
    if config.pluginmanager.hasplugin("benchmark"):
        from .benchmarking import BenchmarkHooks

        config.pluginmanager.register(BenchmarkHooks(lambda: _machine_info(config)), "wan22-benchmark")
    if config.pluginmanager.hasplugin("xdist"):
        from ._xdist import XdistHooks

        config.pluginmanager.register(XdistHooks(), "wan22-xdist")
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _terminate)


def _runs_tests(config: pytest.Config) -> bool:
    """False for --help, --collect-only, --markers and --fixtures: nothing is launched or written then."""
    return not any(getattr(config.option, name, False) for name in (
        "help", "collectonly", "markers", "showfixtures", "show_fixtures_per_test"))


def _run_dir(config: pytest.Config, settings: Settings) -> Path:
    """Where this session's server logs and run records go: --wan22-log-dir, else a folder of its own under
    <rootdir>/.wan22/runs (named on the controller and handed to xdist workers)."""
    if settings.log_dir is not None:
        return settings.log_dir
    given = getattr(config, "workerinput", {}).get("wan22_run_dir")
    return Path(given) if given else session_dir(settings.rootdir)


def _check_session(settings: Settings) -> None:
    """A problem that would fail every test (interpreter, port, report or log folder) stops the session here,
    with one message."""
    try:
        check_before_start(settings)
    except Wan22Error as exc:
        raise pytest.UsageError(str(exc)) from None


# ---------------------------------------------------------------- live progress (progress.py does the work)

class _Terminal:
    """The real terminal for progress: a copy of stdout's descriptor taken during configure, before pytest
    captures the tests' output, so writes from a run (and the redraw thread) never land in a captured stream."""

    def __init__(self, config: pytest.Config, fd: int) -> None:
        self.config = config
        self.fd = fd
        self.file = os.fdopen(fd, "w", encoding="utf-8", errors="replace")

    def write(self, text: str) -> None:
        self.file.write(text)
        self.file.flush()

    def column(self) -> int:
        return self.config.get_terminal_writer().width_of_current_line

    def width(self) -> int:  # asked of our descriptor: during a test, pytest's stdout is a capture file
        try:
            return os.get_terminal_size(self.fd).columns or 80
        except OSError:
            return self.config.get_terminal_writer().fullwidth

    def close(self) -> None:
        self.file.close()


def _progress(config: pytest.Config, settings: Settings) -> Progress:
    worker = hasattr(config, "workerinput")
    try:
        fd = os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no real stdout (an in-process run): no progress
        return Progress(None)
    mode = choose_mode(settings.progress, isatty=os.isatty(fd), verbosity=config.get_verbosity(),
                       xdist_worker=worker, dumb=os.environ.get("TERM") == "dumb")
    if mode == "off":
        os.close(fd)
        return Progress(None)
    return Progress(_Terminal(config, fd), mode, interval=settings.progress_interval if mode == "lines" else None)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    state = state_of(item.config)
    state.progress.test_started()  # pytest has written this test's line (or path)
    server = state.server
    if server is not None and server.handle.log_path is not None:  # what the log holds before this test
        state.log_marks[item.nodeid] = (server.handle.log_path, server.handle.log_size())


def pytest_wan22_run_finished(config: pytest.Config, record: RunRecord) -> None:
    state_of(config).progress.finished(record)

# ---------------------------------------------------------------- end of live progress


def _machine_info(config: pytest.Config) -> dict[str, Any]:
    state = state_of(config)
    m = state.machine or Environment()
    return {"tier": state.tier.name if state.tier else None, "gpu_name": m.gpu_name or (
            state.device.name if state.device else None), "gpu_memory_mib": m.gpu_memory_mib, "driver": m.driver,
            "cuda": m.cuda, "torch": m.torch, "comfyui": m.comfyui, "models": m.models, "profile": m.profile}


def _terminate(signum: int, frame: Any) -> None:
    """Turn SIGTERM into KeyboardInterrupt so fixtures tear down and ComfyUI is stopped."""
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_report_header(config: pytest.Config) -> list[str]:
    state = state_of(config)
    s = state.settings
    where = f"attach {s.url}" if s.attach else f"launch {s.comfyui_dir or '(no --wan22-comfyui-dir)'}"
    lines = [f"wan22: tier {state.detection}; ComfyUI: {where}"]
    if not s.attach and s.comfyui_dir is not None:
        lines.append(f"wan22: ComfyUI's interpreter: {s.python} ({s.python_why})")
        if portable_build(s.comfyui_dir, s.python):
            lines.append("wan22: the Windows portable build: ComfyUI starts as its run_nvidia_gpu.bat starts it, "
                         "with python_embeded\\python.exe -s and --windows-standalone-build")
        if s.ab is not None and s.ab.python != s.python:
            lines.append(f"wan22: side A's interpreter: {s.ab.python} ({s.ab.python_why})")
    if state.run_dir is not None:
        kept = "" if s.log_dir is not None else f" (the last {KEEP} sessions are kept; --wan22-log-dir to choose)"
        lines.append(f"wan22: server logs and run records: {state.run_dir}{kept}")
    tier = state.tier
    scale = tier.scale_text() if tier else None
    if tier and scale:
        lines.append(f"wan22: the {tier.name} tier runs every variant scaled to {scale}; test ids and baseline keys "
                     "name the variant as written")
    if tier and not s.attach:
        lines.extend(f"wan22: {note}" for note in platform_settings(tier)[2])
    if s.attach:
        lines.append("wan22: attached: no server log, so offloads, model swaps, OOM retries and recompiles are not "
                     "seen; VRAM is measured per process when the server runs on this machine, else device-wide")
    if state.nvml is None and (config.option.verbose > 0 or (state.tier and state.tier.is_gpu)):
        lines.append(f"wan22: VRAM not measured: {state.nvml_reason}")
    elif state.nvml is not None and state.device is not None:
        lines.append(f"wan22: {vram_source(state.device)}")
    lines.extend(f"wan22: {note}" for note in state.baseline_notes)
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    state = state_of(config)
    active = state.tier.name if state.tier else None
    for item in items:
        wanted = item_tiers((m.name for m in item.iter_markers()), state.settings.tiers)
        if wanted and active not in wanted:
            hint = skip_hint(state.settings.tiers, wanted,
                             state.device.memory_total_mib if state.device is not None else None)
            item.add_marker(pytest.mark.skip(
                reason=f"needs tier {', '.join(sorted(wanted))}; this machine is {state.detection}: {hint}"))


# ---------------------------------------------------------------- every test's outcome, for the summary and report

def _wan22_test(item: pytest.Item) -> dict[str, Any] | None:
    """What the summary keeps of a test of the gate (one that uses a wan22 fixture, carries a tier marker or
    comes from --wan22-workflows): its workflow file and the variants it ran. None for other tests."""
    state = state_of(item.config)
    case = item.stash.get(CASE_KEY, None)
    if case is None and not FIXTURES.intersection(getattr(item, "fixturenames", ())) and not any(
            m.name in state.settings.tiers for m in item.iter_markers()):
        return None
    where = ""
    if case is not None:
        try:
            where = case.path.relative_to(item.config.rootpath).as_posix()
        except ValueError:
            where = case.path.as_posix()
    return {"workflow_file": where, "variants": [list(v) for v in state.test_variants.get(item.nodeid, ())]}


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Tests that need ComfyUI with none given stop the session here, once; otherwise every test of the gate
    starts as 'not run': one that an interrupted session never reached stays so."""
    state = state_of(session.config)
    if session.config.option.collectonly:
        return
    _check_comfyui_given(session, state.settings)
    for item in session.items:
        info = _wan22_test(item)
        if info is not None:
            state.tests[item.nodeid] = TestOutcome(item.nodeid, "not run", workflow_file=info["workflow_file"])


def _reason(report: pytest.TestReport) -> str:
    """A report's reason in one line: the skip reason, or the failure's first line."""
    if report.skipped:
        if getattr(report, "wasxfail", ""):
            return f"xfail: {report.wasxfail}"
        longrepr = report.longrepr
        text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        return first_line(text.removeprefix("Skipped: "))
    crash = getattr(report.longrepr, "reprcrash", None)
    text = str(getattr(crash, "message", "") or "") or report.longreprtext
    return first_line(text.removeprefix("Failed: "))


def outcome_of(report: pytest.TestReport, before: TestOutcome | None) -> TestOutcome:
    """A test's outcome after one more of its reports (setup, call, teardown) came in."""
    info = getattr(report, "wan22_test", None) or {}
    variants = tuple((str(w), str(k)) for w, k in info.get("variants", ()))
    old = before or TestOutcome(report.nodeid, "not run")
    outcome, reason = old.outcome, old.reason
    if report.when == "setup":
        if report.passed:  # what the call reports replaces this; without a call the session was interrupted
            outcome, reason = "interrupted", "the session was interrupted while it ran"
        else:
            outcome = "skipped" if report.skipped else "error"
            reason = _reason(report) if report.skipped else f"error in setup: {_reason(report)}"
    elif report.when == "call":
        outcome = "skipped" if report.skipped else "failed" if report.failed else "passed"
        reason = _reason(report) if not report.passed else ""
    elif report.failed and outcome not in ("failed", "error"):
        outcome, reason = "error", f"error in teardown: {_reason(report)}"
    return TestOutcome(report.nodeid, outcome, reason, variants or old.variants,
                       str(info.get("workflow_file", "")) or old.workflow_file)


class TestOutcomes:
    """Gathers every test's outcome into the session's State (under xdist the controller gets the workers'
    reports through the same hook)."""

    __test__ = False

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if getattr(report, "wan22_test", None) is None:
            return
        state = state_of(self.config)
        state.tests[report.nodeid] = outcome_of(report, state.tests.get(report.nodeid))


_SERVER_FIXTURES = ("wan22_server", "wan22_servers", "wan22_run", "wan22_client")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield
    info = _wan22_test(item)
    if info is not None:  # an attribute, so that xdist carries it to the controller with the report
        report.wan22_test = info
    uses_server = any(n in _SERVER_FIXTURES for n in getattr(item, "fixturenames", ()))
    if report.failed and uses_server:
        text = _log_of_this_test(state_of(item.config), item.nodeid)
        if text:
            report.sections.append(("ComfyUI log (last lines)", text))
    if report.when == "teardown":
        state_of(item.config).log_marks.pop(item.nodeid, None)
    return report


def _log_of_this_test(state: State, nodeid: str, lines: int = 40) -> str:
    """The last lines the server logged during this test (since its setup, or since its launch when this test
    launched it): '' when it logged nothing, so a failure found before any run carries no earlier test's log."""
    server = state.server
    path = server.handle.log_path if server is not None else None
    if path is None or not path.is_file():
        return ""
    mark = state.log_marks.get(nodeid)
    offset = mark[1] if mark is not None and mark[0] == path else server.log_start
    return tail(path, lines, since=offset).strip("\n")


def _check_comfyui_given(session: pytest.Session, s: Settings) -> None:
    """No ComfyUI to run while tests that need one are selected: one usage error, before any test runs."""
    if s.attach or s.comfyui_dir is not None or hasattr(session.config, "workerinput"):
        return
    needs = [item for item in session.items if item.get_closest_marker("skip") is None and any(
        n in _SERVER_FIXTURES for n in getattr(item, "fixturenames", ()))]
    if needs:
        raise pytest.UsageError(
            f"{len(needs)} selected test(s) need ComfyUI (the first: {needs[0].nodeid}), but none is given: pass "
            "--wan22-comfyui-dir DIR (ini wan22_comfyui_dir, env WAN22_COMFYUI_DIR), the folder that holds "
            "ComfyUI's main.py, or attach to a running one with --wan22-url")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = state_of(config)
    if state.settings.tune and state.tune is None and not config.option.collectonly:
        terminalreporter.write_line("wan22: --wan22-tune: no test ran a variant through wan22_run, so nothing was "
                                    "tuned and no tier row was written")
    if not (state.records or state.tests):
        if state.report_error:
            terminalreporter.write_line(f"wan22: report not written: {state.report_error}")
        if state.run_dir is not None and state.run_dir.is_dir():
            terminalreporter.write_line(f"wan22: server logs and run records in {state.run_dir}")
        return
    terminalreporter.write_sep("=", "wan22 runs")
    terminalreporter.write_line(render(state.records, state.verdicts, config.get_verbosity(),
                                       tests=session_tests(state), ab=state.settings.ab is not None
                                       or state.settings.tune, tolerances=state.settings.tolerances_for(state.tier)))
    if state.tune is not None:
        terminalreporter.write_sep("=", "wan22 tuning")
        for line in tune_summary(state.tune):
            terminalreporter.write_line(line)
    unjudged = [k for k, v in state.verdicts.items()
                if any(getattr(c, "status", "") == "recorded" for c in getattr(v, "checks", ()))]
    if unjudged and state.tier is not None:
        why = "" if state.tier.is_gpu else " (a shared CPU's rounds swing by more than any tolerance)"
        terminalreporter.write_line(
            f"wan22: timings recorded, not judged on the {state.tier.name} tier ({len(unjudged)} variant"
            f"{'s' if len(unjudged) != 1 else ''}): its row sets judge_timings = false{why}; OOM, fit, outputs, "
            "the graph and vram are judged. Set judge_timings = true in your tier table (--wan22-tiers-file) "
            "to judge them")
    if state.records:
        for line in cost(state.records, state.server_start_s, state.skipped_warmups, state.synth_notes):
            terminalreporter.write_line(line)
    scales = sorted({r.environment.scale for r in state.records if r.environment.scale})
    if scales:
        terminalreporter.write_line(f"wan22: scaled to {'; '.join(scales)} by the tier; the ids above name the "
                                    "variants as written")
    if state.settings.update_baselines and state.summaries:
        terminalreporter.write_line(f"wan22: baselines written under {state.settings.baselines_dir}")
        for note in state.written_notes:
            terminalreporter.write_line(f"wan22: {note}")
    if state.run_dir is not None and state.run_dir.is_dir():
        terminalreporter.write_line(f"wan22: server logs and run records in {state.run_dir}")
    if state.report_path is not None:
        terminalreporter.write_line(f"wan22: report written to {state.report_path}")
    if state.report_error:
        terminalreporter.write_line(f"wan22: report not written: {state.report_error}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = state_of(config)
    if state.server is not None:
        state.server.stop()
    index = config.stash.get(ACCOUNTING_KEY, None)
    if index is not None and state.nvml is not None:
        disable_accounting(state.nvml, state.nvml.handle(index))
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: hand results to the controller
        workeroutput["wan22"] = worker_output(state)
        return
    write_baselines(state)
    finish_tuning(state)
    write_report(state)


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(STATE_KEY, None)
    terminal = state.progress.terminal if state is not None else None
    if isinstance(terminal, _Terminal):
        with contextlib.suppress(OSError):
            terminal.close()
    if state is not None and state.nvml is not None:
        with contextlib.suppress(Exception):  # best effort: the session is over either way
            state.nvml.shutdown()
