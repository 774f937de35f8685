from __future__ import annotations

from pathlib import Path

import pytest

from pytest_wan22.errors import ConfigError
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
        ("[tiers.x]\nmatcher = []\n", "unknown key(s) matcher"),
        ("[tiers.X5]\nmatch = []\n", "must be lower-case"),
        ("[tiers.x\n", "not valid TOML"),
    ],
)
def test_bad_table_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    bad = tmp_path / "tiers.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=r"tier|TOML") as info:
        load_tiers(bad)
    assert needle in str(info.value)


def test_missing_table_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--wan22-tiers-file"):
        load_tiers(tmp_path / "nope.toml")


def test_profile_pins_gpu_and_keeps_tier_args() -> None:
    p = make_profile(TIERS["rtx5090"], extra_args=["--disable-smart-memory"], gpu="1")
    assert p.args[: len(TIERS["rtx5090"].args)] == TIERS["rtx5090"].args
    assert p.args[-1] == "--disable-smart-memory"
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
    p = make_profile(tier, extra_args=("--use-sage-attention",))
    assert "--use-pytorch-cross-attention" not in p.args
    assert p.args[-1] == "--use-sage-attention"
    assert p.base_args == tier.args


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
