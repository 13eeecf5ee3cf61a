"""Table schemas, conforming Arrow data to them, SQL filter literals, and the stream record's row.

The one place rows meet Arrow: every table's columns are declared here, every write is conformed
here (`conform`), and a StreamState maps to and from its `streams` row only here
(`stream_row` / `stream_state` / `streams_table`).

Tables (all plain Arrow types, readable by any lancedb/pyarrow client without streamvl):
  frames          one row per sampled frame: stream_id, pts, wallclock, embedding, model
  clips           one row per (stream, adapter, clip start): times, embedding, model, plugin columns
  streams         one row per stream: a StreamState (status, progress, resume checkpoint, live health)
  segments        one row per localised segment: stream_id, start, end, label, score, adapter
  stream_events   one row per live-stream event (reconnect, gap, restart)
  stream_requests the desired streams of a serve-index job
  watches         one row per (standing query, adapter): its text, embedding, stream filter, threshold
  watch_events    one row per event a watch fired: (watch, stream, first matching window) -> its span

Writes are upserts on KEYS, so replaying a batch after a crash changes nothing. Model metadata
('streamvl.model', 'streamvl.models.weights', ...) is Arrow schema metadata, fixed when a table is
created; LanceDB keeps it across merge_insert and optimize.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamvl.errors import StoreError
from streamvl.types import Status, StreamState

FRAMES, CLIPS, STREAMS, SEGMENTS = "frames", "clips", "streams", "segments"
STREAM_EVENTS, REQUESTS = "stream_events", "stream_requests"
WATCHES, EVENTS, DELIVERIES = "watches", "watch_events", "watch_deliveries"
KEYS: dict[str, list[str]] = {FRAMES: ["stream_id", "pts"], CLIPS: ["stream_id", "adapter", "start"], STREAMS: ["stream_id"],
                              SEGMENTS: ["stream_id", "adapter", "start", "end", "label"],
                              STREAM_EVENTS: ["stream_id", "wallclock", "kind"], REQUESTS: ["stream_id"],
                              WATCHES: ["watch_id", "adapter"], EVENTS: ["watch_id", "stream_id", "start"],
                              DELIVERIES: ["event_id", "webhook"]}
EMBEDDING = "embedding"
TAGS = "tags"  # list<string> clip column written by tagging plugins (alpro); `search --tag` filters on it
MODEL_KEY = "streamvl.model"
# Statuses a `streams` row may hold (REQUESTED lives in stream_requests only).
STATUSES = tuple(s.value for s in Status if s is not Status.REQUESTED)


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
# Nullable columns added after a table's first version: a write that carries one adds it to an older table.
# sequence watches (streamvl.search.sequence_watches): the steps after the first (texts, embeddings
# as the row's adapter makes them), the longest gap between steps; an event's clip per step
THEN_TEXTS = pa.field("then_texts", pa.list_(pa.string()))
THEN_EMBEDDINGS = pa.field("then_embeddings", pa.list_(pa.list_(pa.float32())))
WITHIN_S = pa.field("within_s", pa.float64())
STEPS = pa.field("steps", pa.list_(pa.struct([("text", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                                              ("score", pa.float64())])))
LATER_COLUMNS: dict[str, tuple[pa.Field, ...]] = {"frames": (THUMBNAIL,), "watches": (THEN_TEXTS, THEN_EMBEDDINGS, WITHIN_S),
                                                  "watch_events": (STEPS,)}


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


def streams_schema(meta: Mapping[str, str] | None = None) -> pa.Schema:
    """One row per stream: the columns are StreamState's fields, in order."""
    fields = [_req("stream_id", pa.string()), _req("uri", pa.string()), _req("status", pa.string()),
              _req("frames_indexed", pa.int64()), pa.field("last_committed_pts", pa.float64()),
              pa.field("error", pa.string()), _req("model", pa.string()),
              _req("updated_at", pa.timestamp("us", tz="UTC")), *STREAM_LIVE_FIELDS]
    return _schema(fields, meta)


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


def watches_schema(dim: int) -> pa.Schema:
    """Standing queries: one row per (watch, adapter), the text embedded by that adapter.
    streams: the stream filter (empty: every stream); active false once removed (its events stay).
    A sequence watch ("text, then then_texts[0], ... each within within_s") also holds its later
    steps' embeddings; a plain watch has those three null."""
    return pa.schema([_req("watch_id", pa.string()), _req("adapter", pa.string()), _req("name", pa.string()),
                      _req("text", pa.string()), embedding_field(dim), _req("streams", pa.list_(pa.string())),
                      _req("threshold", pa.float64()), pa.field("webhook", pa.string()), pa.field("quiet_s", pa.float64()),
                      _req("created_at", pa.timestamp("us", tz="UTC")), _req("active", pa.bool_()),
                      THEN_TEXTS, THEN_EMBEDDINGS, WITHIN_S])


def events_schema() -> pa.Schema:
    """Watch events, keyed by (watch, stream, start of the first matching window) so a replay
    rewrites the same row. end/peak grow while later windows extend it; status open -> closed.
    event_id is a digest of the key; opened_at (first write) orders the SSE feed. steps: a sequence
    watch's clip per step (text, start, end, score); null for a plain watch."""
    return pa.schema([_req("watch_id", pa.string()), _req("stream_id", pa.string()), _req("start", pa.float64()),
                      _req("end", pa.float64()), _req("peak_score", pa.float64()), _req("peak_time", pa.float64()),
                      _req("status", pa.string()), _req("event_id", pa.string()), _req("adapter", pa.string()),
                      _req("opened_at", pa.timestamp("us", tz="UTC")), _req("updated_at", pa.timestamp("us", tz="UTC")),
                      pa.field("wallclock", pa.float64()), STEPS])


def deliveries_schema() -> pa.Schema:
    """Webhook deliveries that succeeded (a 2xx answer): one row per event and webhook URL."""
    return pa.schema([_req("event_id", pa.string()), _req("webhook", pa.string()), _req("watch_id", pa.string()),
                      _req("attempts", pa.int64()), _req("delivered_at", pa.timestamp("us", tz="UTC"))])


# ---------------------------------------------------------------- the stream record <-> its row


def stream_row(state: StreamState) -> dict[str, Any]:
    """The `streams` row of a state, column -> plain Python value (status as its string).
    It is also what `streamvl streams --json` prints for the stream."""
    return {f.name: getattr(state, f.name) for f in dataclasses.fields(StreamState)} | {"status": state.status.value}


def stream_state(row: Mapping[str, Any]) -> StreamState:
    """The state a `streams` row holds (columns a table from an older version lacks read as None).

    Raises StoreError, naming the stream, for a status this version does not know."""
    sid = row.get("stream_id")
    values = {f.name: row.get(f.name) for f in dataclasses.fields(StreamState)}
    values["frames_indexed"] = int(values["frames_indexed"] or 0)
    values["model"] = values["model"] or ""
    try:
        values["status"] = Status(values["status"])
    except ValueError:
        raise StoreError(f"table {STREAMS!r}: unknown status {values['status']!r}; known: {[s.value for s in Status]}",
                         stream_id=sid) from None
    return StreamState(**values)


def streams_table(states: Iterable[StreamState]) -> pa.Table:
    """The `streams` rows of these states, as Arrow (a status the table may not hold raises StoreError)."""
    rows = []
    for state in states:
        if state.status.value not in STATUSES:
            raise StoreError(f"table {STREAMS!r}: status must be one of {STATUSES}, got {state.status.value!r}",
                             stream_id=state.stream_id)
        rows.append(stream_row(state))
    return pa.Table.from_pylist(rows, schema=streams_schema())


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


def sql_in(column: str, values: Iterable[str]) -> str:
    """`column IN ('a', 'b')`, every value quoted."""
    return f"{column} IN ({', '.join(sql_str(v) for v in values)})"


def clip_filter(adapter: str, stream_ids: Sequence[str] | None = None,
                start: float | None = None, end: float | None = None, tags: Sequence[str] | None = None) -> str:
    """Prefilter for clips: this adapter, these streams, clips overlapping [start, end], carrying every tag."""
    parts = [f"adapter = {sql_str(adapter)}"]
    for tag in tags or ():
        parts.append(f"array_has({TAGS}, {sql_str(tag)})")
    if stream_ids is not None:
        parts.append(sql_in("stream_id", stream_ids))
    if start is not None:
        parts.append(f"`end` >= {sql_float(start)}")
    if end is not None:
        parts.append(f"`start` <= {sql_float(end)}")
    return " AND ".join(parts)


# ---------------------------------------------------------------- conforming data to a table


def check_table(table: str) -> list[str]:
    """The upsert keys of a streamvl table; StoreError for any other name."""
    try:
        return KEYS[table]
    except KeyError:
        raise StoreError(f"unknown table {table!r}; streamvl tables are {sorted(KEYS)}") from None


def table_dim(schema: pa.Schema, table: str) -> int:
    """The embedding dim of a table's schema."""
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


def _conform_column(table: str, data: pa.Table, field: pa.Field) -> pa.ChunkedArray | pa.Array:
    if field.name not in data.column_names:
        if not field.nullable:
            raise StoreError(f"table {table!r}: missing required column {field.name!r} (expected {field.type})")
        return pa.nulls(data.num_rows, field.type)
    col = data.column(field.name)
    if field.name == EMBEDDING:
        got = _data_dims(col)
        if got - {field.type.list_size}:
            raise StoreError(f"table {table!r}, column {EMBEDDING!r}: expected dim {field.type.list_size}, got {sorted(got)}")
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


def check_model(table: str, data: pa.Schema, target: pa.Schema) -> None:
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


def creation_schema(table: str, schema: pa.Schema) -> pa.Schema:
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
