"""Ray actors: one decoder per stream, one encoder (batches across streams), one sink per table.

Actors are built from plain config; models and plugin managers are created inside them.

Restarts: the encode and sink actors restart in place after a crash (max_restarts), but their
calls are not retried (max_task_retries=0): a failed call surfaces in the driver, which replays
the affected streams from their last committed checkpoint. Decoders are not restarted by Ray (a
restart would re-run the constructor and start over); the driver starts a new one at the
checkpoint instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import ray

from streamvl.config import IndexConfig, LiveConfig, SamplingConfig, StoreConfig
from streamvl.errors import StreamvlError
from streamvl.storage.sink import SINK_PROCESS_ENV
from streamvl.types import FrameBatch, StreamEvent, StreamInfo


# Sink processes: two malloc arenas and Arrow on the system allocator (see streamvl/sink.py).
SINK_ENV = {"env_vars": dict(SINK_PROCESS_ENV)}


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


@ray.remote(max_restarts=0)
class DecodeActor:
    """Reads one stream and hands out FrameBatches on request (pull: the driver bounds memory).

    first_index / start_after: resume point of a file (see streamvl.storage.ledger); resume: where a
    live stream's committed data ends (its timeline continues from there, offset by the downtime).
    """

    def __init__(self, info: StreamInfo, sampling: SamplingConfig, live: LiveConfig | None = None,
                 first_index: int = 0, start_after: float | None = None, resume=None):
        self.info, self.sampling, self.live = info, sampling, live or LiveConfig()
        self.first_index, self.start_after, self.resume = first_index, start_after, resume
        self._iter = None
        self._seq = 0

    def pid(self) -> int:
        import os

        return os.getpid()

    @ray.method(num_returns=2)
    def next_batch(self) -> tuple[BatchMeta, FrameBatch | None]:
        from streamvl.sources import open_stream

        try:
            if self._iter is None:
                self._iter = iter(open_stream(self.info, self.sampling, self.live, first_index=self.first_index,
                                              start_after=self.start_after, resume=self.resume))
            batch = next(self._iter)
        except StopIteration:  # source ended without a final batch: close the stream cleanly
            return BatchMeta(self.info.stream_id, self._seq, 0, None, True), None
        except StreamvlError as exc:
            return BatchMeta(self.info.stream_id, self._seq, 0, exc.pts, True, str(exc)), None
        except Exception as exc:  # anything untyped still fails this stream only
            return BatchMeta(self.info.stream_id, self._seq, 0, None, True, f"{type(exc).__name__}: {exc}"), None
        self._seq += 1
        batch = batch.without_repeat_pixels()  # a repeat is encoded from the stream's last frame: no pixels to ship
        last = float(batch.pts[-1]) if len(batch) else None
        wall = float(batch.wallclock[-1]) if batch.wallclock is not None and len(batch.wallclock) else None
        meta = BatchMeta(batch.stream_id, batch.seq, len(batch), last, batch.final, first_index=batch.first_index,
                         last_wallclock=wall, events=batch.events)
        return meta, batch


@ray.remote(max_task_retries=0)
class EncodeActor:
    """Wraps one EncodeStage: the model runs here, on frames batched across streams."""

    def __init__(self, config: IndexConfig):
        import torch

        from streamvl.pipeline.encode import EncodeStage

        torch.set_num_threads(config.runtime.torch_threads)
        self.stage = EncodeStage(config)

    def describe(self) -> dict[str, object]:
        model = self.stage.model
        return {"model": model.name, "warning": model.warning(), "meta": model.meta(),
                "precision": model.precision.precision, "precision_reason": model.precision.reason}

    def pid(self) -> int:
        import os

        return os.getpid()

    @ray.method(num_returns=3)
    def process(self, *batches: FrameBatch | None):
        return self.stage.process([b for b in batches if b is not None])

    def finish(self, stream_id: str) -> pa.Table:
        return self.stage.finish(stream_id)


@ray.remote(max_task_retries=0)
class SinkActor:
    """Writes batched Arrow data to one LanceDB table with idempotent upserts, and keeps the
    table in shape under continuous appends (streamvl.storage.sink.TableSink: compaction, the ANN index,
    and reopening its handles after each upkeep to bound LanceDB's caches)."""

    def __init__(self, db: str, table: str, upkeep: StoreConfig | None = None):
        from streamvl.storage.sink import TableSink

        self.sink = TableSink(db, table, upkeep, upkeep_first=True)  # it may take over from a dead or replaced sink

    def pid(self) -> int:
        import os

        return os.getpid()

    def write(self, data: pa.Table) -> int:
        return self.sink.write(data)

    def record_stream(self, stream_id: str, uri: str, status: str, **fields) -> None:
        self.sink.record_stream(stream_id, uri, status, **fields)

    def record_events(self, events: list[StreamEvent]) -> int:
        return self.sink.record_events(events)

    def upkeep_now(self) -> dict[str, object]:
        """Compact (and index) this sink's tables now; returns {fragments, rows, indexed} of its table."""
        return self.sink.upkeep_now()
