"""The rounds of a variant (rounds.py) in process, on fake servers (tests/fakes/fake_servers.py): the stop rule,
A/B interleaved or in blocks, the warm-up skip, a baseline from another GPU, version changes, a failing side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.baselines import BaselineStore
from pytest_wan22.compare import Check, Verdict, summarise
from pytest_wan22.errors import Fail
from pytest_wan22.gpu import DeviceInfo
from pytest_wan22.records import Environment, RunRecord, VramReport
from pytest_wan22.rounds import Gate, Ran, RoundPlan, baseline_key, judge, run_variant, warm_shape
from pytest_wan22.servers import ServerPool
from pytest_wan22.session import State
from pytest_wan22.settings import Settings, Side
from pytest_wan22.tiers import load_tiers, make_profile
from pytest_wan22.workflows import Variant, load_workflow
from tests.fakes.fake_nvml import FakeNvml
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
