from __future__ import annotations

from pathlib import Path

import pytest

from pytest_wan22.video import mp4_info

DATA = Path(__file__).resolve().parents[1] / "data" / "video"


@pytest.mark.parametrize(
    ("name", "frames", "size", "fps"),
    [
        ("plain_9f_16fps.mp4", 9, (64, 48), 16.0),  # libx264 through PyAV
        ("rife_17f_32fps.mp4", 17, (64, 64), 32.0),  # ComfyUI SaveVideo after 2x interpolation (B-frame delay)
    ],
)
def test_reads_frames_size_and_fps(name: str, frames: int, size: tuple[int, int], fps: float) -> None:
    info = mp4_info(DATA / name)
    assert info is not None
    assert info.frames == frames
    assert (info.width, info.height) == size
    assert info.fps == fps


def test_not_an_mp4_is_none(tmp_path: Path) -> None:
    junk = tmp_path / "x.mp4"
    junk.write_bytes(b"\x00\x00\x00\x08free" + b"garbage" * 10)
    assert mp4_info(junk) is None
    assert mp4_info(tmp_path / "missing.mp4") is None
