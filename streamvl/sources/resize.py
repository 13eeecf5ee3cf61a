"""Resize-shorter-side + centre crop to a square RGB image inside FFmpeg (CLIP-style).

One filter graph per stream (rebuilt only if frame geometry, pixel format or rotation changes):
buffer -> scale (bicubic, shorter display side to `size`) -> [rotate] -> crop size:size (centre)
-> format rgb24 -> buffersink. Non-square pixels (SAR) are folded into the scale, and the display
rotation that phones record is applied, so frames come out the way a player shows them.
"""

from __future__ import annotations

import math
from fractions import Fraction

import av
import av.filter
import numpy as np


def scaled_dims(width: int, height: int, size: int, sar: Fraction | None = None) -> tuple[int, int]:
    """Output (square-pixel) dims after scaling so the shorter *display* side is `size`."""
    display_w = width * (float(sar) if sar else 1.0)
    short = min(display_w, height)
    scale = size / short
    return max(size, math.ceil(display_w * scale - 1e-6)), max(size, math.ceil(height * scale - 1e-6))


def rotation_filters(rotation: float) -> list[tuple[str, str]]:
    """Filters that undo a display-matrix rotation (degrees counter-clockwise, PyAV's convention)."""
    r = int(round(rotation / 90.0)) % 4
    if r == 1:  # shown rotated 90 degrees counter-clockwise
        return [("transpose", "cclock")]
    if r == 3:  # shown rotated 90 degrees clockwise
        return [("transpose", "clock")]
    if r == 2:
        return [("hflip", ""), ("vflip", "")]
    return []


class SquareResizer:
    """Turns decoded frames into uint8 [size, size, 3] RGB arrays via an FFmpeg filter graph."""

    def __init__(self, size: int, sar: Fraction | None = None, autorotate: bool = True) -> None:
        self.size = size
        self.sar = sar if sar and sar > 0 else None
        self.autorotate = autorotate
        self._graph: av.filter.Graph | None = None
        self._key: tuple[object, ...] | None = None

    def __call__(self, frame: av.VideoFrame) -> np.ndarray:
        rotation = (frame.rotation or 0) if self.autorotate else 0
        key = (frame.width, frame.height, frame.format.name, rotation)
        if key != self._key:
            self._graph = self._build(frame, rotation)
            self._key = key
        assert self._graph is not None
        self._graph.push(frame)
        out = self._graph.pull()
        return out.to_ndarray()

    def _build(self, frame: av.VideoFrame, rotation: float) -> av.filter.Graph:
        graph = av.filter.Graph()
        time_base = frame.time_base or Fraction(1, 1000)
        w, h = scaled_dims(frame.width, frame.height, self.size, self.sar)
        chain = [
            graph.add_buffer(width=frame.width, height=frame.height, format=frame.format, time_base=time_base),
            graph.add("scale", f"w={w}:h={h}:flags=bicubic"),
            *(graph.add(name, args or None) for name, args in rotation_filters(rotation)),
            graph.add("crop", f"{self.size}:{self.size}"),
            graph.add("format", "rgb24"),
            graph.add("buffersink"),
        ]
        for a, b in zip(chain, chain[1:]):
            a.link_to(b)
        graph.configure()
        return graph
