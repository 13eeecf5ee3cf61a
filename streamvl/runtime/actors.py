"""Ray actors: one decoder per stream, one encoder (batches across streams), one sink per table.

Actors are built from plain config; models and plugin managers are created inside them.

Restarts: the encode and sink actors restart in place after a crash (max_restarts), but their
calls are not retried (max_task_retries=0): a failed call surfaces in the driver, which replays
the affected streams from their last committed checkpoint. Decoders are not restarted by Ray (a
restart would re-run the constructor and start over); the driver starts a new one at the
checkpoint instead.
"""

from __future__ import annotations

import pyarrow as pa
import ray

from streamvl.config import IndexConfig, LiveConfig, SamplingConfig, StoreConfig
from streamvl.errors import StreamvlError
from streamvl.runtime.backend import BatchMeta, BatchPuller
from streamvl.storage.sink import SINK_PROCESS_ENV
from streamvl.types import FrameBatch, StreamEvent, StreamInfo, StreamState

__all__ = ["SINK_ENV", "BatchMeta", "DecodeActor", "EncodeActor", "SinkActor"]


# Sink processes: one malloc arena and Arrow on the system allocator (see streamvl/storage/sink.py).
SINK_ENV = {"env_vars": dict(SINK_PROCESS_ENV)}
# The calls a run makes every second (next_batch, process, write, record_states): without task
# events. Ray's GCS keeps the events of the last 100 000 tasks (~3 KiB each here), so at 40 live
# streams (~50 calls/s) it grew by ~150 MiB per 50 000 calls, for the first half hour of a run
# (docs/benchmarks.md, "Sink memory"). The actors' creation and rare calls keep theirs.
HOT = {"enable_task_events": False}


@ray.remote(max_restarts=0)
class DecodeActor:
    """Reads one stream and hands out FrameBatches on request (pull: the driver bounds memory).

    first_index / start_after: resume point of a file (see streamvl.storage.ledger); resume: where a
    live stream's committed data ends (its timeline continues from there, offset by the downtime).
    """

    def __init__(self, info: StreamInfo, sampling: SamplingConfig, live: LiveConfig | None = None,
                 first_index: int = 0, start_after: float | None = None, resume=None):
        def open_batches():
            from streamvl.sources import open_stream

            return open_stream(info, sampling, live or LiveConfig(), first_index=first_index,
                               start_after=start_after, resume=resume)

        self.puller = BatchPuller(info.stream_id, open_batches)  # opened on the first request

    def pid(self) -> int:
        import os

        return os.getpid()

    @ray.method(num_returns=2, **HOT)
    def next_batch(self) -> tuple[BatchMeta, FrameBatch | None]:
        return self.puller.next()


@ray.remote(max_task_retries=0)
class EncodeActor:
    """Wraps one EncodeStage: the model runs here, on frames batched across streams."""

    def __init__(self, config: IndexConfig):
        import torch

        from streamvl.pipeline.encode import EncodeStage

        torch.set_num_threads(config.runtime.torch_threads)
        self.error: StreamvlError | None = None
        try:
            self.stage = EncodeStage(config)
        except StreamvlError as exc:  # kept for describe(): an actor dying in __init__ prints its traceback
            self.error = exc

    def describe(self) -> dict[str, object]:
        """The loaded model; raises the typed error (a model or plugin that failed to load) instead."""
        if self.error is not None:
            raise self.error
        model = self.stage.model
        return {"model": model.name, "warning": model.warning(), "meta": model.meta(),
                "precision": model.precision.precision, "precision_reason": model.precision.reason}

    def pid(self) -> int:
        import os

        return os.getpid()

    @ray.method(num_returns=3, **HOT)
    def process(self, *batches: FrameBatch | None):
        return self.stage.process([b for b in batches if b is not None])

    def finish(self, stream_id: str) -> pa.Table:
        return self.stage.finish(stream_id)


@ray.remote(max_task_retries=0)
class SinkActor:
    """Writes batched Arrow data to one LanceDB table with idempotent upserts, and keeps the
    table in shape under continuous appends (streamvl.storage.sink.TableSink: compaction, the ANN index,
    and reopening its handles after each upkeep to bound LanceDB's caches)."""

    def __init__(self, db: str, table: str, upkeep: StoreConfig | None = None, storage=None):
        from streamvl.storage.sink import TableSink

        # upkeep_first: it may take over from a dead or replaced sink; watches scored off the commit path
        self.sink = TableSink(db, table, upkeep, upkeep_first=True, storage=storage, watch_in_background=True)

    def pid(self) -> int:
        import os

        return os.getpid()

    @ray.method(**HOT)
    def write(self, data: pa.Table) -> int:
        return self.sink.write(data)

    def record_state(self, state: StreamState) -> None:
        self.sink.record_state(state)

    @ray.method(**HOT)
    def record_states(self, states: list[StreamState]) -> int:
        return self.sink.record_states(states)

    def record_events(self, events: list[StreamEvent]) -> int:
        return self.sink.record_events(events)

    def release_claims(self) -> None:
        """Give up the sink's write claims on frames/clips streams (before it is replaced)."""
        self.sink.release_claims()

    def flush_watches(self) -> bool:
        """Wait until the watch events of every committed batch are written."""
        return self.sink.flush_watches()

    def upkeep_now(self) -> dict[str, object]:
        """Compact (and index) this sink's tables now; returns {fragments, rows, indexed} of its table."""
        return self.sink.upkeep_now()
