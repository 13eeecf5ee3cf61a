"""Idempotent writes: a group of batches for one table, committed once as an upsert on its keys.

Shaped like a Ray Data Datasink (on_write_start / write / on_write_complete | on_write_failed)
and Lance's Ray datasink (workers write, the driver commits once). One difference, on purpose:
an upsert must replace rows by key, which Lance does only inside merge_insert, so a group does
not write fragments ahead of the commit; it conforms and buffers each batch as Arrow (a bad batch
fails at write(), before anything is committed) and commits them all with one merge_insert, one
new table version. Replaying a group after a crash rewrites the same keys: a no-op.

Concurrent writers (several processes or Ray nodes on one object store): Lance commits a version
with a conditional PUT of the next manifest and rebases an append on a conflict itself, but a
commit can still fail with a retryable conflict (two merge_inserts touching the same fragments,
too much contention) or with its result unknown (the manifest PUT timed out or its answer was
lost: committed or not, nobody knows). Both are resolved the same way: the handle is brought to
the latest version, the version is logged, and the same upsert runs again. Because an upsert
replaces rows by key, running it a second time after an unseen success rewrites the same keys
with the same values (no duplicate rows), and after a failure it commits them: idempotent.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable

import pyarrow as pa

from streamvl.errors import StoreError
from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.schema import LATER_COLUMNS, check_model, check_table, conform, creation_schema, dedupe_last

log = logging.getLogger(__name__)
CommitFn = Callable[[Any, pa.Table], Any]  # (table handle, conformed rows without in-group duplicates)
COMMIT_ATTEMPTS = 6  # an upsert retried this often on retryable / unknown-result commit errors
# Lance's and object_store's texts for a commit that may succeed when run again (lower case).
_RETRYABLE = ("retryable commit conflict", "commit conflict", "too many concurrent writers", "too much write contention",
              "result unknown", "unknown commit", "precondition", "timed out", "connection reset", "incompatibletransaction")


def retryable_commit_error(exc: BaseException) -> bool:
    """True for a commit error that an idempotent retry resolves (see the module docstring)."""
    text = str(exc).lower()
    return any(marker in text for marker in _RETRYABLE)


def upsert_with_retry(table: str, handle: Any, keys: list[str], rows: pa.Table, *, attempts: int = COMMIT_ATTEMPTS,
                      sleep: Callable[[float], None] = time.sleep) -> None:
    """merge_insert `rows` on `keys`; on a retryable or unknown-result commit error bring the handle
    to the latest version and run the same upsert again (idempotent by key), with jittered backoff."""
    for attempt in range(1, attempts + 1):
        try:
            handle.merge_insert(keys).when_matched_update_all().when_not_matched_insert_all().execute(rows)
            return
        except Exception as exc:
            if attempt == attempts or not retryable_commit_error(exc):
                raise
            try:
                handle.checkout_latest()
                version = handle.version
            except Exception:  # the table is reachable again at the next attempt, or it fails there
                version = "?"
            log.warning("table %s: commit of %d rows not confirmed (%s); table now at version %s, upserting again "
                        "(attempt %d of %d)", table, rows.num_rows, str(exc).splitlines()[0][:200], version,
                        attempt + 1, attempts)
            sleep(min(2.0, 0.05 * 2 ** attempt) * (0.5 + random.random()))


class WriteGroup:
    """Batches for one table, committed as one version (see the module docstring).

    Use as a context manager: on a clean exit the group commits (on_write_complete), on an
    exception it drops its batches (on_write_failed) and the table is left as it was.
    `rows` is the number of rows committed (after in-group duplicates, last wins).
    """

    def __init__(self, conn: Connection, table: str, commit: "CommitFn | None" = None) -> None:
        """commit: how the rows are committed (default: upsert_with_retry; appender.Appender.commit
        appends the rows a write claim proves new)."""
        self.conn, self.table = conn, table
        self._commit = commit
        self.keys = check_table(table)
        self.rows = 0
        self._handle: Any = None  # the table's LanceDB handle (None: created at commit)
        self._target: pa.Schema | None = None  # the table's schema, or the one its first batch will create
        self._parts: list[pa.Table] = []
        self._started = self._finished = False

    def __enter__(self) -> "WriteGroup":
        self.on_write_start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            self.on_write_complete()
        else:
            self.on_write_failed(exc)

    def on_write_start(self) -> None:
        """Look up the table (nothing is created or committed yet)."""
        self._handle = self.conn.open(self.table)
        self._target = None if self._handle is None else self._handle.schema
        self._started = True

    def write(self, data: pa.Table) -> int:
        """Check and buffer one batch: conformed to the table's schema (a new table takes its
        first batch's); returns its row count. Raises StoreError for data the table cannot take."""
        self._check_open()
        if data.num_rows == 0:
            return 0
        if self._target is None:
            self._target = creation_schema(self.table, data.schema)
        self._add_later_columns(data.schema)
        check_model(self.table, data.schema, self._target)
        self._parts.append(conform(self.table, data, self._target))
        return data.num_rows

    def _add_later_columns(self, schema: pa.Schema) -> None:
        """A table from before a column existed gains it when a batch carries it (e.g. frames.thumbnail)."""
        later = [f for f in LATER_COLUMNS.get(self.table, ()) if f.name in schema.names
                 and self._target.get_field_index(f.name) < 0]
        if later and self._handle is not None:
            self.conn.add_missing_columns(self.table, pa.schema(later))
            self._handle = self.conn.open(self.table)
            self._target = self._handle.schema

    def on_write_complete(self) -> int:
        """Commit every buffered batch at once (creating the table if needed); returns rows committed."""
        self._check_open()
        self._finished = True
        if not self._parts:
            return 0
        rows = dedupe_last(pa.concat_tables(self._parts), self.keys)
        self._parts = []
        handle = self._handle if self._handle is not None else self.conn.create(self.table, self._target)
        if handle.schema != self._target:  # another writer created it meanwhile, from its own first batch
            check_model(self.table, self._target, handle.schema)
            rows = conform(self.table, rows, handle.schema)
        with lance_errors(self.table, "upsert" if self._commit is None else "append", self.conn.uri):
            if self._commit is None:
                upsert_with_retry(self.table, handle, self.keys, rows)
            else:
                self._commit(handle, rows)
        self.rows = rows.num_rows
        return self.rows

    def on_write_failed(self, exc: BaseException | None = None) -> None:
        """Drop the buffered batches: nothing of this group is committed."""
        self._parts, self._finished = [], True

    def _check_open(self) -> None:
        if not self._started or self._finished:
            state = "already finished" if self._finished else "not started (on_write_start)"
            raise StoreError(f"write group of table {self.table!r} is {state}")


class Writer:
    """Writes of a store: upserts (one group each, or many batches in one group) and deletes."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def group(self, table: str, commit: CommitFn | None = None) -> WriteGroup:
        """A write group: `with writer.group(CLIPS) as g: g.write(a); g.write(b)` commits a and b once
        (as an upsert, or through `commit`)."""
        return WriteGroup(self.conn, table, commit)

    def upsert(self, table: str, data: pa.Table) -> int:
        """Insert or replace rows by KEYS[table]; creates the table from data.schema if missing.

        Returns the number of rows written (after dropping in-batch duplicates, last wins).
        """
        with self.group(table) as group:
            group.write(data)
        return group.rows

    def delete(self, table: str, where: str) -> int:
        """Delete the rows matching a SQL predicate; returns how many were deleted."""
        check_table(table)
        handle = self.conn.open(table)
        if handle is None:
            return 0
        with lance_errors(table, "delete", self.conn.uri):
            before = int(handle.count_rows())
            handle.delete(where)
            return before - int(handle.count_rows())
