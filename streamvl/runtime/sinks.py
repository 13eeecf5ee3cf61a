"""The sink actors of a run (one per table: frames, clips, streams) and their replacement by fresh
processes every runtime.sink_recycle_s.

A long-lived LanceDB writer's private heap creeps up (allocator fragmentation under its write
threads, ~0.1-0.2 MiB/min at live pace) even with its caches reopened and trimmed; a fresh
process bounds that. The new sinks are started first, while writing goes on (a sink process
takes seconds to start); once they answer, the run sends no new write group until every call to
the old ones has finished (well under a second), then swaps, so a table never has two writers
and every row is committed before the old processes are killed.
"""

from __future__ import annotations

import logging
import time

import ray

from streamvl.config import IndexConfig
from streamvl.runtime.actors import SINK_ENV, SinkActor
from streamvl.storage.store import CLIPS, FRAMES, STREAMS

log = logging.getLogger(__name__)
TABLES = (FRAMES, CLIPS, STREAMS)


def kill_all(actors) -> None:
    """Kill these actors for good (no Ray restart)."""
    for actor in actors:
        ray.kill(actor, no_restart=True)


def flush_watches(sinks, timeout: float = 30.0) -> None:
    """Let sinks write the watch events of the batches they committed (their watch threads)
    before they are killed; a sink that does not answer in time leaves them to its successor's
    catch-up (streamvl.search.watches.Watcher rescores each stream's stored tail at start)."""
    try:
        ray.get([s.flush_watches.remote() for s in sinks], timeout=timeout)
    except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError) as exc:
        log.warning("sinks: watch events not flushed before stopping them (%s)", first_line(exc))


def first_line(exc: BaseException) -> str:
    """The first line of what went wrong (the cause a Ray error wraps, if any)."""
    cause = getattr(exc, "cause", None)
    cause = cause if isinstance(cause, BaseException) else exc
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


class SinkPool:
    """The current sinks, and the next set while it starts up."""

    def __init__(self, config: IndexConfig):
        self.config = config
        self.current: dict[str, object] = {}
        self.recycles = 0
        self.failures = 0  # new sets that failed to start (the current one was kept)
        self._next: dict[str, object] | None = None
        self._next_ready: list = []
        self._since = 0.0

    def start(self) -> None:
        self.current = {t: self._new_sink(t) for t in TABLES}
        self._since = time.monotonic()

    def _new_sink(self, table: str):
        rt = self.config.runtime
        return SinkActor.options(num_cpus=rt.sink_cpus, max_restarts=rt.actor_restarts, runtime_env=SINK_ENV).remote(
            self.config.db, table, self.config.store, self.config.storage)

    def due(self) -> bool:
        """True once a fresh set is up and should take over (starting it when the current set is old)."""
        limit = self.config.runtime.sink_recycle_s
        if not limit or time.monotonic() - self._since < limit:
            return False
        if self._next is None:
            self._next = {t: self._new_sink(t) for t in self.current}
            self._next_ready = [s.pid.remote() for s in self._next.values()]
        if len(ray.wait(self._next_ready, num_returns=len(self._next_ready), timeout=0)[0]) < len(self._next_ready):
            return False
        return self._next_started()

    def _next_started(self) -> bool:
        """Whether every new sink answered; if one failed to start, drop the new set, keep the old
        sinks (they still work) and try again after another runtime.sink_recycle_s."""
        try:
            ray.get(self._next_ready)
            return True
        except ray.exceptions.RayError as exc:
            log.warning("new sink processes failed to start (%s); keeping the current ones", first_line(exc))
            kill_all(self._next.values())
            self._next, self._next_ready = None, []
            self._since = time.monotonic()
            self.failures += 1
            return False

    def swap(self) -> None:
        """The new set takes over; the old one is killed (no write to it may be in flight)."""
        old, self.current, self._next = self.current, self._next, None
        flush_watches(old.values())
        try:  # their write claims (frames, clips): the new sinks take them over at once
            ray.get([s.release_claims.remote() for s in old.values()], timeout=30)
        except ray.exceptions.RayError as exc:  # the claims expire by themselves (CLAIM_TTL_S)
            log.warning("old sinks did not release their write claims (%s)", first_line(exc))
        kill_all(old.values())
        self._since = time.monotonic()
        self.recycles += 1
        log.info("sinks replaced by fresh processes (%d so far)", self.recycles)

    def all(self) -> list:
        """Every sink actor, current and starting."""
        return [*self.current.values(), *(self._next or {}).values()]
