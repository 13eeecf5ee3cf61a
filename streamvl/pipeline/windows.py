"""Clip windows over a stream's sampled frames: fixed length and stride, counted in frames.

Windows start at frame 0, stride, 2*stride, ...; a full window is emitted as soon as its last
frame arrives. At the end of a stream, frames not yet covered get one shorter tail window from the
next grid start, so window keys (stream, start) are identical on every re-index.

Resume: a Windower can start mid-stream at a window start `start_index` (a multiple of stride),
fed from the frame at that index on. It then emits exactly the windows an uninterrupted run
emits from there on (the earlier windows are already committed), including the same tail.
`checkpoint()` says where the first window not yet emitted starts, and the time of the frame
before it: decoding resumes after that time.
"""

from __future__ import annotations

import numpy as np

from streamvl.types import Window


class Windower:
    """Per-stream window state. Holds only the frames of windows not yet emitted."""

    def __init__(self, stream_id: str, window: int, stride: int, frame_interval: float, keep_frames: bool = False,
                 start_index: int = 0, resume_after: float | None = None):
        if start_index % stride:
            raise ValueError(f"stream {stream_id}: resume index {start_index} is not a window start (stride {stride})")
        self.stream_id = stream_id
        self.window = window
        self.stride = stride
        self.frame_interval = frame_interval
        self.keep_frames = keep_frames
        self._offset = start_index  # stream frame index of the first buffered frame
        self._next_start = start_index  # stream frame index where the next window starts
        # frames [0, covered_to) are inside some emitted window (on resume: the committed ones)
        self._covered_to = start_index - stride + window if start_index else 0
        self._before_next = resume_after  # time of frame next_start - 1 (None at the start)
        self._pts: list[float] = []
        self._feats: list[np.ndarray] = []
        self._frames: list[np.ndarray] = []

    @property
    def seen(self) -> int:
        """Frames pushed so far, counted from the stream's start (the next frame's index)."""
        return self._offset + len(self._pts)

    def checkpoint(self) -> tuple[int, float | None]:
        """(index where the first window not yet emitted starts, time of the frame before it)."""
        return self._next_start, self._before_next

    def push(self, pts: np.ndarray, features: np.ndarray, frames: np.ndarray | None = None) -> list[Window]:
        """Add frames (pts [N], features [N, D], frames [N, ...] if kept); return windows now complete."""
        self._pts.extend(float(p) for p in pts)
        self._feats.extend(features)
        if self.keep_frames and frames is not None:
            self._frames.extend(frames)
        out = []
        while self._next_start + self.window <= self.seen:
            out.append(self._emit(self._next_start, self._next_start + self.window))
            self._next_start += self.stride
        self._drop_before(self._next_start)
        return out

    def flush(self) -> list[Window]:
        """End of stream: one tail window over frames no emitted window covered yet."""
        if self.seen <= self._covered_to:
            return []
        window = self._emit(self._next_start, self.seen)
        self._next_start = self.seen
        self._drop_before(self.seen)
        return [window]

    def _emit(self, start: int, stop: int) -> Window:
        lo, hi = start - self._offset, stop - self._offset
        pts = self._pts[lo:hi]
        frames = np.stack(self._frames[lo:hi]) if self.keep_frames and self._frames else None
        self._covered_to = max(self._covered_to, stop)
        return Window(self.stream_id, pts[0], pts[-1] + self.frame_interval, np.stack(self._feats[lo:hi]), frames)

    def _drop_before(self, index: int) -> None:
        cut = max(0, index - self._offset)
        if cut:
            if self._offset + cut == self._next_start:
                self._before_next = self._pts[cut - 1]
            del self._pts[:cut], self._feats[:cut]
            if self._frames:
                del self._frames[:cut]
            self._offset += cut
