"""The watch tables: `watches` (standing queries, one row per watch and adapter) and `watch_events`.

Events are keyed by (watch_id, stream_id, start): a new event is appended once (its key checked
against the stored ids first), and the event builder (streamvl.search.watches) upserts the same
row as the event grows or closes; a replay after a crash rewrites it again, so an event is
stored exactly once. Rows map to Arrow through streamvl.storage.schema.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any, Mapping, Sequence

import numpy as np
import pyarrow as pa

from streamvl.errors import StoreError
from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.reader import Reader
from streamvl.storage.schema import DELIVERIES, EVENTS, WATCHES, deliveries_schema, events_schema, sql_str, watches_schema
from streamvl.storage.writer import Writer


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def event_id(watch_id: str, stream_id: str, start: float) -> str:
    """A stable short id of an event's key (the webhook Idempotency-Key and the SSE id's tail)."""
    return hashlib.sha1(f"{watch_id}\0{stream_id}\0{float(start)!r}".encode()).hexdigest()[:20]


def feed_cursor(row: Mapping[str, Any]) -> str:
    """An event's place in the feed (the SSE id): opened_at in microseconds, then its event_id."""
    opened = row["opened_at"]
    micros = int(round(opened.timestamp() * 1e6)) if isinstance(opened, dt.datetime) else int(opened)
    return f"{micros}-{row['event_id']}"


def parse_cursor(cursor: str) -> tuple[int, str]:
    """(opened_at µs, event_id) of a feed cursor; StoreError for anything else."""
    micros, _, eid = str(cursor).partition("-")
    if not micros.isdigit() or not eid.isalnum():
        raise StoreError(f"not an event cursor: {cursor!r} (expected '<microseconds>-<event id>')")
    return int(micros), eid


class WatchTables:
    """Reads and writes of `watches` and `watch_events`."""

    def __init__(self, conn: Connection, reader: Reader, writer: Writer) -> None:
        self.conn, self.reader, self.writer = conn, reader, writer

    @classmethod
    def of(cls, store: Any) -> "WatchTables":
        """The watch tables of a Store (its connection, reader and writer)."""
        return cls(store.conn, store.reader, store.writer)

    # -- watches
    def add_watch(self, text: str, vectors: Mapping[str, np.ndarray], *, name: str | None = None,
                  streams: Sequence[str] = (), threshold: float = 0.25, webhook: str | None = None,
                  quiet_s: float | None = None, watch_id: str | None = None) -> str:
        """Store a watch with its text embedded per adapter ({adapter: vector}); returns its id."""
        if not vectors:
            raise StoreError(f"table {WATCHES!r}: a watch needs at least one adapter's embedding")
        dims = {int(np.asarray(v).size) for v in vectors.values()}
        if len(dims) != 1:
            raise StoreError(f"table {WATCHES!r}: adapters' embeddings differ in size {sorted(dims)}")
        handle = self.conn.open(WATCHES)
        dim = dims.pop()
        if handle is not None and handle.schema.field("embedding").type.list_size != dim:
            raise StoreError(f"table {WATCHES!r} holds {handle.schema.field('embedding').type.list_size}-d "
                             f"embeddings; this watch's are {dim}-d (another model?)")
        wid = watch_id or uuid.uuid4().hex[:12]
        created = now()
        rows = [{"watch_id": wid, "adapter": a, "name": name or text[:60], "text": text,
                 "embedding": np.asarray(v, np.float32).ravel().tolist(), "streams": list(streams),
                 "threshold": float(threshold), "webhook": webhook, "quiet_s": quiet_s, "created_at": created,
                 "active": True} for a, v in vectors.items()]
        self.writer.upsert(WATCHES, pa.Table.from_pylist(rows, schema=watches_schema(dim)))
        return wid

    def add_sequence_watch(self, texts: Sequence[str], vectors: Mapping[str, Sequence[np.ndarray]], *, within_s: float,
                           name: str | None = None, streams: Sequence[str] = (), threshold: float = 0.25,
                           webhook: str | None = None, quiet_s: float | None = None, watch_id: str | None = None) -> str:
        """Store a sequence watch: texts in order (A, then B, ...), each embedded per adapter
        ({adapter: [vector per step]}); it fires when each step follows the one before within
        within_s seconds (streamvl.search.sequence_watches). Returns its id."""
        if len(texts) < 2 or not vectors or any(len(v) != len(texts) for v in vectors.values()):
            raise StoreError(f"table {WATCHES!r}: a sequence watch needs 2+ steps and one embedding per step and adapter")
        dims = {int(np.asarray(x).size) for v in vectors.values() for x in v}
        handle = self.conn.open(WATCHES)
        if len(dims) != 1 or (handle is not None and handle.schema.field("embedding").type.list_size not in dims):
            raise StoreError(f"table {WATCHES!r}: step embeddings of {sorted(dims)} dimensions do not fit the table")
        wid, created = watch_id or uuid.uuid4().hex[:12], now()
        flat = lambda x: np.asarray(x, np.float32).ravel().tolist()  # noqa: E731
        rows = [{"watch_id": wid, "adapter": a, "name": name or " -> ".join(texts)[:60], "text": texts[0],
                 "embedding": flat(v[0]), "streams": list(streams), "threshold": float(threshold), "webhook": webhook,
                 "quiet_s": quiet_s, "created_at": created, "active": True, "then_texts": list(texts[1:]),
                 "then_embeddings": [flat(x) for x in v[1:]], "within_s": float(within_s)} for a, v in vectors.items()]
        self.writer.upsert(WATCHES, pa.Table.from_pylist(rows, schema=watches_schema(dims.pop())))
        return wid

    def watch_rows(self, active_only: bool = True) -> list[dict[str, Any]]:
        """Rows of `watches` (one per watch and adapter), oldest first; embeddings as float32 arrays."""
        table = self.reader.read(WATCHES, "active = true" if active_only else None)
        rows = table.to_pylist()
        for r in rows:
            r["embedding"] = np.asarray(r["embedding"], np.float32)
        return sorted(rows, key=lambda r: (r["created_at"], r["watch_id"], r["adapter"]))

    def remove_watch(self, watch_id: str) -> bool:
        """Deactivate a watch (its events stay); False if no active watch has this id."""
        table = self.reader.read(WATCHES, f"watch_id = {sql_str(watch_id)} AND active = true")
        if not table.num_rows:
            return False
        active = table.column_names.index("active")
        table = table.set_column(active, "active", pa.array([False] * table.num_rows))
        self.writer.upsert(WATCHES, table)
        return True

    # -- events
    def record_watch_events(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Upsert event rows (see events_schema); idempotent by (watch_id, stream_id, start)."""
        if not rows:
            return 0
        return self.writer.upsert(EVENTS, pa.Table.from_pylist([dict(r) for r in rows], schema=events_schema()))

    def append_watch_events(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append event rows whose keys the table does not hold yet (the caller checked: see
        event_ids). An append commits without merge_insert's join against every stored event,
        ~4x cheaper on a table of a few hundred events, and its cost does not grow with the table."""
        if not rows:
            return 0
        data = pa.Table.from_pylist([dict(r) for r in rows], schema=events_schema())
        handle = self.conn.open(EVENTS)
        if handle is None:
            return self.writer.upsert(EVENTS, data)
        with lance_errors(EVENTS, "append", self.conn.uri):
            handle.add(data)
        return data.num_rows

    def event_ids(self) -> set[str]:
        """The event_id of every stored event (one column read)."""
        table = self.reader.read(EVENTS, columns=["event_id"])
        return set(table["event_id"].to_pylist()) if table.num_rows else set()

    def watch_events(self, watch_id: str | None = None, since: dt.datetime | float | None = None,
                     stream_id: str | None = None) -> list[dict[str, Any]]:
        """Events (all, one watch's, one stream's, or opened at/after `since`), in feed order."""
        parts = []
        if watch_id is not None:
            parts.append(f"watch_id = {sql_str(watch_id)}")
        if stream_id is not None:
            parts.append(f"stream_id = {sql_str(stream_id)}")
        rows = self.reader.read(EVENTS, " AND ".join(parts) or None).to_pylist()
        if since is not None:
            cut = since if isinstance(since, dt.datetime) else dt.datetime.fromtimestamp(float(since), dt.timezone.utc)
            rows = [r for r in rows if r["opened_at"] >= cut]
        return sorted(rows, key=lambda r: (r["opened_at"], r["event_id"]))

    def events_after(self, cursor: str | None) -> list[dict[str, Any]]:
        """Events later in the feed than `cursor` (a feed_cursor; None: all), in feed order."""
        rows = self.watch_events()
        if cursor is None:
            return rows
        micros, eid = parse_cursor(cursor)
        return [r for r in rows if tuple(parse_cursor(feed_cursor(r))) > (micros, eid)]

    # -- webhook deliveries
    def record_delivery(self, event_id: str, webhook: str, watch_id: str, attempts: int) -> None:
        """Note that `webhook` accepted this event (so a restarted server does not send it again)."""
        row = {"event_id": event_id, "webhook": webhook, "watch_id": watch_id, "attempts": int(attempts),
               "delivered_at": now()}
        self.writer.upsert(DELIVERIES, pa.Table.from_pylist([row], schema=deliveries_schema()))

    def deliveries(self) -> set[tuple[str, str]]:
        """(event_id, webhook) pairs already delivered."""
        table = self.reader.read(DELIVERIES, columns=["event_id", "webhook"])
        return set(zip(table["event_id"].to_pylist(), table["webhook"].to_pylist())) if table.num_rows else set()
