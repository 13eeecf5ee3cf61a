"""Static-frame skip: mark sampled frames that carry no new information (numpy only).

A sampled frame is a *repeat* when a 32x32 RGB thumbnail (block means) of it is within a
threshold of the thumbnail of the stream's last frame that was *not* a repeat (the last one the
encoder embeds). Comparing with the last encoded frame, not the previous sample, means slow drift
(light, a creeping object) adds up and is re-encoded once it crosses the threshold.

The difference (0..255 levels) is the thumbnail's mean absolute difference with its noise floor
removed: per block, |a - b| averaged over RGB, minus the median over all blocks (capped at
NOISE_FLOOR_CAP, so a change of the whole picture still counts), clipped at 0, then averaged. Averaging ~7x7 pixels (of a 224 frame) already divides sensor and compression
noise by ~7; subtracting the median takes off what noise still leaves on *every* block, while an
object that moves keeps its full contrast on the few blocks it leaves and enters. Measured on
h264 320x240 at 1 frame/s (bench/bench_skip.py prints such figures): static scenes with sensor
noise sigma 2-4 score <= 0.18 (one frame per GOP up to 0.5 at CRF 35, where the keyframe's
quality differs: one extra encode); a 16x16-pixel object that moves 50 px/s scores >= 0.88, one
that appears or leaves ~0.45 (the change is in one place, not two). The default threshold is
0.3: a too-low threshold costs an extra encode, a too-high one leaves a stale embedding.
"""

from __future__ import annotations

import numpy as np

THUMB_SIDE = 32
# Most a block's noise can be (levels): a larger median difference is a real change of most of the
# picture (lights, a pan), which must not be subtracted away as noise.
NOISE_FLOOR_CAP = 2.0


def thumbnail(frame: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Block-mean downsample of an RGB uint8 frame [H, W, 3] -> float32 [s, s, 3] (s <= side)."""
    h, w = frame.shape[:2]
    side = max(1, min(side, h, w))
    pixels = frame.astype(np.float32)
    rows = np.linspace(0, h, side + 1).astype(np.intp)
    cols = np.linspace(0, w, side + 1).astype(np.intp)
    sums = np.add.reduceat(np.add.reduceat(pixels, rows[:-1], axis=0), cols[:-1], axis=1)
    return sums / np.outer(np.diff(rows), np.diff(cols)).astype(np.float32)[..., None]


def thumb_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Noise-floor-corrected mean absolute difference of two thumbnails [s, s, 3], levels 0..255."""
    per_block = np.abs(a - b).mean(axis=-1)
    floor = min(float(np.median(per_block)), NOISE_FLOOR_CAP)
    return float(np.maximum(per_block - floor, 0.0).mean())


class RepeatDetector:
    """Per stream, per decoder run: is this sampled frame a repeat of the last encoded one?

    threshold: levels (0..255) of thumb_difference; None or 0 turns the skip off (no frame is a repeat). A new
    detector has no reference, so the first frame of every decoder run (a restart, a resume) is
    never a repeat: the encoder always has an embedding to fill repeats with.
    """

    def __init__(self, threshold: float | None) -> None:
        self.threshold = float(threshold or 0.0)
        self._reference: np.ndarray | None = None
        self.last_difference: float | None = None  # of the last frame checked against a reference

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    def is_repeat(self, frame: np.ndarray) -> bool:
        """True if `frame` is within the threshold of the reference; else it becomes the reference."""
        if not self.enabled:
            return False
        thumb = thumbnail(frame)
        if self._reference is not None:
            self.last_difference = thumb_difference(thumb, self._reference)
            if self.last_difference < self.threshold:
                return True
        self._reference = thumb
        return False
