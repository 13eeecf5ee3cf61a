"""The ledger checked against the data: a stored checkpoint counts only as far as its rows are in
the tables. Plain Python, no Ray.

A checkpoint is written after the rows it covers (streamvl.storage.ledger), so it can only claim
more than the tables hold when rows were lost underneath it: a lost `_versions/*.manifest`, a
table restored to an older version by `streamvl repair`, a deleted data file. On start, a run
compares each file stream's checkpoint with its keys in `frames` and `clips` (two filtered reads
of key columns) and pulls the checkpoint back to the first window whose rows are missing; the
replay rewrites the keys from there, which the upserts make idempotent (nothing is duplicated).

The expected windows are recomputed with the Windower itself from the committed frame times, so
the check follows the window grid exactly, tail window included.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np

from streamvl.pipeline.windows import Windower
from streamvl.storage.ledger import Checkpoint


def _key(x: float) -> float:
    return round(float(x), 6)


def held_checkpoint(checkpoint: Checkpoint, *, window: int, stride: int, done: bool, adapters: Iterable[str],
                    frame_pts: Sequence[float], clip_starts: Mapping[str, Iterable[float]]) -> Checkpoint:
    """The part of `checkpoint` the rows hold: itself when every frame and clip window it covers
    is in the tables, else the checkpoint just before the first missing window (the start when
    frames are missing, whose indices can then no longer be told).

    done: the stream's row says it was indexed completely (its tail window counts too).
    frame_pts: the stream's times in `frames`; clip_starts: adapter -> window starts in `clips`."""
    if checkpoint.at_start:
        return checkpoint
    fresh = Checkpoint(checkpoint.grid)
    pts = sorted(float(p) for p in frame_pts)
    if checkpoint.last_pts is not None:
        pts = [p for p in pts if p <= checkpoint.last_pts + 1e-9]
    if len(pts) < checkpoint.frames:
        return fresh  # frames lost: their indices (the window grid) are unknown
    pts = pts[:checkpoint.frames]
    windower = Windower("check", window, stride, 1.0)
    windows = windower.push(np.asarray(pts), np.zeros((len(pts), 1), np.float32))
    if done:
        windows += windower.flush()
    index = {_key(p): i for i, p in enumerate(pts)}
    held = {a: {_key(s) for s in clip_starts.get(a, ())} for a in adapters}
    for w in windows:
        i = index.get(_key(w.start))
        if i is None or i >= checkpoint.next_window:
            continue
        if any(_key(w.start) not in starts for starts in held.values()):
            return fresh if i == 0 else Checkpoint(checkpoint.grid, next_window=i, resume_after=pts[i - 1],
                                                   frames=i, last_pts=pts[i - 1])
    return checkpoint
