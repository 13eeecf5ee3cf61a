"""Small JPEG thumbnails of sampled frames: made while indexing, read back by the service.

The model sees centre-cropped squares of its input size (64 px for the shipped model), which are
no picture to show a person, so the sources also scale every sampled *decoded* frame to
`width` px wide (display aspect: pixel aspect ratio and rotation applied) and JPEG-encode it;
the encode stage writes it as the `thumbnail` column of the frames table. A frame the source
marks as a repeat (a static scene) reuses the previous thumbnail: no second encode.

Thumbnails in the table serve live streams (no file to go back to) and files that moved; for
rows without one (older tables, thumbnails off) `thumbnail_from_file` decodes the file instead.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import av
import numpy as np

from streamvl.errors import SourceError

if TYPE_CHECKING:
    import pyarrow as pa

DEFAULT_WIDTH = 256  # px; 16:9 video -> 256x144, about 5-8 KB at QUALITY
QUALITY = 75  # JPEG quality (libjpeg scale)


def thumbnail_size(width: int, height: int, target: int, sar: float | None = None) -> tuple[int, int]:
    """(w, h) of a `target`-wide thumbnail of a width x height frame, display aspect kept, even sides."""
    if width <= 0 or height <= 0:
        raise ValueError(f"a frame of {width}x{height} has no picture")
    display_w = width * (sar if sar and sar > 0 else 1.0)
    h = max(2, int(round(target * height / display_w / 2)) * 2)
    return max(2, target - target % 2), h


def encode_jpeg(rgb: np.ndarray, quality: int = QUALITY) -> bytes:
    """uint8 [H, W, 3] RGB -> JPEG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(buf, "JPEG", quality=quality, optimize=False)
    return buf.getvalue()


def frame_thumbnail(frame: av.VideoFrame, width: int = DEFAULT_WIDTH, quality: int = QUALITY) -> bytes:
    """A decoded frame as a `width`-wide JPEG the way a player shows it (aspect, rotation)."""
    sar = frame.sample_aspect_ratio if hasattr(frame, "sample_aspect_ratio") else None
    rotation = int(round((frame.rotation or 0) / 90.0)) % 4
    w, h = thumbnail_size(frame.width, frame.height, width, float(sar) if sar else None)
    if rotation in (1, 3):  # shown turned by 90 degrees: scale to the turned shape, then turn
        w, h = thumbnail_size(frame.height, frame.width, width, 1.0 / float(sar) if sar else None)
        w, h = h, w
    rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
    if rotation:
        rgb = np.rot90(rgb, k=rotation)  # PyAV's rotation is counter-clockwise, as np.rot90's
    return encode_jpeg(rgb, quality)


class Thumbnailer:
    """Per-stream thumbnail maker for a source: one JPEG per sampled frame, repeats reuse the last.

    width 0 turns thumbnails off (`__call__` returns None)."""

    def __init__(self, width: int = DEFAULT_WIDTH, quality: int = QUALITY) -> None:
        self.width, self.quality = int(width), int(quality)
        self._last: bytes | None = None

    @property
    def enabled(self) -> bool:
        return self.width > 0

    def __call__(self, frame: av.VideoFrame, repeat: bool = False) -> bytes | None:
        if not self.enabled:
            return None
        if not (repeat and self._last is not None):
            try:
                self._last = frame_thumbnail(frame, self.width, self.quality)
            except (av.error.FFmpegError, ValueError, OSError):  # a picture is never worth failing the stream
                self._last = None
        return self._last


def thumbnail_from_file(path: str | Path, t: float, width: int = DEFAULT_WIDTH) -> bytes:
    """The frame shown at `t` seconds (stream time) of a local video file, as a JPEG.

    Seeks to the keyframe before t and decodes forward to the last frame at or before t (the first
    frame if t precedes it). SourceError if the file cannot be read or has no video."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            stream = next(iter(container.streams.video), None)
            if stream is None:
                raise SourceError("no video stream", uri=str(path))
            start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            if t > 0 and stream.time_base is not None:
                container.seek(int((start + max(0.0, t)) / stream.time_base), stream=stream, backward=True)
            best = None
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                ft = float(frame.pts * frame.time_base) - start
                if best is None or ft <= t + 1e-3:
                    best = frame
                if ft >= t - 1e-3:
                    break
            if best is None:
                raise SourceError(f"no frame decoded near t={t:.2f}s", uri=str(path))
            return frame_thumbnail(best, width)
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(f"cannot read a frame at t={t:.2f}s: {exc}", uri=str(path)) from exc


def thumbnail_column(batches) -> "pa.Array":
    """The frames table's `thumbnail` column for these FrameBatches (null where a batch has none)."""
    import pyarrow as pa

    values = [t for b in batches for t in (b.thumbs if b.thumbs is not None else [None] * len(b))]
    return pa.array(values, pa.binary())
