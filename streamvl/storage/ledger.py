"""Per-stream resume checkpoints: where indexing continues after a crash. Plain Python, no Ray.

A checkpoint is written to the `streams` table only after the frames and clips it covers are
committed (LanceDB has no cross-table transaction, so the order is: data, then checkpoint). It
therefore never runs ahead of the data; when it lags behind (a crash between the two commits),
the replay rewrites the same keys, which the upserts turn into no-ops. Either way a resumed run
ends with every clip window exactly once.

Clip windows are cut on the grid of sampled-frame indices (start 0, stride, 2*stride, ...), so a
resume must restart on that grid: decoding resumes right after the frame *before* the first
window not yet committed (`resume_after`), and that frame's successor gets index `next_window`.
The grid depends on the sampling rate, window, stride and adapters; a checkpoint taken on another
grid is ignored (the stream starts from 0).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from streamvl.pipeline.windows import Windower
from streamvl.types import StreamState

CHECKPOINT_FIELDS = ("next_window", "resume_after", "frames_indexed", "last_committed_pts", "last_wallclock", "grid")


def grid_key(fps: float, window: int, stride: int, adapters: Sequence[str]) -> str:
    """Everything the clip window keys depend on, as one comparable string."""
    return f"fps={float(fps):g};window={int(window)};stride={int(stride)};adapters={','.join(sorted(adapters))}"


@dataclass(frozen=True)
class Checkpoint:
    """Resume state of one stream.

    next_window: sampled-frame index where the first window not yet committed starts.
    resume_after: time (s) of the frame before it; decoding keeps only frames after it (None: start).
    frames: frames committed so far (the next frame's index once all are committed).
    last_pts / last_wallclock: time and arrival (UTC s, live only) of the last committed frame.
    """

    grid: str
    next_window: int = 0
    resume_after: float | None = None
    frames: int = 0
    last_pts: float | None = None
    last_wallclock: float | None = None

    @property
    def at_start(self) -> bool:
        return self.next_window == 0

    def advance(self, next_window: int, resume_after: float | None, frames: int,
                last_pts: float | None, last_wallclock: float | None) -> "Checkpoint":
        """The checkpoint after one more committed write group (never moves backwards)."""
        if next_window < self.next_window:
            return self
        if next_window == self.next_window:
            resume_after = self.resume_after  # no window was emitted: the frame before is unchanged
        return replace(
            self,
            next_window=next_window,
            resume_after=resume_after,
            frames=max(self.frames, frames),
            last_pts=_max(self.last_pts, last_pts),
            last_wallclock=_max(self.last_wallclock, last_wallclock),
        )

    def as_row(self) -> dict[str, Any]:
        """The StreamState fields (`streams` columns) this checkpoint fills:
        `dataclasses.replace(state, **checkpoint.as_row())` is the state with this checkpoint."""
        return {"next_window": self.next_window, "resume_after": self.resume_after, "frames_indexed": self.frames,
                "last_committed_pts": self.last_pts, "last_wallclock": self.last_wallclock, "grid": self.grid}


def _max(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def _num(value: Any) -> float | None:
    if value is None:
        return None
    x = float(value)
    return None if math.isnan(x) else x


def from_state(state: StreamState | None, grid: str) -> Checkpoint:
    """The checkpoint a stream's state holds, or a fresh one if absent or on another grid."""
    return from_row(None if state is None else asdict(state), grid)


def from_row(row: Mapping[str, Any] | None, grid: str) -> Checkpoint:
    """The checkpoint stored in a `streams` row (or any mapping of StreamState's field names),
    or a fresh one if absent or on another grid."""
    if not row or row.get("grid") != grid or row.get("next_window") is None:
        return Checkpoint(grid)
    next_window = int(row["next_window"])
    resume_after = _num(row.get("resume_after"))
    if next_window > 0 and resume_after is None:  # inconsistent row: do not trust it
        return Checkpoint(grid)
    return Checkpoint(
        grid=grid,
        next_window=next_window,
        resume_after=resume_after,
        frames=int(row.get("frames_indexed") or 0),
        last_pts=_num(row.get("last_committed_pts")),
        last_wallclock=_num(row.get("last_wallclock")),
    )


def resume_point(stored: StreamState | None, uri: str, grid: str, live: bool) -> tuple[Checkpoint, bool]:
    """Where a stream continues, from its stored state: (checkpoint, done).

    A state of another URI or grid starts over. done: the state says this file was indexed
    completely on this grid, so there is nothing left to do (a live stream is never done)."""
    same = stored is not None and stored.uri == uri
    checkpoint = from_state(stored, grid) if same else Checkpoint(grid)
    done = same and not live and stored.status.value == "done" and stored.grid == grid
    return checkpoint, done


class Ledger:
    """The committed checkpoint of every stream of a run, whether queued, running or ended.

    Only `commit` moves one, and only forwards, with the progress of a write group whose frames
    and clips the sinks have committed; the `streams` row written after it therefore never claims
    more than the tables hold."""

    def __init__(self) -> None:
        self._checkpoints: dict[str, Checkpoint] = {}

    def open(self, stream_id: str, checkpoint: Checkpoint) -> None:
        """Track a stream from this checkpoint (its stored one, or the start)."""
        self._checkpoints[stream_id] = checkpoint

    def __getitem__(self, stream_id: str) -> Checkpoint:
        return self._checkpoints[stream_id]

    def __contains__(self, stream_id: object) -> bool:
        return stream_id in self._checkpoints

    def commit(self, stream_id: str, next_window: int, resume_after: float | None, frames: int,
               last_pts: float | None, last_wallclock: float | None) -> bool:
        """Advance a stream after one more committed write group; True when a window was completed
        (the stream made progress since its last replay)."""
        before = self._checkpoints[stream_id]
        self._checkpoints[stream_id] = before.advance(next_window, resume_after, frames, last_pts, last_wallclock)
        return self._checkpoints[stream_id].next_window > before.next_window


# -- the ledger checked against the data -------------------------------------------------------
# A checkpoint is written after the rows it covers, so it can only claim more than the tables hold
# when rows were lost underneath it: a lost `_versions/*.manifest`, a table restored to an older
# version by `streamvl repair`, a deleted data file. On start, a run compares each file stream's
# checkpoint with its keys in `frames` and `clips` (Reader.stream_keys: two filtered reads of key
# columns) and pulls it back to the first window whose rows are missing; the replay rewrites the
# keys from there, which the upserts make idempotent. The expected windows are recomputed with the
# Windower itself from the committed frame times, so the check follows the grid, tail included.

def grid_params(grid: str) -> tuple[int, int, list[str]] | None:
    """(window, stride, adapters) of a grid_key string, or None if it is not one."""
    try:
        fields = dict(part.split("=", 1) for part in grid.split(";"))
        return int(fields["window"]), int(fields["stride"]), [a for a in fields["adapters"].split(",") if a]
    except (KeyError, ValueError, AttributeError):
        return None


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
