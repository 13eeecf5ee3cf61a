"""One indexing run, as a loop over a Backend: a fixed list of streams (`run`), or a changing set
(`serve`). Plain Python: the parts it turns are the scheduler (which streams run and how much
each has in flight), the ledger (committed checkpoints), the commit step (encoder calls and
write groups), the recorder (the `streams` table) and the stream reports.

Nothing starts in the constructor; `start()` starts the backend's encoder and sinks and queues
the streams, each from its committed checkpoint (runtime.resume). Streams keep their
checkpoints when a serving run stops, and a later run continues from them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from streamvl.config import IndexConfig
from streamvl.runtime.backend import Backend, BatchMeta
from streamvl.runtime.commit import Batcher, Committer, Part, Wait, WriteGroup
from streamvl.runtime.recorder import Recorder
from streamvl.runtime.report import IndexReport, StreamReport
from streamvl.runtime.scheduler import StreamScheduler, ActiveStream
from streamvl.runtime.streams import StoreView, StreamControl
from streamvl.storage.ledger import Ledger, from_state
from streamvl.storage.store import CLIPS
from streamvl.types import StreamInfo


class Run:
    """Turns the parts of a run, one step at a time, until its streams are done (or it is stopped)."""

    def __init__(self, sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None,
                 *, backend: Backend, store: StoreView):
        self.config, self.backend, self.store = config, backend, store
        self.sources = list(sources)
        self.info: dict[str, Any] = {}  # the encoder's description, once started
        self.reports: dict[str, StreamReport] = {}
        self.scheduler = StreamScheduler(config.runtime)
        self.ledger = Ledger()
        self.recorder = Recorder(backend, self.ledger, self.reports, config.runtime.checkpoint_interval_s)
        self.control = StreamControl(config, backend, store, self.scheduler, self.ledger, self.recorder, self.reports)
        self.committer = Committer(backend, self.scheduler, self.control, self.ledger, self.recorder,
                                   on_frames or (lambda n: None))
        self.batcher = Batcher(backend, self.scheduler, self.control, self.committer, config.runtime.encode_batch)
        self._handled: dict[str, object] = {}  # serve: request rows already acted on (stream -> requested_at)
        self._started = False

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> "Run":
        """Start the encoder and sinks and queue the streams given; does nothing the second time."""
        if not self._started:
            self.info = self.backend.start()
            self.recorder.model = str(self.info["model"])
            self._started = True
            for info in self.sources:
                self.add(info)
        return self

    def close(self) -> None:
        """End every process of the run (the committed checkpoints stay)."""
        self.backend.close()

    def run(self) -> IndexReport:
        """Index every stream until each one is done or failed (live streams run until they fail)."""
        self.start()
        start = time.monotonic()
        while self.queue or self.active or self.commits:
            self.step()
        self.flush_records()
        return self.report(time.monotonic() - start)

    def serve(self, stop: Callable[[], bool], poll_s: float = 1.0, requests: bool = True) -> IndexReport:
        """Run until stop() is true; streams come and go through `stream_requests` rows (polled every
        poll_s) or through add()/remove(). Streams keep their checkpoints when the server stops."""
        self.start()
        start, next_poll = time.monotonic(), 0.0
        while not stop():
            if requests and time.monotonic() >= next_poll:
                self.poll_requests()
                next_poll = time.monotonic() + poll_s
            self.step()
        for state in self.active.values():  # the checkpoints stay; a restart resumes from them
            if not state.ending:
                state.report.status = "stopped"
                self.recorder.record(state, force=True)
        self.flush_records()
        return self.report(time.monotonic() - start)

    def step(self) -> None:
        """One turn of the loop: start streams, send ready batches, retire committed groups."""
        self._require_started()
        self.control.admit()
        wait = self._sink_swap() or self.batcher.feed()
        if wait is not None:
            self._wait(wait)
        self.committer.settle()
        self.recorder.prune()

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("the run is not started: call start() first")

    def _sink_swap(self) -> Wait | None:
        """Hand writing over to fresh sinks once they are up (RayBackend: runtime.sink_recycle_s):
        no new write group starts until every write to the old ones has finished, so a table
        never has two writers and every row is committed before the old processes end."""
        if not self.backend.sinks_due():
            return None
        in_flight = self.commits.refs() + self.recorder.refs()
        if in_flight:
            return Wait(in_flight, 1.0)
        self.backend.swap_sinks()
        return None

    def _wait(self, wait: Wait) -> None:
        if wait.refs:
            self.backend.wait(wait.refs, num_returns=1, timeout=wait.timeout)
        elif not self.scheduler.any_pending():
            self.backend.pause(min(wait.timeout, 0.1))  # nothing in flight at all (e.g. serving with no streams)

    # -- streams -------------------------------------------------------------------------------
    def add(self, info: StreamInfo) -> StreamReport:
        """Queue a stream; it continues from its committed checkpoint (a done file is skipped)."""
        self._require_started()
        return self.control.add(info)

    def remove(self, stream_id: str) -> None:
        """Stop a stream without touching the others; its last frames are still written."""
        self._require_started()
        if self.scheduler.unqueue(stream_id):
            report = self.reports[stream_id]
            report.status = "removed"
            self.recorder.write(report)
            return
        state = self.active.get(stream_id)
        if state is None and stream_id not in self.reports:  # not run by this job (e.g. before a restart)
            stored = self.store.stream_state(stream_id)
            if stored is not None and stored.status.value not in ("removed", "done"):
                self.reports[stream_id] = StreamReport.removed(stream_id, stored)
                self.ledger.open(stream_id, from_state(stored, stored.grid or ""))
                self.recorder.write(self.reports[stream_id])
            return
        if state is None or state.ending:
            return
        self.control.stop_decoder(state)
        self.control.end(state, "removed")
        state.generation += 1  # whatever is still in flight no longer moves the checkpoint
        ref = self.backend.write(CLIPS, self.backend.finish(stream_id, state.encoder))
        self.committer.submit(WriteGroup([ref], [Part(BatchMeta(stream_id, -1, 0, None, True), state.generation)]))

    def poll_requests(self) -> None:
        """Act on new `stream_requests` rows: "run" adds (or resumes) a stream, "remove" stops it."""
        self._require_started()
        for row in self.store.requests():
            sid = row["stream_id"]
            if self._handled.get(sid) == row["requested_at"]:
                continue
            if row["action"] == "remove":
                self.remove(sid)
            elif sid in self.active and self.active[sid].ending:
                continue  # still winding down: add it again on a later poll
            elif not self.scheduler.has(sid):
                self.add(StreamInfo(sid, row["uri"], fps=row.get("fps"), transport=row.get("transport")))
            self._handled[sid] = row["requested_at"]

    # -- what callers look at ------------------------------------------------------------------
    @property
    def queue(self):
        return self.scheduler.queue

    @property
    def active(self) -> dict[str, ActiveStream]:
        return self.scheduler.active

    @property
    def commits(self):
        """Write groups waiting for their commit (a CommitQueue: len() and refs())."""
        return self.committer.queue

    @property
    def peak_pending(self) -> int:
        return self.scheduler.peak_pending

    @property
    def peak_commits(self) -> int:
        return self.committer.queue.peak

    def flush_records(self) -> None:
        """Wait until every `streams` row and event written so far is committed."""
        self.recorder.flush()

    def report(self, seconds: float) -> IndexReport:
        return IndexReport(list(self.reports.values()), str(self.info["model"]), self.info["warning"], seconds,
                           str(self.info["precision"]))
