"""The LanceDB connection of a store: connect, list, open and create tables; LanceDB errors -> StoreError.

Reader, Writer, Upkeep and StreamTables share one Connection, so they share its table handles
and LanceDB's caches. Picklable by URI and [storage] table (it crosses Ray task boundaries inside a
Store); the object store's storage_options are resolved in each process (objectstore.resolve),
from its own environment plus that table, and never leave memory.
"""

from __future__ import annotations

import datetime as dt
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa

from streamvl.errors import StoreDamagedError, StoreError
from streamvl.storage.objectstore import StorageConfig, StorageTarget, resolve
from streamvl.storage.schema import creation_schema


# What Lance says when a table's files are damaged or missing (not a bad query or schema).
_DAMAGE = re.compile(r"LanceError\(IO\)|Invalid range .* for object of size|No such file|Not found: .*\.(lance|manifest)"
                     r"|object at location .* not found|unexpected end of file|Corrupt|[Ii]nvalid (footer|file)",
                     re.IGNORECASE)


@contextmanager
def lance_errors(table: str, action: str, db: str | None = None) -> Iterator[None]:
    """Turn LanceDB's exceptions (ValueError/RuntimeError/OSError with its own messages) into a
    StoreError naming the table and what was being done; damaged or missing files into one line
    StoreDamagedError naming the table and the file, and what to run."""
    try:
        yield
    except StoreError:
        raise
    except Exception as exc:
        text = str(exc)
        if _DAMAGE.search(text):
            from streamvl.storage.check import damaged_path, short_reason

            raise StoreDamagedError(f"table {table!r} is damaged ({action}: {short_reason(text)}); "
                                    "run `streamvl check`, then `streamvl repair`",
                                    table=table, path=damaged_path(text), db=db) from exc
        raise StoreError(f"{action} on table {table!r} failed: {exc}") from exc


def _redact(text: str, target: StorageTarget) -> str:
    """`text` with every credential value of `target` replaced by '***' (errors may echo options)."""
    for key, value in target.options.items():
        if value and target.redacted().get(key) == "***":
            text = text.replace(value, "***")
    return text


class Connection:
    """A LanceDB database, connected on first use.

    read_consistency_s: how stale a read may be with respect to other processes' writes
    (0 = every read checks for new versions; None = never, LanceDB's own default).
    cache_bytes: cap of LanceDB's index and metadata caches each (None: LanceDB's defaults);
    long-running writers set it, and call reconnect() now and then: the caches gain entries with
    every committed version, and their item count is not bounded by the byte cap.
    """

    def __init__(self, uri: str | Path, *, read_consistency_s: float | None = 0.0, cache_bytes: int | None = None,
                 storage: StorageConfig | None = None) -> None:
        self.storage = storage
        self._target: StorageTarget | None = None
        self.uri = str(uri)
        self.read_consistency_s = read_consistency_s
        self.cache_bytes = cache_bytes
        self._db: Any = None
        self._session: Any = None
        self._tables: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.uri, "read_consistency_s": self.read_consistency_s, "cache_bytes": self.cache_bytes,
                "storage": self.storage}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["uri"], read_consistency_s=state["read_consistency_s"], cache_bytes=state.get("cache_bytes"),
                      storage=state.get("storage"))

    @property
    def target(self) -> StorageTarget:
        """Where the tables live and LanceDB's storage_options (resolved once, in this process;
        ConfigError for a bad URI or incomplete credentials). Its repr redacts credentials."""
        if self._target is None:
            self._target = resolve(self.uri, self.storage)
        return self._target

    @property
    def local(self) -> bool:
        return self.target.local

    @property
    def db(self) -> Any:
        """The lancedb connection (opened now if needed)."""
        if self._db is None:
            self._db = self._connect()
        return self._db

    def _connect(self) -> Any:
        import lancedb

        interval = None if self.read_consistency_s is None else dt.timedelta(seconds=self.read_consistency_s)
        target = self.target
        try:
            if target.local:
                Path(target.uri).mkdir(parents=True, exist_ok=True)
            self._session = None
            if self.cache_bytes is not None:
                self._session = lancedb.Session(index_cache_size_bytes=self.cache_bytes,
                                                metadata_cache_size_bytes=self.cache_bytes)
            return lancedb.connect(target.uri, read_consistency_interval=interval, session=self._session,
                                   **target.connect_kwargs())
        except Exception as exc:
            raise StoreError(f"cannot open LanceDB database {target.uri!r}: {_redact(str(exc), target)}") from exc

    def reconnect(self) -> None:
        """Drop the connection, its table handles and its LanceDB caches; the next call opens the
        latest committed version afresh. Committed data is unaffected (every write is a commit).

        Why: a handle kept open across thousands of commits accumulates per-version state (cached
        manifests, fragment and index metadata), so a long-running writer's memory keeps rising.
        """
        self._tables.clear()
        self._db, self._session = None, None

    def cache_stats(self) -> dict[str, int]:
        """{bytes, items} held by this connection's LanceDB session caches (zeros before the first
        connection or without cache_bytes, when LanceDB's own default session is used)."""
        if self._session is None:
            return {"bytes": 0, "items": 0}
        return {"bytes": int(self._session.size_bytes), "items": int(self._session.approx_num_items)}

    def table_names(self) -> list[str]:
        names: list[str] = []
        token = None
        with lance_errors("*", "list tables", self.uri):
            while True:
                page = self.db.list_tables(page_token=token)
                names.extend(page.tables)
                token = page.page_token
                if not token:
                    return sorted(names)

    def cached(self, table: str) -> bool:
        """True when a handle of `table` is held (open() will not ask LanceDB)."""
        return table in self._tables

    def open(self, table: str) -> Any | None:
        """The table's LanceDB handle, or None if the table does not exist yet.

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
            # Listed but not found: another process is creating it (its folder exists, its first
            # version not yet) or dropped it meanwhile. Either way it does not exist yet for us.
            if table not in self.table_names() or "not found" in str(exc).lower() and ".manifest" not in str(exc):
                return None
            if _DAMAGE.search(str(exc)):
                with lance_errors(table, "open", self.uri):
                    raise  # as StoreDamagedError
            raise StoreError(f"open table {table!r} failed: {exc}") from exc
        self._tables[table] = handle
        return handle

    def create(self, table: str, schema: pa.Schema) -> Any:
        """Create an empty table with the schema of its first batch (creation_schema); if another
        writer just created it, open theirs."""
        try:
            handle = self.db.create_table(table, schema=creation_schema(table, schema))
        except StoreError:
            raise
        except Exception as exc:
            handle = self.open(table)
            if handle is None:
                raise StoreError(f"create table {table!r} failed: {exc}") from exc
        self._tables[table] = handle
        return handle

    def add_missing_columns(self, table: str, schema: pa.Schema) -> None:
        """Give an existing table the nullable columns of `schema` it lacks (tables of older versions)."""
        handle = self.open(table)
        if handle is None:
            return
        missing = [f for f in schema if f.nullable and handle.schema.get_field_index(f.name) < 0]
        if missing:
            with lance_errors(table, "add columns", self.uri):
                handle.add_columns(missing)
