"""The `streams` table side of a run: each stream's row (status, counters, committed checkpoint)
and its events, written through the streams sink. Plain Python over a Backend.

A running stream's row is written at most every runtime.checkpoint_interval_s (a closing or
forced one always), and, with many streams, no more than MAX_ROWS_PER_S running rows a second in
all: 150 live streams at one row a second each would keep the streams sink busy with nothing but
their health. A write that is lost (its sink died) is written again from the current state.

Rows due are written together, one `streams` commit at a time: the rows of a step go out as one
write at its end (prune), and while one is in flight the next rows wait (a stream's newer state
replaces its waiting one) and go out together once it is done. With 40 live streams, a row per
stream per second used to be 40 single-row commits a second: more than a sink keeps up with on 2
cores, so the calls queued without bound in the sink and the driver, and every commit adds to
what a long-lived LanceDB writer holds (docs/benchmarks.md, "Sink memory").
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from streamvl.runtime.backend import Backend, Ref, TaskFailed
from streamvl.runtime.report import StreamReport
from streamvl.runtime.scheduler import ActiveStream
from streamvl.storage.ledger import Ledger
from streamvl.types import StreamEvent, StreamState

log = logging.getLogger(__name__)

MAX_ROWS_PER_S = 20.0  # throttled `streams` rows of running streams, all streams together


class Recorder:
    """Writes `streams` rows and events, keeps their writes in view, and rewrites lost ones."""

    def __init__(self, backend: Backend, ledger: Ledger, reports: Mapping[str, StreamReport], interval_s: float,
                 clock=time.monotonic):
        self.backend, self.ledger, self.reports, self.interval_s = backend, ledger, reports, interval_s
        self.clock = clock
        self.model = ""  # set once the encoder has described itself
        self._running, self._counted_at = 0, float("-inf")
        self._writes: dict[Ref, tuple[str, ...]] = {}  # write ref -> its stream ids (() for events)
        self._due: dict[str, StreamState] = {}  # rows waiting for the write in flight, by stream
        self._states: Ref | None = None  # the `streams` rows write in flight

    def record(self, state: ActiveStream, force: bool = False) -> None:
        """Write a running stream's row, unless one was written within the interval."""
        now = self.clock()
        if not force and not state.ending and now - state.last_record < self.interval(now):
            return
        state.last_record = now
        self.write(state.report)

    def interval(self, now: float) -> float:
        """Seconds between two throttled rows of one stream: runtime.checkpoint_interval_s, or longer
        when the running streams would otherwise write more than MAX_ROWS_PER_S rows a second."""
        if now - self._counted_at >= 1.0:  # counted at most once a second: the loop asks per batch
            self._running = sum(1 for r in self.reports.values() if r.status == "running")
            self._counted_at = now
        return max(self.interval_s, self._running / MAX_ROWS_PER_S)

    def write(self, report: StreamReport) -> None:
        """Write a stream's row, with its committed checkpoint: sent with the other rows due at
        the end of this step of the run (prune), or after the write in flight."""
        self._due[report.stream_id] = report.state(self.ledger[report.stream_id], self.model)

    def _send(self) -> None:
        """Send the rows due as one write, unless a write of rows is still in flight."""
        if self._due and self._states is None:
            self._states = self.backend.record_states(list(self._due.values()))
            self._writes[self._states] = tuple(self._due)
            self._due = {}

    def events(self, events: list[StreamEvent]) -> None:
        if events:
            self._writes[self.backend.record_events(events)] = ()

    def refs(self) -> list[Ref]:
        """Writes sent and not yet known to be done (rows still due are not sent yet)."""
        return list(self._writes)

    def prune(self) -> None:
        """Drop finished writes (a lost one, its sink died, is written again from the current
        state), then send the rows due."""
        for ref in self.backend.wait(list(self._writes), num_returns=len(self._writes), timeout=0) if self._writes else []:
            stream_ids = self._writes.pop(ref)
            if ref == self._states:
                self._states = None
            try:
                self.backend.get(ref)
            except TaskFailed as exc:
                log.warning("streams record for %s failed (%s); writing it again",
                            ", ".join(stream_ids) or "events", exc.message)
                for stream_id in stream_ids:
                    if stream_id in self.reports and stream_id in self.ledger and stream_id not in self._due:
                        self.write(self.reports[stream_id])
        self._send()

    def flush(self) -> None:
        """Wait until every `streams` row and event written so far is committed."""
        for _ in range(6):
            self._send()
            if not self._writes:
                return
            self.backend.wait(list(self._writes), num_returns=len(self._writes), timeout=60)
            self.prune()
