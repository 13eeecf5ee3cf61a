"""The LanceDB store: table schemas, idempotent upserts, the streams checkpoint table, search reads.

Tables (all plain Arrow types, readable by any lancedb/pyarrow client without streamvl):
  frames   one row per sampled frame: stream_id, pts, wallclock, embedding, model
  clips    one row per (stream, adapter, clip start): times, embedding, model, plugin columns
  streams  one row per stream: status, progress, last committed pts (the resume checkpoint)
  segments one row per localised segment: stream_id, start, end, label, score, adapter

Writes are `merge_insert` upserts on KEYS, so replaying a batch after a crash changes nothing.
Model metadata ('streamvl.model', 'streamvl.models.weights', ...) is Arrow schema metadata, fixed when
a table is created; LanceDB keeps it across merge_insert and optimize.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamvl.errors import StoreError

FRAMES, CLIPS, STREAMS, SEGMENTS = "frames", "clips", "streams", "segments"
KEYS: dict[str, list[str]] = {FRAMES: ["stream_id", "pts"], CLIPS: ["stream_id", "adapter", "start"], STREAMS: ["stream_id"],
                              SEGMENTS: ["stream_id", "adapter", "start", "end", "label"]}
EMBEDDING = "embedding"
TAGS = "tags"  # list<string> clip column written by tagging plugins (alpro); `search --tag` filters on it
STATUSES = ("queued", "running", "reconnecting", "done", "error", "removed", "stopped")
# Live indexing: per-stream events (reconnects, gaps, restarts) and the serve-index control table.
STREAM_EVENTS, REQUESTS = "stream_events", "stream_requests"
KEYS.update({STREAM_EVENTS: ["stream_id", "wallclock", "kind"], REQUESTS: ["stream_id"]})
MODEL_KEY = "streamvl.model"
REFINE_CANDIDATES = 10  # ANN searches re-rank this many times k rows exactly (no effect without an index)
# Upkeep merges clips.embedding's ANN index deltas into one once optimize has left more than this:
# compaction never merges fragments covered by different deltas (see Store.maintain). 1: merge at
# every upkeep that added a delta (merge + compaction 0.15-0.3 s at 100k 128-d rows; the compaction
# grows with the table: README, "Fragments after the ANN index exists").
INDEX_MAX_DELTAS = 1


# ---------------------------------------------------------------- schemas


def _req(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def embedding_field(dim: int) -> pa.Field:
    """`embedding`: fixed_size_list<float32>[dim], the vector column LanceDB searches."""
    if int(dim) <= 0:
        raise ValueError(f"embedding dim must be positive, got {dim}")
    return _req(EMBEDDING, pa.list_(pa.float32(), int(dim)))


def _schema(fields: Sequence[pa.Field], meta: Mapping[str, str] | None) -> pa.Schema:
    return pa.schema(fields, metadata={str(k): str(v) for k, v in (meta or {}).items()} or None)


# frames: an optional small JPEG of the frame (streamvl.pipeline.thumbnails), appended by the encode stage
THUMBNAIL = pa.field("thumbnail", pa.binary())


def frames_schema(dim: int, meta: Mapping[str, str] | None = None) -> pa.Schema:
    fields = [_req("stream_id", pa.string()), _req("pts", pa.float64()), pa.field("wallclock", pa.float64()),
              embedding_field(dim), _req("model", pa.string())]
    return _schema(fields, meta)


def clips_schema(dim: int, extra: Sequence[pa.Field] = (), meta: Mapping[str, str] | None = None) -> pa.Schema:
    """The clips table; `extra` are plugin columns (ColumnProvider.fields), appended in order."""
    fields = [_req("stream_id", pa.string()), _req("start", pa.float64()), _req("end", pa.float64()),
              _req("adapter", pa.string()), embedding_field(dim), _req("model", pa.string())]
    taken = {f.name for f in fields}
    for f in extra:
        if f.name in taken:
            raise StoreError(f"table {CLIPS!r}: plugin column {f.name!r} clashes with an existing column")
        taken.add(f.name)
    return _schema([*fields, *extra], meta)


def segments_schema(meta: Mapping[str, str] | None = None) -> pa.Schema:
    """Localised segments: a time range of a stream, its label and score, and the adapter that found it."""
    fields = [_req("stream_id", pa.string()), _req("start", pa.float64()), _req("end", pa.float64()),
              _req("label", pa.string()), _req("score", pa.float64()), _req("adapter", pa.string()),
              _req("model", pa.string())]
    return _schema(fields, meta)


def streams_schema(meta: Mapping[str, str] | None = None) -> pa.Schema:
    fields = [_req("stream_id", pa.string()), _req("uri", pa.string()), _req("status", pa.string()),
              _req("frames_indexed", pa.int64()), pa.field("last_committed_pts", pa.float64()),
              pa.field("error", pa.string()), _req("model", pa.string()),
              _req("updated_at", pa.timestamp("us", tz="UTC")), *STREAM_LIVE_FIELDS]
    return _schema(fields, meta)


# Checkpoint and live-health columns of `streams` (nullable: tables from older versions gain them).
STREAM_LIVE_FIELDS = (
    pa.field("next_window", pa.int64()),  # checkpoint: sampled-frame index of the first uncommitted window
    pa.field("resume_after", pa.float64()),  # checkpoint: time of the frame before it (decode resumes after)
    pa.field("grid", pa.string()),  # checkpoint: fps/window/stride/adapters it was taken on
    pa.field("last_wallclock", pa.float64()),  # arrival (UTC s) of the last committed frame, live only
    pa.field("live", pa.bool_()),
    pa.field("lag_s", pa.float64()),  # commit time - arrival of the last committed frame (live)
    pa.field("reconnects", pa.int64()),
    pa.field("gaps", pa.int64()),  # stalls, reconnects and downtime that left a hole in the timeline
    pa.field("gap_total_s", pa.float64()),
    pa.field("last_gap_s", pa.float64()),
    pa.field("restarts", pa.int64()),  # replays from the checkpoint after an actor crash or a job restart
    pa.field("frames_skipped", pa.int64()),  # indexed frames marked repeat (static scene): model not run
)


def stream_events_schema() -> pa.Schema:
    """One row per live-stream event (see streamvl.types.StreamEvent)."""
    return pa.schema([_req("stream_id", pa.string()), _req("wallclock", pa.float64()), _req("kind", pa.string()),
                      pa.field("at", pa.timestamp("us", tz="UTC")), pa.field("pts", pa.float64()),
                      pa.field("gap_s", pa.float64()), pa.field("attempts", pa.int64()), pa.field("message", pa.string())])


def stream_requests_schema() -> pa.Schema:
    """The desired set of streams of a `serve-index` job: `streams add/remove` upsert rows here."""
    return pa.schema([_req("stream_id", pa.string()), _req("uri", pa.string()), _req("action", pa.string()),
                      pa.field("fps", pa.float64()), pa.field("transport", pa.string()),
                      _req("requested_at", pa.timestamp("us", tz="UTC"))])


# ---------------------------------------------------------------- SQL filter literals


def sql_str(value: str) -> str:
    """A single-quoted SQL string literal ('' escapes a quote; backslashes are literal)."""
    if not isinstance(value, str):
        raise StoreError(f"filter value must be a string, got {type(value).__name__}")
    return "'" + value.replace("'", "''") + "'"


def sql_float(value: float) -> str:
    x = float(value)
    if not math.isfinite(x):
        raise StoreError(f"filter time must be finite, got {value!r}")
    return repr(x)


def clip_filter(adapter: str, stream_ids: Sequence[str] | None = None,
                start: float | None = None, end: float | None = None, tags: Sequence[str] | None = None) -> str:
    """Prefilter for clips: this adapter, these streams, clips overlapping [start, end], carrying every tag."""
    parts = [f"adapter = {sql_str(adapter)}"]
    for tag in tags or ():
        parts.append(f"array_has({TAGS}, {sql_str(tag)})")
    if stream_ids is not None:
        parts.append(f"stream_id IN ({', '.join(sql_str(s) for s in stream_ids)})")
    if start is not None:
        parts.append(f"`end` >= {sql_float(start)}")
    if end is not None:
        parts.append(f"`start` <= {sql_float(end)}")
    return " AND ".join(parts)


# ---------------------------------------------------------------- conforming data to a table


def _dim(schema: pa.Schema, table: str) -> int:
    idx = schema.get_field_index(EMBEDDING)
    if idx < 0 or not pa.types.is_fixed_size_list(schema.field(idx).type):
        raise StoreError(f"table {table!r}: column {EMBEDDING!r} must be fixed_size_list<float32>[dim]")
    return schema.field(idx).type.list_size


def _data_dims(col: pa.ChunkedArray) -> set[int]:
    if pa.types.is_fixed_size_list(col.type):
        return {col.type.list_size}
    if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
        return {int(n) for n in pc.unique(pc.list_value_length(col)).to_pylist() if n is not None}
    raise StoreError(f"column {EMBEDDING!r} must be a list of floats, got {col.type}")


def _check_dim(table: str, col: pa.ChunkedArray, expected: int) -> None:
    got = _data_dims(col)
    if got - {expected}:
        raise StoreError(f"table {table!r}, column {EMBEDDING!r}: expected dim {expected}, got {sorted(got)}")


def _conform_column(table: str, data: pa.Table, field: pa.Field) -> pa.ChunkedArray | pa.Array:
    if field.name not in data.column_names:
        if not field.nullable:
            raise StoreError(f"table {table!r}: missing required column {field.name!r} (expected {field.type})")
        return pa.nulls(data.num_rows, field.type)
    col = data.column(field.name)
    if field.name == EMBEDDING:
        _check_dim(table, col, field.type.list_size)
    try:
        col = col.cast(field.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise StoreError(f"table {table!r}, column {field.name!r}: expected {field.type}, got {col.type} ({exc})") from exc
    if not field.nullable and col.null_count:
        raise StoreError(f"table {table!r}, column {field.name!r}: {col.null_count} null value(s) in a required column")
    return col


def conform(table: str, data: pa.Table, target: pa.Schema) -> pa.Table:
    """`data` cast to `target` (column order, types, nulls for absent nullable columns)."""
    unknown = [n for n in data.column_names if target.get_field_index(n) < 0]
    if unknown:
        raise StoreError(f"table {table!r} has no column(s) {unknown}; it has {target.names}")
    return pa.Table.from_arrays([_conform_column(table, data, f) for f in target], schema=target)


def _check_model(table: str, data: pa.Schema, target: pa.Schema) -> None:
    """Rows embedded by another model must not land in a table (cosine across models is noise)."""
    new, old = (dict(s.metadata or {}).get(MODEL_KEY.encode()) for s in (data, target))
    if new is not None and old is not None and new != old:
        raise StoreError(f"table {table!r} holds embeddings of model {old.decode()!r}; "
                         f"refusing rows from model {new.decode()!r} (use another database)")


def dedupe_last(data: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Keep the last row per key: merge_insert inserts in-batch duplicates twice."""
    rows = pa.array(np.arange(data.num_rows, dtype=np.int64))
    groups = data.select(list(keys)).append_column("__row", rows).group_by(list(keys), use_threads=False)
    last = groups.aggregate([("__row", "max")])["__row_max"]
    if len(last) == data.num_rows:
        return data
    return data.take(np.sort(last.to_numpy()))


def _creation_schema(table: str, schema: pa.Schema) -> pa.Schema:
    """The schema a new table gets from its first batch: keys required, embedding float32."""
    missing = [k for k in KEYS[table] if schema.get_field_index(k) < 0]
    if missing:
        raise StoreError(f"table {table!r}: missing required column(s) {missing}")
    for i, f in enumerate(schema):
        if f.name in KEYS[table]:
            schema = schema.set(i, f.with_nullable(False))
        elif f.name == EMBEDDING:
            if not pa.types.is_fixed_size_list(f.type):
                raise StoreError(f"table {table!r}: a new table needs {EMBEDDING!r} as fixed_size_list, got {f.type} "
                                 f"(build data with {table}_schema(dim, ...))")
            schema = schema.set(i, embedding_field(f.type.list_size))
    return schema


def embeddings_array(col: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed_size_list column -> float32 [N, dim]."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    return arr.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False).reshape(-1, dim)


@contextmanager
def _lance_errors(table: str, action: str) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:  # lancedb raises ValueError/RuntimeError/OSError with its own messages
        raise StoreError(f"{action} on table {table!r} failed: {exc}") from exc


def _check_table(table: str) -> list[str]:
    try:
        return KEYS[table]
    except KeyError:
        raise StoreError(f"unknown table {table!r}; streamvl tables are {sorted(KEYS)}") from None


# ---------------------------------------------------------------- the store


class Store:
    """A LanceDB database of streamvl tables. Connects on first use; picklable (by URI).

    read_consistency_s: how stale a read may be with respect to other processes' writes
    (0 = every read checks for new versions; None = never, LanceDB's own default).
    cache_bytes: cap of LanceDB's index and metadata caches each (None: LanceDB's defaults);
    long-running writers set it, and call reconnect() now and then: the caches gain entries with
    every committed version, and their item count is not bounded by the byte cap.
    """

    def __init__(self, uri: str | Path, *, read_consistency_s: float | None = 0.0, cache_bytes: int | None = None) -> None:
        self.uri = str(uri)
        self.read_consistency_s = read_consistency_s
        self.cache_bytes = cache_bytes
        self._db: Any = None
        self._session: Any = None
        self._tables: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "read_consistency_s": self.read_consistency_s, "cache_bytes": self.cache_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], read_consistency_s=state["read_consistency_s"], cache_bytes=state.get("cache_bytes"))

    def __repr__(self) -> str:
        return f"Store({self.uri!r})"

    # -- connection and table handles

    @property
    def db(self) -> Any:
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> Any:
        import lancedb

        interval = None if self.read_consistency_s is None else dt.timedelta(seconds=self.read_consistency_s)
        try:
            if "://" not in self.uri:
                Path(self.uri).mkdir(parents=True, exist_ok=True)
            self._session = None
            if self.cache_bytes is not None:
                self._session = lancedb.Session(index_cache_size_bytes=self.cache_bytes,
                                                metadata_cache_size_bytes=self.cache_bytes)
            return lancedb.connect(self.uri, read_consistency_interval=interval, session=self._session)
        except Exception as exc:
            raise StoreError(f"cannot open LanceDB database {self.uri!r}: {exc}") from exc

    def reconnect(self) -> None:
        """Drop the connection, its table handles and its LanceDB caches; the next call opens the
        latest committed version afresh. Committed data is unaffected (every write is a commit).

        Why: a handle kept open across thousands of commits accumulates per-version state (cached
        manifests, fragment and index metadata), so a long-running writer's memory keeps rising.
        """
        self._tables.clear()
        self._db, self._session = None, None

    def cache_stats(self) -> dict[str, int]:
        """{bytes, items} held by this store's LanceDB session caches (zeros before the first
        connection or without cache_bytes, when LanceDB's own default session is used)."""
        if self._session is None:
            return {"bytes": 0, "items": 0}
        return {"bytes": int(self._session.size_bytes), "items": int(self._session.approx_num_items)}

    def table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        with _lance_errors("*", "list tables"):
            while True:
                page = self.db.list_tables(page_token=token)
                names.extend(page.tables)
                token = page.page_token
                if not token:
                    return sorted(names)

    def _open(self, table: str) -> Any | None:
        """The table handle, or None if the table does not exist yet.

        A missing table is looked up in the table list rather than left to open_table to raise:
        LanceDB's exception leaves a traceback cycle that keeps this connection (and its caches)
        alive until Python's full garbage collection, and the streams sink asks for the possibly
        missing `stream_events` at every upkeep.
        """
        if table in self._tables:
            return self._tables[table]
        if table not in self.table_names():
            return None
        try:
            handle = self.db.open_table(table)
        except Exception as exc:
            if table not in self.table_names():  # dropped meanwhile by another writer
                return None
            raise StoreError(f"open table {table!r} failed: {exc}") from exc
        self._tables[table] = handle
        return handle

    def _create(self, table: str, schema: pa.Schema) -> Any:
        """Create an empty table; if another writer just created it, open theirs."""
        try:
            handle = self.db.create_table(table, schema=_creation_schema(table, schema))
        except StoreError:
            raise
        except Exception as exc:
            handle = self._open(table)
            if handle is None:
                raise StoreError(f"create table {table!r} failed: {exc}") from exc
        self._tables[table] = handle
        return handle

    # -- writes

    def upsert(self, table: str, data: pa.Table) -> int:
        """Insert or replace rows by KEYS[table]; creates the table from data.schema if missing.

        Returns the number of rows written (after dropping in-batch duplicates, last wins).
        """
        keys = _check_table(table)
        if data.num_rows == 0:
            return 0
        handle = self._open(table)
        if handle is None:  # (not `or`: a LanceTable with no rows is falsy)
            handle = self._create(table, data.schema)
        elif table == FRAMES and THUMBNAIL.name in data.column_names:  # a frames table from before thumbnails
            self._add_missing_columns(FRAMES, pa.schema([THUMBNAIL]))
            handle = self._open(table)
        _check_model(table, data.schema, handle.schema)
        rows = dedupe_last(conform(table, data, handle.schema), keys)
        with _lance_errors(table, "upsert"):
            handle.merge_insert(keys).when_matched_update_all().when_not_matched_insert_all().execute(rows)
        return rows.num_rows

    def record_stream(self, stream_id: str, uri: str, status: str, *, frames_indexed: int = 0,
                      last_committed_pts: float | None = None, error: str | None = None, model: str = "",
                      **fields: Any) -> None:
        """Write the whole row of one stream (every field is replaced, including the checkpoint).

        fields: the checkpoint and live columns (STREAM_LIVE_FIELDS); absent ones become null.
        """
        if status not in STATUSES:
            raise StoreError(f"table {STREAMS!r}: status must be one of {STATUSES}, got {status!r}", stream_id=stream_id)
        known = {f.name for f in STREAM_LIVE_FIELDS}
        if set(fields) - known:
            raise StoreError(f"table {STREAMS!r} has no column(s) {sorted(set(fields) - known)}", stream_id=stream_id)
        row = {"stream_id": [stream_id], "uri": [uri], "status": [status], "frames_indexed": [int(frames_indexed)],
               "last_committed_pts": [None if last_committed_pts is None else float(last_committed_pts)],
               "error": [error], "model": [model], "updated_at": [dt.datetime.now(dt.timezone.utc)]}
        row |= {f.name: [fields.get(f.name)] for f in STREAM_LIVE_FIELDS}
        self._add_missing_columns(STREAMS, streams_schema())
        self.upsert(STREAMS, pa.table(row, schema=streams_schema()))

    def _add_missing_columns(self, table: str, schema: pa.Schema) -> None:
        """Give an existing table the nullable columns of `schema` it lacks (older databases)."""
        handle = self._open(table)
        if handle is None:
            return
        missing = [f for f in schema if f.nullable and handle.schema.get_field_index(f.name) < 0]
        if missing:
            with _lance_errors(table, "add columns"):
                handle.add_columns(missing)

    def record_events(self, events: Sequence[Any]) -> int:
        """Append live-stream events (StreamEvent-like objects) to `stream_events`; idempotent."""
        if not events:
            return 0
        now = dt.datetime.now(dt.timezone.utc)
        rows = [{"stream_id": e.stream_id, "wallclock": float(e.wallclock), "kind": e.kind,
                 "at": dt.datetime.fromtimestamp(e.wallclock, dt.timezone.utc) if e.wallclock else now,
                 "pts": e.pts, "gap_s": e.gap_s, "attempts": int(e.attempts), "message": e.message} for e in events]
        return self.upsert(STREAM_EVENTS, pa.Table.from_pylist(rows, schema=stream_events_schema()))

    def events(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of `stream_events` (all, or one stream's), oldest first."""
        handle = self._open(STREAM_EVENTS)
        if handle is None:
            return []
        with _lance_errors(STREAM_EVENTS, "read"):
            query = handle.search()
            if stream_id is not None:
                query = query.where(f"stream_id = {sql_str(stream_id)}")
            rows = query.limit(None).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: (r["wallclock"], r["stream_id"]))

    def request_stream(self, stream_id: str, uri: str, action: str, *, fps: float | None = None,
                       transport: str | None = None) -> None:
        """Set the desired state of one stream for a serve-index job: action "run" or "remove"."""
        if action not in ("run", "remove"):
            raise StoreError(f"table {REQUESTS!r}: action must be 'run' or 'remove', got {action!r}", stream_id=stream_id)
        row = {"stream_id": [stream_id], "uri": [uri], "action": [action], "fps": [fps], "transport": [transport],
               "requested_at": [dt.datetime.now(dt.timezone.utc)]}
        self.upsert(REQUESTS, pa.table(row, schema=stream_requests_schema()))

    def requests(self) -> list[dict[str, Any]]:
        """The serve-index control rows: desired streams (action "run") and removals."""
        handle = self._open(REQUESTS)
        if handle is None:
            return []
        with _lance_errors(REQUESTS, "read"):
            return sorted(handle.to_arrow().to_pylist(), key=lambda r: r["stream_id"])

    def last_frame(self, stream_id: str) -> tuple[float | None, float | None]:
        """(max pts, max wallclock) of a stream's committed frames, or (None, None)."""
        handle = self._open(FRAMES)
        if handle is None:
            return None, None
        with _lance_errors(FRAMES, "read"):
            got = handle.search().where(f"stream_id = {sql_str(stream_id)}").select(["pts", "wallclock"]).limit(None).to_arrow()
        if got.num_rows == 0:
            return None, None
        pts, wall = pc.max(got["pts"]).as_py(), pc.max(got["wallclock"]).as_py()
        return pts, (None if wall is None or math.isnan(wall) else wall)

    def maintain(self, table: str, *, keep_versions_s: float | None = None, index_min_rows: int | None = None,
                 index_type: str = "IVF_PQ", index_max_deltas: int = INDEX_MAX_DELTAS) -> dict[str, Any]:
        """Upkeep of one table under continuous appends: compact fragments, fold new rows into
        existing indices, build the ANN index on `embedding` once the table has index_min_rows
        rows (clips only), and merge that index's deltas into one once it has more than
        index_max_deltas of them.

        Why the merge: each optimize indexes the rows appended since the last one as a new delta
        of the vector index, and Lance's compaction never merges fragments covered by different
        deltas, so every upkeep would leave one more fragment (and every search one more delta to
        probe). The merge keeps the centroids and codebooks trained at the build (no retraining),
        after which compaction merges the fragments again. index_min_rows=None never builds one.
        Returns {fragments, rows, indexed, deltas (after upkeep), merged (deltas merged, 0 if none),
        merge_s (seconds of the merge and the compaction after it)}.
        """
        if index_max_deltas < 1:
            raise StoreError(f"table {table!r}: index_max_deltas must be >= 1, got {index_max_deltas}")
        handle = self._open(table)
        if handle is None:
            return {"fragments": 0, "rows": 0, "indexed": False, "deltas": 0, "merged": 0, "merge_s": 0.0}
        older = None if keep_versions_s is None else dt.timedelta(seconds=keep_versions_s)
        merged, merge_s = 0, 0.0
        with _lance_errors(table, "optimize"):
            handle.optimize(cleanup_older_than=older)
            rows = int(handle.count_rows())
            name, deltas = self._vector_index(handle)
            if table == CLIPS and name is None and index_min_rows is not None and rows >= index_min_rows:
                self._build_vector_index(handle, rows, index_type)
                name, deltas = self._vector_index(handle)
            elif name is not None and deltas > index_max_deltas:
                began = time.perf_counter()
                merged, deltas = deltas, self._merge_index_deltas(table, handle, name, deltas, older)
                merge_s = time.perf_counter() - began
            if name is not None and table == CLIPS and not self._has_adapter_index(handle):
                from lancedb.index import Bitmap

                handle.create_index("adapter", config=Bitmap(), replace=True)
            fragments = int(handle.stats()["fragment_stats"]["num_fragments"])
        return {"fragments": fragments, "rows": rows, "indexed": name is not None, "deltas": deltas,
                "merged": merged, "merge_s": merge_s}

    @staticmethod
    def _merge_index_deltas(table: str, handle: Any, name: str, deltas: int, older: dt.timedelta | None) -> int:
        """Merge the `deltas` deltas of index `name` into one with Lance's own optimize_indices
        (lancedb's optimize can only add deltas: it does not expose num_indices_to_merge), then
        compact: the fragments the deltas kept apart now share one index and merge. Needs pylance
        (the Lance that lancedb bundles, see pyproject.toml). Returns the delta count after (1)."""
        try:
            importlib.import_module("lance")  # lazy: only a table with a vector index needs it
        except ImportError as exc:
            raise StoreError(f"table {table!r}: merging the {deltas} deltas of index {name!r} needs the pylance "
                             f"package, the version pinned in streamvl's dependencies ({exc})") from exc
        handle.checkout_latest()
        handle.to_lance().optimize.optimize_indices(num_indices_to_merge=deltas, index_names=[name])
        handle.checkout_latest()
        handle.optimize(cleanup_older_than=older)
        return Store._vector_index(handle)[1]

    @staticmethod
    def _vector_index(handle: Any) -> tuple[str | None, int]:
        """(name, delta count) of the vector index on `embedding`; (None, 0) without one."""
        names = [ix.name for ix in handle.list_indices() if EMBEDDING in list(ix.columns)]
        if not names:
            return None, 0
        stats = handle.index_stats(names[0])
        return names[0], 1 if stats is None else int(stats.num_indices or 1)

    @staticmethod
    def _has_adapter_index(handle: Any) -> bool:
        return any(list(ix.columns) == ["adapter"] for ix in handle.list_indices())

    def _one_adapter(self, handle: Any, adapter: str) -> bool:
        """True when every clip row is this adapter's: then the `adapter =` prefilter selects every
        row, and LanceDB pays for it inside the ANN search (about 100 ms at 1M rows, vs 10 ms without).
        Answered from the bitmap index upkeep builds next to the vector index (under 1 ms); without one, False."""
        columns = [list(ix.columns) for ix in handle.list_indices()]  # one listing per search, not two
        if [EMBEDDING] not in columns or ["adapter"] not in columns:
            return False
        return int(handle.count_rows(f"adapter != {sql_str(adapter)}")) == 0

    @staticmethod
    def _build_vector_index(handle: Any, rows: int, index_type: str) -> None:
        dim = _dim(handle.schema, CLIPS)
        sub = next((d for d in (dim // 4, dim // 8, dim // 2, 1) if d >= 1 and dim % d == 0), 1)
        partitions = max(1, min(256, int(math.sqrt(rows))))
        options: dict[str, Any] = {"num_partitions": partitions}
        if "PQ" in index_type:
            options["num_sub_vectors"] = sub
        handle.create_index(metric="cosine", vector_column_name=EMBEDDING, index_type=index_type, replace=True, **options)

    def fragments(self, table: str) -> int:
        handle = self._open(table)
        if handle is None:
            return 0
        with _lance_errors(table, "stats"):
            return int(handle.stats()["fragment_stats"]["num_fragments"])

    def optimize(self, *, keep_versions_s: float | None = None,
                 index_max_deltas: int = INDEX_MAX_DELTAS) -> dict[str, int]:
        """Upkeep of every table as the sinks do it (maintain: compact, fold new rows into indices,
        merge the vector index's deltas past index_max_deltas); never builds the ANN index.

        Old versions are deleted once older than keep_versions_s (LanceDB's default: 7 days);
        0 is safe only when no other process reads the tables. Returns fragments per table.
        """
        return {name: self.maintain(name, keep_versions_s=keep_versions_s, index_max_deltas=index_max_deltas)["fragments"]
                for name in self.table_names()}

    # -- reads

    def count(self, table: str) -> int:
        handle = self._open(table)
        if handle is None:
            return 0
        with _lance_errors(table, "count"):
            return int(handle.count_rows())

    def streams(self) -> list[dict[str, Any]]:
        handle = self._open(STREAMS)
        if handle is None:
            return []
        with _lance_errors(STREAMS, "read"):
            rows = handle.to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["stream_id"])

    def stream_uris(self, stream_ids: Iterable[str]) -> dict[str, str]:
        """{stream_id: uri} of these streams (unknown ones are absent); reads only those rows."""
        ids = sorted(set(stream_ids))
        handle = self._open(STREAMS) if ids else None
        if handle is None:
            return {}
        where = f"stream_id IN ({', '.join(sql_str(s) for s in ids)})"
        with _lance_errors(STREAMS, "read"):
            got = handle.search().where(where).select(["stream_id", "uri"]).limit(None).to_arrow()
        return dict(zip(got["stream_id"].to_pylist(), got["uri"].to_pylist()))

    def stream(self, stream_id: str) -> dict[str, Any] | None:
        handle = self._open(STREAMS)
        if handle is None:
            return None
        with _lance_errors(STREAMS, "read"):
            rows = handle.search().where(f"stream_id = {sql_str(stream_id)}").limit(None).to_arrow().to_pylist()
        return rows[0] if rows else None

    def meta(self) -> dict[str, str]:
        """Schema metadata of the clips table (else frames): 'streamvl.model', 'streamvl.models.weights', ..."""
        for table in (CLIPS, FRAMES):
            handle = self._open(table)
            if handle is not None and handle.schema.metadata:
                return {k.decode(): v.decode() for k, v in handle.schema.metadata.items()}
        return {}

    def search_clips(self, vector: np.ndarray, k: int, *, adapter: str, stream_ids: Sequence[str] | None = None,
                     start: float | None = None, end: float | None = None, tags: Sequence[str] | None = None,
                     candidates: int | None = None) -> list[dict[str, Any]]:
        """The k clips nearest to `vector` by cosine, prefiltered; dicts with `score` = 1 - distance.

        tags: keep only clips whose `tags` column holds every one of them (written by a tagging
        plugin such as alpro). candidates: with an ANN index on clips.embedding, re-rank this many
        rows exactly (refine_factor; default REFINE_CANDIDATES * k, which keeps recall@10 of IVF_PQ
        above 0.95, see bench/bench_live.py); a table without an index is searched exhaustively.
        """
        handle = self._open(CLIPS)
        if handle is None or k <= 0 or (stream_ids is not None and len(stream_ids) == 0):
            return []
        if tags and handle.schema.get_field_index(TAGS) < 0:
            raise StoreError(f"table {CLIPS!r} has no {TAGS!r} column to filter on: index with a tagging adapter "
                             f"plugin installed (e.g. streamvl-alpro)")
        query = _query_vector(vector, _dim(handle.schema, CLIPS))
        columns = [n for n in handle.schema.names if n != EMBEDDING]
        where = clip_filter(adapter, stream_ids, start, end, tags)
        candidates = REFINE_CANDIDATES * k if candidates is None else candidates
        with _lance_errors(CLIPS, "vector search"):
            only_adapter = stream_ids is None and start is None and end is None and not tags
            rows = None
            if only_adapter and self._one_adapter(handle, adapter):
                rows = self._ann(handle, query, k, columns, None, candidates)
                if any(r["adapter"] != adapter for r in rows):  # another adapter's rows landed meanwhile
                    rows = None
            if rows is None:
                rows = self._ann(handle, query, k, columns, where, candidates)
        return sorted((_scored(r) for r in rows), key=lambda r: (-r["score"], r["stream_id"], r["start"]))

    @staticmethod
    def _ann(handle: Any, query: np.ndarray, k: int, columns: list[str], where: str | None,
             candidates: int) -> list[dict[str, Any]]:
        builder = handle.search(query, vector_column_name=EMBEDDING).distance_type("cosine")
        if where:
            builder = builder.where(where, prefilter=True)
        builder = builder.select([*columns, "_distance"]).limit(int(k))
        if candidates and candidates > k:
            builder = builder.refine_factor(math.ceil(candidates / k))
        return builder.to_arrow().to_pylist()

    def schema(self, table: str) -> pa.Schema | None:
        """The Arrow schema (with model metadata) of a table, or None if it does not exist yet."""
        _check_table(table)
        handle = self._open(table)
        return None if handle is None else handle.schema

    def delete(self, table: str, where: str) -> int:
        """Delete the rows matching a SQL predicate; returns how many were deleted."""
        _check_table(table)
        handle = self._open(table)
        if handle is None:
            return 0
        with _lance_errors(table, "delete"):
            before = int(handle.count_rows())
            handle.delete(where)
            return before - int(handle.count_rows())

    def clip_windows(self, adapter: str | None = None) -> list[dict[str, Any]]:
        """(stream_id, start, end, adapter) of indexed clips, without embeddings; one adapter or all."""
        handle = self._open(CLIPS)
        if handle is None:
            return []
        with _lance_errors(CLIPS, "read"):
            query = handle.search().select(["stream_id", "start", "end", "adapter"]).limit(None)
            if adapter is not None:
                query = query.where(f"adapter = {sql_str(adapter)}")
            rows = query.to_arrow().to_pylist()
        return sorted(rows, key=lambda r: (r["stream_id"], r["adapter"], r["start"]))

    def frames_of(self, stream_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Every frame of a stream: times float64 [N] (sorted) and embeddings float32 [N, D]."""
        handle = self._open(FRAMES)
        if handle is None:
            return np.empty(0, np.float64), np.empty((0, 0), np.float32)
        dim = _dim(handle.schema, FRAMES)
        with _lance_errors(FRAMES, "read"):
            got = (handle.search().where(f"stream_id = {sql_str(stream_id)}").select(["pts", EMBEDDING])
                   .limit(None).to_arrow())
        pts = got["pts"].to_numpy().astype(np.float64, copy=False)
        order = np.argsort(pts, kind="stable")
        return pts[order], embeddings_array(got[EMBEDDING], dim)[order]

    def segments(self, adapter: str | None = None, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of the `segments` table, best score first; optionally one adapter / one stream."""
        handle = self._open(SEGMENTS)
        if handle is None:
            return []
        where = [f"adapter = {sql_str(adapter)}"] if adapter is not None else []
        where += [f"stream_id = {sql_str(stream_id)}"] if stream_id is not None else []
        with _lance_errors(SEGMENTS, "read"):
            query = handle.search().limit(None)
            if where:
                query = query.where(" AND ".join(where))
            rows = query.to_arrow().to_pylist()
        return sorted(rows, key=lambda r: (-r["score"], r["stream_id"], r["start"]))

    def frames_for(self, stream_id: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """Frame times float64 [N] (sorted) and embeddings float32 [N, D] with start <= pts <= end."""
        handle = self._open(FRAMES)
        if handle is None:
            return np.empty(0, np.float64), np.empty((0, 0), np.float32)
        dim = _dim(handle.schema, FRAMES)
        where = f"stream_id = {sql_str(stream_id)} AND pts >= {sql_float(start)} AND pts <= {sql_float(end)}"
        with _lance_errors(FRAMES, "read"):
            got = handle.search().where(where).select(["pts", EMBEDDING]).limit(None).to_arrow()
        pts = got["pts"].to_numpy().astype(np.float64, copy=False)
        order = np.argsort(pts, kind="stable")
        return pts[order], embeddings_array(got[EMBEDDING], dim)[order]


def _query_vector(vector: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(vector, dtype=np.float32).reshape(-1)
    if q.shape[0] != dim:
        raise StoreError(f"table {CLIPS!r}, column {EMBEDDING!r}: query vector has dim {q.shape[0]}, expected {dim}")
    if not np.all(np.isfinite(q)) or not np.any(q):
        raise StoreError(f"table {CLIPS!r}: query vector must be finite and non-zero")
    return q


def _scored(row: dict[str, Any]) -> dict[str, Any]:
    row["score"] = 1.0 - float(row.pop("_distance"))
    return row
