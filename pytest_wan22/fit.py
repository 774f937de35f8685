"""What decides a successful run's fate besides its timings: the saved video, and whether the variant fits.

Each check returns the failure message, or None when the run passes it; the pytest layer turns a message
into a failed test. A variant fits when it ran without offloading part of a model, without swapping models
between passes and without an out-of-memory retry, and its peak stayed within what the launch profile lets
ComfyUI use (the card's memory, or the emulated cap, minus ``--reserve-vram``). ComfyUI filling that
allowance is no failure: it loads what fits, by design. A budget the user sets (the tier table's
``vram_budget_gib`` / ``budgets``, ``@pytest.mark.wan22_budget``, ``wan22_run(budget_gib=...)``) applies on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .records import RunRecord, round_name
from .runner import warnings_of
from .workflows import ExpectedOutput

GIB = 1024.0  # MiB per GiB

# Log signs (runner.LOG_SIGNS kinds) that a variant does not fit: what ComfyUI absorbs rather than failing.
NOT_FITTING = ("offload", "swap", "oom_retry")


def check_output(record: RunRecord, expected: ExpectedOutput) -> str | None:
    """The saved video against what the variant should give: a file, not empty, its frame count and fps."""
    where = f"{record.variant_id} round {round_name(record)}"
    if not record.outputs:
        return f"{where}: the run succeeded but saved no file"
    empty = [o for o in record.outputs if o.bytes == 0]
    if empty:
        return f"{where}: {empty[0].filename} is empty (0 bytes)"
    videos = [o for o in record.outputs if o.frames is not None]
    if not videos:
        return None  # not an MP4 we can read (another container, or a server whose output folder is elsewhere)
    v = videos[0]
    if expected.frames is not None and v.frames != expected.frames:
        return f"{where}: {v.filename} has {v.frames} frames, the variant should give {expected.frames}"
    if expected.fps is not None and v.fps is not None and abs(v.fps - expected.fps) > 0.01:
        return f"{where}: {v.filename} plays at {v.fps:g} fps, the variant should give {expected.fps:g}"
    return None


def reserve_gib(argv: Sequence[str]) -> float:
    """The `--reserve-vram` of a ComfyUI command line, in GiB (0 without one; the last one counts)."""
    value = 0.0
    for i, arg in enumerate(argv):
        raw = None
        if arg == "--reserve-vram" and i + 1 < len(argv):
            raw = argv[i + 1]
        elif arg.startswith("--reserve-vram="):
            raw = arg.split("=", 1)[1]
        if raw is not None:
            try:
                value = float(raw)
            except ValueError:
                continue
    return value


@dataclass(frozen=True)
class Allowance:
    """What the launch profile lets ComfyUI use: the card (or the emulated cap) minus --reserve-vram."""

    gib: float
    card_gib: float
    reserve_gib: float
    cap_gib: float | None = None

    def describe(self) -> str:
        """How the figure was reached, for a failure message."""
        if self.cap_gib is not None and self.cap_gib <= self.card_gib - self.reserve_gib:
            return f"the emulated card's {self.cap_gib:g} GiB"
        text = f"the card's {self.card_gib:.2f} GiB"
        return text + (f" minus --reserve-vram {self.reserve_gib:g}" if self.reserve_gib else "")


def allowance(card_mib: float | None, argv: Sequence[str], cap_gib: float | None = None) -> Allowance | None:
    """The allowance for a card of card_mib launched with argv (and an emulated cap), or None without a card."""
    if card_mib is None:
        return None
    card, reserve = card_mib / GIB, reserve_gib(argv)
    gib = card - reserve
    if cap_gib is not None:
        gib = min(gib, cap_gib)
    return Allowance(gib, card, reserve, cap_gib)


def judged_peak_mib(record: RunRecord) -> float | None:
    """The peak an allowance is judged against: what PyTorch's allocator held in ComfyUI (what its planning and
    an emulated cap govern), else NVML's peak of the server's processes (or of the device)."""
    vram = record.vram
    if vram is None:
        return None
    if vram.torch_peak_reserved_mib is not None:
        return vram.torch_peak_reserved_mib
    return vram.peak_mib if vram.available else None


def check_vram(records: Sequence[RunRecord], variant_id: str, tier: str, *, budget_gib: float | None,
               allowed: Allowance | None, allow_offload: bool) -> str | None:
    """Whether each round fit: no offload, swap or OOM retry (unless allowed), within the allowance and the
    user's budget."""
    for r in records:
        vram = r.vram
        peak = vram.peak_mib if vram is not None and vram.available else None
        at = f" at {peak / GIB:.2f} GiB" if peak is not None else ""
        if not allow_offload:
            signs = [w for kind in NOT_FITTING for w in warnings_of(r, kind)]
            if signs:
                what = "; ".join(w.split(": ", 1)[1] for w in signs)
                return (f"{variant_id} round {round_name(r)} does not fit on {tier}{at}: ComfyUI had to make room "
                        f"({what}); allow it for block-swap style variants with allow_offload_labels in the "
                        "tier table or wan22_run(allow_offload=True)")
        judged = judged_peak_mib(r)
        if allowed is not None and judged is not None and judged > allowed.gib * GIB:
            return (f"{variant_id} round {round_name(r)} does not fit on {tier}: it peaked at {judged / GIB:.2f} GiB, "
                    f"past the {allowed.gib:.2f} GiB the profile lets ComfyUI use ({allowed.describe()})")
        if budget_gib is not None and peak is not None and peak > budget_gib * GIB:
            return (f"{variant_id} round {round_name(r)}: peak VRAM {peak / GIB:.2f} GiB is over the budget of "
                    f"{budget_gib:g} GiB ({tier}); the budget comes from the tier table (vram_budget_gib / "
                    "budgets), @pytest.mark.wan22_budget or wan22_run(budget_gib=...)")
    return None
