"""The rounds of a variant (rounds.py) in process, on fake servers (tests/fakes/fake_servers.py): the stop rule,
A/B interleaved or in blocks, the warm-up skip, a baseline from another GPU, version changes, a failing side."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.baselines import BaselineStore
from pytest_wan22.client import Release
from pytest_wan22.compare import Check, Verdict, summarise
from pytest_wan22.errors import Fail, Skip
from pytest_wan22.gpu import DeviceInfo, VramMonitor
from pytest_wan22.records import Environment, Neighbour, RunRecord, VramReport
from pytest_wan22.rounds import Gate, Ran, RoundPlan, adapt, baseline_key, check_graph, judge, run_variant, warm_shape
from pytest_wan22.servers import ServerPool, SyntheticModels
from pytest_wan22.session import State
from pytest_wan22.settings import Settings, Side
from pytest_wan22.synth import model_set
from pytest_wan22.tiers import load_tiers, make_profile
from pytest_wan22.workflows import Variant, load_workflow
from tests.fakes.fake_nvml import FakeNvml, FakeProcess
from tests.fakes.fake_servers import FakeBox, FakeWorld

REPO = Path(__file__).resolve().parents[2]
TIERS = load_tiers()
TIER = TIERS["rtx5090"]
BASE = Variant(load_workflow(REPO / "workflows" / "wan22_i2v_a14b.json")).schedule("lightx2v_4step").duration(5)
DEVICE = DeviceInfo(0, "NVIDIA GeForce RTX 5090", "GPU-5090-0", "00000000:01:00.0", 32607, "580.95.05", "13.0")
MACHINE = Environment(gpu_name=DEVICE.name, gpu_uuid=DEVICE.uuid, gpu_memory_mib=DEVICE.memory_total_mib,
                      driver=DEVICE.driver, cuda=DEVICE.cuda, torch="2.9.1+cu128", comfyui="0.8.0", python="3.12.3",
                      models="user")


def _gate(tmp_path: Path, world: FakeWorld, *, nvml: Any = None, ab: bool = False, **options: Any) -> Gate:
    for name in ("comfy", "current"):
        (tmp_path / name).mkdir(parents=True, exist_ok=True)
    settings = Settings(rootdir=tmp_path, tiers=TIERS, comfyui_dir=tmp_path / "comfy",
                        baselines_dir=tmp_path / "baselines",
                        ab=Side(tmp_path / "current", "python", (), name="A") if ab else None, **options)
    state = State(settings, TIER, "rtx5090 (test)", device=DEVICE, nvml=nvml)
    pool = ServerPool(settings, make_profile(TIER), tmp_path / "work", None, DEVICE, launcher=world.launcher,
                      client=world.client)
    return Gate(state, pool, TIER, run_prompt=world.run_prompt)


def _run(gate: Gate, world: FakeWorld, variant: Variant = BASE, **plan: Any) -> Ran:
    world.provide([variant.build()])
    return run_variant(gate, variant, RoundPlan.of(gate.state.settings, **plan))


def _store(gate: Gate, walls: Sequence[float], machine: Environment = MACHINE, variant: Variant = BASE) -> None:
    """A stored baseline of these timed rounds' wall times, recorded on `machine`."""
    key = baseline_key(variant.variant_id, ())
    records = [RunRecord(key, variant.workflow.name, TIER.name, "success", round=i + 1, wall_s=w,
                         vram=VramReport(True, peak_process_mib=6000.0), environment=machine)
               for i, w in enumerate(walls)]
    BaselineStore(gate.state.settings.baselines_dir).update(
        TIER.name, variant.workflow.name, machine, {key: summarise(key, records, variant.digest)})


def _timed(world: FakeWorld) -> int:
    return sum(1 for _, warmup in world.timeline if not warmup)


# --------------------------------------------------------------------------- the stop rule

UNDECIDED = Verdict("v", "inconclusive", (Check("wall", "inconclusive"),))
DECIDED = Verdict("v", "ok", (Check("wall", "ok"),))


def _asked(verdict: Verdict | None) -> tuple[list[int], Callable[[], Verdict | None]]:
    asked: list[int] = []

    def now() -> Verdict | None:
        asked.append(1)
        return verdict

    return asked, now


def test_below_the_fewest_rounds_another_runs_without_asking_the_verdict() -> None:
    plan = RoundPlan(warmups=1, fewest=3, most=10)
    asked, now = _asked(DECIDED)
    assert [plan.more(done, now) for done in range(3)] == [True, True, True]
    assert asked == []
    assert plan.more(3, now) is False  # decided at the fewest: no more


def test_at_the_most_rounds_none_runs_whatever_the_verdict() -> None:
    plan = RoundPlan(warmups=1, fewest=3, most=5)
    asked, now = _asked(UNDECIDED)
    assert plan.more(5, now) is False
    assert plan.more(6, now) is False
    assert asked == []


def test_a_verdict_decided_between_the_fewest_and_the_most_stops_the_rounds() -> None:
    plan = RoundPlan(warmups=1, fewest=2, most=10)
    verdicts = iter([UNDECIDED, UNDECIDED, DECIDED])
    done = 0
    while plan.more(done, lambda: next(verdicts)):
        done += 1
    assert done == 4  # undecided after 2 and 3, decided after 4


def test_an_inconclusive_verdict_runs_to_the_most_rounds() -> None:
    plan = RoundPlan(warmups=1, fewest=2, most=7)
    done = 0
    while plan.more(done, lambda: UNDECIDED):
        done += 1
    assert done == 7


def test_nothing_to_judge_against_stops_at_the_fewest() -> None:
    assert RoundPlan(warmups=1, fewest=2, most=7).more(2, lambda: None) is False


def test_the_plan_of_a_session_and_of_a_test(tmp_path: Path) -> None:
    s = Settings(rootdir=tmp_path, tiers=TIERS, rounds=8, min_rounds=2, warmup_rounds=1)
    assert RoundPlan.of(s) == RoundPlan(warmups=1, fewest=2, most=8)
    assert RoundPlan.of(s, rounds=4, warmup_rounds=0) == RoundPlan(warmups=0, fewest=4, most=4, warmups_asked=True)
    recording = Settings(rootdir=tmp_path, tiers=TIERS, rounds=8, min_rounds=2, update_baselines=True)
    assert RoundPlan.of(recording) == RoundPlan(warmups=1, fewest=8, most=8)


def test_rounds_against_a_baseline_stop_once_decided_and_run_to_the_most_while_inconclusive(
        tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=8, min_rounds=3)
    _store(gate, [10.0] * 8)
    ran = _run(gate, world)
    assert _timed(world) == 3  # as fast as the baseline, to the millisecond: decided at the fewest
    assert ran.verdict.status == "ok"

    noisy = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: (6.0, 14.0)[i % 2]))
    gate = _gate(tmp_path, noisy, rounds=8, min_rounds=3)
    _run(gate, noisy)
    assert _timed(noisy) == 8


def test_without_a_baseline_the_fewest_rounds_run(tmp_path: Path) -> None:
    world = FakeWorld()
    _run(_gate(tmp_path, world, rounds=8, min_rounds=2), world)
    assert world.timeline == [("work", True), ("work", False), ("work", False)]


# --------------------------------------------------------------------------- A/B

def test_ab_sides_that_fit_together_run_interleaved(tmp_path: Path) -> None:
    world = FakeWorld()
    ran = _run(_gate(tmp_path, world, ab=True, rounds=3, min_rounds=3), world)
    assert world.timeline == [("A", True), ("B", True), ("A", False), ("B", False), ("A", False), ("B", False),
                              ("A", False), ("B", False)]
    assert not any(e.startswith("free") for e in world.events)
    assert "B (candidate) vs A (current), rounds interleaved A B A B" in ran.verdict.notes[0]
    assert [r.side for r in ran.records] == ["A"] * 4 + ["B"] * 4


def test_ab_sides_that_do_not_fit_together_run_in_blocks_with_the_idle_sides_models_freed(tmp_path: Path) -> None:
    # 2.6 GiB free once A has warmed up, A's peak 6000 MiB: B cannot load beside it
    nvml = FakeNvml.single(name=DEVICE.name, memory_mib=32607, used_mib=30000)
    world = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: (10.0, 10.4)[i % 2]))  # undecided: 2 blocks
    ran = _run(_gate(tmp_path, world, nvml=nvml, ab=True, rounds=4, min_rounds=2), world)
    runs = [f"{name}{'w' if warmup else ''}" for name, warmup in world.timeline]
    assert runs == ["Aw", "A", "A", "Bw", "B", "B", "Aw", "A", "A", "Bw", "B", "B"]
    assert [e for e in world.events if e.startswith("free")] == ["free A", "free B", "free A"]
    assert "in blocks, the idle side's models freed before each block (A: released in 0.5 s" in ran.verdict.notes[0]
    assert "drift between blocks is not cancelled" in ran.verdict.notes[0]


@pytest.mark.parametrize(("outcome", "dies"), [("oom", False), ("server_died", True)])
def test_a_side_that_fails_in_ab_fails_the_test_naming_that_side(tmp_path: Path, outcome: str, dies: bool) -> None:
    def script(box: FakeBox) -> None:
        if box.name == "B":
            box.outcome = lambda i: (outcome, "out of memory in KSamplerAdvanced" if outcome == "oom" else "gone")

    world = FakeWorld(script=script)
    gate = _gate(tmp_path, world, ab=True, rounds=3, min_rounds=3)
    with pytest.raises(Fail) as failed:
        _run(gate, world)
    assert failed.value.message.startswith(f"{BASE.variant_id} (side B) round 1 (warm-up): {outcome}: ")
    assert world.box("B").alive is not dies
    assert world.timeline == [("A", True), ("B", True)]


# --------------------------------------------------------------------------- the warm-up skip

def _second_run_warms(tmp_path: Path, second: Variant, between: Callable[[FakeWorld], None] | None = None) -> bool:
    world = FakeWorld()
    world.provide([second.build()])  # the server lists the second variant's models from the start
    gate = _gate(tmp_path, world, rounds=2, min_rounds=2)
    _run(gate, world)
    if between is not None:
        between(world)
    start = len(world.timeline)
    _run(gate, world, second)
    return world.timeline[start][1]


def test_the_same_models_compilation_and_shape_on_the_same_server_skip_the_warm_up(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=2, min_rounds=2)
    _run(gate, world)
    _run(gate, world, BASE.pass_order("low_high"))  # the same files and latents, the experts in the other order
    assert world.timeline == [("work", True), ("work", False), ("work", False), ("work", False), ("work", False)]
    assert gate.state.skipped_warmups == [BASE.pass_order("low_high").variant_id]


def test_warm_ups_a_test_names_run_on_a_warm_server(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=2, min_rounds=2)
    _run(gate, world)
    _run(gate, world, BASE.pass_order("low_high"), warmup_rounds=1)
    assert world.timeline[3] == ("work", True)


def test_another_model_file_warms_again(tmp_path: Path) -> None:
    other = BASE.models({"high": "wan2.2_i2v_high_noise_14B_fp16.safetensors"})
    assert warm_shape(other.build()) != warm_shape(BASE.build())
    assert _second_run_warms(tmp_path, other)


def test_another_latent_shape_warms_again(tmp_path: Path) -> None:
    assert _second_run_warms(tmp_path, BASE.duration(10))
    assert _second_run_warms(tmp_path / "size", BASE.resolution(832, 480))


def test_compilation_warms_again(tmp_path: Path) -> None:
    assert _second_run_warms(tmp_path, BASE.torch_compile("inductor"))


def test_a_restarted_server_warms_again(tmp_path: Path) -> None:
    def die(world: FakeWorld) -> None:
        world.box("work").alive = False  # found dead by the next test's pool.get, and started again

    assert _second_run_warms(tmp_path, BASE.pass_order("low_high"), die)


# --------------------------------------------------------------------------- the verdict against a baseline

def test_a_baseline_from_another_gpu_of_the_same_model_widens_the_band_and_says_so(tmp_path: Path) -> None:
    slower = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: 11.5))  # 15% slower than 10 s

    gate = _gate(tmp_path / "same", slower, rounds=6, min_rounds=6)
    _store(gate, [10.0] * 6)
    same = _run(gate, slower)
    assert same.verdict.failed  # on the baseline's own GPU, 15% is past wall's 8% + 0.5 s
    assert "another GPU" not in same.verdict.message

    slower = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: 11.5))
    gate = _gate(tmp_path / "other", slower, rounds=6, min_rounds=6)
    _store(gate, [10.0] * 6, machine=replace(MACHINE, gpu_uuid="GPU-5090-other"))
    other = _run(gate, slower)
    assert not other.verdict.failed  # within the band widened by the 11% between two cards of one model
    assert "the baseline comes from another GPU of this model: bands widened by the machine-to-machine spread" \
        in other.verdict.message
    judge(gate, other)  # passes


def test_version_changes_since_the_baseline_reach_the_failure_message(tmp_path: Path) -> None:
    world = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: 20.0))  # twice as slow
    gate = _gate(tmp_path, world, rounds=4, min_rounds=4)
    _store(gate, [10.0] * 4, machine=replace(MACHINE, driver="570.124.06", torch="2.8.0+cu128",
                                                  comfyui="0.7.0"))
    ran = _run(gate, world)
    with pytest.raises(Fail) as failed:
        judge(gate, ran)
    message = failed.value.message
    assert message.startswith(f"{BASE.variant_id}: regressed")
    assert message.splitlines()[-1] == ("changed since the baseline: driver 570.124.06 -> 580.95.05, torch "
                                        "2.8.0+cu128 -> 2.9.1+cu128, comfyui 0.7.0 -> 0.8.0")
    assert gate.state.verdicts[(BASE.workflow.name, ran.key)] is ran.verdict


def test_a_baseline_from_another_gpu_model_fails_before_any_round(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world)
    _store(gate, [10.0] * 3, machine=replace(MACHINE, gpu_name="NVIDIA H200"))
    with pytest.raises(Fail, match="baseline recorded on NVIDIA H200, this run is on NVIDIA GeForce RTX 5090"):
        _run(gate, world)
    assert world.timeline == []


# --------------------------------------------------------------------------- what a run is given

def test_each_run_gets_its_servers_context(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=1, min_rounds=1, run_timeout=321.0)
    _run(gate, world)
    server = gate.pool.servers[""]
    assert server.launcher is not None
    ctx = world.contexts[0]
    assert (ctx.tier, ctx.timeout, ctx.environment) == ("rtx5090", 321.0, server.environment)
    assert (ctx.is_alive, ctx.log_size, ctx.log_since) == (server.alive, server.handle.log_size,
                                                           server.handle.log_since)
    assert ctx.output_dir == tmp_path / "work" / "output"
    assert ctx.input_dir == server.launcher.spec.input_dir
    assert ctx.user_input_dir == tmp_path / "comfy" / "input"
    assert ctx.on_event == gate.state.progress.on_event
    assert (ctx.monitor, ctx.gpu_state) == (None, None)  # no NVML: nothing to read

    world = FakeWorld()
    gate = _gate(tmp_path / "tier", world, rounds=1, min_rounds=1)
    _run(gate, world)
    assert world.contexts[0].timeout == TIER.run_timeout_s


def test_with_nvml_a_run_reads_the_servers_processes_and_the_gpu(tmp_path: Path) -> None:
    nvml = FakeNvml.single(name=DEVICE.name, memory_mib=32607, uuid=DEVICE.uuid, accounting=True,
                           accounting_max_mib={os.getpid(): 2048.0})
    world = FakeWorld(pid=os.getpid())
    gate = _gate(tmp_path, world, nvml=nvml, rounds=1, min_rounds=1, vram_interval=0.25, nvml_accounting=True)
    gate.pool.on_change = lambda pool, server: setattr(gate.state, "server", server)  # as the session follows it
    _run(gate, world)
    ctx = world.contexts[0]
    assert ctx.monitor is not None
    assert ctx.gpu_state is not None
    monitor = ctx.monitor()
    assert isinstance(monitor, VramMonitor)
    assert (monitor._backend, monitor._device, monitor.interval_s) == (nvml, DEVICE, 0.25)
    assert monitor._pids_fn is not None
    assert os.getpid() in set(monitor._pids_fn())
    assert monitor._own_fn is not None
    assert os.getpid() in set(monitor._own_fn())
    readings = ctx.gpu_state()
    assert "driver" not in readings
    assert "cuda" not in readings
    assert readings["power_w"] == 75.5
    assert readings["temperature_c"] == 41
    assert readings["accounting_peak_mib"] == 2048.0

    world = FakeWorld()  # a server whose PID is not known: the whole device, no accounting
    gate = _gate(tmp_path / "nopid", world, nvml=nvml, rounds=1, min_rounds=1, nvml_accounting=True)
    gate.pool.on_change = lambda pool, server: setattr(gate.state, "server", server)
    _run(gate, world)
    ctx = world.contexts[0]
    assert ctx.monitor is not None
    assert ctx.gpu_state is not None
    assert ctx.monitor()._pids_fn is None
    assert "accounting_peak_mib" not in ctx.gpu_state()


def test_without_a_device_nothing_reads_the_gpu(tmp_path: Path) -> None:
    world = FakeWorld(pid=os.getpid())
    gate = _gate(tmp_path, world, nvml=FakeNvml.single(), rounds=1, min_rounds=1)
    gate.state.device = None
    _run(gate, world)
    assert (world.contexts[0].monitor, world.contexts[0].gpu_state) == (None, None)


def test_what_an_earlier_test_left_queued_or_running_is_cleared(tmp_path: Path) -> None:
    for left in ("queue_running", "queue_pending"):
        world = FakeWorld()
        world.queue[left] = [["1", "earlier"]]
        _run(_gate(tmp_path / left, world, rounds=1, min_rounds=1), world)
        assert world.events[:3] == ["start work", "clear queue", "interrupt"]
    world = FakeWorld()
    _run(_gate(tmp_path / "empty", world, rounds=1, min_rounds=1), world)
    assert "clear queue" not in world.events
    assert "interrupt" not in world.events


# --------------------------------------------------------------------------- the preflight

def test_a_server_without_the_graphs_models_fails_naming_its_folders_or_skips(tmp_path: Path) -> None:
    world = FakeWorld()  # the server lists no model file
    gate = _gate(tmp_path, world, rounds=1, min_rounds=1)
    with pytest.raises(Fail) as failed:
        run_variant(gate, BASE, RoundPlan.of(gate.state.settings))
    message = failed.value.message
    assert message.startswith(f"{BASE.variant_id} cannot run on this server:\n")
    assert str(tmp_path / "comfy" / "models") in message  # the launched server's own folder, not '<comfyui>'
    assert message.endswith("\n(--wan22-missing=skip skips such variants instead)")
    assert world.timeline == []

    world = FakeWorld()
    gate = _gate(tmp_path / "skip", world, rounds=1, min_rounds=1, missing="skip")
    with pytest.raises(Skip) as skipped:
        run_variant(gate, BASE, RoundPlan.of(gate.state.settings))
    assert skipped.value.reason.startswith(f"{BASE.variant_id} cannot run on this server:\n")
    assert "--wan22-missing=skip" not in skipped.value.reason


def test_only_a_missing_optional_node_skips(tmp_path: Path) -> None:
    world = FakeWorld()
    graph = BASE.interpolate(2).build()  # RIFE VFI: a node pack the fake server lacks
    world.provide([graph])
    world.inputs.add("wan22_i2v_start.png")
    gate = _gate(tmp_path, world)
    server = gate.pool.get()
    client = world.client(server.handle.url)
    with pytest.raises(Skip, match=r"^v cannot run on this server:\n\[node\] node \d+ 'Interpolate Frames' "
                                   r"\(RIFE VFI\)"):
        check_graph(server, client, graph, "v", "fail")  # the server's node list is asked for
    sampler = next(n["class_type"] for n in graph.values() if "Sampler" in n["class_type"])
    del server.object_info[sampler]
    with pytest.raises(Fail):  # an optional node and another: the other fails the test
        check_graph(server, client, graph, "v", "fail")
    server.object_info = {}
    check_graph(server, client, BASE.build(), "v", "fail")  # nothing lacking


# --------------------------------------------------------------------------- a run's records

def test_each_round_runs_its_own_seed_and_index_and_is_saved_and_heard_of(tmp_path: Path) -> None:
    world = FakeWorld(clock=lambda: 1_700_000_000.25)
    gate = _gate(tmp_path, world, rounds=2, min_rounds=2)
    heard: list[RunRecord] = []
    gate.run_finished = heard.append
    ran = _run(gate, world)
    key = ran.key
    assert [(p["variant_id"], p["workflow"], p["round_index"]) for p in world.prompts] == [
        (key, BASE.workflow.name, 0), (key, BASE.workflow.name, 1), (key, BASE.workflow.name, 2)]
    for p in world.prompts:  # the graph sent carries the round's own seed
        assert isinstance(p["seed"], int)
        assert p["prompt"] == BASE.seed(p["seed"]).build()
    assert [r.seed for r in ran.records] == [p["seed"] for p in world.prompts]
    assert heard == gate.state.records == list(ran.records)
    assert all(r.workflow == BASE.workflow.name and not r.warnings for r in ran.records)
    saved = sorted(p.name for p in (tmp_path / "work" / "records").iterdir())
    assert saved == [f"{key}.{i}.20231114T221320.250.json" for i in range(3)]
    assert ran.key == key == BASE.variant_id
    assert ran.note == ""


def test_ab_records_name_their_side(tmp_path: Path) -> None:
    world = FakeWorld(clock=lambda: 1_700_000_000.0)
    ran = _run(_gate(tmp_path, world, ab=True, rounds=1, min_rounds=1), world)
    for side in ("A", "B"):
        saved = sorted(p.name for p in (tmp_path / "work" / side / "records").iterdir())
        assert saved == [f"{ran.key}.{side}.{i}.20231114T221320.000.json" for i in range(2)]
    assert all(r.workflow == BASE.workflow.name for r in ran.records)


def test_a_video_of_the_wrong_length_fails_the_round(tmp_path: Path) -> None:
    frames = BASE.expected_output().frames
    assert frames is not None
    world = FakeWorld(script=lambda box: setattr(box, "frames", frames + 1))
    with pytest.raises(Fail, match=rf"^{BASE.variant_id} round 1 \(warm-up\): wan22_00001_.mp4 has {frames + 1} "
                                   rf"frames, the variant should give {frames}$"):
        _run(_gate(tmp_path, world), world)


def test_what_an_attached_server_cannot_tell_is_said_once_in_the_first_record(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=2, min_rounds=2)
    gate.pool.get().unknown = "its log is not ours"
    ran = _run(gate, world)
    assert [r.warnings for r in ran.records] == [("attach: its log is not ours",), (), ()]
    assert gate.pool.get().unknown == ""


def test_the_timer_of_the_first_rounds_runs_them(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=3, min_rounds=2)
    calls: list[tuple[int, int]] = []

    def timer(one: Callable[[], object], rounds: int, warmups: int) -> None:  # as pytest-benchmark's pedantic
        calls.append((rounds, warmups))
        for _ in range(warmups + rounds):
            one()

    world.provide([BASE.build()])
    run_variant(gate, BASE, RoundPlan.of(gate.state.settings), first_rounds=lambda: timer)
    assert calls == [(2, 1)]
    assert world.timeline == [("work", True), ("work", False), ("work", False)]


def test_a_run_is_listed_under_its_test_and_keyed_with_its_flags(tmp_path: Path) -> None:
    assert baseline_key("v", ("--cache-none", "--reserve-vram", "2")) == "v+cache-none+reserve-vram+2"
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=1, min_rounds=1)
    ran = _run(gate, world)
    world.provide([BASE.build()])
    flagged = run_variant(gate, BASE, RoundPlan.of(gate.state.settings), server_args=("--cache-none",),
                          test_id="t.py::test_flags")
    assert flagged.key == f"{BASE.variant_id}+cache-none"
    assert gate.state.test_variants == {"": [(BASE.workflow.name, ran.key)],
                                        "t.py::test_flags": [(BASE.workflow.name, flagged.key)]}


# --------------------------------------------------------------------------- a workflow file as written

def test_a_workflow_file_whose_nodes_the_server_lacks_fails_naming_the_file_as_written(tmp_path: Path) -> None:
    variant = BASE.interpolate(2)  # RIFE VFI: a node pack the fake server lacks; no model file either
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=1, min_rounds=1)
    with pytest.raises(Fail) as failed:
        run_variant(gate, variant, RoundPlan.of(gate.state.settings), server_args=("--cache-none",),
                    as_written=True)
    message = failed.value.message
    assert message.startswith(f"{variant.variant_id} cannot run on this server:\n")  # the file's id, no flags
    assert "(RIFE VFI)" in message
    assert "[model]" in message
    assert world.events == ["start work"]  # checked on the session's server before the variation launches

    world = FakeWorld()  # every node there: the file's check leaves the rest to the variant's own preflight
    gate = _gate(tmp_path / "nodes", world, rounds=1, min_rounds=1)
    with pytest.raises(Fail) as failed:
        run_variant(gate, BASE, RoundPlan.of(gate.state.settings), server_args=("--cache-none",),
                    as_written=True)
    assert failed.value.message.startswith(f"{BASE.variant_id}+cache-none cannot run on this server:\n")

    world = FakeWorld()  # --wan22-missing=skip skips a file the server cannot run
    gate = _gate(tmp_path / "skip", world, rounds=1, min_rounds=1, missing="skip")
    with pytest.raises(Skip, match=rf"^{variant.variant_id} cannot run on this server:\n"):
        run_variant(gate, variant, RoundPlan.of(gate.state.settings), as_written=True)


def test_a_synthetic_set_and_a_tiers_scale_are_swapped_into_the_graph(tmp_path: Path) -> None:
    models = SyntheticModels(tmp_path, model_set("tiny"))
    graph = adapt(BASE, TIER, models).build()
    names = {v for node in graph.values() for v in (node.get("inputs") or {}).values() if isinstance(v, str)}
    assert {"wan2.2_i2v_high_noise_14B_fp8_scaled.safetensors", "wan2.2_i2v_low_noise_14B_fp8_scaled.safetensors",
            "wan_2.1_vae.safetensors"} <= names  # the graph's own names: the set writes files under them
    assert "wan22_tiny_cond" in json.dumps(graph)  # no text encoder in the set: its precomputed conditioning
    assert adapt(BASE, TIER, None).build() == BASE.build()
    small = adapt(BASE, replace(TIER, scale={"width": 64, "height": 64}), None).build()
    assert {n["inputs"].get("width") for n in small.values() if "width" in (n.get("inputs") or {})} == {64}


# --------------------------------------------------------------------------- what a warm-up warms

def test_each_latent_dimension_is_part_of_the_warm_shape() -> None:
    def graph(**size: Any) -> dict[str, Any]:
        inputs = {"width": 832, "height": 480, "length": 81, "batch_size": 1, **size}
        return {"1": {"class_type": "WanImageToVideo", "inputs": inputs},
                "2": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 4, "model": ["3", 0]}}}

    base = warm_shape(graph())
    for size in ({"width": 640}, {"height": 640}, {"length": 41}, {"batch_size": 2}):
        assert warm_shape(graph(**size)) != base, size
    other_sampler = {**graph(), "2": {"class_type": "SamplerCustomAdvanced", "inputs": {}}}
    assert warm_shape(other_sampler) == base  # neither a loader nor a shape: nothing to warm again
    linked = {**graph(), "1": {"class_type": "WanImageToVideo", "inputs": {"width": ["9", 0], "height": 480}}}
    assert warm_shape(linked) == warm_shape({"2": graph()["2"]})  # a size from a link is not known here


# --------------------------------------------------------------------------- the verdict of one side

def test_recording_a_baseline_gives_a_new_verdict_and_keeps_the_summary(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=3, min_rounds=2, update_baselines=True)
    ran = _run(gate, world)
    assert _timed(world) == 3  # a baseline runs to the most rounds
    assert (ran.verdict.variant_id, ran.verdict.status) == (ran.key, "new")
    assert (ran.summary.variant_id, ran.summary.digest, ran.summary.rounds) == (ran.key, BASE.digest, 3)
    assert gate.state.summaries == {(BASE.workflow.name, ran.key): ran.summary}


def test_an_emulated_tier_is_never_judged_against_a_baseline(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=4, min_rounds=2)
    gate.pool.profile = make_profile(TIER, emulate=True, device_memory_mib=143771, device_name="NVIDIA H200")
    _store(gate, [10.0] * 4, machine=replace(MACHINE, gpu_name="NVIDIA H200"))  # another model: not even read
    ran = _run(gate, world)
    assert (ran.verdict.variant_id, ran.verdict.status) == (ran.key, "insufficient")
    assert _timed(world) == 2


def test_a_baseline_of_other_variants_only_is_no_baseline(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=4, min_rounds=2)
    _store(gate, [10.0] * 4, variant=BASE.duration(10))
    ran = _run(gate, world)
    assert ran.verdict.status == "new"
    assert _timed(world) == 2


def test_the_compare_hook_judges_the_summary_against_the_stored_one(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=3, min_rounds=3)
    _store(gate, [10.0] * 3)
    seen: list[tuple[Any, Any]] = []
    custom = Verdict(BASE.variant_id, "ok", label="by the hook")

    def hook(summary: Any, baseline: Any) -> Verdict | None:
        seen.append((summary, baseline))
        return custom

    gate.compare = hook
    ran = _run(gate, world)
    assert ran.verdict == custom
    summary, baseline = seen[-1]
    assert (summary.variant_id, summary.digest, summary.rounds) == (ran.key, BASE.digest, 3)
    assert (baseline.variant_id, baseline.rounds) == (ran.key, 3)

    world = FakeWorld()  # a hook that says nothing leaves the comparison to the plugin
    gate = _gate(tmp_path / "none", world, rounds=3, min_rounds=3)
    _store(gate, [10.0] * 3)
    gate.compare = lambda summary, baseline: None
    assert _run(gate, world).verdict.status == "ok"


def test_a_tier_that_does_not_judge_timings_records_them(tmp_path: Path) -> None:
    world = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: 20.0))  # twice as slow
    gate = _gate(tmp_path, world, rounds=3, min_rounds=3)
    gate.tier = replace(TIER, judge_timings=False)
    _store(gate, [10.0] * 3)
    ran = _run(gate, world)
    assert not ran.verdict.failed
    assert "recorded" in {c.status for c in ran.verdict.checks}
    assert {c.max_rounds for c in ran.verdict.checks} == {3}


# --------------------------------------------------------------------------- other compute processes

TRAINER = Neighbour(4242, "train.py", 7168.0)


def test_no_baseline_is_recorded_beside_a_process_already_on_the_gpu(tmp_path: Path) -> None:
    for device in (DEVICE, replace(DEVICE, uuid="")):  # found by UUID, or by index without one
        nvml = FakeNvml.single(name=DEVICE.name, uuid=DEVICE.uuid, processes=[FakeProcess(4242, 7168.0)])
        world = FakeWorld(pid=os.getpid())
        gate = _gate(tmp_path / device.uuid, world, nvml=nvml, update_baselines=True)
        gate.state.device = device
        with pytest.raises(Fail, match=rf"^{BASE.variant_id}: not recording a baseline beside other compute "
                                       r"processes on the GPU: PID 4242 .*Their work slows this one's"):
            _run(gate, world)
        assert world.timeline == []  # before any GPU time is spent

    nvml = FakeNvml.single(name=DEVICE.name, uuid=DEVICE.uuid, processes=[FakeProcess(os.getpid(), 7168.0)])
    world = FakeWorld(pid=os.getpid())  # the session's own processes are no neighbours
    _run(_gate(tmp_path / "own", world, nvml=nvml, update_baselines=True, rounds=1, min_rounds=1), world)
    world = FakeWorld(pid=os.getpid())
    nvml = FakeNvml.single(name=DEVICE.name, uuid=DEVICE.uuid, processes=[FakeProcess(4242, 7168.0)])
    _run(_gate(tmp_path / "allowed", world, nvml=nvml, update_baselines=True, allow_neighbours=True, rounds=1,
               min_rounds=1), world)
    assert world.timeline


def test_a_process_seen_during_the_rounds_is_named_in_the_records_and_the_verdict(tmp_path: Path) -> None:
    world = FakeWorld(script=lambda box: setattr(box, "neighbours", (TRAINER,)))
    gate = _gate(tmp_path, world, rounds=1, min_rounds=1)
    ran = _run(gate, world)
    assert all(r.warnings == ("neighbour: other compute processes on the GPU during this round: PID 4242 "
                              "train.py (7.0 GiB)",) for r in ran.records)
    assert ran.verdict.notes[-1] == ("other compute processes shared the GPU during these rounds: PID 4242 "
                                     "train.py (7.0 GiB); their work slows this run's, so a change may be theirs")

    world = FakeWorld(script=lambda box: setattr(box, "neighbours", (TRAINER, Neighbour(77, "render", None))))
    gate = _gate(tmp_path / "record", world, rounds=1, min_rounds=1, update_baselines=True)
    with pytest.raises(Fail) as failed:
        _run(gate, world)
    assert failed.value.message == (
        f"{BASE.variant_id}: not recording a baseline beside other compute processes on the GPU: PID 77 render, "
        "PID 4242 train.py (7.0 GiB). Their work slows this one's and every later comparison would inherit it; stop "
        "them, or pass --wan22-allow-neighbours (ini wan22_allow_neighbours) to record anyway (the records name "
        "them)")
    assert gate.state.summaries == {}
    world = FakeWorld(script=lambda box: setattr(box, "neighbours", (TRAINER,)))
    gate = _gate(tmp_path / "allowed", world, rounds=1, min_rounds=1, update_baselines=True, allow_neighbours=True)
    _run(gate, world)
    assert len(gate.state.summaries) == 1


# --------------------------------------------------------------------------- fitting in VRAM

def _ran(gate: Gate, peak_gib: float, key: str = "v", warnings: tuple[str, ...] = ()) -> Ran:
    gate.pool.get()
    record = RunRecord(key, "wf", TIER.name, "success", round=1, wall_s=10.0, warnings=warnings,
                       vram=VramReport(True, peak_process_mib=peak_gib * 1024))
    return Ran(key, "wf", (record,), summarise(key, [record]), Verdict(key, "ok"))


def test_a_round_past_the_profiles_allowance_fails(tmp_path: Path) -> None:
    gate = _gate(tmp_path, FakeWorld())
    with pytest.raises(Fail) as failed:
        judge(gate, _ran(gate, 31.5))
    assert failed.value.message == ("v round 2 does not fit on rtx5090: it peaked at 31.50 GiB, past the 30.84 GiB "
                                    "the profile lets ComfyUI use (the card's 31.84 GiB minus --reserve-vram 1)")
    judge(gate, _ran(gate, 30.5))
    assert gate.state.verdicts[("wf", "v")].status == "ok"


def test_the_allowance_follows_the_servers_own_flags_else_its_sides(tmp_path: Path) -> None:
    gate = _gate(tmp_path, FakeWorld(), server_args=("--reserve-vram", "4"))
    ran = _ran(gate, 29.0)
    server = gate.pool.servers[""]
    with pytest.raises(Fail, match="minus --reserve-vram 4"):  # the server's argv
        judge(gate, ran)
    server.environment = replace(server.environment, argv=("--reserve-vram", "1.0"))
    judge(gate, ran)
    server.environment = replace(server.environment, argv=())  # argv unknown: the side's launch command
    with pytest.raises(Fail, match="minus --reserve-vram 4"):
        judge(gate, ran)


def test_an_emulated_card_allows_its_own_memory(tmp_path: Path) -> None:
    gate = _gate(tmp_path, FakeWorld())
    ran = _ran(gate, 40.0)
    gate.pool.profile = make_profile(TIER, emulate=True, device_memory_mib=143771, device_name="NVIDIA H200")
    server = gate.pool.servers[""]
    server.environment = replace(server.environment, gpu_memory_mib=143771, argv=("--normalvram",))
    with pytest.raises(Fail, match=r"past the 31\.40 GiB the profile lets ComfyUI use \(the emulated card's 31\.4 "
                                   r"GiB\)"):
        judge(gate, ran)


def test_a_round_over_the_budget_fails_unless_the_test_sets_its_own(tmp_path: Path) -> None:
    gate = _gate(tmp_path, FakeWorld())
    gate.tier = replace(TIER, vram_budget_gib=20.0)
    with pytest.raises(Fail, match=r"^v round 2: peak VRAM 25\.00 GiB is over the budget of 20 GiB \(rtx5090\)"):
        judge(gate, _ran(gate, 25.0))
    judge(gate, _ran(gate, 25.0), budget_gib=26.0)
    with pytest.raises(Fail, match="over the budget of 24 GiB"):
        judge(replace(gate, tier=TIER), _ran(gate, 25.0), budget_gib=24.0)


def test_an_offload_fails_unless_allowed(tmp_path: Path) -> None:
    gate = _gate(tmp_path, FakeWorld())
    offload = ("offload: 3.2 GiB of the model moved to RAM",)
    with pytest.raises(Fail, match=r"^v round 2 does not fit on rtx5090 at 10\.00 GiB: ComfyUI had to make room "
                                   r"\(3\.2 GiB of the model moved to RAM\)"):
        judge(gate, _ran(gate, 10.0, warnings=offload))
    judge(gate, _ran(gate, 10.0, warnings=offload), allow_offload=True)
    judge(gate, _ran(gate, 10.0, "v-blockswap", offload))  # the tier allows its labels
    with pytest.raises(Fail, match="had to make room"):
        judge(gate, _ran(gate, 10.0, "v-blockswap", offload), allow_offload=False)


def test_a_failed_verdict_without_changes_fails_with_its_message_alone(tmp_path: Path) -> None:
    gate = _gate(tmp_path, FakeWorld())
    ran = replace(_ran(gate, 10.0), verdict=Verdict("v", "regressed", (Check("wall", "regressed"),)))
    with pytest.raises(Fail) as failed:
        judge(gate, ran)
    assert failed.value.message == ran.verdict.message


# --------------------------------------------------------------------------- A/B

def test_ab_rounds_stop_once_b_vs_a_is_decided(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, ab=True, rounds=4, min_rounds=2)
    ran = _run(gate, world)
    assert _timed(world) == 4  # two rounds a side: as fast as each other, decided at the fewest
    verdict = ran.verdict
    assert (verdict.variant_id, verdict.status, verdict.label) == (ran.key, "ok", "B vs A")
    assert "B vs A" in verdict.message
    assert {c.max_rounds for c in verdict.checks} == {4}
    assert (ran.key, ran.workflow) == (BASE.variant_id, BASE.workflow.name)
    assert (ran.summary.variant_id, ran.summary.digest, ran.summary.rounds) == (ran.key, BASE.digest, 2)
    assert verdict.notes[0] == ("B (candidate) vs A (current), rounds interleaved A B A B; "
                                f"ComfyUI {tmp_path / 'current'} -> {tmp_path / 'comfy'}; "
                                f"Python python -> {gate.state.settings.python}")


def test_ab_on_a_tier_that_does_not_judge_timings_records_them(tmp_path: Path) -> None:
    world = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: 20.0 if box.name == "B" else 10.0))
    gate = _gate(tmp_path, world, ab=True, rounds=3, min_rounds=3)
    gate.tier = replace(TIER, judge_timings=False)
    assert not _run(gate, world).verdict.failed


def test_ab_blocks_end_with_what_the_most_rounds_leave(tmp_path: Path) -> None:
    nvml = FakeNvml.single(name=DEVICE.name, memory_mib=32607, used_mib=30000)
    world = FakeWorld(script=lambda box: setattr(box, "wall", lambda i: (10.0, 10.4)[i % 2]))
    ran = _run(_gate(tmp_path, world, nvml=nvml, ab=True, rounds=3, min_rounds=2), world)
    runs = [f"{name}{'w' if warmup else ''}" for name, warmup in world.timeline]
    assert runs == ["Aw", "A", "A", "Bw", "B", "B", "Aw", "A", "Bw", "B"]
    released = Release(True, 0.5, 512.0).describe()
    assert ran.verdict.notes[0].startswith(
        f"B (candidate) vs A (current), in blocks, the idle side's models freed before each block (A: {released}; "
        f"B: {released}; A: {released}): both sides do not fit in VRAM at once, so drift between blocks is not "
        "cancelled; ")


@pytest.mark.parametrize(("used_mib", "peak_mib", "interleaved"), [
    (32607 - 6601, 6000.0, True),  # 10% over A's peak free: B loads beside it
    (32607 - 1100, 1000.0, False),  # exactly 10% over: not more than the margin
    (30000, None, True),  # A's peak unknown: nothing to judge by
])
def test_ab_sides_fit_together_with_a_tenth_to_spare(tmp_path: Path, used_mib: float, peak_mib: float | None,
                                                     interleaved: bool) -> None:
    nvml = FakeNvml.single(name=DEVICE.name, memory_mib=32607, used_mib=used_mib)
    world = FakeWorld(script=lambda box: setattr(box, "peak_mib", peak_mib))
    _run(_gate(tmp_path, world, nvml=nvml, ab=True, rounds=1, min_rounds=1), world)
    assert (not any(e.startswith("free") for e in world.events)) is interleaved


def test_ab_warm_ups_skipped_on_a_warm_side_name_the_side(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, ab=True, rounds=1, min_rounds=1)
    _run(gate, world)
    second = _run(gate, world, BASE.pass_order("low_high"))
    assert gate.state.skipped_warmups == [f"{second.key} (side A)", f"{second.key} (side B)"]


def test_ab_with_missing_models_skips_when_told_to(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, ab=True, missing="skip")
    with pytest.raises(Skip, match="cannot run on this server"):
        run_variant(gate, BASE, RoundPlan.of(gate.state.settings))


def test_the_spread_of_recorded_sessions_widens_the_intervals(tmp_path: Path) -> None:
    world = FakeWorld()
    gate = _gate(tmp_path, world, rounds=3, min_rounds=3)
    for wall in (10.0, 10.6, 9.8, 10.5, 9.9, 10.0):
        _store(gate, [wall] * 3)
    ran = _run(gate, world)
    assert any(n.startswith("intervals include the session-to-session spread the recorded sessions show")
               for n in ran.verdict.notes)


def test_the_synthetic_files_a_first_run_wrote_are_noted_under_the_variant_as_the_test_names_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pytest_wan22.rounds as rounds_mod

    written: list[tuple[str, str]] = []

    def write(models: SyntheticModels, v: Variant, pool: ServerPool, label: str = "") -> str | None:
        written.append((v.variant_id, label))
        return f"{label or v.variant_id}: 2 synthetic files written" if len(written) == 1 else None

    monkeypatch.setattr(rounds_mod, "write_synthetic", write)
    gate = _gate(tmp_path, FakeWorld())
    cpu = replace(gate, tier=TIERS["cpu"], models=SyntheticModels(tmp_path / "set", model_set("tiny")))
    ran = rounds_mod.as_run(cpu, BASE)
    rounds_mod.as_run(cpu, BASE)  # the set has it all now: nothing more to say
    assert ran.variant_id != BASE.variant_id  # the cpu tier scales the graph
    assert written[0] == (ran.variant_id, BASE.variant_id)  # files for the graph that runs, named as written
    assert cpu.state.synth_notes == [f"{BASE.variant_id}: 2 synthetic files written"]
    assert rounds_mod.as_run(gate, BASE) == BASE
    assert len(written) == 2  # the user's models: nothing written
