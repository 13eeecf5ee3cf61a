"""What a run says about each stream: to its caller (the report) and to the `streams` table (the row).

Plain Python. A StreamReport follows its stream through the run: counters carried over from the
stored row on resume, live events (stalls, reconnects, gaps), and the figures of each committed
write group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from streamvl.storage.ledger import Checkpoint
from streamvl.types import Status, StreamEvent, StreamState


@dataclass
class StreamReport:
    """Outcome of one stream in a run (and the live health fields of its `streams` row)."""

    stream_id: str
    uri: str
    status: str = "queued"
    frames: int = 0
    clips: int = 0
    last_pts: float | None = None
    error: str | None = None
    live: bool = False
    restarts: int = 0
    skipped: int = 0  # frames marked repeat (static scene): embedding reused, model not run
    reconnects: int = 0
    gaps: int = 0
    gap_total_s: float = 0.0
    last_gap_s: float | None = None
    lag_s: float | None = None
    resumed_from: float | None = None  # time after which this run resumed (None: from the start)

    @classmethod
    def removed(cls, stream_id: str, stored: StreamState) -> "StreamReport":
        """A stream this run never ran, removed on request: its stored state, now "removed"."""
        report = cls(stream_id, stored.uri, status="removed", frames=stored.frames_indexed,
                     last_pts=stored.last_committed_pts, live=bool(stored.live))
        report.carry_counters(stored)
        return report

    def carry_counters(self, stored: StreamState) -> None:
        """Carry the restart / reconnect / gap / skip counters over from the stream's stored state."""
        for name in ("restarts", "reconnects", "gaps"):
            setattr(self, name, int(getattr(stored, name) or 0))
        self.gap_total_s = float(stored.gap_total_s or 0.0)
        self.skipped = int(stored.frames_skipped or 0)
        self.last_gap_s = stored.last_gap_s

    def resume(self, stored: StreamState | None, checkpoint: Checkpoint) -> bool:
        """Start from a stored checkpoint; True when it continues an unfinished run (a restart)."""
        self.frames, self.last_pts = checkpoint.frames, checkpoint.last_pts
        if stored is None or checkpoint.at_start:
            return False
        self.resumed_from = checkpoint.resume_after
        self.carry_counters(stored)
        if stored.status is Status.DONE:
            return False
        self.restarts += 1
        return True

    def note(self, events: Iterable[StreamEvent]) -> None:
        """Count reconnects and gaps and set the live status from a batch's events."""
        for event in events:
            if event.kind == "stall":
                self.status = "reconnecting"
            elif event.kind in ("reconnect", "resume", "discontinuity"):
                self.status = "running"
                self.reconnects += event.kind == "reconnect"
                if event.gap_s is not None:
                    self.gaps += 1
                    self.gap_total_s += float(event.gap_s)
                    self.last_gap_s = float(event.gap_s)

    def committed(self, checkpoint: Checkpoint, progress: Any, now: float) -> int:
        """Take in one committed write group (its StreamProgress); returns frames newly committed."""
        grown = checkpoint.frames - self.frames
        self.frames, self.last_pts = checkpoint.frames, checkpoint.last_pts
        self.clips += progress.clips
        self.skipped = min(self.skipped + progress.skipped, self.frames)  # a replay counts its skips again
        if progress.last_wallclock is not None:
            self.lag_s = now - progress.last_wallclock
        return grown

    def state(self, checkpoint: Checkpoint, model: str) -> StreamState:
        """This stream's StreamState (its `streams` row) with its committed checkpoint."""
        return StreamState(
            self.stream_id, self.uri, Status(self.status), frames_indexed=self.frames, last_committed_pts=self.last_pts,
            error=self.error, model=model, next_window=checkpoint.next_window, resume_after=checkpoint.resume_after,
            grid=checkpoint.grid, last_wallclock=checkpoint.last_wallclock, live=self.live, lag_s=self.lag_s,
            reconnects=self.reconnects, gaps=self.gaps, gap_total_s=self.gap_total_s, last_gap_s=self.last_gap_s,
            restarts=self.restarts, frames_skipped=self.skipped)


@dataclass
class IndexReport:
    """Outcome of a whole run: per-stream reports, the model used, and wall time."""

    streams: list[StreamReport]
    model: str
    warning: str | None
    seconds: float
    precision: str = "fp32"  # the image tower's precision in the encode actor

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams)

    @property
    def failed(self) -> list[StreamReport]:
        return [s for s in self.streams if s.status == "error"]
