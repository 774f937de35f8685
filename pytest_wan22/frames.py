"""Whether two runs of one seed saved the same video: their frames decoded and compared, frame by frame.

ComfyUI's interpreter runs this file by path (it has numpy, and PyAV, with which ComfyUI writes its videos):

    <comfyui-python> pytest_wan22/frames.py A.mp4 B.mp4

and prints one line, ``WAN22-FRAMES {json}``: the frames compared, the PSNR of B against A over all of them
(``null`` when they are identical), the worst frame's PSNR, and the frames of either video that are black or of
one colour (what NaNs in a VAE's output become once cast to 8 bits). A video PyAV cannot open, or an
uncompressed RGB track ('raw ', as test servers write them) without PyAV, is read from its MP4 boxes.

The plugin's side (`compare_videos`) imports nothing beyond the standard library.
"""

from __future__ import annotations

import json
import math
import struct
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "WAN22-FRAMES "
BLACK_MAX = 8  # a frame whose brightest value (0-255) is at most this is black

# ----------------------------------------------------------------------------- plugin side


@dataclass(frozen=True)
class FrameDiff:
    """Two videos of one seed compared: frames compared, the PSNR over all of them (None: identical), the worst
    frame's, and the black or one-colour frames of each (0-based); `error` says why they were not compared."""

    frames: int = 0
    psnr_db: float | None = None
    worst_db: float | None = None
    blank_a: tuple[int, ...] = ()
    blank_b: tuple[int, ...] = ()
    error: str = ""
    counts: tuple[int, int] = (0, 0)  # frames in A and in B

    @property
    def identical(self) -> bool:
        """True when every frame is the same."""
        return not self.error and self.frames > 0 and self.psnr_db is None

    @property
    def new_blank(self) -> tuple[int, ...]:
        """Frames black or of one colour in B that are not in A."""
        return tuple(i for i in self.blank_b if i not in set(self.blank_a))

    def describe(self) -> str:
        """'identical (9 frames)', '38.2 dB (worst frame 35.0 dB, 81 frames)', or why not compared."""
        if self.error:
            return f"not compared: {self.error}"
        if self.psnr_db is None:
            return f"identical ({self.frames} frames)"
        worst = f"worst frame {self.worst_db:.1f} dB, " if self.worst_db is not None else ""
        return f"PSNR {self.psnr_db:.1f} dB ({worst}{self.frames} frames)"


def script_path() -> Path:
    """This file, which ComfyUI's interpreter runs by path."""
    return Path(__file__).resolve()


def compare_videos(python: str, a: Path, b: Path, *, timeout: float = 600.0) -> FrameDiff:
    """Decode both videos in `python` (ComfyUI's interpreter) and compare their frames."""
    cmd = [python, str(script_path()), str(a), str(b)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired:
        return FrameDiff(error=f"decoding took longer than {timeout:g} s")
    except OSError as exc:
        return FrameDiff(error=f"cannot run {python} ({exc.strerror or exc})")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            return from_json(json.loads(line[len(MARK):]))
    said = (done.stderr or done.stdout).strip().splitlines()
    return FrameDiff(error=f"{python} {script_path().name} exited with code {done.returncode}"
                     + (f": {said[-1][:300]}" if said else ""))


def from_json(data: dict[str, Any]) -> FrameDiff:
    """The script's answer as a FrameDiff."""
    counts = data.get("counts") or (0, 0)
    return FrameDiff(int(data.get("frames", 0)), data.get("psnr_db"), data.get("worst_db"),
                     tuple(data.get("blank_a", ())), tuple(data.get("blank_b", ())), str(data.get("error", "")),
                     (int(counts[0]), int(counts[1])))


# ----------------------------------------------------------------------------- script side (numpy, PyAV)


def mp4_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """The MP4 boxes between `start` and `end`: each box's type and where its content starts and ends."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8:pos + 16])[0]
            header = 16
        elif size == 0:
            size = end - pos
        if size < header:
            return
        yield kind, pos + header, min(pos + size, end)
        pos += size


def _child(data: bytes, start: int, end: int, path: Sequence[bytes]) -> tuple[int, int] | None:
    for kind, s, e in mp4_boxes(data, start, end):
        if kind == path[0]:
            return (s, e) if len(path) == 1 else _child(data, s, e, path[1:])
    return None


def raw_frames(path: Path) -> Iterator[Any]:
    """The frames of an MP4 whose video track is uncompressed 24-bit RGB ('raw '), as (height, width, 3) arrays."""
    import numpy as np

    data = path.read_bytes()
    moov = _child(data, 0, len(data), [b"moov"])
    if moov is None:
        raise ValueError("no moov box")
    for kind, s, e in mp4_boxes(data, *moov):
        if kind != b"trak":
            continue
        stbl = _child(data, s, e, [b"mdia", b"minf", b"stbl"])
        stsd = _child(data, s, e, [b"mdia", b"minf", b"stbl", b"stsd"])
        if stbl is None or stsd is None or stsd[1] - stsd[0] < 16:
            continue
        codec = data[stsd[0] + 12:stsd[0] + 16]
        if codec != b"raw ":
            raise ValueError(f"its video is {codec.decode(errors='replace').strip()!r}, which needs PyAV to decode")
        width, height = struct.unpack(">HH", data[stsd[0] + 8 + 32:stsd[0] + 8 + 36])
        stsz = _child(data, *stbl, [b"stsz"])
        stco = _child(data, *stbl, [b"stco"])
        if stsz is None or stco is None:
            raise ValueError("no sample table")
        size, count = struct.unpack(">II", data[stsz[0] + 4:stsz[0] + 12])
        offset = struct.unpack(">I", data[stco[0] + 8:stco[0] + 12])[0]
        if size != width * height * 3:
            raise ValueError(f"samples of {size} bytes are no {width}x{height} RGB frames")
        for i in range(count):
            chunk = data[offset + i * size:offset + (i + 1) * size]
            yield np.frombuffer(chunk, dtype=np.uint8).reshape(height, width, 3)
        return
    raise ValueError("no video track")


def frames_of(path: Path) -> Iterator[Any]:
    """The frames of a video as (height, width, 3) uint8 arrays: through PyAV, else from an uncompressed track."""
    try:
        import av
    except ImportError:
        yield from raw_frames(path)
        return
    try:
        container = av.open(str(path))
    except Exception:  # not a container PyAV reads: an uncompressed track it may still be
        yield from raw_frames(path)
        return
    with container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _blank(frame: Any) -> bool:
    return bool(frame.max() <= BLACK_MAX or frame.min() == frame.max())


def compare(a: Path, b: Path) -> dict[str, Any]:
    """Frame by frame: the summed squared error, the worst frame, the blank frames of each side."""
    import numpy as np

    total, n, worst = 0.0, 0, 0.0
    blank_a: list[int] = []
    blank_b: list[int] = []
    counts = [0, 0]
    frames_a, frames_b = frames_of(a), frames_of(b)
    while True:
        fa, fb = next(frames_a, None), next(frames_b, None)
        if fa is not None:
            counts[0] += 1
            if _blank(fa):
                blank_a.append(counts[0] - 1)
        if fb is not None:
            counts[1] += 1
            if _blank(fb):
                blank_b.append(counts[1] - 1)
        if fa is None or fb is None:
            if fa is None and fb is None:
                break
            continue
        if fa.shape != fb.shape:
            return {"error": f"frame sizes differ: {fa.shape[1]}x{fa.shape[0]} and {fb.shape[1]}x{fb.shape[0]}",
                    "counts": counts}
        mse = float(np.mean((fa.astype(np.float64) - fb.astype(np.float64)) ** 2))
        total += mse
        worst = max(worst, mse)
        n += 1
    out: dict[str, Any] = {"frames": n, "counts": counts, "blank_a": blank_a, "blank_b": blank_b,
                           "psnr_db": _psnr(total / n) if n else None, "worst_db": _psnr(worst) if n else None}
    if counts[0] != counts[1]:
        out["error"] = f"frame counts differ: {counts[0]} and {counts[1]}"
    elif not n:
        out["error"] = "no frames"
    return out


def _psnr(mse: float) -> float | None:
    return None if mse == 0.0 else round(10.0 * math.log10(255.0 ** 2 / mse), 3)


def main(argv: Sequence[str] | None = None) -> int:
    """Compare two videos; print the answer on one WAN22-FRAMES line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: frames.py A.mp4 B.mp4", file=sys.stderr)
        return 2
    try:
        result = compare(Path(args[0]), Path(args[1]))
    except Exception as exc:  # the caller gets why, not a traceback
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(MARK + json.dumps(result))
    return 0


if __name__ == "__main__":
    # Run by path, this file's folder is sys.path[0]; drop it so package modules never shadow others.
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    sys.exit(main())
