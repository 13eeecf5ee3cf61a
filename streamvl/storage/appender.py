"""Exactly-once appends for the hot tables (frames, clips): one commit, no read of the table.

An upsert (merge_insert) must find the keys already in the table, so on an object store every
commit reads every fragment (bench_scale: ~60 GETs per commit before compaction, against 1 for an
append). But the rows a sink commits are almost always new: a stream's windows arrive in order,
and a replay (a rewound decoder, a restarted sink or run, a lagging checkpoint) only repeats
windows at or before the last ones written. So the Appender keeps, per stream, the highest
window key (`pts` of frames, `start` of clips) the table holds, and

- a group whose rows are all above their streams' marks is new: appended as it is (one
  conditional commit, no read of the table);
- a group with a row at or below its mark (a replay, rare) is upserted as before: the keys the
  table holds are replaced (last wins, so re-indexing with another model still rewrites rows),
  the missing ones inserted;
- an append that fails retryably or with its result unknown (the manifest PUT timed out: committed
  or not, nobody knows) is resolved by the same lookup: the handle is brought to the latest
  version, the rows of the group it now holds (a filtered read of each stream's key range) are
  dropped, and the rest is appended again.

The mark is only true while no other writer adds rows of the stream, which a write claim
(claims.py) guarantees: the Appender writes a stream's rows only while it holds the stream's
claim, reads the stream's mark from the table when it (re)takes a claim, and waits (up to
wait_s) while another writer holds it. Other tables (streams, segments, watches) keep upserts.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamvl.errors import StoreError
from streamvl.storage.claims import CLAIM_TTL_S, WriteClaims
from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.schema import CLIPS, FRAMES, KEYS, sql_str
from streamvl.storage.writer import COMMIT_ATTEMPTS, retryable_commit_error, upsert_with_retry

log = logging.getLogger(__name__)
HOT_TABLES = (FRAMES, CLIPS)
ORDER = {FRAMES: "pts", CLIPS: "start"}  # the key that grows along a stream


class Appender:
    """The append path of one hot table in one writer process (see the module docstring)."""

    def __init__(self, conn: Connection, table: str, claims: WriteClaims | None = None, *,
                 wait_s: float = 2 * CLAIM_TTL_S, attempts: int = COMMIT_ATTEMPTS,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        if table not in HOT_TABLES:
            raise StoreError(f"append path is for {HOT_TABLES}, not {table!r}")
        self.conn, self.table, self.keys, self.order = conn, table, KEYS[table], ORDER[table]
        self.claims = claims or WriteClaims(conn, table)
        self.wait_s, self.attempts, self.sleep, self.clock = wait_s, attempts, sleep, clock
        self.marks: dict[str, float] = {}  # stream -> highest order key the table holds (-inf: none)
        self.stats = {"appended": 0, "upserts": 0, "lookups": 0, "commits": 0, "retries": 0}

    def commit(self, handle: Any, rows: pa.Table) -> int:
        """Commit `rows` exactly once; returns the rows written. (WriteGroup's commit hook: `rows`
        is conformed and has no in-group duplicates.)"""
        sids = sorted(set(rows.column("stream_id").to_pylist()))
        self._hold(handle, sids)
        if pc.all(self._fresh(rows)).as_py():
            written = self._append(handle, rows)
        else:  # a replay: the table may hold some keys; replace them (last wins, as an upsert always did)
            upsert_with_retry(self.table, handle, self.keys, rows, attempts=self.attempts, sleep=self.sleep)
            self.stats["upserts"] += 1
            written = rows.num_rows
        for sid, top in self._tops(rows).items():
            self.marks[sid] = max(self.marks.get(sid, -np.inf), top)
        return written

    def _hold(self, handle: Any, sids: list[str]) -> None:
        """Hold the claims of every stream in the batch (waiting while another writer has one);
        read the mark of each stream whose claim is new."""
        deadline = self.clock() + self.wait_s
        delay = 0.2
        while True:
            held, acquired = self.claims.claim(sids)
            for sid in acquired:
                self.marks[sid] = self._table_top(handle, sid)
            missing = [s for s in sids if s not in held]
            if not missing:
                return
            if self.clock() >= deadline:
                holder = self.claims.holder_of(missing[0])
                raise StoreError(f"table {self.table!r}: stream {missing[0]!r} is being written by another writer "
                                 f"({holder or 'claim just released'}) for more than {self.wait_s:g} s; "
                                 "is the same stream indexed twice at once?")
            self.sleep(delay * (0.5 + random.random()))
            delay = min(2.0, delay * 2)

    def _fresh(self, rows: pa.Table) -> pa.ChunkedArray:
        """Per row: is its order key above its stream's mark (certainly not in the table)?"""
        marks = pa.array([self.marks.get(s, -np.inf) for s in rows.column("stream_id").to_pylist()], pa.float64())
        return pc.greater(pc.cast(rows.column(self.order), pa.float64()), marks)

    def _tops(self, rows: pa.Table) -> dict[str, float]:
        out: dict[str, float] = {}
        for sid, value in zip(rows.column("stream_id").to_pylist(), rows.column(self.order).to_pylist()):
            out[sid] = max(out.get(sid, -np.inf), float(value))
        return out

    def _table_top(self, handle: Any, sid: str) -> float:
        """The highest order key of a stream in the table (-inf: none)."""
        handle.checkout_latest()
        got = handle.search().where(f"stream_id = {sql_str(sid)}").select([self.order]).limit(None).to_arrow()
        self.stats["lookups"] += 1
        return float(pc.max(got.column(self.order)).as_py()) if got.num_rows else -np.inf

    def _absent(self, handle: Any, rows: pa.Table) -> pa.Table:
        """The rows whose keys the table does not hold (one filtered read per stream of `rows`)."""
        if rows.num_rows == 0:
            return rows
        handle.checkout_latest()
        present: set[tuple] = set()
        for sid, lo, hi in self._ranges(rows):
            where = f"stream_id = {sql_str(sid)} AND {self.order} >= {lo!r} AND {self.order} <= {hi!r}"
            got = handle.search().where(where).select(self.keys).limit(None).to_arrow()
            present |= set(zip(*(got.column(k).to_pylist() for k in self.keys)))
            self.stats["lookups"] += 1
        keep = [tuple(r) not in present for r in zip(*(rows.column(k).to_pylist() for k in self.keys))]
        return rows.filter(pa.array(keep, pa.bool_()))

    def _ranges(self, rows: pa.Table) -> list[tuple[str, float, float]]:
        by: dict[str, list[float]] = {}
        for sid, value in zip(rows.column("stream_id").to_pylist(), rows.column(self.order).to_pylist()):
            by.setdefault(sid, []).append(float(value))
        return [(sid, min(v), max(v)) for sid, v in sorted(by.items())]

    def _append(self, handle: Any, rows: pa.Table) -> int:
        """Append with retries; after a retryable or unknown-result error, look up what landed and
        append the rest. Returns how many of `rows` are in the table now by this call."""
        landed = 0
        for attempt in range(1, self.attempts + 1):
            if rows.num_rows == 0:
                break
            try:
                handle.add(rows)
                self.stats["commits"] += 1
                landed += rows.num_rows
                break
            except Exception as exc:
                if attempt == self.attempts or not retryable_commit_error(exc):
                    raise
                self.stats["retries"] += 1
                log.warning("table %s: append of %d rows not confirmed (%s); looking up which landed (attempt %d of %d)",
                            self.table, rows.num_rows, str(exc).splitlines()[0][:200], attempt + 1, self.attempts)
                self.sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))
                with lance_errors(self.table, "look up rows after an unconfirmed append", self.conn.uri):
                    before = rows.num_rows
                    rows = self._absent(handle, rows)
                    landed += before - rows.num_rows  # the unconfirmed commit did land these
        self.stats["appended"] += landed
        return landed

    def release_idle(self) -> None:
        """Give up the claims of streams idle for a while (another writer need not wait them out)."""
        self.claims.release_idle()

    def close(self) -> None:
        """Give up every claim (a writer that stops cleanly)."""
        self.claims.release()
