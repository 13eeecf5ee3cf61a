"""The `streams` table side of a run: each stream's row (status, counters, committed checkpoint)
and its events, written through the streams sink. Plain Python over a Backend.

A running stream's row is written at most every runtime.checkpoint_interval_s (a closing or
forced one always), and, with many streams, no more than MAX_ROWS_PER_S running rows a second in
all: each row is one upsert in the streams sink, so 150 live streams at one row a second each
would keep that sink busy with nothing but their health. A write that is lost (its sink died) is
written again from the current state.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

from streamvl.runtime.backend import Backend, Ref, TaskFailed
from streamvl.runtime.report import StreamReport
from streamvl.runtime.scheduler import ActiveStream
from streamvl.storage.ledger import Ledger
from streamvl.types import StreamEvent

log = logging.getLogger(__name__)

MAX_ROWS_PER_S = 20.0  # throttled `streams` rows of running streams, all streams together


class Recorder:
    """Writes `streams` rows and events, keeps their writes in view, and rewrites lost ones."""

    def __init__(self, backend: Backend, ledger: Ledger, reports: Mapping[str, StreamReport], interval_s: float,
                 clock=time.monotonic):
        self.backend, self.ledger, self.reports, self.interval_s = backend, ledger, reports, interval_s
        self.clock = clock
        self.model = ""  # set once the encoder has described itself
        self._writes: dict[Ref, str] = {}  # write ref -> stream id ("" for events)
        self._running, self._counted_at = 0, float("-inf")

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
        """Write a stream's row now, with its committed checkpoint."""
        ref = self.backend.record_state(report.state(self.ledger[report.stream_id], self.model))
        self._writes[ref] = report.stream_id

    def events(self, events: list[StreamEvent]) -> None:
        if events:
            self._writes[self.backend.record_events(events)] = ""

    def refs(self) -> list[Ref]:
        """Writes not yet known to be done."""
        return list(self._writes)

    def prune(self) -> None:
        """Drop finished writes; a lost one (sink died) is written again from the current state."""
        if not self._writes:
            return
        for ref in self.backend.wait(list(self._writes), num_returns=len(self._writes), timeout=0):
            stream_id = self._writes.pop(ref)
            try:
                self.backend.get(ref)
            except TaskFailed as exc:
                log.warning("streams record for %s failed (%s); writing it again", stream_id or "events", exc.message)
                if stream_id in self.reports and stream_id in self.ledger:
                    self.write(self.reports[stream_id])

    def flush(self) -> None:
        """Wait until every `streams` row and event written so far is committed."""
        for _ in range(3):
            if not self._writes:
                return
            self.backend.wait(list(self._writes), num_returns=len(self._writes), timeout=60)
            self.prune()
