"""Which streams run, and how much each may have in flight. Plain Python, no Ray.

Memory stays bounded because nothing is produced unless asked for: at most max_active_streams
files decode at once (the rest wait in the queue; live streams cannot wait and always start),
and each running stream has at most inflight_per_stream batches asked of its decoder and not yet
taken. A stream that keeps failing without progress is given up after max_rewinds replays.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamvl.config import RuntimeConfig
from streamvl.runtime.backend import BatchMeta
from streamvl.runtime.report import StreamReport
from streamvl.sources.decode import is_url
from streamvl.types import StreamInfo


@dataclass
class ActiveStream:
    """A running stream: its decoder, the batches asked of it, and how it is ending."""

    info: StreamInfo
    report: StreamReport
    decoder: Any = None
    encoder: str | None = None  # the encoder its batches go to (streamvl.runtime.routing)
    generation: int = 0  # bumped by every new decoder or ending: older data no longer moves the checkpoint
    pending: deque = field(default_factory=deque)  # (meta ref, batch ref), in request order
    batch: Any = None  # batch ref of the head just taken
    requested_final: bool = False
    commits: int = 0  # write groups in flight that hold data of this stream (any generation)
    ending: str | None = None  # "done", "error" or "removed" once no more batches will come
    rewinds: int = 0  # replays since the checkpoint last moved
    last_record: float = 0.0  # monotonic time of its last `streams` row
    seen_pts: float | None = None  # latest frame time / arrival handed out by any decoder
    seen_wall: float | None = None

    @property
    def stream_id(self) -> str:
        return self.info.stream_id

    @property
    def live(self) -> bool:
        return self.report.live

    def saw(self, meta: BatchMeta) -> None:
        """Remember how far any decoder of this stream got (a live restart continues after it)."""
        if meta.last_pts is not None and not meta.failed:
            self.seen_pts = meta.last_pts if self.seen_pts is None else max(self.seen_pts, meta.last_pts)
        if meta.last_wallclock is not None:
            self.seen_wall = meta.last_wallclock if self.seen_wall is None else max(self.seen_wall, meta.last_wallclock)


class StreamScheduler:
    """The queue and the running set: admission, per-stream in-flight requests, the replay budget."""

    def __init__(self, runtime: RuntimeConfig):
        self.max_active = runtime.max_active_streams
        self.inflight = runtime.inflight_per_stream
        self.max_rewinds = runtime.max_rewinds
        self.queue: deque[StreamInfo] = deque()
        self.active: dict[str, ActiveStream] = {}
        self.peak_pending = 0  # batches requested but not yet taken, across streams (backpressure check)

    def has(self, stream_id: str) -> bool:
        """Queued or running."""
        return stream_id in self.active or any(q.stream_id == stream_id for q in self.queue)

    def enqueue(self, info: StreamInfo) -> None:
        self.queue.append(info)

    def unqueue(self, stream_id: str) -> bool:
        """Drop a stream that has not started; False if it was not queued."""
        for info in list(self.queue):
            if info.stream_id == stream_id:
                self.queue.remove(info)
                return True
        return False

    def admit(self) -> list[StreamInfo]:
        """Take from the queue every stream that may start now: files while fewer than max_active
        files run, live streams always (a camera cannot wait for a slot)."""
        files = sum(1 for s in self.active.values() if not s.live)
        admitted = []
        for info in list(self.queue):
            if not is_url(info.uri):
                if files >= self.max_active:
                    continue
                files += 1
            self.queue.remove(info)
            admitted.append(info)
        return admitted

    def activate(self, info: StreamInfo, report: StreamReport) -> ActiveStream:
        state = ActiveStream(info, report)
        self.active[info.stream_id] = state
        return state

    def wanted(self, state: ActiveStream) -> int:
        """How many more batches to ask of this stream's decoder now."""
        return 0 if state.requested_final else max(0, self.inflight - len(state.pending))

    def requested(self) -> None:
        self.peak_pending = max(self.peak_pending, sum(len(s.pending) for s in self.active.values()))

    def heads(self) -> dict[Any, ActiveStream]:
        """The meta ref of each stream's oldest request, to wait on."""
        return {s.pending[0][0]: s for s in self.active.values() if s.pending}

    def any_pending(self) -> bool:
        return any(s.pending for s in self.active.values())

    def may_replay(self, state: ActiveStream) -> bool:
        """Count one more replay; False once the stream used up its budget without progress."""
        state.rewinds += 1
        return state.rewinds <= self.max_rewinds

    def idle(self, state: ActiveStream) -> bool:
        """An ending stream with nothing in flight any more: it can be closed."""
        return bool(state.ending) and state.commits == 0 and self.active.get(state.stream_id) is state

    def close(self, state: ActiveStream) -> None:
        del self.active[state.stream_id]
