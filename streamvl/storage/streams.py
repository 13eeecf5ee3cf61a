"""The stream tables: `streams` (one StreamState per stream), `stream_events`, `stream_requests`.

States go to and come from rows only through streamvl.storage.schema (stream_row / stream_state /
streams_table). `stream()` and `record_stream()` keep the row-dict and keyword forms the runtime
uses (the resume ledger reads rows); new code uses `stream_state()`, `stream_states()` and
`record_state()`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any, Iterable, Sequence

import pyarrow as pa

from streamvl.errors import StoreError
from streamvl.storage.connection import Connection
from streamvl.storage.reader import Reader
from streamvl.storage.schema import (
    REQUESTS, STATUSES, STREAM_EVENTS, STREAM_LIVE_FIELDS, STREAMS, sql_in, sql_str, stream_events_schema,
    stream_requests_schema, stream_row, stream_state, streams_schema, streams_table,
)
from streamvl.storage.writer import Writer
from streamvl.types import Status, StreamState


URI_CACHE_ROWS = 100_000  # streams tables up to this size keep their uri map in memory for stream_uris


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class StreamTables:
    """Reads and writes of the three stream tables."""

    def __init__(self, conn: Connection, reader: Reader, writer: Writer) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer
        self._uris: tuple[int, dict[str, str]] | None = None  # (streams version, every stream's uri)

    # -- streams

    def record_state(self, state: StreamState) -> None:
        """Write the whole row of one stream (every field is replaced, the checkpoint too), stamped now."""
        self.record_states([state])

    def record_states(self, states: Sequence[StreamState]) -> int:
        """record_state for several streams in one commit (one table version, not one per stream:
        the runtime records up to one row per stream per second). A stream given twice keeps its
        last state. Returns the rows written."""
        if not states:
            return 0
        now = _now()
        table = streams_table([dataclasses.replace(state, updated_at=now) for state in states])
        self.conn.add_missing_columns(STREAMS, streams_schema())
        return self.writer.upsert(STREAMS, table)

    def record_stream(self, stream_id: str, uri: str, status: str, *, frames_indexed: int = 0,
                      last_committed_pts: float | None = None, error: str | None = None, model: str = "",
                      **fields: Any) -> None:
        """record_state with the state given as keywords (what the runtime's sinks receive).

        fields: the checkpoint and live columns (STREAM_LIVE_FIELDS); absent ones become null.
        """
        if status not in STATUSES:
            raise StoreError(f"table {STREAMS!r}: status must be one of {STATUSES}, got {status!r}", stream_id=stream_id)
        unknown = set(fields) - {f.name for f in STREAM_LIVE_FIELDS}
        if unknown:
            raise StoreError(f"table {STREAMS!r} has no column(s) {sorted(unknown)}", stream_id=stream_id)
        self.record_state(StreamState(stream_id, uri, Status(status), frames_indexed=int(frames_indexed),
                                      last_committed_pts=None if last_committed_pts is None else float(last_committed_pts),
                                      error=error, model=model, **fields))

    def stream_states(self) -> list[StreamState]:
        """Every stream's state, by stream id."""
        return sorted((stream_state(r) for r in self.reader.read(STREAMS).to_pylist()), key=lambda s: s.stream_id)

    def stream_state(self, stream_id: str) -> StreamState | None:
        """One stream's state, or None if it was never recorded."""
        rows = self.reader.read(STREAMS, f"stream_id = {sql_str(stream_id)}").to_pylist()
        return stream_state(rows[0]) if rows else None

    def stream(self, stream_id: str) -> dict[str, Any] | None:
        """One stream's row as a dict (column -> value), or None: the form the resume ledger
        (streamvl.storage.ledger.from_row) and the runtime read."""
        state = self.stream_state(stream_id)
        return None if state is None else stream_row(state)

    def stream_uris(self, stream_ids: Iterable[str]) -> dict[str, str]:
        """{stream_id: uri} of these streams (unknown ones are absent).

        Every search asks this for its hits' streams: the whole (stream_id, uri) map is read once per
        version of the streams table and kept (a version check costs ~0.1 ms, the filtered read it
        replaces ~2 ms); a table past URI_CACHE_ROWS rows is read per call, only the rows asked for."""
        ids = sorted(set(stream_ids))
        handle = self.conn.open(STREAMS)
        if not ids or handle is None:
            return {}
        version = int(handle.version)
        if self._uris is None or self._uris[0] != version:
            if int(handle.count_rows()) > URI_CACHE_ROWS:
                return self._uri_map(sql_in("stream_id", ids))
            self._uris = (version, self._uri_map(None))
        known = self._uris[1]
        return {i: known[i] for i in ids if i in known}

    def _uri_map(self, where: str | None) -> dict[str, str]:
        got = self.reader.read(STREAMS, where, ["stream_id", "uri"])
        return dict(zip(got["stream_id"].to_pylist(), got["uri"].to_pylist())) if got.num_rows else {}

    # -- stream_events

    def record_events(self, events: Sequence[Any]) -> int:
        """Append live-stream events (StreamEvent-like objects) to `stream_events`; idempotent."""
        if not events:
            return 0
        now = _now()
        rows = [{"stream_id": e.stream_id, "wallclock": float(e.wallclock), "kind": e.kind,
                 "at": dt.datetime.fromtimestamp(e.wallclock, dt.timezone.utc) if e.wallclock else now,
                 "pts": e.pts, "gap_s": e.gap_s, "attempts": int(e.attempts), "message": e.message} for e in events]
        return self.writer.upsert(STREAM_EVENTS, pa.Table.from_pylist(rows, schema=stream_events_schema()))

    def events(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of `stream_events` (all, or one stream's), oldest first."""
        where = None if stream_id is None else f"stream_id = {sql_str(stream_id)}"
        return sorted(self.reader.read(STREAM_EVENTS, where).to_pylist(), key=lambda r: (r["wallclock"], r["stream_id"]))

    # -- stream_requests

    def request_stream(self, stream_id: str, uri: str, action: str, *, fps: float | None = None,
                       transport: str | None = None) -> None:
        """Set the desired state of one stream for a serve-index job: action "run" or "remove"."""
        if action not in ("run", "remove"):
            raise StoreError(f"table {REQUESTS!r}: action must be 'run' or 'remove', got {action!r}", stream_id=stream_id)
        row = {"stream_id": [stream_id], "uri": [uri], "action": [action], "fps": [fps], "transport": [transport],
               "requested_at": [_now()]}
        self.writer.upsert(REQUESTS, pa.table(row, schema=stream_requests_schema()))

    def requests(self) -> list[dict[str, Any]]:
        """The serve-index control rows: desired streams (action "run") and removals."""
        return sorted(self.reader.read(REQUESTS).to_pylist(), key=lambda r: r["stream_id"])
