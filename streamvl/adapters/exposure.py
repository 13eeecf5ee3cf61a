"""Recency blends of a clip's frames ("exposures"): which frames are blended and with what weights.

A still photograph of a moving thing carries its motion as fainter traces of earlier moments.
The `exposure` adapters read a clip that way; the shapes world renders its pretraining stills
with the same constants, so they live here (product code) and the lab imports them.
"""

from __future__ import annotations

import numpy as np

EXPOSURE_FRAMES, EXPOSURE_DECAY = 6, 0.6  # renders per exposure, weight per frame of age (v2's and v3's pretraining)


def exposure_indices(t: int, n: int = EXPOSURE_FRAMES) -> np.ndarray:
    """Indices of the min(n, t) evenly spread frames of t that a clip's exposure blends (first and last included)."""
    return np.linspace(0, t - 1, min(n, t)).round().astype(int)


def recency_weights(k: int, decay: float = EXPOSURE_DECAY) -> np.ndarray:
    """Weights [k] (oldest first, summing to 1) of a recency blend: decay ** (age in frames)."""
    w = decay ** np.arange(k - 1, -1, -1, dtype=np.float32)
    return w / w.sum()
