"""Frame count, size and frame rate of an MP4 file, read from its boxes with the standard library."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .frames import mp4_boxes

_CONTAINERS = {b"moov", b"trak", b"mdia", b"minf", b"stbl"}


@dataclass(frozen=True)
class VideoInfo:
    """What a video track says about itself."""

    frames: int
    width: int
    height: int
    fps: float | None


def _find(data: bytes, start: int, end: int, path: list[bytes]) -> list[tuple[int, int]]:
    hits = []
    for kind, s, e in mp4_boxes(data, start, end):
        if kind != path[0]:
            continue
        if len(path) == 1:
            hits.append((s, e))
        elif kind in _CONTAINERS:
            hits += _find(data, s, e, path[1:])
    return hits


def _stts_ticks(data: bytes, start: int) -> int:
    count = struct.unpack(">I", data[start + 4:start + 8])[0]
    total = 0
    for i in range(count):
        n, delta = struct.unpack(">II", data[start + 8 + 8 * i:start + 16 + 8 * i])
        total += n * delta
    return total


def mp4_info(path: Path) -> VideoInfo | None:
    """Frames, width, height and fps of the first video track, or None when the file is no readable MP4."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    for trak_s, trak_e in _find(data, 0, len(data), [b"moov", b"trak"]):
        hdlr = _find(data, trak_s, trak_e, [b"mdia", b"hdlr"])
        if not hdlr or data[hdlr[0][0] + 8:hdlr[0][0] + 12] != b"vide":
            continue
        tkhd = _find(data, trak_s, trak_e, [b"tkhd"])
        stsz = _find(data, trak_s, trak_e, [b"mdia", b"minf", b"stbl", b"stsz"])
        stts = _find(data, trak_s, trak_e, [b"mdia", b"minf", b"stbl", b"stts"])
        mdhd = _find(data, trak_s, trak_e, [b"mdia", b"mdhd"])
        if not (tkhd and stsz):
            return None
        _, e = tkhd[0]
        width, height = (v >> 16 for v in struct.unpack(">II", data[e - 8:e]))
        frames = struct.unpack(">I", data[stsz[0][0] + 8:stsz[0][0] + 12])[0]
        fps = None
        if mdhd:
            m = mdhd[0][0]
            if data[m] == 1:
                timescale, duration = struct.unpack(">IQ", data[m + 20:m + 32])
            else:
                timescale, duration = struct.unpack(">II", data[m + 12:m + 20])
            # Frame durations from the time-to-sample table; mdhd's duration can hold a reorder delay.
            ticks = _stts_ticks(data, stts[0][0]) if stts else duration
            if ticks:
                fps = round(frames * timescale / ticks, 3)
        return VideoInfo(frames, width, height, fps)
    return None
