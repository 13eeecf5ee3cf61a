"""Synthetic test videos whose pixels say which frame they are.

`make_video` writes solid grey frames: frame i has grey level `level_for_index(i)`, which
survives lossy codecs, YUV conversion, resizing and cropping (a flat frame stays flat).
Levels step by 4 and repeat every `LEVEL_PERIOD` frames, so a decoded frame's mean
maps back to its index modulo the period: enough to prove a sampled frame is the one
whose pts we recorded, while pts itself proves which period it is in.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

LEVEL_PERIOD = 50
_LEVEL_BASE = 20
_LEVEL_STEP = 4

_CONTAINER_FOR_SUFFIX = {
    ".mp4": "mp4",
    ".mov": "mov",
    ".avi": "avi",
    ".mkv": "matroska",
    ".webm": "webm",
    ".ts": "mpegts",
}
_FASTSTART = {"movflags": "faststart"}  # mp4 index (moov) before the data
_PIX_FMT_FOR_CODEC = {"mjpeg": "yuvj420p"}
_BIT_RATE_FOR_CODEC = {"mpeg4": 2_000_000}  # its default (~200 kb/s) blurs grey levels


@dataclass(frozen=True)
class VideoSpec:
    """What make_video wrote: frame times (seconds from start) in write order."""

    path: Path
    times: tuple[float, ...]
    size: tuple[int, int]
    fps: float

    @property
    def duration(self) -> float:
        return self.times[-1] + 1.0 / self.fps if self.times else 0.0

    def index_at(self, t: float, tol: float = 1e-3) -> int:
        """Index of the written frame whose time is t (within tol); ValueError if none."""
        diffs = np.abs(np.asarray(self.times) - t)
        i = int(np.argmin(diffs))
        if diffs[i] > tol:
            raise ValueError(f"no frame written at t={t:.4f}s (nearest {self.times[i]:.4f}s)")
        return i


def level_for_index(i: int) -> int:
    """Grey level (0..255) painted on frame i."""
    return _LEVEL_BASE + _LEVEL_STEP * (i % LEVEL_PERIOD)


def index_mod_period(frame: np.ndarray) -> int:
    """Recover i % LEVEL_PERIOD from a decoded RGB frame painted by make_video."""
    mean = float(frame.mean())
    return int(round((mean - _LEVEL_BASE) / _LEVEL_STEP)) % LEVEL_PERIOD


def vfr_times(fps: float, seconds: float, seed: int = 7) -> list[float]:
    """Irregular frame times: jittered intervals (0.3..1.8 frame periods) plus one long gap.

    The gap (about 2.3 s, starting near 40% of the length) skips several 1/s sample slots.
    """
    rng = np.random.default_rng(seed)
    times: list[float] = []
    t, gap_done = 0.0, False
    while t < seconds:
        times.append(round(t, 3))
        if not gap_done and t >= 0.4 * seconds:
            t += 2.3
            gap_done = True
        else:
            t += float(rng.uniform(0.3, 1.8)) / fps
    return times


def make_video(
    path: str | Path,
    *,
    codec: str = "h264",
    container: str | None = None,
    size: tuple[int, int] = (320, 240),
    fps: int = 25,
    seconds: float = 4.0,
    vfr: bool = False,
    pattern: str = "index",
    rotation: int = 0,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    noise: float = 2.0,
    episodes: tuple[tuple[float, float, tuple[int, int, int]], ...] = (),
) -> VideoSpec:
    """Write a test video with PyAV; container from the suffix unless given.

    pattern "index": solid grey frames, level from the frame index (see module doc);
    pattern "noise": random pixels (realistic bitrate, no content checks);
    pattern "centre": the centred square (side = shorter side) at 235, the margins at 16;
    pattern "halves": left half 16, right half 235 (to see which way a rotation went).
    pattern "static": a fixed coloured background of 16x16 blocks plus fresh sensor noise on every
    frame (sigma `noise`, 16 noise fields cycled): a static camera; "moving": the same with a 16x16 red square moving
    2 px per frame (50 px/s at 25 fps) across it.
    vfr: irregular timestamps from `vfr_times` (time base 1/1000).
    rotation: display rotation in degrees counter-clockwise (phone-style metadata).
    gop: keyframe interval in frames (codec default if None; a live camera wants a short one, so a
    client that joins mid-stream gets its first picture soon).
    episodes: (start s, end s, rgb): frames in [start, end) are painted that colour over the pattern
    (things a watch should fire on, with a known truth).
    """
    path = Path(path)
    fmt = container or _CONTAINER_FOR_SUFFIX.get(path.suffix.lower())
    w, h = size
    times = vfr_times(fps, seconds) if vfr else [i / fps for i in range(int(round(seconds * fps)))]
    rng = np.random.default_rng(0)
    scene = scene_background(h, w) if pattern in ("static", "moving") else None
    # sensor noise: a bank of 16 fields, cycled (drawing a fresh one per frame dominates the run time)
    noise_bank = rng.standard_normal((16, h, w, 3), dtype=np.float32) * noise if scene is not None else None
    codec_options = dict(options or {})
    if gop is not None:
        codec_options["g"] = str(gop)
    with av.open(str(path), "w", format=fmt, options=container_options or {}) as out:
        stream = out.add_stream(codec, rate=fps, options=codec_options)
        stream.width, stream.height = w, h
        stream.pix_fmt = _PIX_FMT_FOR_CODEC.get(codec, "yuv420p")
        if codec in _BIT_RATE_FOR_CODEC:
            stream.bit_rate = _BIT_RATE_FOR_CODEC[codec]
        if rotation:
            stream.set_display_rotation(rotation)
        time_base = Fraction(1, 1000) if vfr else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        for i, t in enumerate(times):
            if pattern == "index":
                img = np.full((h, w, 3), level_for_index(i), dtype=np.uint8)
            elif pattern == "noise":
                img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            elif pattern == "centre":
                img = np.full((h, w, 3), 16, dtype=np.uint8)
                side = min(w, h)
                y0, x0 = (h - side) // 2, (w - side) // 2
                img[y0 : y0 + side, x0 : x0 + side] = 235
            elif scene is not None:
                img = np.clip(scene + noise_bank[i % 16], 0, 255).astype(np.uint8)
                if pattern == "moving":
                    x, y = 8 + (2 * i) % (w - 24), h // 2 - 8
                    img[y : y + 16, x : x + 16] = (250, 20, 20)
            elif pattern == "halves":
                img = np.full((h, w, 3), 16, dtype=np.uint8)
                img[:, w // 2 :] = 235
            else:
                raise ValueError(f"unknown pattern {pattern!r}")
            for a, b, rgb in episodes:
                if a <= t < b:
                    img = np.empty((h, w, 3), np.uint8)
                    img[:] = rgb
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(t / time_base))
            frame.time_base = time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return VideoSpec(path=path, times=tuple(times), size=size, fps=float(fps))


def scene_background(h: int, w: int, seed: int = 3) -> np.ndarray:
    """A fixed 'static camera' picture: random colours in 16x16 blocks (levels 40..200), float [h, w, 3]."""
    blocks = np.random.default_rng(seed).uniform(40, 200, (h // 16 + 1, w // 16 + 1, 3)).astype(np.float32)
    return np.kron(blocks, np.ones((16, 16, 1), np.float32))[:h, :w]


def make_truncated(path: str | Path, *, seconds: float = 6.0, keep: float = 0.5) -> VideoSpec:
    """An h264 mp4 with its index (moov) at the front, cut to `keep` of its bytes.

    faststart puts the full sample table first, so the file opens, declares the whole
    duration, and then its data ends early: a truncated-decode case, not an open failure.
    """
    path = Path(path)
    spec = make_video(path, seconds=seconds, pattern="noise", size=(160, 120), container_options=_FASTSTART)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return spec


def make_corrupt(path: str | Path, *, seconds: float = 6.0) -> VideoSpec:
    """An h264 mp4 (index first) with 2 kB of random bytes in the middle of its data.

    The container stays intact, so the demuxer keeps delivering packets while the decoder
    rejects the damaged one (avcodec_send_packet: invalid data): corrupt mid-stream, with
    good data after it. (Zeroing bytes in avi/mkv does not do this: those demuxers resync and
    silently drop frames.)
    """
    path = Path(path)
    spec = make_video(path, seconds=seconds, pattern="noise", size=(160, 120), container_options=_FASTSTART)
    data = bytearray(path.read_bytes())
    start = len(data) // 2
    data[start : start + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return spec


def make_audio_only(path: str | Path, seconds: float = 1.0) -> Path:
    """A WAV file: a valid container with no video stream."""
    path = Path(path)
    rate = 8000
    with av.open(str(path), "w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        samples = np.zeros((1, int(rate * seconds)), dtype=np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def make_zero_byte(path: str | Path) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def make_text_as_mp4(path: str | Path) -> Path:
    path = Path(path)
    path.write_text("this is not a video, just text with a video suffix\n" * 20)
    return path
