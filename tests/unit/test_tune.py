"""tune.py in process: the options as launch flags, the tier row written and read back, the class of work, the speed
rule, and the search (singles, greedy combination, confirmation on every class, back-off, budget) on fake servers
(tests/fakes/fake_servers.py) whose wall time depends on the flags each side was launched with."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pytest_wan22.compare import Check
from pytest_wan22.errors import ConfigError, Fail, Skip
from pytest_wan22.frames import FrameDiff
from pytest_wan22.gpu import DeviceInfo
from pytest_wan22.options import BY_NAME
from pytest_wan22.records import RunRecord
from pytest_wan22.rounds import Gate, RoundPlan
from pytest_wan22.runner import RunContext
from pytest_wan22.servers import ServerPool
from pytest_wan22.session import State
from pytest_wan22.settings import Settings, resolve
from pytest_wan22.tiers import TuneSpace, load_tiers, make_profile, parse_tune_items
from pytest_wan22.tune import (
    Candidate,
    Tuner,
    apply_args,
    apply_env,
    judge_speed,
    option,
    space_options,
    tier_toml,
    tune_sides,
    work_class,
)
from pytest_wan22.workflows import Variant, load_workflow
from tests.fakes.fake_servers import FakeWorld

REPO = Path(__file__).resolve().parents[2]
TIERS = load_tiers()
BASE = Variant(load_workflow(REPO / "workflows" / "wan22_i2v_a14b.json")).schedule("lightx2v_4step").duration(5)
DEVICE = DeviceInfo(0, "NVIDIA GeForce RTX 5090", "GPU-5090-0", "00000000:01:00.0", 32607, "580.95.05", "13.0")
PROFILE_5090 = ("--normalvram", "--reserve-vram", "1.0", "--fast", "fp16_accumulation", "--use-pytorch-cross-attention")


# --------------------------------------------------------------------------- options as flags

@pytest.mark.parametrize(("klass", "value", "args"), [
    ("attention", "sage", ("--normalvram", "--reserve-vram", "1.0", "--fast", "fp16_accumulation",
                           "--use-sage-attention")),
    ("fast", "fp8_matrix_mult", ("--normalvram", "--reserve-vram", "1.0", "--fast", "fp16_accumulation",
                                 "fp8_matrix_mult", "--use-pytorch-cross-attention")),
    ("fast", "fp16_accumulation", PROFILE_5090),
    ("vram", "gpu_only", ("--reserve-vram", "1.0", "--fast", "fp16_accumulation", "--use-pytorch-cross-attention",
                          "--gpu-only")),
    ("reserve_vram", 0.5, ("--normalvram", "--fast", "fp16_accumulation", "--use-pytorch-cross-attention",
                           "--reserve-vram", "0.5")),
    ("cache", "lru:16", (*PROFILE_5090, "--cache-lru", "16")),
    ("vae", "cpu", (*PROFILE_5090, "--cpu-vae")),
    ("preview", "none", (*PROFILE_5090, "--preview-method", "none")),
    ("args", "--async-offload 4", (*PROFILE_5090, "--async-offload", "4")),
])
def test_an_option_replaces_the_flags_of_its_class_and_joins_the_fast_list(klass: str, value: Any,
                                                                           args: tuple[str, ...]) -> None:
    assert apply_args(PROFILE_5090, [option(klass, value)]) == args


def test_options_of_one_class_replace_each_other_values_and_all() -> None:
    args = apply_args(PROFILE_5090, [option("cache", "lru:16"), option("cache", "classic"),
                                     option("vae", "fp16"), option("vae", "bf16")])
    assert args == (*PROFILE_5090, "--cache-classic", "--bf16-vae")
    assert apply_args(("--fast",), [option("fast", "autotune")]) == ("--fast",)  # a bare --fast is every feature


def test_the_allocator_and_compile_options() -> None:
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "OTHER": "1"}
    assert apply_env(env, [option("alloc", "backend:cudaMallocAsync")])["PYTORCH_CUDA_ALLOC_CONF"] == \
        "backend:cudaMallocAsync"
    assert apply_env(env, [option("alloc", "")]) == {"OTHER": "1"}
    assert apply_env(env, [option("env", "OTHER="), option("env", "OMP_NUM_THREADS=1")]) == {
        "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True", "OMP_NUM_THREADS": "1"}
    cand = Candidate.of([option("compile", "inductor"), option("attention", "sage")])
    assert cand.ids == ("attention=sage", "compile=inductor")  # named in class order
    row = cand.tier(TIERS["rtx5090"])
    assert row.torch_compile == "inductor"
    assert row.args[-1] == "--use-sage-attention"


def test_two_values_of_one_variable_or_of_an_exclusive_class_clash() -> None:
    from pytest_wan22.tune import clash

    assert clash(option("env", "OMP_NUM_THREADS=1"), option("env", "OMP_NUM_THREADS=2"))
    assert not clash(option("env", "OMP_NUM_THREADS=1"), option("env", "MKL_NUM_THREADS=1"))
    assert clash(option("attention", "sage"), option("attention", "flash"))
    assert not clash(option("fast", "autotune"), option("fast", "fp8_matrix_mult"))
    assert not clash(option("args", "--async-offload"), option("args", "--disable-pinned-memory"))


def test_the_space_is_the_rows_table_narrowed_by_the_flag() -> None:
    space = TIERS["rtx5090"].tune
    assert space is not None
    ids = [o.id for o in space_options(space)]
    assert ids[:3] == ["attention=sage", "attention=flash", "fast=fp8_matrix_mult"]
    assert [o.id for o in space_options(space, ["attention", "reserve_vram=2,cache=lru:8"])] == [
        "attention=sage", "attention=flash", "reserve_vram=2", "cache=lru:8"]


@pytest.mark.parametrize(("items", "message"), [
    (["speed"], "'speed' is no option class"),
    (["attention=xformers"], 'the value is not one of "pytorch", "sage"'),
    (["cache=lru"], 'the value is not one of "classic", "none", "lru:N"'),
    (["reserve_vram=lots"], r"the value is not a number >= 0 \(GB\)"),
])
def test_a_bad_space_entry_is_named(items: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_tune_items(items)


# --------------------------------------------------------------------------- the tier row

@pytest.mark.parametrize("name", sorted(TIERS))
def test_a_row_written_reads_back_the_same(tmp_path: Path, name: str) -> None:
    path = tmp_path / "row.toml"
    path.write_text(tier_toml(TIERS[name]))
    assert load_tiers(path)[name] == TIERS[name]


def test_a_tuned_row_with_platform_tables_and_a_space_reads_back(tmp_path: Path) -> None:
    from pytest_wan22.tiers import PlatformSettings

    tier = replace(TIERS["rtx4090"], windows=PlatformSettings(("--reserve-vram", "1.5"), {"X": "1"}),
                   torch_compile="inductor", judge_timings=True, tolerances=("step:1%",),
                   tune=TuneSpace(reserve_vram=(0.5,), min_psnr={"attention": 30.0}, min_gain=0.05))
    path = tmp_path / "row.toml"
    path.write_text("# a comment block\n\n" + tier_toml(tier))
    assert load_tiers(path)["rtx4090"] == tier


# --------------------------------------------------------------------------- class of work and speed

def test_pass_order_interpolation_and_compile_share_a_class_of_work_size_and_models_do_not() -> None:
    def cls(v: Variant) -> str:
        return work_class(v.build(), v.workflow.name)

    same = [BASE, BASE.pass_order("low_high"), BASE.interpolate(2), BASE.torch_compile(), BASE.label("x")]
    assert len({cls(v) for v in same}) == 1
    assert cls(BASE.duration(10)) != cls(BASE)
    assert cls(BASE.resolution(1280, 720)) != cls(BASE)
    assert cls(BASE.schedule("default")) != cls(BASE)  # no LightX2V LoRAs: other model files


@pytest.mark.parametrize(("estimate", "low", "high", "status"), [
    (-0.10, -0.15, -0.05, "faster"),
    (-0.01, -0.02, -0.001, "no gain"),  # below zero, but the 2% gain is ruled out
    (0.03, 0.01, 0.05, "slower"),
    (-0.03, -0.08, 0.02, "undecided"),
    (-0.05, -0.12, 0.01, "undecided"),  # could be a gain: the interval reaches zero
])
def test_the_speed_rule(estimate: float, low: float, high: float, status: str) -> None:
    wall = Check("wall", "ok", estimate, low, high)
    assert judge_speed(wall, 0.02) == status


# --------------------------------------------------------------------------- the search on fake servers

Walls = Callable[[Sequence[str], int], float]


def _tuner(tmp_path: Path, walls: Walls, *, space: TuneSpace, outputs: Callable[..., FrameDiff] | None = None,
           oom: Sequence[str] = (), budget: float | None = None, clock: Callable[[], float] = time.monotonic,
           rounds: int = 6) -> tuple[Tuner, FakeWorld]:
    """A tuner whose servers' wall time is walls(launch args, frames of the graph)."""
    (tmp_path / "comfy").mkdir(exist_ok=True)
    tier = replace(TIERS["rtx5090"], tune=space)
    settings = Settings(rootdir=tmp_path, tiers={**TIERS, "rtx5090": tier}, comfyui_dir=tmp_path / "comfy",
                        rounds=rounds, min_rounds=3, tune=True, tune_budget=budget)
    world = FakeWorld()
    state = State(settings, tier, "rtx5090 (test)", device=DEVICE)
    pool = ServerPool(settings, make_profile(tier), tmp_path / "work", None, DEVICE, launcher=world.launcher,
                      client=world.client, sides=tune_sides(settings))
    jitter = iter([0.0, 0.01, -0.01, 0.005, -0.005] * 1000)

    def run_prompt(ctx: RunContext, prompt: Mapping[str, Any], **kw: Any) -> RunRecord:
        record = world.run_prompt(ctx, prompt, **kw)
        box = world.by_url(ctx.client.url)  # type: ignore[attr-defined]
        frames = next(n["inputs"]["length"] for n in prompt.values() if n["class_type"] == "WanImageToVideo")
        wall = walls(box.spec.args, frames) * (1.0 + next(jitter))
        if any(flag in box.spec.args for flag in oom):
            return replace(record, outcome="oom", message="out of memory")
        return replace(record, wall_s=wall)

    gate = Gate(state, pool, tier, run_prompt=run_prompt)
    same = outputs or (lambda a, b: FrameDiff(frames=81, counts=(81, 81)))
    tuner = Tuner(gate, make_profile(tier), RoundPlan.of(settings), outputs=same,
                  available=lambda modules: {m: "not installed" for m in modules if m == "flash_attn"},
                  clock=clock)
    for v in (BASE, BASE.duration(10)):
        world.provide([v.build()])
    return tuner, world


def _rows(tuner: Tuner) -> list[tuple[str, str, str, str]]:
    return [(t.cls.split("-")[1], t.stage, t.candidate.name, t.status) for t in tuner.trials]


def _speeds(gains: Mapping[str, float], frames_penalty: Mapping[tuple[str, int], float] | None = None) -> Walls:
    """Wall time 10 s, less each gain (a fraction) whose flag the server was launched with; a penalty where a
    flag meets a graph of that many frames."""
    def walls(args: Sequence[str], frames: int) -> float:
        wall = 10.0
        for flag, gain in gains.items():
            if flag in args:
                wall *= 1.0 - gain
        for (flag, n), penalty in (frames_penalty or {}).items():
            if flag in args and frames == n:
                wall *= 1.0 + penalty
        return wall
    return walls


def test_singles_then_greedy_combination_and_one_backend_at_a_time(tmp_path: Path) -> None:
    space = TuneSpace(attention=("sage", "split", "flash"), fast=("fp8_matrix_mult",), vram=("highvram",))
    tuner, _ = _tuner(tmp_path, _speeds({"--use-sage-attention": 0.20, "--use-split-cross-attention": 0.10,
                                         "fp8_matrix_mult": 0.15}), space=space, oom=["--highvram"])
    result = tuner.tune(BASE, test_id="t")
    assert result.records
    assert all(r.side == "A" for r in result.records)
    assert _rows(tuner) == [
        ("5s", "single", "attention=sage", "faster"),
        ("5s", "single", "attention=split", "faster"),
        ("5s", "single", "attention=flash", "unavailable"),
        ("5s", "single", "fast=fp8_matrix_mult", "faster"),
        ("5s", "single", "vram=highvram", "oom"),
        ("5s", "combination", "attention=sage + fast=fp8_matrix_mult", "faster"),  # the fastest single first
        ("5s", "combination", "attention=split", "exclusive"),  # against sage + fp8: one backend at a time
        ("5s", "confirmation", "attention=sage + fast=fp8_matrix_mult", "faster"),
    ]
    assert tuner.winner().ids == ("attention=sage", "fast=fp8_matrix_mult")
    data = tuner.finish(tmp_path / "tuned.toml")
    row = load_tiers(tmp_path / "tuned.toml")["rtx5090"]
    assert row.args == ("--normalvram", "--reserve-vram", "1.0", "--fast", "fp16_accumulation", "fp8_matrix_mult",
                        "--use-sage-attention")
    assert data["winner"]["evidence"][0]["stage"] == "confirmation"
    comments = " ".join(line.lstrip("# ") for line in (tmp_path / "tuned.toml").read_text().splitlines()
                        if line.startswith("#"))
    assert "Winner: attention=sage + fast=fp8_matrix_mult" in comments
    assert "flash_attn does not import" in comments
    assert "pip install flash-attn" in comments


def test_a_winner_that_loses_on_another_class_of_work_falls_back_along_the_chain(tmp_path: Path) -> None:
    space = TuneSpace(attention=("sage",), fast=("fp8_matrix_mult",))
    walls = _speeds({"--use-sage-attention": 0.20, "fp8_matrix_mult": 0.15},
                    {("fp8_matrix_mult", 161): 0.5})  # fp8 is slower on the 10 s clips
    tuner, _ = _tuner(tmp_path, walls, space=space)
    tuner.tune(BASE, test_id="five")
    with pytest.raises(Skip, match="tuned as high_low-5s"):
        tuner.tune(BASE.pass_order("low_high"), test_id="five, low-high")
    tuner.tune(BASE.duration(10), test_id="ten")
    assert _rows(tuner)[3:] == [
        ("5s", "confirmation", "attention=sage + fast=fp8_matrix_mult", "faster"),
        ("10s", "confirmation", "attention=sage + fast=fp8_matrix_mult", "slower"),
        ("10s", "confirmation", "attention=sage", "faster"),  # sage alone was tried on the 5 s clip as a single
    ]
    assert tuner.winner().ids == ("attention=sage",)


def test_a_candidate_that_changes_the_output_is_rejected_whatever_its_speed(tmp_path: Path) -> None:
    def outputs(a: RunRecord, b: RunRecord) -> FrameDiff:
        args = b.environment.argv
        if "--use-split-cross-attention" in args:
            return FrameDiff(frames=81, psnr_db=24.0, worst_db=22.0)
        if "fp8_matrix_mult" in args:
            return FrameDiff(frames=81, psnr_db=28.0, worst_db=27.0)  # allowed for fp8 (26 dB), not for attention
        if "--bf16-vae" in args:
            return FrameDiff(frames=81, psnr_db=60.0, blank_b=(40,))
        return FrameDiff(frames=81)

    space = TuneSpace(attention=("split",), fast=("fp8_matrix_mult",), vae=("bf16",))
    tuner, _ = _tuner(tmp_path, _speeds({"--use-split-cross-attention": 0.3, "fp8_matrix_mult": 0.1,
                                         "--bf16-vae": 0.1}), space=space, outputs=outputs)
    tuner.tune(BASE, test_id="t")
    by = {t.candidate.name: t for t in tuner.trials}
    assert by["attention=split"].status == "output differs"
    assert "below the 32 dB" in by["attention=split"].reason
    assert by["attention=split"].rounds == (1, 1)
    assert by["vae=bf16"].status == "output differs"
    assert "frame 41" in by["vae=bf16"].reason
    assert by["fast=fp8_matrix_mult"].status == "faster"
    assert tuner.winner().ids == ("fast=fp8_matrix_mult",)


def test_the_budget_stops_the_search_and_says_what_was_left(tmp_path: Path) -> None:
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # every look at the clock is a second of GPU time
        return now[0]

    space = TuneSpace(attention=("sage",), fast=("fp8_matrix_mult", "autotune"))
    tuner, _ = _tuner(tmp_path, _speeds({"--use-sage-attention": 0.2}), space=space, budget=12.0, clock=clock)
    tuner.tune(BASE, test_id="t")
    statuses = [t.status for t in tuner.trials]
    assert statuses[0] in ("faster", "cut short")
    assert "not tried" in statuses
    data = tuner.finish(tmp_path / "tuned.toml")
    assert data["out_of_budget"]
    assert data["not_tried"]
    assert "the budget ran out" in (tmp_path / "tuned.toml").read_text()


def test_the_tune_options_and_what_they_refuse(tmp_path: Path) -> None:
    parse = BY_NAME["tune_budget"].parse
    assert [parse(t) for t in ("90", "90s", "45m", "2h", "1h30m")] == [90.0, 90.0, 2700.0, 7200.0, 5400.0]
    with pytest.raises(ValueError, match="not a duration"):
        parse("soon")

    def settings(**cli: Any) -> Settings:
        return resolve(tmp_path, lambda o: cli.get(o.name), lambda o: None, env={})

    assert settings(tune=True, tune_budget=60.0).tune_budget == 60.0
    for bad, flag in (({"update_baselines": True}, "--wan22-update-baselines"),
                      ({"url": "http://127.0.0.1:8188"}, "--wan22-url"),
                      ({"ab_args": "--highvram"}, "the --wan22-ab-\\* options")):
        with pytest.raises(ConfigError, match=f"--wan22-tune runs A/Bs of its own.*drop {flag}"):
            settings(tune=True, **bad)
    with pytest.raises(ConfigError, match="names the plugin's own tier table"):
        settings(tune=True, tune_out=str(REPO / "pytest_wan22" / "tiers.toml"))


def test_a_tier_profile_that_does_not_run_fails_the_test(tmp_path: Path) -> None:
    tuner, _ = _tuner(tmp_path, _speeds({}), space=TuneSpace(attention=("sage",)), oom=["--normalvram"])
    with pytest.raises(Fail, match="the rtx5090 tier's own profile does not run, so nothing can be tuned"):
        tuner.tune(BASE, test_id="t")
    assert [t.status for t in tuner.trials] == ["error"]


def test_a_later_class_with_nothing_to_confirm_is_skipped_saying_why(tmp_path: Path) -> None:
    tuner, _ = _tuner(tmp_path, _speeds({}), space=TuneSpace(attention=("sage",)))
    tuner.tune(BASE, test_id="five")
    assert [t.status for t in tuner.trials] == ["no gain"]
    with pytest.raises(Skip, match="nothing to confirm on it, since no candidate beat the tier's profile on "
                                   "high_low-5s-640p-lightx2v_4step"):
        tuner.tune(BASE.duration(10), test_id="ten")
