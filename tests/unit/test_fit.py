"""The checks that decide a successful run's fate: the saved video, and whether the variant fits in VRAM."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pytest_wan22.fit import Allowance, allowance, check_output, check_vram, judged_peak_mib, reserve_gib
from pytest_wan22.records import OutputFile, RunRecord, VramReport
from pytest_wan22.workflows import ExpectedOutput

EXPECTED = ExpectedOutput(frames=81, fps=16.0, width=640, height=640, seconds=5.0)
VIDEO = OutputFile("v_00001_.mp4", "", "output", "15", path="/out/v_00001_.mp4", bytes=2048, frames=81,
                   width=640, height=640, fps=16.0)
RUN = RunRecord("high_low-5s", "wan22_i2v_a14b", "rtx4090", "success", round=1, outputs=(VIDEO,))


def _with(**video: object) -> RunRecord:
    return replace(RUN, outputs=(replace(VIDEO, **video),))


# --------------------------------------------------------------------------- the saved video


def test_the_right_video_passes() -> None:
    assert check_output(RUN, EXPECTED) is None


@pytest.mark.parametrize(("video", "message"), [
    ({"frames": 80}, "high_low-5s round 2: v_00001_.mp4 has 80 frames, the variant should give 81"),
    ({"frames": 82}, "has 82 frames, the variant should give 81"),
    ({"fps": 16.02}, "v_00001_.mp4 plays at 16.02 fps, the variant should give 16"),
    ({"fps": 15.98}, "plays at 15.98 fps"),
    ({"fps": 32.0}, "plays at 32 fps"),
    ({"bytes": 0, "frames": None, "fps": None}, "high_low-5s round 2: v_00001_.mp4 is empty (0 bytes)"),
])
def test_a_wrong_video_is_named(video: dict[str, object], message: str) -> None:
    assert message in (check_output(_with(**video), EXPECTED) or "")


@pytest.mark.parametrize("fps", [16.005, 15.995, 16.0])
def test_fps_within_a_hundredth_passes(fps: float) -> None:
    assert check_output(_with(fps=fps), EXPECTED) is None


def test_no_file_fails() -> None:
    message = check_output(replace(RUN, outputs=()), EXPECTED)
    assert message == "high_low-5s round 2: the run succeeded but saved no file"


def test_what_cannot_be_read_is_not_judged() -> None:
    unread = _with(frames=None, fps=None, bytes=None, path=None)  # a server whose output folder is elsewhere
    assert check_output(unread, EXPECTED) is None
    assert check_output(_with(fps=None), EXPECTED) is None  # a track without a readable rate: frames still count
    assert check_output(_with(fps=None, frames=80), EXPECTED) is not None
    loose = ExpectedOutput(frames=None, fps=None, width=None, height=None, seconds=None)
    assert check_output(_with(frames=3, fps=2.0), loose) is None


def test_the_first_video_is_judged_and_an_empty_file_anywhere_fails() -> None:
    png = OutputFile("preview.png", "", "output", "16", bytes=100)
    assert check_output(replace(RUN, outputs=(png, VIDEO)), EXPECTED) is None
    bad = replace(VIDEO, frames=9)
    assert "has 9 frames" in (check_output(replace(RUN, outputs=(png, bad, VIDEO)), EXPECTED) or "")
    empty_png = replace(png, bytes=0)
    assert "preview.png is empty" in (check_output(replace(RUN, outputs=(VIDEO, empty_png)), EXPECTED) or "")


# --------------------------------------------------------------------------- the allowance


@pytest.mark.parametrize(("argv", "gib"), [
    ((), 0.0),
    (("--normalvram", "--reserve-vram", "1.0", "--fast"), 1.0),
    (("--reserve-vram=2.5",), 2.5),
    (("--reserve-vram", "1", "--reserve-vram", "0.5"), 0.5),
    (("--reserve-vram",), 0.0),
    (("--reserve-vram", "lots"), 0.0),
    (("--reserve-vram-x", "3"), 0.0),
    (("--reserve-vram=1=2",), 0.0),  # not a number: ignored
    (("--reserve-vram", "lots", "--reserve-vram", "2"), 2.0),  # a bad one does not hide a later good one
    (("--reserve-vram=x", "--reserve-vram=3"), 3.0),
])
def test_reserve_vram_from_the_command_line(argv: tuple[str, ...], gib: float) -> None:
    assert reserve_gib(argv) == gib


def test_allowance_is_the_card_minus_the_reserve_or_the_cap() -> None:
    assert allowance(None, ("--reserve-vram", "1")) is None
    card = allowance(24564.0, ("--reserve-vram", "1.0"))
    assert card == Allowance(24564 / 1024 - 1.0, 24564 / 1024, 1.0)
    assert card.describe() == "the card's 23.99 GiB minus --reserve-vram 1"
    assert allowance(143771.0, ()).describe() == "the card's 140.40 GiB"  # type: ignore[union-attr]
    # Emulated: the launcher sets --reserve-vram to card - cap; the cap is what counts.
    emulated = allowance(143771.0, ("--reserve-vram", f"{143771 / 1024 - 23.5:.2f}"), cap_gib=23.5)
    assert emulated is not None
    assert emulated.gib == 23.5
    assert emulated.describe() == "the emulated card's 23.5 GiB"
    assert allowance(30000.0, (), cap_gib=40.0).gib == pytest.approx(30000 / 1024)  # type: ignore[union-attr]


@pytest.mark.parametrize(("allowed", "text"), [
    (Allowance(23.5, 24.0, 0.5, cap_gib=23.5), "the emulated card's 23.5 GiB"),  # the cap is the allowance
    (Allowance(22.0, 24.0, 2.0, cap_gib=23.0), "the card's 24.00 GiB minus --reserve-vram 2"),  # the reserve is
    (Allowance(22.0, 24.0, 2.0), "the card's 24.00 GiB minus --reserve-vram 2"),
    (Allowance(24.0, 24.0, 0.0), "the card's 24.00 GiB"),
])
def test_the_allowance_names_what_limits_it(allowed: Allowance, text: str) -> None:
    assert allowed.describe() == text


def test_judged_peak_prefers_the_allocator_then_nvml() -> None:
    assert judged_peak_mib(RUN) is None
    nvml = VramReport(True, peak_process_mib=9000.0)
    assert judged_peak_mib(replace(RUN, vram=nvml)) == 9000.0
    assert judged_peak_mib(replace(RUN, vram=replace(nvml, torch_peak_reserved_mib=8000.0))) == 8000.0
    assert judged_peak_mib(replace(RUN, vram=VramReport(False, peak_process_mib=9000.0))) is None


# --------------------------------------------------------------------------- fitting

ALLOWED = Allowance(23.0, 24.0, 1.0)


def _peak(mib: float, torch_mib: float | None = None, **kw: object) -> RunRecord:
    vram = VramReport(True, peak_process_mib=mib, torch_peak_reserved_mib=torch_mib)
    return replace(RUN, vram=vram, **kw)  # type: ignore[arg-type]


def _fit(*records: RunRecord, budget: float | None = None, allowed: Allowance | None = ALLOWED,
         offload: bool = False) -> str | None:
    return check_vram(list(records), "high_low-5s", "rtx4090", budget_gib=budget, allowed=allowed,
                      allow_offload=offload)


def test_filling_the_allowance_fits() -> None:
    assert _fit(_peak(23.0 * 1024)) is None
    assert _fit(_peak(30.0 * 1024, torch_mib=23.0 * 1024)) is None  # NVML counts the context; torch is judged


@pytest.mark.parametrize(("mib", "torch_mib"), [(23.0 * 1024 + 1, None), (10.0, 23.0 * 1024 + 1)])
def test_past_the_allowance_does_not_fit(mib: float, torch_mib: float | None) -> None:
    message = _fit(_peak(mib, torch_mib))
    assert message is not None
    assert message.startswith("high_low-5s round 2 does not fit on rtx4090: it peaked at 23.00 GiB, past the "
                              "23.00 GiB the profile lets ComfyUI use (the card's 24.00 GiB minus --reserve-vram 1)")


def test_without_a_card_or_a_figure_nothing_is_judged() -> None:
    assert _fit(_peak(99.0 * 1024), allowed=None) is None
    assert _fit(RUN) is None
    assert _fit(replace(RUN, vram=VramReport(False, reason="no NVML"))) is None


@pytest.mark.parametrize("sign", [
    "offload: model loaded partially, 2796.10 MB offloaded",
    "swap: model unloaded partially to make room (7012.34 MB freed)",
    "oom_retry: VAE decoding ran out of memory and fell back to tiled",
])
def test_signs_that_it_does_not_fit(sign: str) -> None:
    run = _peak(5.0 * 1024, warnings=("recompile: torch.compile recompiled", sign))
    message = _fit(run)
    assert message == (f"high_low-5s round 2 does not fit on rtx4090 at 5.00 GiB: ComfyUI had to make room "
                       f"({sign.split(': ', 1)[1]}); allow it for block-swap style variants with "
                       "allow_offload_labels in the tier table or wan22_run(allow_offload=True)")
    assert _fit(run, offload=True) is None
    assert "does not fit on rtx4090: ComfyUI" in (_fit(replace(run, vram=None)) or "")  # no figure: still a sign


def test_every_sign_is_named() -> None:
    run = _peak(5.0 * 1024, warnings=("offload: model loaded partially, 1.00 MB offloaded",
                                      "swap: kind: with a colon"))
    assert "ComfyUI had to make room (model loaded partially, 1.00 MB offloaded; kind: with a colon)" in (
        _fit(run) or "")


def test_a_recompile_is_no_sign_and_every_round_is_judged() -> None:
    assert _fit(_peak(5.0, warnings=("recompile: torch.compile recompiled",))) is None
    later = _peak(5.0, warnings=("swap: model unloaded partially to make room (1.00 MB freed)",), round=2)
    assert "round 3 does not fit" in (_fit(_peak(5.0), later) or "")
    assert "round 3 " in (_fit(_peak(5.0), _peak(24.0 * 1024, round=2)) or "")


def test_a_user_budget_applies_on_top() -> None:
    assert _fit(_peak(10.0 * 1024), budget=10.0) is None
    message = _fit(_peak(10.0 * 1024 + 1), budget=10.0)
    assert message is not None
    assert message == ("high_low-5s round 2: peak VRAM 10.00 GiB is over the budget of 10 GiB (rtx4090); the budget "
                       "comes from the tier table (vram_budget_gib / budgets), @pytest.mark.wan22_budget or "
                       "wan22_run(budget_gib=...)")
    # The budget is judged on NVML's peak, whatever the allocator held.
    assert _fit(_peak(11.0 * 1024, torch_mib=1.0), budget=10.0) is not None
    assert _fit(_peak(11.0 * 1024), budget=10.0, allowed=None) is not None
    assert _fit(_peak(30.0 * 1024, torch_mib=1.0), budget=None) is None
