"""Watches off the commit path: a thread that scores committed clip batches and writes their events.

A clips sink commits a batch, hands it to WatchThread.submit and returns: the commit no longer
waits for the match product and the `watch_events` write (the bulk of what watches cost a
sink, bench/bench_watches.py). The thread drains every batch waiting when it wakes and scores
them as one (one product, one event write per drain), so a sink that commits faster than the
watcher keeps up pays less per batch, not more.

Sequence watches (streamvl.search.sequence_watches.SequenceWatcher, "A then B within S") run
in the same thread on the same batches, after the plain watches: their rules are unchanged (events
keyed, a key looked up before an event opens, trackers rebuilt from stored clip rows when a
sink meets a stream or a replay), so a kill with batches queued is rescored like the plain ones.

The watcher runs with one BLAS thread (limit_blas_threads) and holds closes and growth
of stored events for watches.UPSERT_EVERY_S stream seconds so they share one upsert; flush()
writes them, flush(held=False) only waits for the queue.

Exactly once is unchanged: batches are only ever submitted after their commit, and the events
are keyed by (watch, stream, first window). A process killed with batches still queued leaves
committed rows without their events; the next Watcher rescores each stream's stored tail
(streamvl.search.watches.CATCHUP_S) at start, as after a kill between commit and event write.
So the queue is bounded (submit blocks when MAX_PENDING batches wait): the backlog a kill can
leave stays far below that tail. A failing batch is logged and the watcher restarted from the
table, as the synchronous path does.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

import pyarrow as pa

log = logging.getLogger(__name__)
MAX_PENDING = 8  # committed batches waiting for the watcher before submit blocks (backpressure)
_COLUMNS = ("stream_id", "start", "end", "adapter", "embedding")  # what the watcher reads of a clips batch
_STOP, _HELD = object(), object()  # queue markers: stop the thread; write the held upserts


class WatchThread:
    """Runs `make_watcher()`'s on_commit (then `make_sequences()`'s, if given) on submitted clip
    batches in a daemon thread; a watcher that fails is replaced by a fresh one."""

    def __init__(self, make_watcher: Callable[[], Any], *, max_pending: int = MAX_PENDING,
                 make_sequences: Callable[[], Any] | None = None) -> None:
        limit_blas_threads()
        self._make, self._make_sequences = make_watcher, make_sequences
        self.watcher = make_watcher()
        self.sequences = make_sequences() if make_sequences is not None else None
        self._queue: queue.Queue = queue.Queue(max_pending)
        self.batches = self.drains = self.failures = 0
        self.busy_s = self.cpu_s = 0.0  # wall and CPU time (this thread's) spent scoring and writing events
        self._thread = threading.Thread(target=self._run, name="streamvl-watches", daemon=True)
        self._thread.start()

    def submit(self, clips: pa.Table) -> None:
        """Queue a committed clips batch (blocks while max_pending batches wait)."""
        if not self._thread.is_alive():
            raise RuntimeError("the watch thread is closed")
        self._queue.put(clips.select(list(_COLUMNS)))

    def flush(self, timeout: float | None = None, *, held: bool = True) -> bool:
        """Wait until every submitted batch is scored and its events written (held=False: except
        the closes and growth held for a shared upsert); False on timeout."""
        if held and self._thread.is_alive():
            self._queue.put(_HELD)
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True)
        waiter.start()
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Score what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            while True:  # drain: everything committed meanwhile is scored at once
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(i is _STOP for i in items)
            tables = [i for i in items if i is not _STOP and i is not _HELD]
            try:
                if tables:
                    self.batches += len(tables)
                    self._score(tables)
                if stop or any(i is _HELD for i in items):
                    self._write_held()
            finally:
                for _ in items:
                    self._queue.task_done()
            if stop:
                return

    def _score(self, tables: list[pa.Table]) -> None:
        self.drains += 1
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            clips = _concat(tables)
        except Exception as exc:  # noqa: BLE001 (batches that do not concatenate: both watchers start over)
            self._failed("watcher", exc)
            self._failed("sequences", exc)
        else:
            self._run_one("watcher", lambda w: w.on_commit(clips))
            self._run_one("sequences", lambda w: w.on_commit(clips))
        finally:
            self.busy_s += time.perf_counter() - wall
            self.cpu_s += time.thread_time() - cpu

    def _write_held(self) -> None:
        self._run_one("watcher", lambda w: w.flush_held() if hasattr(w, "flush_held") else 0)

    def _run_one(self, name: str, call: Callable[[Any], Any]) -> None:
        watcher = getattr(self, name)
        if watcher is None:
            return
        try:
            call(watcher)
        except Exception as exc:  # noqa: BLE001 (the rows are committed; the watcher starts over from the table)
            self._failed(name, exc)

    def _failed(self, name: str, exc: Exception) -> None:
        """Count a failure and replace the watcher by a fresh one (it restores itself from the tables)."""
        make = self._make if name == "watcher" else self._make_sequences
        if make is None:
            return
        self.failures += 1
        log.warning("%s: scoring committed clips failed: %s", "watches" if name == "watcher" else "sequence watches", exc)
        try:
            setattr(self, name, make())
        except Exception as again:  # noqa: BLE001 (tried again at the next batch)
            log.warning("watches: restarting the %s failed: %s", name, again)


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table of the batches (their nullability may differ: the first one's schema wins)."""
    first = tables[0].schema
    return pa.concat_tables([t if t.schema == first else t.cast(first) for t in tables])


def limit_blas_threads() -> None:
    """One BLAS thread in this process (once). The watch product is small (40 x 512 x 1,000):
    OpenBLAS's thread pool spins around it, ~14x the product's own CPU on a busy 2-core machine
    (bench/bench_watches.py). Process-wide: meant for the sink process, which does no big BLAS work."""
    global _BLAS_LIMITED
    if not _BLAS_LIMITED:
        _BLAS_LIMITED = True
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(1, user_api="blas")
        except Exception as exc:  # noqa: BLE001 (only slower without it)
            log.info("watches: BLAS threads not limited (%s)", exc)


_BLAS_LIMITED = False
