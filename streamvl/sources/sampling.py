"""Which decoded frames to keep: pure slot logic on presentation times, no video needed.

Slot k covers times [k/fps, (k+1)/fps). The first frame whose time reaches a due slot is kept
and the grid advances past that frame's time, so a variable-frame-rate gap that skips several
slots yields one frame, never duplicates.

Resume (`start_after`): frames at or before it still drive the grid but are not kept, so the
kept frames are exactly those an uninterrupted run keeps after `start_after`. Feeding may start
at any frame at or before `start_after` (e.g. the keyframe a seek landed on): whichever frame
takes the slot `start_after` lies in, it is not kept, and both runs leave that slot in the same
state.

Keyframe-only decoding (SamplingConfig.decode "keyframes") feeds only keyframes through the same
grid: slot k is then represented by the first keyframe at or after k/fps, and a keyframe that is
first for several slots (a keyframe interval longer than 1/fps) is one sample, as with a gap.
Resume works unchanged: the resumed run feeds the same keyframes from the seek point on.
"""

from __future__ import annotations

import math

# Tolerance in slot units: timestamps like 0.04 * 25 land a hair under an integer in binary.
_EPS = 1e-6


def slot_of(t: float, fps: float) -> int:
    """The slot index containing time t (seconds)."""
    return math.floor(t * fps + _EPS)


class SlotSampler:
    """Decides, frame by frame in presentation order, which frames are samples."""

    def __init__(self, fps: float, start_after: float | None = None) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.fps = float(fps)
        self.start_after = start_after
        self.next_slot = 0  # slot k is due once a frame has t >= k/fps

    def take(self, t: float) -> bool:
        """True if the frame at time t is a sample; advances the grid past t when its slot is due."""
        if t * self.fps + _EPS < self.next_slot:
            return False
        self.next_slot = slot_of(t, self.fps) + 1
        return self.start_after is None or t > self.start_after


def sample_times(times: list[float], fps: float, start_after: float | None = None) -> list[float]:
    """The subset of frame times (in presentation order) that SlotSampler keeps."""
    sampler = SlotSampler(fps, start_after)
    return [t for t in times if sampler.take(t)]
