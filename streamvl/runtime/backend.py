"""The seam between the run loop and the machinery that carries it out. Plain Python, no Ray.

The loop (streamvl.runtime.engine.Run) decides what to decode, encode, write and checkpoint; a
Backend does it and says when results are ready. RayBackend (streamvl.runtime.ray_backend) runs
the decoders, the encoder and the sinks as Ray actors; MemoryBackend (streamvl.runtime.testing)
runs them in memory, so the loop is unit-tested without Ray. Results are opaque handles (`Ref`:
a Ray ObjectRef or an in-memory stand-in); calls to one worker run in the order they were made,
as calls to a Ray actor do.
"""

from __future__ import annotations

from dataclasses import dataclass
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


class Backend(Protocol):
    """Everything the run loop asks of the machinery underneath."""

    def start(self) -> dict[str, Any]:
        """Start the encoder and the sinks; return the encoder's description (model, warning,
        meta, precision). Nothing runs before this."""

    def start_decoder(self, info: StreamInfo, first_index: int, start_after: float | None,
                      resume: "LiveResume | None") -> Any:
        """A new decoder of `info` that starts after time start_after with grid index first_index."""

    def stop_decoder(self, decoder: Any) -> None:
        """End a decoder for good (what it still delivers is dropped by the loop)."""

    def next_batch(self, decoder: Any) -> tuple[Ref, Ref]:
        """Ask a decoder for its next batch: (BatchMeta ref, FrameBatch-or-None ref)."""

    def encode(self, batches: Sequence[Ref]) -> tuple[Ref, Ref, Ref]:
        """One encoder call on batches of several streams: (frame rows, clip rows, [StreamProgress])."""

    def finish(self, stream_id: str) -> Ref:
        """The clip rows of a stream's tail window (it ended early: error or removal)."""

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
        """After a process died: wait (bounded) until the encoder and the sinks answer again."""

    def sinks_due(self) -> bool:
        """True once fresh sink processes are ready to take over (then no new write may start)."""

    def swap_sinks(self) -> None:
        """Hand writing over to the fresh sinks; called only when no write is in flight."""

    def close(self) -> None:
        """End every process this backend started."""
