"""Store: one LanceDB database of streamvl tables, as one object. It only delegates.

The work is done by parts that share one Connection (use them directly where one job is all
that is needed): Reader (reader.py: search reads), Writer (writer.py: upserts, write groups,
deletes), Upkeep (upkeep.py: compaction and indices), StreamTables (streams.py: the stream
record, events and requests). Tables and schemas: schema.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa

from streamvl.storage.connection import Connection
from streamvl.storage.objectstore import StorageConfig
from streamvl.storage.reader import Reader
from streamvl.storage.schema import CLIPS, FRAMES, SEGMENTS, STREAMS  # noqa: F401 (the runtime imports them here)
from streamvl.storage.streams import StreamTables
from streamvl.storage.upkeep import INDEX_MAX_DELTAS, Upkeep
from streamvl.storage.writer import Writer, WriteGroup
from streamvl.types import StreamState


class Store:
    """A LanceDB database of streamvl tables. Connects on first use; picklable (by URI).

    uri: a directory or s3://, gs://, az:// URI; storage: the config's [storage] table (object
    store endpoint and keys, else the standard variables of each process); read_consistency_s and
    cache_bytes: see Connection.
    """

    def __init__(self, uri: str | Path, *, read_consistency_s: float | None = 0.0, cache_bytes: int | None = None,
                 storage: StorageConfig | None = None) -> None:
        self.conn = Connection(uri, read_consistency_s=read_consistency_s, cache_bytes=cache_bytes, storage=storage)
        self.reader, self.writer, self.upkeep = Reader(self.conn), Writer(self.conn), Upkeep(self.conn)
        self.stream_tables = StreamTables(self.conn, self.reader, self.writer)

    def __getstate__(self) -> dict[str, Any]:
        return {"conn": self.conn}

    def __setstate__(self, state: dict[str, Any]) -> None:
        c = state["conn"]
        self.__init__(c.uri, read_consistency_s=c.read_consistency_s, cache_bytes=c.cache_bytes, storage=c.storage)

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- connection
    @property
    def uri(self) -> str:
        return self.conn.uri

    @property
    def db(self) -> Any:
        return self.conn.db

    def reconnect(self) -> None:
        self.conn.reconnect()

    def cache_stats(self) -> dict[str, int]:
        return self.conn.cache_stats()

    def table_names(self) -> list[str]:
        return self.conn.table_names()

    # -- writes
    def upsert(self, table: str, data: pa.Table) -> int:
        return self.writer.upsert(table, data)

    def group(self, table: str) -> WriteGroup:
        return self.writer.group(table)

    def delete(self, table: str, where: str) -> int:
        return self.writer.delete(table, where)

    # -- reads
    def table(self, table: str) -> Any | None:
        return self.reader.table(table)

    def read(self, table: str, where: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        return self.reader.read(table, where, columns)

    def count(self, table: str) -> int:
        return self.reader.count(table)

    def schema(self, table: str) -> pa.Schema | None:
        return self.reader.schema(table)

    def meta(self) -> dict[str, str]:
        return self.reader.meta()

    def search_clips(self, vector: np.ndarray, k: int, *, adapter: str, stream_ids: Sequence[str] | None = None,
                     start: float | None = None, end: float | None = None, tags: Sequence[str] | None = None,
                     candidates: int | None = None) -> list[dict[str, Any]]:
        return self.reader.search_clips(vector, k, adapter=adapter, stream_ids=stream_ids, start=start, end=end,
                                        tags=tags, candidates=candidates)

    def clip_windows(self, adapter: str | None = None) -> list[dict[str, Any]]:
        return self.reader.clip_windows(adapter)

    def frames_of(self, stream_id: str) -> tuple[np.ndarray, np.ndarray]:
        return self.reader.frames_of(stream_id)

    def frames_for(self, stream_id: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        return self.reader.frames_for(stream_id, start, end)

    def last_frame(self, stream_id: str) -> tuple[float | None, float | None]:
        return self.reader.last_frame(stream_id)

    def stream_keys(self, stream_id: str) -> tuple[list[float], dict[str, list[float]]]:
        return self.reader.stream_keys(stream_id)

    def segments(self, adapter: str | None = None, stream_id: str | None = None) -> list[dict[str, Any]]:
        return self.reader.segments(adapter, stream_id)

    # -- upkeep
    def maintain(self, table: str, *, keep_versions_s: float | None = None, index_min_rows: int | None = None,
                 index_type: str = "IVF_PQ", index_max_deltas: int = INDEX_MAX_DELTAS) -> dict[str, Any]:
        return self.upkeep.maintain(table, keep_versions_s=keep_versions_s, index_min_rows=index_min_rows,
                                    index_type=index_type, index_max_deltas=index_max_deltas)

    def optimize(self, *, keep_versions_s: float | None = None, index_max_deltas: int = INDEX_MAX_DELTAS) -> dict[str, int]:
        return self.upkeep.optimize(keep_versions_s=keep_versions_s, index_max_deltas=index_max_deltas)

    def fragments(self, table: str) -> int:
        return self.upkeep.fragments(table)

    # -- the stream tables
    def record_state(self, state: StreamState) -> None:
        self.stream_tables.record_state(state)

    def record_stream(self, stream_id: str, uri: str, status: str, **fields: Any) -> None:
        self.stream_tables.record_stream(stream_id, uri, status, **fields)

    def stream_states(self) -> list[StreamState]:
        return self.stream_tables.stream_states()

    def stream_state(self, stream_id: str) -> StreamState | None:
        return self.stream_tables.stream_state(stream_id)

    def stream(self, stream_id: str) -> dict[str, Any] | None:
        return self.stream_tables.stream(stream_id)

    def stream_uris(self, stream_ids: Iterable[str]) -> dict[str, str]:
        return self.stream_tables.stream_uris(stream_ids)

    def record_events(self, events: Sequence[Any]) -> int:
        return self.stream_tables.record_events(events)

    def events(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        return self.stream_tables.events(stream_id)

    def request_stream(self, stream_id: str, uri: str, action: str, *, fps: float | None = None,
                       transport: str | None = None) -> None:
        self.stream_tables.request_stream(stream_id, uri, action, fps=fps, transport=transport)

    def requests(self) -> list[dict[str, Any]]:
        return self.stream_tables.requests()


def _copy_docs() -> None:
    """Each delegate carries the docstring of the method it calls, so help(Store.x) says what x does."""
    for name, fn in vars(Store).items():
        for part in (Connection, Writer, Reader, Upkeep, StreamTables):
            if callable(fn) and not fn.__doc__ and callable(getattr(part, name, None)):
                fn.__doc__ = getattr(part, name).__doc__


_copy_docs()
