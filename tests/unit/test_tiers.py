from __future__ import annotations

from pathlib import Path

import pytest

from pytest_wan22.errors import ConfigError
from pytest_wan22.servers import launch_command
from pytest_wan22.settings import Side
from pytest_wan22.tiers import Tier, cpu_tier, detect_tier, load_tiers, make_profile, merge_args

TIERS = load_tiers()


def test_shipped_table_has_every_tier() -> None:
    assert list(TIERS) == ["rtx5090", "rtx4090", "a100", "h200", "cpu"]
    assert cpu_tier(TIERS) == "cpu"
    assert not TIERS["cpu"].is_gpu
    assert TIERS["cpu"].synthetic == "tiny"


@pytest.mark.parametrize(
    ("name", "mib", "tier"),
    [
        ("NVIDIA GeForce RTX 5090", 32607, "rtx5090"),
        ("NVIDIA GeForce RTX 4090", 24564, "rtx4090"),
        ("NVIDIA A100-SXM4-40GB", 40960, "a100"),
        ("NVIDIA A100 80GB PCIe", 81920, "a100"),
        ("NVIDIA H200", 143771, "h200"),
        ("NVIDIA GeForce RTX 4090 D", 49140, None),  # a modded 48 GB card is not a 24 GB tier
        ("NVIDIA L4", 23034, None),
        (None, None, None),
    ],
)
def test_detect_tier_by_name_and_memory(name: str | None, mib: float | None, tier: str | None) -> None:
    assert detect_tier(TIERS, name, mib) == tier


def test_budget_prefers_exact_then_most_specific_label() -> None:
    h200 = TIERS["h200"]
    assert h200.budget_gib("high_low-5s-640p") == h200.vram_budget_gib
    assert h200.budget_gib("high_low-10s-640p") == 100.0
    assert h200.budget_gib("high_low-10s-720p") == 120.0


def test_user_table_replaces_and_adds_rows(tmp_path: Path) -> None:
    extra = tmp_path / "tiers.toml"
    extra.write_text('[tiers.rtx5090]\nmatch = ["RTX 5090"]\nvram_budget_gib = 29.5\n'
                     '[tiers.l40s]\nmatch = ["L40S"]\nargs = ["--highvram"]\n')
    tiers = load_tiers(extra)
    assert tiers["rtx5090"].vram_budget_gib == 29.5
    assert tiers["rtx5090"].args == ()
    assert detect_tier(tiers, "NVIDIA L40S", 46068) == "l40s"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[tiers.x]\nmatcher = []\n", "unknown key tiers.x.matcher; known keys there: description, match,"),
        ("[tiers.X5]\nmatch = []\n", "must be lower-case"),
        ("[tiers.x\n", "not valid TOML"),
        ("[tier.l40s]\nmatch = []\n", "unknown table or key 'tier'"),
        ("[tiers]\nx = 3\n", "tiers.x must be a table"),
    ],
)
def test_bad_table_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"tier|TOML") as info:
        load_tiers(bad)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("row", "named"),
    [
        ('vram_budget_gib = "lots"', 'tiers.l40s.vram_budget_gib = "lots" is not a number > 0 (GiB)'),
        ("vram_budget_gib = 0", "tiers.l40s.vram_budget_gib = 0 is not a number > 0 (GiB)"),
        ("vram_budget_gib = true", "tiers.l40s.vram_budget_gib = true is not a number > 0"),
        ("min_memory_gib = -1", "tiers.l40s.min_memory_gib = -1 is not a number >= 0 (GiB)"),
        ("min_memory_gib = 50\nmax_memory_gib = 40", "tiers.l40s.min_memory_gib (50) is above"),
        ('match = "L40S"', 'tiers.l40s.match = "L40S" is not a list'),
        ('match = ["L40S("]', "tiers.l40s.match[0] = \"L40S(\" is not a regular expression"),
        ('args = ["--highvram", 1]', "tiers.l40s.args[1] = 1 is not a string"),
        ('budgets = { "10s" = "big" }', 'tiers.l40s.budgets.10s = "big" is not a number > 0 (GiB)'),
        ("run_timeout_s = -5", "tiers.l40s.run_timeout_s = -5 is not a number > 0 (seconds)"),
        ('models = "huge"', 'tiers.l40s.models = "huge" is not one of "user", "tiny", "a14b"'),
        ("env = { A = [1] }", "tiers.l40s.env.A = [1] is not a string"),
        ("scale = { width = 64.5 }", "tiers.l40s.scale.width = 64.5 is not a whole number >= 1"),
        ("scale = { depth = 3 }", "unknown key tiers.l40s.scale.depth; known keys there: width, height, frames"),
        ("scale = { steps = 4, split = 4 }", "tiers.l40s.scale.split (4) must be below tiers.l40s.scale.steps (4)"),
        ('suite = { resolutions = "720p" }', 'tiers.l40s.suite.resolutions = "720p" is not a non-empty list'),
        ("suite = { resolutions = [] }", "tiers.l40s.suite.resolutions = [] is not a non-empty list"),
        ('suite = { resolutions = ["1080p"] }', 'tiers.l40s.suite.resolutions[0] = "1080p" is not one of "480p"'),
        ('suite = { resolutions = ["1000x720"] }', "multiples of 16"),
        ("suite = { durations = [5, 7.1] }", "tiers.l40s.suite.durations[1] = 7.1 is not seconds > 0 in steps"),
        ('suite = { interpolation = ["yes"] }', 'tiers.l40s.suite.interpolation[0] = "yes" is not true or false'),
        ('suite = { schedule = "fast" }', 'tiers.l40s.suite.schedule = "fast" is not one of "default", '
                                          '"lightx2v_4step"'),
        ("suite = { compile = 1 }", "tiers.l40s.suite.compile = 1 is not true or false"),
        ('judge_timings = "no"', 'tiers.l40s.judge_timings = "no" is not true or false'),
        ('suite = { attention = ["xformers"] }', 'tiers.l40s.suite.attention[0] = "xformers" is not one of "sage"'),
        ('suite = { pass_orders = ["low_low"] }', 'tiers.l40s.suite.pass_orders[0] = "low_low" is not one of'),
        ('suite = { resolution = ["720p"] }', "unknown key tiers.l40s.suite.resolution; known keys there: "
                                              "resolutions, pass_orders,"),
    ],
)
def test_a_bad_value_is_refused_naming_the_file_and_the_key(tmp_path: Path, row: str, named: str) -> None:
    bad = tmp_path / "my-tiers.toml"
    bad.write_text(f"[tiers.l40s]\n{row}\n")
    with pytest.raises(ConfigError) as info:
        load_tiers(bad)
    text = str(info.value)
    assert text.startswith(f"{bad}: ")
    assert named in text
    assert "--wan22-tiers-file" in text


def test_every_row_key_is_a_tier_field_and_checked() -> None:
    from pytest_wan22.tiers import ROW_KEYS, SUITE_KEYS, Suite

    assert set(ROW_KEYS) == {f for f in Tier.__dataclass_fields__ if f != "name"}
    assert set(SUITE_KEYS) == set(Suite.__dataclass_fields__)


def test_a_row_without_a_suite_table_gets_the_default_suite(tmp_path: Path) -> None:
    from pytest_wan22.tiers import Suite

    extra = tmp_path / "tiers.toml"
    extra.write_text('[tiers.l40s]\nmatch = ["L40S"]\n[tiers.l4]\nmatch = ["L4$"]\n'
                     '[tiers.l4.suite]\nresolutions = ["480p", "1024x576"]\ndurations = [2.5]\n'
                     'interpolation = [false]\nattention = ["sage"]\n')
    tiers = load_tiers(extra)
    assert tiers["l40s"].suite == Suite()
    l4 = tiers["l4"].suite
    assert (l4.resolutions, l4.durations, l4.interpolation, l4.attention) == (
        ("480p", "1024x576"), (2.5,), (False,), ("sage",))
    assert (l4.schedule, l4.compile, l4.full_schedule) == ("lightx2v_4step", True, True)  # the omitted defaults


def test_shipped_rows_say_what_the_suite_runs_on_each_tier() -> None:
    assert TIERS["rtx4090"].suite.resolutions == ("480p", "720p")
    assert TIERS["h200"].suite.attention == ("flash", "sage")
    cpu = TIERS["cpu"].suite
    assert (cpu.schedule, cpu.compile, cpu.full_schedule, cpu.attention) == ("default", False, False, ())


def test_missing_table_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--wan22-tiers-file"):
        load_tiers(tmp_path / "nope.toml")


def test_profile_pins_gpu_and_keeps_tier_args() -> None:
    p = make_profile(TIERS["rtx5090"], gpu="1")
    args, _ = launch_command(p, Side(None, "python", ("--disable-smart-memory",)))
    assert args[: len(TIERS["rtx5090"].args)] == TIERS["rtx5090"].args
    assert args[-1] == "--disable-smart-memory"
    assert p.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert p.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert p.env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert "CUDA_VISIBLE_DEVICES" not in make_profile(TIERS["cpu"], gpu="0").env


def test_emulation_caps_memory_and_plans_for_the_small_card() -> None:
    p = make_profile(TIERS["rtx4090"], gpu="0", device_name="NVIDIA H200", device_memory_mib=143771, emulate=True)
    assert p.env["WAN22_MEMORY_CAP_GIB"] == "23.5"
    assert p.args.count("--reserve-vram") == 1
    reserve = float(p.args[p.args.index("--reserve-vram") + 1])
    assert reserve == pytest.approx(143771 / 1024 - 23.5, abs=0.01)
    assert p.name == "rtx4090@NVIDIA H200"


def test_emulating_a_bigger_card_is_refused() -> None:
    with pytest.raises(ConfigError, match="not bigger"):
        make_profile(TIERS["a100"], device_name="NVIDIA GeForce RTX 4090", device_memory_mib=24564, emulate=True)


def test_scale_text_says_how_a_tier_shrinks_variants() -> None:
    tiers = load_tiers()
    assert tiers["cpu"].scale_text() == "64x64, 9 frames, 4 steps split 2"
    assert tiers["h200"].scale_text() is None
    assert Tier("x", scale={"frames": 17}).scale_text() == "17 frames"
    assert Tier("x", scale={"steps": 2}).scale_text() == "2 steps"


@pytest.mark.parametrize(("base", "extra", "expected"), [
    (("--highvram", "--use-pytorch-cross-attention"), ("--use-sage-attention",),
     ("--highvram", "--use-sage-attention")),
    (("--normalvram", "--reserve-vram", "1.0"), ("--lowvram",), ("--reserve-vram", "1.0", "--lowvram")),
    (("--cache-lru", "8", "--fast"), ("--cache-none",), ("--fast", "--cache-none")),
    (("--highvram", "--use-pytorch-cross-attention"), ("--disable-smart-memory",),
     ("--highvram", "--use-pytorch-cross-attention", "--disable-smart-memory")),
    ((), ("--use-sage-attention",), ("--use-sage-attention",)),
])
def test_an_added_flag_replaces_the_profiles_flag_of_its_group(base: tuple[str, ...], extra: tuple[str, ...],
                                                                expected: tuple[str, ...]) -> None:
    assert merge_args(base, extra) == expected


def test_profile_keeps_its_tier_arguments_apart_from_the_extra_ones() -> None:
    tier = load_tiers(None)["h200"]
    p = make_profile(tier)
    args, _ = launch_command(p, Side(None, "python", ("--use-sage-attention",)))
    assert "--use-pytorch-cross-attention" not in args
    assert args[-1] == "--use-sage-attention"
    assert p.args == tier.args


def test_timings_are_judged_on_gpu_tiers_and_recorded_on_the_cpu_tier_unless_a_row_says_otherwise(
        tmp_path: Path) -> None:
    assert [t.name for t in TIERS.values() if not t.judges_timings] == ["cpu"]
    assert TIERS["cpu"].judge_timings is False  # said in the shipped row, not only by default
    extra = tmp_path / "tiers.toml"
    extra.write_text('[tiers.cpu]\nargs = ["--cpu"]\njudge_timings = true\n'
                     '[tiers.ci_cpu]\nargs = ["--cpu"]\n'
                     '[tiers.l40s]\nmatch = ["L40S"]\njudge_timings = false\n')
    mine = load_tiers(extra)
    assert (mine["cpu"].judges_timings, mine["ci_cpu"].judges_timings, mine["l40s"].judges_timings) == (
        True, False, False)


def test_skip_hints_lead_somewhere_that_works() -> None:
    from pytest_wan22.tiers import skip_hint

    table = load_tiers()
    no_gpu = skip_hint(table, ["rtx5090"], None)
    assert no_gpu == ("run it where rtx5090 is the GPU, or attach to a server there (--wan22-url); here, -m cpu "
                      "runs the same graphs on tiny synthetic models")
    assert "--wan22-tier" not in no_gpu  # a GPU profile on a machine without one only fails to start ComfyUI
    on_h200 = skip_hint(table, ["rtx5090", "rtx4090"], 143771)
    assert "--wan22-emulate-tier=rtx4090 (VRAM and fit judged, timings not compared)" in on_h200
    assert on_h200.endswith("force its launch profile on this GPU with --wan22-tier=rtx4090")
    on_4090 = skip_hint(table, ["h200"], 24564)  # a 24 GB card cannot emulate a 141 GB one
    assert "emulate" not in on_4090


def test_a_tier_row_carries_its_own_tolerances_under_the_flag(tmp_path: Path) -> None:
    from pytest_wan22.compare import Tolerance, parse_tolerance, tolerances
    from pytest_wan22.settings import Settings

    extra = tmp_path / "tiers.toml"
    extra.write_text('[tiers.l40s]\nmatch = ["L40S"]\ntolerances = ["step:1%", "wall:10%+1s"]\n')
    l40s = load_tiers(extra)["l40s"]
    assert l40s.tolerances == ("step:1%", "wall:10%+1s")
    row = Settings(tmp_path, TIERS).tolerances_for(l40s)
    assert (row["step"], row["wall"], row["decode"]) == (Tolerance("step", 0.01), Tolerance("wall", 0.1, 1.0),
                                                         tolerances([])["decode"])
    flag = Settings(tmp_path, TIERS, user_tolerances=(parse_tolerance("step:2%"),)).tolerances_for(l40s)
    assert (flag["step"], flag["wall"]) == (Tolerance("step", 0.02), Tolerance("wall", 0.1, 1.0))
    assert Settings(tmp_path, TIERS).tolerances_for(TIERS["h200"]) == tolerances([])
    assert Settings(tmp_path, TIERS).tolerances_for(None) == tolerances([])


def test_a_bad_tolerance_in_a_tier_row_names_the_tier_and_the_key(tmp_path: Path) -> None:
    extra = tmp_path / "tiers.toml"
    extra.write_text('[tiers.l40s]\nmatch = ["L40S"]\ntolerances = ["step:2"]\n')
    with pytest.raises(ConfigError, match=r'tiers.toml: tiers.l40s.tolerances\[0\] = "step:2" is not a tolerance '
                       r"METRIC:LIMIT \(tolerance 'step:2'"):
        load_tiers(extra)
