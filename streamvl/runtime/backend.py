"""The seam between the run loop and the machinery that carries it out. Plain Python, no Ray.

The loop (streamvl.runtime.engine.Run) decides what to decode, encode, write and checkpoint; a
Backend does it and says when results are ready. RayBackend (streamvl.runtime.ray_backend) runs
the decoders, the encoders and the sinks as Ray actors; MemoryBackend (streamvl.runtime.testing)
runs them in memory, so the loop is unit-tested without Ray. Results are opaque handles (`Ref`:
a Ray ObjectRef or an in-memory stand-in); calls to one worker run in the order they were made,
as calls to a Ray actor do.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol, Sequence

from streamvl.errors import StreamvlError
from streamvl.types import FrameBatch, StreamEvent, StreamInfo, StreamState

if TYPE_CHECKING:
    from streamvl.sources.live import LiveResume

Ref = Any


class TaskFailed(Exception):
    """A call underneath failed. system: a process died (the affected streams are replayed from
    their checkpoints); otherwise our own code raised (the stream fails)."""

    def __init__(self, message: str, system: bool):
        super().__init__(message)
        self.message = message
        self.system = system


@dataclass(frozen=True)
class BatchMeta:
    """Small description of a decoded batch (or of the failure that ended a stream)."""

    stream_id: str
    seq: int
    frames: int
    last_pts: float | None
    final: bool
    error: str | None = None
    first_index: int = 0
    last_wallclock: float | None = None
    events: tuple[StreamEvent, ...] = ()

    @property
    def failed(self) -> bool:
        return self.error is not None


class BatchPuller:
    """What a decoder does on each request: the next FrameBatch of its source and its BatchMeta.

    The source is opened on the first request. A source that ends, or fails (typed or not), ends
    its stream with a final meta (and no batch) instead of raising: a bad stream fails alone."""

    def __init__(self, stream_id: str, open_batches: Callable[[], Iterator[FrameBatch]]):
        self.stream_id = stream_id
        self._open = open_batches
        self._iter: Iterator[FrameBatch] | None = None
        self._seq = 0

    def next(self) -> tuple[BatchMeta, FrameBatch | None]:
        try:
            if self._iter is None:
                self._iter = iter(self._open())
            batch = next(self._iter)
        except StopIteration:  # source ended without a final batch: close the stream cleanly
            return BatchMeta(self.stream_id, self._seq, 0, None, True), None
        except StreamvlError as exc:
            return BatchMeta(self.stream_id, self._seq, 0, exc.pts, True, str(exc)), None
        except Exception as exc:  # anything untyped still fails this stream only
            return BatchMeta(self.stream_id, self._seq, 0, None, True, f"{type(exc).__name__}: {exc}"), None
        self._seq += 1
        batch = batch.without_repeat_pixels()  # a repeat is encoded from the stream's last frame: no pixels to ship
        last = float(batch.pts[-1]) if len(batch) else None
        wall = float(batch.wallclock[-1]) if batch.wallclock is not None and len(batch.wallclock) else None
        meta = BatchMeta(batch.stream_id, batch.seq, len(batch), last, batch.final, first_index=batch.first_index,
                         last_wallclock=wall, events=batch.events)
        return meta, batch

    def close(self) -> None:
        """End the source (a generator's `finally` closes its connection); safe to call twice."""
        source, self._iter = self._iter, None
        close = getattr(source, "close", None)
        if close is not None:
            close()


@dataclass
class _Slot:
    puller: BatchPuller
    turn: int = 0  # ticket of the call whose turn it is
    busy: bool = False
    closed: bool = False
    done: threading.Condition = field(default_factory=threading.Condition)


class PullerHost:
    """Several streams' BatchPullers in one process, called from a pool of threads.

    A thread pool may start calls in any order, even a stream's first request before its open:
    a request waits until its stream is opened (or closed), and each carries a ticket (0, 1, 2,
    ... per stream) and waits for its turn, so a stream's calls run one at a time in the order
    the driver made them. Closing a stream ends its source now, or when its running call returns."""

    OPEN_WAIT_S = 60.0

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}
        self._closed: dict[str, str] = {}  # key -> stream id of every stream closed here
        self._changed = threading.Condition()

    def __len__(self) -> int:
        return len(self._slots)

    def open(self, key: str, open_batches: Callable[[], Iterator[FrameBatch]], stream_id: str) -> None:
        with self._changed:
            if key not in self._closed:  # closed before its open arrived: stays closed
                self._slots[key] = _Slot(BatchPuller(stream_id, open_batches))
                self._changed.notify_all()

    def next(self, key: str, ticket: int) -> tuple[BatchMeta, FrameBatch | None]:
        with self._changed:
            self._changed.wait_for(lambda: key in self._slots or key in self._closed, timeout=self.OPEN_WAIT_S)
            slot = self._slots.get(key)
        if slot is None:
            return self._closed_meta(self._closed.get(key, key), ticket)
        with slot.done:
            slot.done.wait_for(lambda: slot.turn == ticket or slot.closed)
            if slot.closed:
                return self._closed_meta(slot.puller.stream_id, ticket)
            slot.busy = True
        try:
            return slot.puller.next()
        finally:
            with slot.done:
                slot.busy = False
                slot.turn += 1
                slot.done.notify_all()
                if slot.closed:
                    slot.puller.close()

    def close(self, key: str) -> None:
        with self._changed:
            slot = self._slots.pop(key, None)
            self._closed[key] = slot.puller.stream_id if slot is not None else key
            self._changed.notify_all()
        if slot is None:
            return
        with slot.done:
            slot.closed = True
            slot.done.notify_all()
            if not slot.busy:
                slot.puller.close()

    @staticmethod
    def _closed_meta(stream_id: str, ticket: int) -> tuple[BatchMeta, None]:
        return BatchMeta(stream_id, ticket, 0, None, True, "decoder closed"), None


class Backend(Protocol):
    """Everything the run loop asks of the machinery underneath."""

    def start(self) -> dict[str, Any]:
        """Start the encoders and the sinks; return the encoders' description (model, warning,
        meta, precision). Nothing runs before this."""

    def encoders(self) -> list[str]:
        """Keys of the encoders that are up (or being restarted); one gone for good is left out."""

    def start_decoder(self, info: StreamInfo, first_index: int, start_after: float | None,
                      resume: "LiveResume | None", encoder: str) -> Any:
        """A new decoder of `info` that starts after time start_after with grid index first_index,
        placed beside `encoder` (which will encode its batches)."""

    def stop_decoder(self, decoder: Any) -> None:
        """End a decoder for good (what it still delivers is dropped by the loop)."""

    def next_batch(self, decoder: Any) -> tuple[Ref, Ref]:
        """Ask a decoder for its next batch: (BatchMeta ref, FrameBatch-or-None ref)."""

    def encode(self, batches: Sequence[Ref], encoder: str) -> tuple[Ref, Ref, Ref]:
        """One call of `encoder` on batches of several streams: (frame rows, clip rows, [StreamProgress])."""

    def finish(self, stream_id: str, encoder: str) -> Ref:
        """The clip rows of a stream's tail window from `encoder` (it ended early: error or removal)."""

    def write(self, table: str, data: Ref) -> Ref:
        """Upsert rows into a table through its sink; ready once committed."""

    def record_state(self, state: StreamState) -> Ref:
        """Write one stream's `streams` row (its whole StreamState)."""

    def record_states(self, states: list[StreamState]) -> Ref:
        """Write several streams' `streams` rows in one commit."""

    def record_events(self, events: list[StreamEvent]) -> Ref:
        """Append rows to `stream_events`."""

    def wait(self, refs: Sequence[Ref], num_returns: int = 1, timeout: float | None = None) -> list[Ref]:
        """The refs that are ready, waiting up to timeout seconds until num_returns of them are."""

    def get(self, refs: Ref | Sequence[Ref]) -> Any:
        """The value(s); raises TaskFailed when a call failed."""

    def pause(self, seconds: float) -> None:
        """Nothing is in flight: let time pass."""

    def await_restarts(self) -> None:
        """After a process died: wait (bounded) until the encoders and the sinks answer again, and
        drop the encoders that will not (their node is gone)."""

    def sinks_due(self) -> bool:
        """True once fresh sink processes are ready to take over (then no new write may start)."""

    def swap_sinks(self) -> None:
        """Hand writing over to the fresh sinks; called only when no write is in flight."""

    def close(self) -> None:
        """End every process this backend started."""
