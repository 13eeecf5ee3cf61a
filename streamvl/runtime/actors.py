"""Ray actors: one decoder per stream, one encoder (batches across streams), one sink per table.

Actors are built from plain config; models and plugin managers are created inside them.

Restarts: the encode and sink actors restart in place after a crash (max_restarts), but their
calls are not retried (max_task_retries=0): a failed call surfaces in the driver, which replays
the affected streams from their last committed checkpoint. Decoders are not restarted by Ray (a
restart would re-run the constructor and start over); the driver starts a new one at the
checkpoint instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyarrow as pa
import ray

from streamvl.config import IndexConfig, LiveConfig, SamplingConfig, StoreConfig
from streamvl.errors import StreamvlError
from streamvl.types import FrameBatch, StreamEvent, StreamInfo


SINK_CACHE_BYTES = 16 << 20  # LanceDB index + metadata caches of a sink, each
# glibc's per-thread malloc arenas fragment under LanceDB's many small write threads: a sink's
# RSS then grows by ~13 MB per 1000 commits; two arenas keep it flat (bench/bench_live.py).
SINK_ENV = {"env_vars": {"MALLOC_ARENA_MAX": "2"}}


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

    first_index / start_after: resume point of a file (see streamvl.checkpoint); resume: where a
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

        from streamvl.encode import EncodeStage

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
    table in shape under continuous appends: compaction every `optimize_every_writes` writes or
    `optimize_every_s` seconds, and the ANN index once the clips table is large enough."""

    def __init__(self, db: str, table: str, upkeep: StoreConfig | None = None):
        from streamvl.store import Store

        self.store, self.table = Store(db, cache_bytes=SINK_CACHE_BYTES), table
        self.upkeep = upkeep or StoreConfig()
        self._writes, self._last_upkeep = 0, time.monotonic()
        self.last_upkeep: dict[str, object] = {}

    def pid(self) -> int:
        import os

        return os.getpid()

    def write(self, data: pa.Table) -> int:
        rows = self.store.upsert(self.table, data)
        self._after_write(rows)
        return rows

    def record_stream(self, stream_id: str, uri: str, status: str, **fields) -> None:
        self.store.record_stream(stream_id, uri, status, **fields)
        self._after_write(1)

    def record_events(self, events: list[StreamEvent]) -> int:
        rows = self.store.record_events(events)
        self._after_write(rows)
        return rows

    def upkeep_now(self) -> dict[str, object]:
        """Compact (and index) this sink's tables now; returns {fragments, rows, indexed} of its table."""
        return self._upkeep()

    def _after_write(self, rows: int) -> None:
        if rows:
            self._writes += 1
        due = time.monotonic() - self._last_upkeep >= self.upkeep.optimize_every_s
        if due or self._writes >= self.upkeep.optimize_every_writes:
            self._upkeep()

    def _upkeep(self) -> dict[str, object]:
        from streamvl.store import STREAM_EVENTS, STREAMS

        self._writes, self._last_upkeep = 0, time.monotonic()
        tables = [self.table, STREAM_EVENTS] if self.table == STREAMS else [self.table]  # events share this sink
        results = [self.store.maintain(name, keep_versions_s=self.upkeep.keep_versions_s,
                                       index_min_rows=self.upkeep.index_min_rows, index_type=self.upkeep.index_type)
                   for name in tables]
        self.last_upkeep = results[0]
        return self.last_upkeep
