"""frames.py: two videos of one seed decoded and compared frame by frame, in the interpreter the plugin names."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pytest_wan22.frames import FrameDiff, compare_videos

FAKE = Path(__file__).resolve().parents[1] / "fake_comfyui"
VIDEOS = Path(__file__).resolve().parents[1] / "data" / "video"

Writer = Callable[..., Path]


@pytest.fixture
def raw_mp4(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Writer:
    """Uncompressed MP4s as the fake ComfyUI writes them: (name, seed, mode, frames) -> path."""
    monkeypatch.syspath_prepend(str(FAKE))
    import app  # the fake's module, found through its folder as the fake itself imports it

    def write(name: str, seed: int = 7, mode: str = "seeded", frames: int = 9) -> Path:
        path = tmp_path / f"{name}.mp4"
        path.write_bytes(app.mp4_file(frames, 32, 32, 16.0, app.pixels(frames, 32, 32, seed, mode)))
        return path

    return write


def test_one_seed_gives_identical_frames(raw_mp4: Writer) -> None:
    diff = compare_videos(sys.executable, raw_mp4("a"), raw_mp4("b"))
    assert diff.identical
    assert diff.frames == 9
    assert diff.counts == (9, 9)
    assert diff.describe() == "identical (9 frames)"


def test_noise_and_another_seed_lower_the_psnr(raw_mp4: Writer) -> None:
    a = raw_mp4("a")
    slight = compare_videos(sys.executable, a, raw_mp4("noise", mode="noise:4"))
    other = compare_videos(sys.executable, a, raw_mp4("seed", seed=8))
    assert slight.psnr_db is not None
    assert other.psnr_db is not None
    assert 38.0 < slight.psnr_db < 45.0
    assert other.psnr_db < slight.psnr_db
    assert slight.worst_db is not None
    assert slight.worst_db <= slight.psnr_db + 0.5
    assert not slight.blank_b


def test_black_frames_are_named(raw_mp4: Writer) -> None:
    diff = compare_videos(sys.executable, raw_mp4("a"), raw_mp4("black", mode="black"))
    assert diff.blank_b == tuple(range(9))
    assert not diff.blank_a
    assert diff.new_blank == tuple(range(9))


def test_frame_counts_that_differ_are_an_error(raw_mp4: Writer) -> None:
    diff = compare_videos(sys.executable, raw_mp4("a"), raw_mp4("long", frames=13))
    assert diff.error == "frame counts differ: 9 and 13"
    assert diff.describe().startswith("not compared: frame counts differ")


def test_a_file_that_is_no_video_says_why(tmp_path: Path, raw_mp4: Writer) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x08free" + b"x" * 40)
    diff = compare_videos(sys.executable, raw_mp4("a"), junk)
    assert diff.error == "ValueError: no moov box"
    assert not diff.identical


def test_an_interpreter_that_cannot_run_says_so(tmp_path: Path) -> None:
    diff = compare_videos(str(tmp_path / "no-python"), tmp_path / "a.mp4", tmp_path / "b.mp4")
    assert diff == FrameDiff(error=diff.error)
    assert diff.error.startswith("cannot run")


def test_h264_videos_through_pyav() -> None:
    """The videos ComfyUI writes (H.264 through PyAV), decoded by ComfyUI's interpreter."""
    python = os.environ.get("WAN22_PYTHON")
    if not python:
        pytest.skip("needs PyAV: set WAN22_PYTHON to ComfyUI's interpreter")
    same = compare_videos(python, VIDEOS / "plain_9f_16fps.mp4", VIDEOS / "plain_9f_16fps.mp4")
    assert same.identical
    assert same.frames == 9
    other = compare_videos(python, VIDEOS / "plain_9f_16fps.mp4", VIDEOS / "rife_17f_32fps.mp4")
    assert other.error.startswith("frame sizes differ: 64x48 and 64x64")
