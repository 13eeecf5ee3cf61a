"""Ray actors: one decoder per stream, one encoder (batches across streams), one sink per table.

Actors are built from plain config; models and plugin managers are created inside them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
import ray

from streamvl.config import IndexConfig, SamplingConfig
from streamvl.errors import StreamvlError
from streamvl.types import FrameBatch, StreamInfo


@dataclass(frozen=True)
class BatchMeta:
    """Small description of a decoded batch (or of the failure that ended a stream)."""

    stream_id: str
    seq: int
    frames: int
    last_pts: float | None
    final: bool
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


@ray.remote
class DecodeActor:
    """Reads one stream and hands out FrameBatches on request (pull: the driver bounds memory)."""

    def __init__(self, info: StreamInfo, sampling: SamplingConfig, start_after: float | None = None):
        self.info, self.sampling, self.start_after = info, sampling, start_after
        self._iter = None
        self._seq = 0

    @ray.method(num_returns=2)
    def next_batch(self) -> tuple[BatchMeta, FrameBatch | None]:
        from streamvl.sources import open_source

        try:
            if self._iter is None:
                self._iter = iter(open_source(self.info, self.sampling, start_after=self.start_after))
            batch = next(self._iter)
        except StopIteration:  # source ended without a final batch: close the stream cleanly
            return BatchMeta(self.info.stream_id, self._seq, 0, None, True), None
        except StreamvlError as exc:
            return BatchMeta(self.info.stream_id, self._seq, 0, exc.pts, True, str(exc)), None
        except Exception as exc:  # anything untyped still fails this stream only
            return BatchMeta(self.info.stream_id, self._seq, 0, None, True, f"{type(exc).__name__}: {exc}"), None
        self._seq += 1
        last = float(batch.pts[-1]) if len(batch) else None
        return BatchMeta(batch.stream_id, batch.seq, len(batch), last, batch.final), batch


@ray.remote
class EncodeActor:
    """Wraps one EncodeStage: the model runs here, on frames batched across streams."""

    def __init__(self, config: IndexConfig):
        import torch

        from streamvl.encode import EncodeStage

        torch.set_num_threads(config.runtime.torch_threads)
        self.stage = EncodeStage(config)

    def describe(self) -> dict[str, object]:
        model = self.stage.model
        return {"model": model.name, "warning": model.warning(), "meta": model.meta()}

    @ray.method(num_returns=3)
    def process(self, *batches: FrameBatch | None):
        return self.stage.process([b for b in batches if b is not None])

    def finish(self, stream_id: str) -> pa.Table:
        return self.stage.finish(stream_id)


@ray.remote
class SinkActor:
    """Writes batched Arrow data to one LanceDB table with idempotent upserts."""

    def __init__(self, db: str, table: str):
        from streamvl.store import Store

        self.store, self.table = Store(db), table

    def write(self, data: pa.Table) -> int:
        return self.store.upsert(self.table, data)

    def record_stream(self, stream_id: str, uri: str, status: str, **fields) -> None:
        self.store.record_stream(stream_id, uri, status, **fields)
