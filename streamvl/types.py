"""Small frozen value types that flow between stages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np


@dataclass(frozen=True)
class FrameBatch:
    """Sampled, resized frames of one stream.

    pts: seconds from stream start, float64 [N]; frames: uint8 [N, H, W, 3] RGB.
    wallclock: UTC epoch seconds [N] for live streams, else None.
    seq: 0-based batch number within one decoder run; final: no batch follows.
    first_index: index of the first frame in the stream's sampled-frame grid (a resumed decoder
        starts at the first uncommitted clip window, not at 0); the clip windows are cut on it.
    fps: the stream's sampling rate (frames per second of presentation time).
    events: live-source events (reconnect, gap, stall) that happened before these frames.
    repeat: bool [N] or None; True marks a frame nearly identical to the stream's last frame not
        marked repeat (streamvl.sources.static): the encoder reuses that frame's embedding. A
        batch holds either every frame's pixels (frames [N, ...], as sources yield it) or only
        the non-repeats' (frames [N - repeats, ...], `without_repeat_pixels()`, what crosses Ray).
    thumbs: one small JPEG per frame (None where it could not be made; streamvl.pipeline.thumbnails), or
        None when thumbnails are off.
    """

    stream_id: str
    uri: str
    pts: np.ndarray
    frames: np.ndarray
    seq: int = 0
    final: bool = False
    wallclock: np.ndarray | None = None
    first_index: int = 0
    fps: float = 0.0
    events: tuple["StreamEvent", ...] = ()
    repeat: np.ndarray | None = None
    thumbs: tuple[bytes | None, ...] | None = None

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be [N,H,W,3], got {self.frames.shape}")
        if self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be uint8, got {self.frames.dtype}")
        if self.pts.ndim != 1:
            raise ValueError(f"pts must be [N], got {self.pts.shape}")
        if self.repeat is not None and (self.repeat.shape != self.pts.shape or self.repeat.dtype != np.bool_):
            raise ValueError(f"repeat must be bool {self.pts.shape}, got {self.repeat.dtype} {self.repeat.shape}")
        if self.frames.shape[0] not in (len(self.pts), len(self.pts) - self.repeats):
            raise ValueError(f"pts {self.pts.shape} does not match {self.frames.shape[0]} frames "
                             f"({self.repeats} repeats)")
        if self.thumbs is not None and len(self.thumbs) != len(self.pts):
            raise ValueError(f"thumbs must have one JPEG per frame ({len(self.pts)}), got {len(self.thumbs)}")

    def __len__(self) -> int:
        return int(self.pts.shape[0])

    @property
    def repeats(self) -> int:
        """Frames marked repeat."""
        return 0 if self.repeat is None else int(self.repeat.sum())

    def fresh_frames(self) -> np.ndarray:
        """Pixels of the frames not marked repeat, in order."""
        if self.repeat is None or self.frames.shape[0] != len(self.pts):
            return self.frames
        return self.frames[~self.repeat]

    def without_repeat_pixels(self) -> "FrameBatch":
        """This batch with only the non-repeats' pixels (what a repeat carries is its pts)."""
        if not self.repeats or self.frames.shape[0] != len(self.pts):
            return self
        return replace(self, frames=self.fresh_frames())


@dataclass(frozen=True)
class StreamInfo:
    """One stream to index: a stable id and the URI it is read from."""

    stream_id: str
    uri: str
    duration: float | None = None  # seconds, when the container declares it
    fps: float | None = None  # per-stream sampling rate (None: the config's)
    transport: str | None = None  # rtsp only: "udp" or "tcp" (None: the config's)


@dataclass(frozen=True)
class StreamEvent:
    """Something that happened to a live stream: a stall, a reconnect, a resume after downtime.

    kind: "stall" | "reconnect" | "resume" | "discontinuity" | "restart"
    wallclock: UTC epoch seconds when it happened; pts: stream time where data resumes (if known);
    gap_s: wall-clock seconds without frames that it covers; attempts: connection attempts made.
    """

    stream_id: str
    kind: str
    wallclock: float
    pts: float | None = None
    gap_s: float | None = None
    attempts: int = 0
    message: str = ""


@dataclass(frozen=True)
class Window:
    """A clip window over sampled frames of one stream: features [T, D], frames optional."""

    stream_id: str
    start: float
    end: float
    features: np.ndarray
    frames: np.ndarray | None = None


@dataclass(frozen=True)
class Hit:
    """A search result: a time range of a stream and its similarity score.

    A range merged from adjacent clips keeps its best clip's window as `peak` (start, end): where
    in a long segment the match is strongest.
    """

    stream_id: str
    uri: str
    start: float
    end: float
    score: float
    adapter: str = ""
    extra: dict[str, object] = field(default_factory=dict)
    peak: tuple[float, float] | None = None

    @property
    def best_window(self) -> tuple[float, float]:
        """`peak`, or the whole range for a hit built without one."""
        return self.peak if self.peak is not None else (self.start, self.end)

    def as_dict(self) -> dict[str, object]:
        return {"stream_id": self.stream_id, "uri": self.uri, "start": self.start, "end": self.end, "score": self.score,
                "peak": list(self.best_window)}


class Status(StrEnum):
    """Where a stream is. The `streams` table stores every one but REQUESTED, which only a
    `stream_requests` row not yet picked up by the serve-index job has."""

    QUEUED = "queued"
    REQUESTED = "requested"
    RUNNING = "running"
    RECONNECTING = "reconnecting"
    DONE = "done"
    ERROR = "error"
    REMOVED = "removed"
    STOPPED = "stopped"

    @property
    def active(self) -> bool:
        """Being read right now (a live stream's lag is meaningful only then)."""
        return self in (Status.RUNNING, Status.RECONNECTING)


@dataclass(frozen=True)
class StreamState:
    """One stream's state: a row of the `streams` table (streamvl.storage.schema maps the two).

    frames_indexed / last_committed_pts: progress; next_window, resume_after, grid: the resume
    checkpoint (streamvl.storage.ledger); last_wallclock ... frames_skipped: live health and
    counters. None means "not recorded" (the column is null), not zero. updated_at is stamped when
    the state is written.
    """

    stream_id: str
    uri: str
    status: Status
    frames_indexed: int = 0
    last_committed_pts: float | None = None
    error: str | None = None
    model: str = ""
    updated_at: dt.datetime | None = None
    next_window: int | None = None
    resume_after: float | None = None
    grid: str | None = None
    last_wallclock: float | None = None
    live: bool | None = None
    lag_s: float | None = None
    reconnects: int | None = None
    gaps: int | None = None
    gap_total_s: float | None = None
    last_gap_s: float | None = None
    restarts: int | None = None
    frames_skipped: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):  # "done" -> Status.DONE; an unknown name raises ValueError
            object.__setattr__(self, "status", Status(self.status))
