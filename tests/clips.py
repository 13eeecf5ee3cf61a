"""Small in-memory clips for adapter tests: a square that moves, and the tensors adapters take."""

from __future__ import annotations

import numpy as np


def moving_square(n: int = 8, seed: int = 0, size: int = 64) -> np.ndarray:
    """A square that moves right over a noisy grey background: uint8 [n, size, size, 3]."""
    frames = np.full((n, size, size, 3), 90, np.uint8)
    for i in range(n):
        frames[i, 20:36, 4 + 5 * i : 20 + 5 * i] = (200, 40, 40)
    return frames + np.random.default_rng(seed).integers(0, 20, frames.shape, dtype=np.uint8)


def adapter_inputs(model, raws):
    """Frozen frame features [B, T, D] and preprocessed frames [B, T, 3, S, S] of raw clips."""
    raws = np.stack(raws)
    b, t = raws.shape[:2]
    flat = raws.reshape(b * t, *raws.shape[2:])
    frames = model.preprocess(flat)  # preprocessed once, embedded from the same tensor
    return model.encode_pixels(frames).reshape(b, t, -1), frames.reshape(b, t, *frames.shape[1:])
