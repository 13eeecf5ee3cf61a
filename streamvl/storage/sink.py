"""One table's writer under continuous appends: exactly-once writes plus periodic upkeep.

Frames and clips are appended under write claims (storage.appender: one commit, no read of the
table, replays looked up by key); the other tables are upserted.

This is what each Ray SinkActor runs (streamvl/runtime/actors.py wraps it); it is plain Python so
tests and bench/bench_sink_memory.py drive the same code without Ray.

Memory: every upsert commits a new LanceDB table version. A table handle kept open for the life of
the process accumulates per-version state (cached manifests and fragment / index metadata: the
session caches' item count keeps rising even once their byte cap is reached), and glibc malloc
keeps the pages LanceDB's write threads free (and pyarrow's mimalloc pool those of the Arrow work,
hence SINK_PROCESS_ENV). So after each upkeep (compaction, every
`optimize_every_writes` writes or `optimize_every_s` seconds) the sink reopens its handles with
empty caches and hands free heap pages back to the OS (`StoreConfig.release_after_upkeep`).
Every write is a commit, so reopening never loses or repeats data.

Upserts also free heap back after each commit (not only at upkeep): a merge_insert reads the keys of
every fragment, so each one allocates and frees buffers in proportion to the table's rows, and glibc
keeps those pages resident until the next trim. Trimmed only at upkeep, the frames sink's RssAnon
between upkeeps grew with the table (x1.10 over an hour of 40 streams in
bench/frames_sink_memory.py; x1.02 trimmed after every upsert). Appends under write claims read
nothing of the table and are not trimmed per write.

Dropping the handles is not enough by itself: an exception raised inside LanceDB leaves a
traceback cycle that keeps the old connection, with its caches, alive until Python's full garbage
collection, which a sink committing a few times a second runs only every few minutes. (The streams
sink hit this at every upkeep, asking for `stream_events` before it existed; Connection.open no
longer lets LanceDB raise for a missing table.) So the release step also collects cycles itself before
trimming the heap (free_dropped_handles), for any other LanceDB error.
"""

from __future__ import annotations

import gc
import logging
import math
import time
from typing import Any, Callable, Sequence

import pyarrow as pa

from streamvl.config import StoreConfig
from streamvl.memory import release_free_heap
from streamvl.storage.appender import HOT_TABLES
from streamvl.storage.compaction import Tiers
from streamvl.storage.lease import LEASES
from streamvl.storage.schema import CLIPS, EVENTS, STREAM_EVENTS, STREAMS
from streamvl.storage.store import Store
from streamvl.types import StreamState

log = logging.getLogger(__name__)
EVENTS_COMPACT_COMMITS = 20  # watcher commits to `watch_events` between two compactions of it
SINK_CACHE_BYTES = 16 << 20  # cap of a sink's LanceDB index and metadata caches, each (between reopens)
# Environment of a sink process (the runtime passes it as the sink actors' runtime_env):
#   MALLOC_ARENA_MAX=1: glibc's per-thread arenas fragment under LanceDB's many write threads; with
#   2 the second arena still grew ~0.5 MiB/min at live pace with heap in use flat (1: +1.8 MiB over
#   9 minutes against +5.1; ~15% fewer commits/s at full speed, far above live rates).
#   ARROW_DEFAULT_MEMORY_POOL=system: pyarrow's default mimalloc pool keeps ~15-20 MiB of freed
#   pages resident in a sink (the Arrow work per write: conform, dedupe); with the system pool
#   they are glibc's, which release_free_heap() hands back after each upkeep.
SINK_PROCESS_ENV = {"MALLOC_ARENA_MAX": "1", "ARROW_DEFAULT_MEMORY_POOL": "system"}


def free_dropped_handles() -> int:
    """Collect reference cycles now (a full gc), so dropped LanceDB connections and their caches
    are freed before malloc_trim rather than whenever Python's collector next runs its oldest
    generation. Returns the number of unreachable objects found."""
    return gc.collect()


class TableSink:
    """Writes to one table of a store and keeps it in shape (see the module docstring).

    The `streams` sink also writes `stream_events` and compacts both. The `clips` sink scores each
    committed batch against the active watches (streamvl.search.watches.Watcher, and
    streamvl.search.sequence_watches.SequenceWatcher for sequence watches) right after its commit
    (plain watches may go to a watch thread), so events only ever describe committed rows, and
    compacts `watch_events` with its own table; `watch=False` turns that off.
    """

    def __init__(self, db: str, table: str, upkeep: StoreConfig | None = None, *,
                 cache_bytes: int | None = SINK_CACHE_BYTES, clock: Callable[[], float] = time.monotonic,
                 upkeep_first: bool = False, storage: Any = None, watch: bool = True,
                 watch_in_background: bool = False) -> None:
        """upkeep_first: also run upkeep after the first write. A sink that takes over a table (a
        replaced or restarted sink process) does not know how many writes its predecessor left
        uncompacted; without it they add to its own and the fragment count can nearly double.
        watch_in_background: score committed batches in a thread (streamvl.search.watch_thread),
        so a write returns right after its commit; flush_watches() waits for their events."""
        self.store, self.table = Store(db, cache_bytes=cache_bytes, storage=storage), table
        self.upkeep = upkeep or StoreConfig()
        self._clock = clock
        self._writes, self._last_upkeep = 0, -math.inf if upkeep_first else clock()
        self.upkeeps = 0
        self.last_upkeep: dict[str, Any] = {}
        self.appender = None
        if self.upkeep.append_hot_tables and table in HOT_TABLES:
            from streamvl.storage.appender import Appender

            self.appender = Appender(self.store.conn, table)
        self.watcher = None
        self.watch_thread = None
        if watch and table == CLIPS:
            from streamvl.search.watches import Watcher

            if watch_in_background:  # plain and sequence watches in one thread, off the commit path
                from streamvl.search.watch_thread import WatchThread
                from streamvl.search.watches import UPSERT_EVERY_S

                self.watch_thread = WatchThread(lambda: Watcher(self.store, upsert_every_s=UPSERT_EVERY_S),
                                                make_sequences=self._sequence_watcher)
            else:
                self.watcher = Watcher(self.store)
        self.sequences = self._sequence_watcher() if watch and table == CLIPS and self.watch_thread is None else None
        self._event_commits = 0  # watcher commits to `watch_events` at the last compaction of it

    def write(self, data: pa.Table) -> int:
        """Write one batch (one commit): appended under write claims on frames and clips when
        store.append_hot_tables is on (storage.appender), else upserted; returns rows written."""
        upserted = self.appender is None
        if upserted:
            rows = self.store.writer.upsert(self.table, data)
        else:
            with self.store.writer.group(self.table, self.appender.commit) as group:
                group.write(data)
            rows = group.rows
            self.appender.release_idle()
        if self.watch_thread is not None and rows:
            self.watch_thread.submit(data)
        elif self.watcher is not None and rows:
            self._watch(data)
        if self.sequences is not None and rows:
            self._watch_sequences(data)
        self._after_write(rows, upserted=upserted)
        return rows

    def _watch(self, data: pa.Table) -> None:
        """Events of the batch just committed. A failure here must not fail the committed write:
        it is logged, and the watcher restores its events from the table at its next call."""
        try:
            self.watcher.on_commit(data)
        except Exception as exc:  # noqa: BLE001 (the rows are committed; the watcher starts over)
            log.warning("watches: scoring a committed clips batch failed: %s", exc)
            from streamvl.search.watches import Watcher

            self.watcher = Watcher(self.store)

    def _sequence_watcher(self) -> Any:
        from streamvl.search.sequence_watches import SequenceWatcher

        return SequenceWatcher(self.store)

    def _watch_sequences(self, data: pa.Table) -> None:
        """Events of sequence watches ("A, then B within S") for the batch just committed; like _watch,
        a failure is logged and the watcher starts over (rebuilding its state from the tables)."""
        try:
            self.sequences.on_commit(data)
        except Exception as exc:  # noqa: BLE001 (the rows are committed; the watcher starts over)
            log.warning("sequence watches: scoring a committed clips batch failed: %s", exc)
            self.sequences = self._sequence_watcher()

    def flush_watches(self, timeout: float | None = None, *, held: bool = True) -> bool:
        """Wait until the events of every committed batch are written (background watching; held=False:
        except closes and growth held for a shared upsert, see Watcher.upsert_every_s); False on timeout."""
        return True if self.watch_thread is None else self.watch_thread.flush(timeout, held=held)

    def close(self) -> None:
        """Write the events of the batches still queued and stop the watch thread (if any)."""
        if self.watch_thread is not None:
            self.watch_thread.close()

    def record_state(self, state: StreamState) -> None:
        """Write one stream's state (the `streams` sink)."""
        self.store.stream_tables.record_state(state)
        self._after_write(1)

    def record_states(self, states: Sequence[StreamState]) -> int:
        """Write several streams' states in one commit (the `streams` sink); returns rows written."""
        rows = self.store.stream_tables.record_states(states)
        self._after_write(rows)
        return rows

    def record_stream(self, stream_id: str, uri: str, status: str, **fields: Any) -> None:
        """record_state with the state as keywords (what the runtime's SinkActor forwards)."""
        self.store.stream_tables.record_stream(stream_id, uri, status, **fields)
        self._after_write(1)

    def record_events(self, events: Sequence[Any]) -> int:
        rows = self.store.stream_tables.record_events(events)
        self._after_write(rows)
        return rows

    def _compact_leases(self) -> None:
        """Compact the `leases` table (write claims add a version at every renewal) from one sink,
        the clips one. It races claims and other runs' upkeep: a conflict only skips it this time."""
        try:
            self.store.upkeep.maintain(LEASES, keep_versions_s=self.upkeep.keep_versions_s)
        except Exception as exc:  # noqa: BLE001 (the writes are committed; the next upkeep tries again)
            log.info("leases: compaction skipped (%s)", str(exc).splitlines()[0][:200])

    def release_claims(self) -> None:
        """Give up this sink's write claims (storage/claims.py) now: a sink that is replaced calls
        it once its last write returned, so its successor need not wait the claims out."""
        if self.appender is not None:
            self.appender.close()

    def upkeep_now(self) -> dict[str, Any]:
        """Compact (and index) this sink's tables now; returns Upkeep.maintain's dict for its table."""
        return self._upkeep()

    def _events_due(self, every: int = EVENTS_COMPACT_COMMITS) -> bool:
        """Whether the watchers committed to `watch_events` `every` times since its last compaction
        (compacting a table no write touched costs as much as a clips write)."""
        watchers = [self.watcher, self.sequences,
                    *((self.watch_thread.watcher, self.watch_thread.sequences) if self.watch_thread else ())]
        commits = sum(getattr(w, "commits", 0) for w in watchers if w is not None)
        if commits - self._event_commits < every and not (commits < self._event_commits):
            return False
        self._event_commits = commits
        return True

    def _after_write(self, rows: int, *, upserted: bool = True) -> None:
        """Count the write; run upkeep when due, else hand back the free heap an upsert left (its
        read of every fragment: see the module docstring)."""
        if rows:
            self._writes += 1
        due = self._clock() - self._last_upkeep >= self.upkeep.optimize_every_s
        if due or self._writes >= self.upkeep.optimize_every_writes:
            self._upkeep()
        elif rows and upserted and self.upkeep.release_after_upkeep:
            release_free_heap()

    def _upkeep(self) -> dict[str, Any]:
        self._writes, self._last_upkeep = 0, self._clock()
        tables = [self.table, STREAM_EVENTS] if self.table == STREAMS else [self.table]  # events share this sink
        if self._events_due():
            tables.append(EVENTS)  # the watch events this sink writes: one fragment per event write otherwise
        cfg = self.upkeep
        tiers = Tiers(cfg.compact_rows, cfg.compact_tier_factor, cfg.compact_tiers) if cfg.compact_rows else None
        results = [self.store.upkeep.maintain(name, keep_versions_s=cfg.keep_versions_s, index_min_rows=cfg.index_min_rows,
                                              index_type=cfg.index_type, index_max_deltas=cfg.index_max_deltas, tiers=tiers)
                   for name in tables]
        if self.appender is not None and self.table == CLIPS:
            self._compact_leases()
        if cfg.release_after_upkeep:
            self.store.reconnect()
            free_dropped_handles()
            release_free_heap()
        self.upkeeps += 1
        self.last_upkeep = results[0]
        return self.last_upkeep
