"""The life of each stream in a run: queued from its stored checkpoint, started, replayed after a
failure underneath it, ended. Plain Python over a Backend.

Replays: when anything fails underneath a stream (its decoder dies, the encoder or a sink dies,
or the encoder refuses a batch that does not continue the stream's windows) the stream is
*rewound*: its decoder is replaced by one that starts at the last committed checkpoint, and a
new generation makes the loop ignore whatever the old decoder still delivers. Replayed rows have
the same keys, so the upserts absorb them.
"""

from __future__ import annotations

import logging
import time
from typing import Any, MutableMapping, Protocol

from streamvl.config import IndexConfig
from streamvl.runtime.backend import Backend, BatchMeta, TaskFailed
from streamvl.runtime.recorder import Recorder
from streamvl.runtime.report import StreamReport
from streamvl.runtime.routing import EncoderRouter
from streamvl.runtime.scheduler import StreamScheduler, ActiveStream
from streamvl.sources.decode import is_url
from streamvl.sources.live import LiveResume
from streamvl.storage.ledger import Checkpoint, Ledger, grid_key, held_checkpoint, resume_point
from streamvl.types import StreamEvent, StreamInfo, StreamState

log = logging.getLogger(__name__)


class StoreView(Protocol):
    """The reads a run makes of the database (streamvl.storage.store.Store has them)."""

    def stream_state(self, stream_id: str) -> StreamState | None: ...

    def last_frame(self, stream_id: str) -> tuple[float | None, float | None]: ...

    def stream_keys(self, stream_id: str) -> tuple[list[float], dict[str, list[float]]]: ...

    def requests(self) -> list[dict[str, Any]]: ...


class StreamControl:
    """Queues streams from their checkpoints and starts, replays, stops and closes their decoders."""

    def __init__(self, config: IndexConfig, backend: Backend, store: StoreView, scheduler: StreamScheduler,
                 ledger: Ledger, recorder: Recorder, reports: MutableMapping[str, StreamReport]):
        self.config, self.backend, self.store = config, backend, store
        self.scheduler, self.ledger, self.recorder, self.reports = scheduler, ledger, recorder, reports
        self.router = EncoderRouter()

    def add(self, info: StreamInfo) -> StreamReport:
        """Queue a stream; it continues from its committed checkpoint (a done file is skipped)."""
        sid = info.stream_id
        if self.scheduler.has(sid):
            return self.reports[sid]
        live = is_url(info.uri)
        report = self.reports[sid] = StreamReport(sid, info.uri, live=live)
        stored = self.store.stream_state(sid) if self.config.runtime.resume else None
        cfg = self.config
        grid = grid_key(info.fps or cfg.sampling.fps, cfg.clips.window, cfg.clips.stride, cfg.adapters)
        checkpoint, done = resume_point(stored, info.uri, grid, live)
        if not live and not checkpoint.at_start:
            checkpoint, done = self._held(sid, checkpoint, done)
        self.ledger.open(sid, checkpoint)
        if report.resume(stored, checkpoint) and not live:  # live streams record their own resume, with the downtime
            self.recorder.events([StreamEvent(sid, "resume", time.time(), pts=checkpoint.resume_after,
                                              message=f"job restarted: resuming at window {checkpoint.next_window}")])
        if done:
            report.status = "done"  # nothing left to do: the file was indexed completely
            return report
        self.scheduler.enqueue(info)
        self.recorder.write(report)
        return report

    def _held(self, stream_id: str, checkpoint: Checkpoint, done: bool) -> tuple[Checkpoint, bool]:
        """The checkpoint pulled back to what the tables hold (ledger.held_checkpoint); a pulled-back
        stream is not done (its missing rows are indexed again)."""
        frame_pts, clip_starts = self.store.stream_keys(stream_id)
        cfg = self.config
        held = held_checkpoint(checkpoint, window=cfg.clips.window, stride=cfg.clips.stride, done=done,
                               adapters=cfg.adapters, frame_pts=frame_pts, clip_starts=clip_starts)
        if held == checkpoint:
            return checkpoint, done
        log.warning("stream %s: the tables hold less than its checkpoint (window %d); re-indexing from window %d",
                    stream_id, checkpoint.next_window, held.next_window)
        self.recorder.events([StreamEvent(stream_id, "restart", time.time(), pts=held.resume_after,
                                          message=f"rows missing: checkpoint at window {checkpoint.next_window} "
                                                  f"pulled back to window {held.next_window}")])
        return held, False

    def admit(self) -> None:
        """Start every queued stream the scheduler lets in."""
        for info in self.scheduler.admit():
            state = self.scheduler.activate(info, self.reports[info.stream_id])
            if state.live:  # continue after the last frame stored, whatever the checkpoint says
                state.seen_pts, state.seen_wall = self._live_tail(info.stream_id, self.ledger[info.stream_id])
            state.report.status = "running"
            self.recorder.record(state, force=True)
            self.start_decoder(state)

    def _live_tail(self, stream_id: str, checkpoint: Checkpoint) -> tuple[float | None, float | None]:
        """Where a live stream's frames end in the table (frames past the checkpoint count too)."""
        pts, wall = self.store.last_frame(stream_id)
        pts = checkpoint.last_pts if pts is None else max(pts, checkpoint.last_pts or pts)
        wall = checkpoint.last_wallclock if wall is None else max(wall, checkpoint.last_wallclock or wall)
        return (pts, wall) if pts is not None and wall is not None else (None, None)

    def start_decoder(self, state: ActiveStream) -> None:
        """A decoder that starts at the stream's checkpoint; a new generation of its batches."""
        cp = self.ledger[state.stream_id]
        resume = None
        if state.live and state.seen_pts is not None and state.seen_wall is not None:
            resume = LiveResume(state.seen_pts, state.seen_wall)  # a live timeline continues after the downtime
        state.generation += 1
        state.pending.clear()
        state.requested_final = False
        # the stream's encoder: its own while that is up, else a survivor's (its windows restart at cp)
        state.encoder = self.router.assign(state.stream_id, self.backend.encoders())
        # files (and URLs that turn out to have an end) re-decode after cp.resume_after
        state.decoder = self.backend.start_decoder(state.info, cp.next_window, cp.resume_after, resume, state.encoder)
        self.request(state)

    def request(self, state: ActiveStream) -> None:
        for _ in range(self.scheduler.wanted(state)):
            state.pending.append(tuple(self.backend.next_batch(state.decoder)))
        self.scheduler.requested()

    def take(self, state: ActiveStream) -> BatchMeta | None:
        """Take the stream's oldest batch (its meta; the batch ref goes to state.batch) and ask for
        the next one; None when its decoder died (the stream is then replayed)."""
        meta_ref, batch_ref = state.pending.popleft()
        try:
            meta: BatchMeta = self.backend.get(meta_ref)
        except TaskFailed as exc:
            if exc.system:  # its node may be gone: let the backend drop that node's encoder before the replay
                self.backend.await_restarts()
            self.rewind(state, f"decode actor failed: {exc.message}")
            return None
        state.batch = batch_ref
        state.saw(meta)
        if meta.final:
            state.requested_final = True
            state.pending.clear()
        else:
            self.request(state)
        return meta

    def stop_decoder(self, state: ActiveStream) -> None:
        if state.decoder is not None:
            self.backend.stop_decoder(state.decoder)
        state.decoder = None
        state.pending.clear()
        state.requested_final = True

    def rewind(self, state: ActiveStream, reason: str) -> None:
        """Replay a stream from its last checkpoint after a failure underneath it."""
        if state.ending:
            return
        state.report.restarts += 1
        self.stop_decoder(state)
        allowed = self.scheduler.may_replay(state)
        cp = self.ledger[state.stream_id]
        self.recorder.events([StreamEvent(state.stream_id, "restart", time.time(), pts=cp.resume_after,
                                          attempts=state.rewinds, message=reason[:500])])
        if not allowed:
            state.report.error = f"gave up after {state.rewinds - 1} restarts without progress: {reason}"
            state.ending = "error"
            state.generation += 1
            self.close_if_idle(state)
            return
        log.warning("stream %s: %s; replaying from window %d", state.stream_id, reason, cp.next_window)
        self.start_decoder(state)

    def end(self, state: ActiveStream, how: str, error: str | None = None) -> None:
        """No more batches will be taken from this stream ("done", "error" or "removed")."""
        if error is not None:
            state.report.error = error
        state.ending = how

    def close_if_idle(self, state: ActiveStream) -> None:
        """Close an ending stream once none of its write groups is in flight: its final row."""
        if not self.scheduler.idle(state):
            return
        state.report.status = state.ending
        self.recorder.record(state, force=True)
        if state.decoder is not None:
            self.backend.stop_decoder(state.decoder)
            state.decoder = None
        self.router.release(state.stream_id)
        self.scheduler.close(state)
