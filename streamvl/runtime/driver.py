"""Wiring: start actors, pull frame batches, batch them across streams, commit, checkpoint.

Memory stays bounded because nothing is produced unless asked for: each active stream has at
most `inflight_per_stream` batches requested, at most two encoder calls run ahead, and at most
four write groups wait for their commit.

Exactly once. A write group (one encoder call: frame rows + clip rows of several streams) is
committed by the frames and clips sinks; only then does the driver advance each stream's
checkpoint (streamvl.storage.ledger) and, at most every `checkpoint_interval_s`, write it to the
`streams` table. Groups retire in submission order. When anything fails underneath a stream
(its decoder dies, the encoder or a sink dies, or the encoder refuses a batch that does not
continue the stream's windows) the stream is *rewound*: its decoder is replaced by one that
starts at the last checkpoint, and a generation number makes the driver ignore whatever the
old generation still delivers. Replayed rows have the same keys, so the upserts absorb them.
A run started on a database that holds checkpoints continues from them (`runtime.resume`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import ray

from streamvl.storage.ledger import Checkpoint, from_row, grid_key
from streamvl.config import IndexConfig
from streamvl.runtime.actors import SINK_ENV, BatchMeta, DecodeActor, EncodeActor, SinkActor
from streamvl.runtime.cluster import connect
from streamvl.sources.decode import is_url
from streamvl.sources.live import LiveResume
from streamvl.storage.store import CLIPS, FRAMES, STREAMS, Store
from streamvl.types import StreamEvent, StreamInfo

log = logging.getLogger(__name__)
MAX_ENCODES_AHEAD = 2
MAX_COMMITS_WAITING = 4
# Failures of the machinery (a process died), as opposed to errors raised by our own code.
SYSTEM_ERRORS: tuple[type[BaseException], ...] = (
    ray.exceptions.RayActorError,
    ray.exceptions.WorkerCrashedError,
    ray.exceptions.ObjectLostError,
    ray.exceptions.NodeDiedError,
    ray.exceptions.LocalRayletDiedError,
)


@dataclass
class StreamReport:
    """Outcome of one stream in a run (and the live health fields of its `streams` row)."""

    stream_id: str
    uri: str
    status: str = "queued"
    frames: int = 0
    clips: int = 0
    last_pts: float | None = None
    error: str | None = None
    live: bool = False
    restarts: int = 0
    skipped: int = 0  # frames marked repeat (static scene): embedding reused, model not run
    reconnects: int = 0
    gaps: int = 0
    gap_total_s: float = 0.0
    last_gap_s: float | None = None
    lag_s: float | None = None
    resumed_from: float | None = None  # time after which this run resumed (None: from the start)


@dataclass
class IndexReport:
    """Outcome of a whole run: per-stream reports, the model used, and wall time."""

    streams: list[StreamReport]
    model: str
    warning: str | None
    seconds: float
    precision: str = "fp32"  # the image tower's precision in the encode actor

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams)

    @property
    def failed(self) -> list[StreamReport]:
        return [s for s in self.streams if s.status == "error"]


@dataclass
class _Active:
    info: StreamInfo
    report: StreamReport
    checkpoint: Checkpoint
    actor: object = None
    generation: int = 0
    pending: deque = field(default_factory=deque)  # (meta_ref, batch_ref), in request order
    pending_batch: object = None  # batch ref of the head just taken
    requested_final: bool = False
    commits: int = 0  # write groups in flight that hold data of this stream (any generation)
    ending: str | None = None  # "done", "error" or "removed" once no more batches will come
    rewinds: int = 0  # replays since the checkpoint last moved
    last_record: float = 0.0
    cpus: float = 0.0  # Ray CPUs reserved by the current decoder
    seen_pts: float | None = None  # latest frame time / arrival handed out by any decoder
    seen_wall: float | None = None


@dataclass(frozen=True)
class _Part:
    meta: BatchMeta
    generation: int


@dataclass
class _Commit:
    refs: list
    parts: list[_Part]
    progress_ref: object | None


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS (set under `ray job submit`) or start a local instance."""
    if not ray.is_initialized():
        connect()  # streamvl.runtime.cluster: RAY_ADDRESS if set, else a private local Ray on 127.0.0.1


def _counters_from_row(report: StreamReport, row: dict) -> None:
    """Carry a stream's restart / reconnect / gap counters over from its `streams` row."""
    for name in ("restarts", "reconnects", "gaps"):
        setattr(report, name, int(row.get(name) or 0))
    report.gap_total_s = float(row.get("gap_total_s") or 0.0)
    report.skipped = int(row.get("frames_skipped") or 0)
    report.last_gap_s = row.get("last_gap_s")


def _cause(exc: BaseException) -> BaseException:
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _message(exc: BaseException) -> str:
    cause = _cause(exc)
    return str(cause).splitlines()[0] if str(cause) else type(cause).__name__


def _kill_all(actors: dict[str, object]) -> None:
    """Kill these actors for good (no Ray restart)."""
    for actor in actors.values():
        ray.kill(actor, no_restart=True)


def is_system_error(exc: BaseException) -> bool:
    """True when a process died underneath (replay from the checkpoint), not our code raising."""
    return isinstance(exc, SYSTEM_ERRORS) or isinstance(_cause(exc), SYSTEM_ERRORS)


class IndexRun:
    """One indexing run: a fixed list of streams (`run`), or a changing set (`serve`)."""

    def __init__(self, sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None):
        self.config = config
        self.on_frames = on_frames or (lambda n: None)
        self.store = Store(config.db)
        self.reports: dict[str, StreamReport] = {}
        self.infos: dict[str, StreamInfo] = {}
        self.queue: deque[StreamInfo] = deque()
        self.active: dict[str, _Active] = {}
        self.encodes: list = []
        self.commits: list[_Commit] = []
        self._records: dict[object, str] = {}  # record ref -> stream id
        self.peak_pending = 0  # frame batches requested but not yet taken (backpressure check)
        self.peak_commits = 0
        rt = config.runtime
        # CPUs this run may reserve for decoders: what was free before its encoder and sinks, less
        # room for a second set of sinks when they are replaced (sink_recycle_s starts the new set first)
        free = float(ray.available_resources().get("CPU", ray.cluster_resources().get("CPU", 0.0)))
        self._cpu_budget = free - rt.encode_cpus - (6 if rt.sink_recycle_s else 3) * rt.sink_cpus
        self.encoder = EncodeActor.options(num_cpus=rt.encode_cpus, max_restarts=rt.actor_restarts).remote(config)
        self.sinks = {t: self._new_sink(t) for t in (FRAMES, CLIPS, STREAMS)}
        self._sinks_since = time.monotonic()
        self._next_sinks: dict[str, object] | None = None  # fresh sinks starting up (sink_recycle_s)
        self._next_ready: list = []
        self.sink_recycles = 0
        self.sink_recycle_failures = 0
        self.info = ray.get(self.encoder.describe.remote())
        self.sampling = config.sampling.model_copy(update={"size": int(self.info["meta"]["streamvl.image_size"])})
        self._pending_checkpoints: dict[str, Checkpoint] = {}
        self._closed: dict[str, Checkpoint] = {}  # final checkpoints of streams no longer active
        self._handled: dict[str, object] = {}  # serve: request rows already acted on (stream -> requested_at)
        for info in sources:
            self.add(info)

    # -- the two ways to run -------------------------------------------------------------------
    def run(self) -> IndexReport:
        """Index every stream until each one is done or failed (live streams run until they fail)."""
        start = time.monotonic()
        while self.queue or self.active or self.commits:
            self.step()
        self.flush_records()
        return self.report(time.monotonic() - start)

    def step(self) -> None:
        """One turn of the loop: start streams, send ready batches, retire committed groups."""
        self._activate()
        if not self._recycle_sinks():
            self._encode_ready()
        self._settle_commits()
        self._prune_records()

    def serve(self, stop: Callable[[], bool], poll_s: float = 1.0, requests: bool = True) -> IndexReport:
        """Run until stop() is true; streams come and go through `stream_requests` rows (polled every
        poll_s) or through add()/remove(). Streams keep their checkpoints when the server stops."""
        start, next_poll = time.monotonic(), 0.0
        while not stop():
            if requests and time.monotonic() >= next_poll:
                self.poll_requests()
                next_poll = time.monotonic() + poll_s
            self.step()
        for state in self.active.values():  # the checkpoints stay; a restart resumes from them
            if not state.ending:
                state.report.status = "stopped"
                self._record(state, force=True)
        self.flush_records()
        return self.report(time.monotonic() - start)

    def poll_requests(self) -> None:
        """Act on new `stream_requests` rows: "run" adds (or resumes) a stream, "remove" stops it."""
        for row in self.store.requests():
            sid = row["stream_id"]
            if self._handled.get(sid) == row["requested_at"]:
                continue
            if row["action"] == "remove":
                self.remove(sid)
            elif sid in self.active and self.active[sid].ending:
                continue  # still winding down: add it again on a later poll
            elif sid not in self.active and all(q.stream_id != sid for q in self.queue):
                self.add(StreamInfo(sid, row["uri"], fps=row.get("fps"), transport=row.get("transport")))
            self._handled[sid] = row["requested_at"]

    # -- sink processes ------------------------------------------------------------------------
    def _new_sink(self, table: str):
        rt = self.config.runtime
        return SinkActor.options(num_cpus=rt.sink_cpus, max_restarts=rt.actor_restarts, runtime_env=SINK_ENV).remote(
            self.config.db, table, self.config.store)

    def _recycle_sinks(self) -> bool:
        """Replace the sinks with fresh processes once they are runtime.sink_recycle_s old.

        A long-lived LanceDB writer's private heap creeps up (allocator fragmentation under its
        write threads, ~0.1-0.2 MiB/min at live pace) even with its caches reopened and trimmed;
        a fresh process bounds that. The new sinks are started first, while writing goes on
        (a sink process takes seconds to start); once they answer, no new write group is sent
        until every call to the old ones has finished (True while that drains, well under a
        second), so a table never has two writers and every row is committed before the old
        processes are killed."""
        limit = self.config.runtime.sink_recycle_s
        if not limit or time.monotonic() - self._sinks_since < limit:
            return False
        if self._next_sinks is None:
            self._next_sinks = {t: self._new_sink(t) for t in self.sinks}
            self._next_ready = [s.pid.remote() for s in self._next_sinks.values()]
        if len(ray.wait(self._next_ready, num_returns=len(self._next_ready), timeout=0)[0]) < len(self._next_ready):
            return False
        if not self._next_started():
            return False
        if self.commits or self._records:
            self._wait_some([r for c in self.commits for r in c.refs] + list(self._records))
            return True
        old, self.sinks, self._next_sinks = self.sinks, self._next_sinks, None
        _kill_all(old)
        self._sinks_since = time.monotonic()
        self.sink_recycles += 1
        log.info("sinks replaced by fresh processes (%d so far)", self.sink_recycles)
        return False

    def _next_started(self) -> bool:
        """Whether every new sink answered; if one failed to start, drop the new set, keep the old
        sinks (they still work) and try again after another runtime.sink_recycle_s."""
        try:
            ray.get(self._next_ready)
            return True
        except ray.exceptions.RayError as exc:
            log.warning("new sink processes failed to start (%s); keeping the current ones", _message(exc))
            _kill_all(self._next_sinks)
            self._next_sinks, self._next_ready = None, []
            self._sinks_since = time.monotonic()
            self.sink_recycle_failures += 1
            return False

    def report(self, seconds: float) -> IndexReport:
        return IndexReport(list(self.reports.values()), str(self.info["model"]), self.info["warning"], seconds,
                           str(self.info["precision"]))

    # -- streams -------------------------------------------------------------------------------
    def add(self, info: StreamInfo) -> StreamReport:
        """Queue a stream; it continues from its committed checkpoint (a done file is skipped)."""
        if info.stream_id in self.active or any(q.stream_id == info.stream_id for q in self.queue):
            return self.reports[info.stream_id]
        live = is_url(info.uri)
        report = StreamReport(info.stream_id, info.uri, live=live)
        self.reports[info.stream_id] = report
        self.infos[info.stream_id] = info
        row = self.store.stream(info.stream_id) if self.config.runtime.resume else None
        grid = grid_key(info.fps or self.config.sampling.fps, self.config.clips.window, self.config.clips.stride,
                        self.config.adapters)
        checkpoint = from_row(row, grid) if row and row.get("uri") == info.uri else Checkpoint(grid)
        self._restore(report, row, checkpoint)
        if row and row.get("uri") == info.uri and row.get("status") == "done" and row.get("grid") == grid and not live:
            report.status = "done"  # nothing left to do: the file was indexed completely
            return report
        self._pending_checkpoints[info.stream_id] = checkpoint
        self.queue.append(info)
        self._record_report(report, checkpoint)
        return report

    def remove(self, stream_id: str) -> None:
        """Stop a stream without touching the others; its last frames are still written."""
        for info in list(self.queue):
            if info.stream_id == stream_id:
                self.queue.remove(info)
                report = self.reports[stream_id]
                report.status = "removed"
                self._record_report(report, self._pending_checkpoints.pop(stream_id))
        state = self.active.get(stream_id)
        if state is None and stream_id not in self.reports:  # not run by this job (e.g. before a restart)
            row = self.store.stream(stream_id)
            if row is not None and row["status"] not in ("removed", "done"):
                report = StreamReport(stream_id, row["uri"], status="removed", frames=int(row["frames_indexed"]),
                                      last_pts=row.get("last_committed_pts"), live=bool(row.get("live")))
                _counters_from_row(report, row)
                self.reports[stream_id] = report
                self._record_report(report, from_row(row, row.get("grid") or ""))
            return
        if state is None or state.ending:
            return
        self._stop_decoder(state)
        state.ending = "removed"
        state.generation += 1  # whatever is still in flight no longer moves the checkpoint
        ref = self.sinks[CLIPS].write.remote(self.encoder.finish.remote(stream_id))
        self._add_commit(_Commit([ref], [_Part(BatchMeta(stream_id, -1, 0, None, True), state.generation)], None))

    def _restore(self, report: StreamReport, row: dict | None, checkpoint: Checkpoint) -> None:
        report.frames, report.last_pts = checkpoint.frames, checkpoint.last_pts
        if not row or checkpoint.at_start:
            return
        report.resumed_from = checkpoint.resume_after
        _counters_from_row(report, row)
        if row.get("status") != "done":
            report.restarts += 1
            if not report.live:  # live streams record their own resume event, with the downtime
                self._record_events([StreamEvent(report.stream_id, "resume", time.time(), pts=checkpoint.resume_after,
                                                 message=f"job restarted: resuming at window {checkpoint.next_window}")])

    def _activate(self) -> None:
        limit = self.config.runtime.max_active_streams
        for info in list(self.queue):
            files_active = sum(1 for s in self.active.values() if not s.report.live)
            if not is_url(info.uri) and files_active >= limit:
                continue  # files wait for a slot; live streams cannot wait
            self.queue.remove(info)
            checkpoint = self._pending_checkpoints.pop(info.stream_id)
            state = _Active(info, self.reports[info.stream_id], checkpoint)
            if state.report.live:  # continue after the last frame stored, whatever the checkpoint says
                state.seen_pts, state.seen_wall = self._live_tail(info.stream_id, checkpoint)
            state.report.status = "running"
            self.active[info.stream_id] = state
            self._record(state, force=True)
            self._start_decoder(state)

    def _live_tail(self, stream_id: str, checkpoint: Checkpoint) -> tuple[float | None, float | None]:
        """Where a live stream's frames end in the table (frames past the checkpoint count too)."""
        pts, wall = self.store.last_frame(stream_id)
        pts = checkpoint.last_pts if pts is None else max(pts, checkpoint.last_pts or pts)
        wall = checkpoint.last_wallclock if wall is None else max(wall, checkpoint.last_wallclock or wall)
        return (pts, wall) if pts is not None and wall is not None else (None, None)

    def _start_decoder(self, state: _Active) -> None:
        """A decoder that starts at the stream's checkpoint; a new generation of its batches."""
        cp = state.checkpoint
        resume = None
        if state.report.live and state.seen_pts is not None and state.seen_wall is not None:
            resume = LiveResume(state.seen_pts, state.seen_wall)  # a live timeline continues after the downtime
        start_after = cp.resume_after  # files (and URLs that turn out to have an end) re-decode from here
        state.generation += 1
        state.pending.clear()
        state.requested_final = False
        state.cpus = self._decode_cpus()
        state.actor = DecodeActor.options(num_cpus=state.cpus).remote(
            state.info, self.sampling, self.config.live, cp.next_window, start_after, resume)
        self._request(state)

    def _decode_cpus(self) -> float:
        """Ray CPUs for a new decoder: runtime.decode_cpus, or less when the cluster has less left.

        Ray CPUs are scheduling tokens, not limits; a decoder waits for I/O most of the time.
        Without this, 4 live cameras on 2 CPUs (encoder 1 + sinks 0.3 + 4 x 0.25) would leave one
        decoder unscheduled forever: a live stream cannot wait for a slot."""
        free = self._cpu_budget - sum(s.cpus for s in self.active.values() if s.actor is not None)
        return max(0.01, min(self.config.runtime.decode_cpus, round(free / 2, 2)))

    def _stop_decoder(self, state: _Active) -> None:
        if state.actor is not None:
            ray.kill(state.actor, no_restart=True)
        state.actor = None
        state.pending.clear()
        state.requested_final = True

    def _rewind(self, state: _Active, reason: str) -> None:
        """Replay a stream from its last checkpoint after a failure underneath it."""
        if state.ending:
            return
        state.rewinds += 1
        state.report.restarts += 1
        self._stop_decoder(state)
        self._record_events([StreamEvent(state.info.stream_id, "restart", time.time(), pts=state.checkpoint.resume_after,
                                         attempts=state.rewinds, message=reason[:500])])
        if state.rewinds > self.config.runtime.max_rewinds:
            state.report.error = f"gave up after {state.rewinds - 1} restarts without progress: {reason}"
            state.ending = "error"
            state.generation += 1
            self._close_if_idle(state)
            return
        log.warning("stream %s: %s; replaying from window %d", state.info.stream_id, reason, state.checkpoint.next_window)
        self._start_decoder(state)

    def _request(self, state: _Active) -> None:
        while not state.requested_final and len(state.pending) < self.config.runtime.inflight_per_stream:
            state.pending.append(tuple(state.actor.next_batch.remote()))
        self.peak_pending = max(self.peak_pending, sum(len(s.pending) for s in self.active.values()))

    # -- encode --------------------------------------------------------------------------------
    def _encode_ready(self) -> None:
        """Send every ready head batch (in stream order) to the encoder in one call."""
        if len(self.encodes) >= MAX_ENCODES_AHEAD or len(self.commits) >= MAX_COMMITS_WAITING:
            self._wait_some(self.encodes + [r for c in self.commits for r in c.refs])
            return
        heads = {s.pending[0][0]: s for s in self.active.values() if s.pending}
        if not heads:
            self._wait_some([r for c in self.commits for r in c.refs], timeout=0.2)
            return
        ready, _ = ray.wait(list(heads), num_returns=1, timeout=1.0)
        if not ready:
            return
        ready, _ = ray.wait(list(heads), num_returns=len(heads), timeout=0)
        parts, batch_refs, frames = [], [], 0
        for meta_ref in ready:
            state = heads[meta_ref]
            meta = self._take_head(state)
            if meta is None:
                continue
            parts.append(_Part(meta, state.generation))
            if not meta.failed:
                batch_refs.append(state.pending_batch)
                frames += meta.frames
            if frames >= self.config.runtime.encode_batch:
                break
        if parts:
            self._submit(parts, batch_refs)

    def _take_head(self, state: _Active) -> BatchMeta | None:
        meta_ref, batch_ref = state.pending.popleft()
        try:
            meta: BatchMeta = ray.get(meta_ref)
        except ray.exceptions.RayError as exc:  # the decoder process died: replay from the checkpoint
            self._rewind(state, f"decode actor failed: {_message(exc)}")
            return None
        state.pending_batch = batch_ref
        if meta.last_pts is not None and not meta.failed:
            state.seen_pts = meta.last_pts if state.seen_pts is None else max(state.seen_pts, meta.last_pts)
        if meta.last_wallclock is not None:
            state.seen_wall = meta.last_wallclock if state.seen_wall is None else max(state.seen_wall, meta.last_wallclock)
        if meta.final:
            state.requested_final = True
            state.pending.clear()
        else:
            self._request(state)
        return meta

    def _submit(self, parts: list[_Part], batch_refs: list) -> None:
        refs, progress_ref = [], None
        if batch_refs:
            frames_ref, clips_ref, progress_ref = self.encoder.process.remote(*batch_refs)
            self.encodes.append(progress_ref)
            refs = [self.sinks[FRAMES].write.remote(frames_ref), self.sinks[CLIPS].write.remote(clips_ref)]
        for part in parts:
            if part.meta.failed:  # keep the frames that decoded before the failure
                refs.append(self.sinks[CLIPS].write.remote(self.encoder.finish.remote(part.meta.stream_id)))
        self._add_commit(_Commit(refs, parts, progress_ref))

    def _add_commit(self, commit: _Commit) -> None:
        for part in commit.parts:
            self.active[part.meta.stream_id].commits += 1
        self.commits.append(commit)
        self.peak_commits = max(self.peak_commits, len(self.commits))

    # -- commits -------------------------------------------------------------------------------
    def _wait_some(self, refs: list, timeout: float = 1.0) -> None:
        if refs:
            ray.wait(refs, num_returns=1, timeout=timeout)
        elif not any(s.pending for s in self.active.values()):
            time.sleep(min(timeout, 0.1))  # nothing in flight at all (e.g. serving with no streams)
        self._settle_commits()

    def _settle_commits(self) -> None:
        """Retire write groups in order; a stream ends once its last group is committed."""
        self.encodes = [r for r in self.encodes if not ray.wait([r], timeout=0)[0]]
        while self.commits:
            commit = self.commits[0]
            done, _ = ray.wait(commit.refs, num_returns=len(commit.refs), timeout=0) if commit.refs else ([], [])
            if len(done) < len(commit.refs):
                return
            self.commits.pop(0)
            self._apply(commit)

    def _apply(self, commit: _Commit) -> None:
        failure, system = None, False
        progress = {}
        try:
            ray.get(commit.refs)
            progress = {p.stream_id: p for p in ray.get(commit.progress_ref)} if commit.progress_ref else {}
        except ray.exceptions.RayError as exc:
            failure, system = _message(exc), is_system_error(exc)
        if failure is not None and system:
            self._await_pipeline()
        for part in commit.parts:
            meta = part.meta
            state = self.active.get(meta.stream_id)
            if state is None:
                continue
            state.commits -= 1
            self._note_events(state, meta.events)
            if part.generation != state.generation or state.ending:
                self._close_if_idle(state)  # stale: an older decoder's data, or the stream is ending
                continue
            p = progress.get(meta.stream_id)
            if failure is not None and system:
                self._rewind(state, f"encode or write failed: {failure}")
            elif failure is not None:
                state.report.error, state.ending = f"encode or write failed: {failure}", "error"
            elif p is not None and p.error:
                self._rewind(state, f"encoder refused a batch: {p.error}")
            else:
                self._advance(state, meta, p)
            self._close_if_idle(state)

    def _await_pipeline(self) -> None:
        """Wait (up to runtime.restart_wait_s) until the encoder and every sink answer again.

        A replay sent while Ray is still restarting a crashed actor would fail at once and spend
        one of the stream's max_rewinds on nothing; on 2 busy cores a restart (torch import, model
        load) can outlast them all. An actor that is dead for good answers with an error at once,
        and the replay budget then ends the stream as before."""
        deadline = time.monotonic() + self.config.runtime.restart_wait_s
        for actor in (self.encoder, *self.sinks.values()):
            while (left := deadline - time.monotonic()) > 0:
                try:
                    ray.get(actor.pid.remote(), timeout=left)
                    break
                except ray.exceptions.ActorUnavailableError:  # restarting: ask again shortly
                    time.sleep(min(0.5, max(left, 0)))
                except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                    break

    def _advance(self, state: _Active, meta: BatchMeta, p) -> None:
        report = state.report
        if p is not None:
            before = state.checkpoint
            state.checkpoint = before.advance(p.next_window, p.resume_after, p.seen, p.last_pts, p.last_wallclock)
            if state.checkpoint.next_window > before.next_window:
                state.rewinds = 0
            grown = state.checkpoint.frames - report.frames
            report.frames, report.last_pts = state.checkpoint.frames, state.checkpoint.last_pts
            report.clips += p.clips
            report.skipped = min(report.skipped + p.skipped, report.frames)  # a replay counts its skips again
            if p.last_wallclock is not None:
                report.lag_s = time.time() - p.last_wallclock
            if grown > 0:
                self.on_frames(grown)
        if meta.failed:
            report.error, state.ending = meta.error, "error"
        elif meta.final:
            state.ending = "done"
        else:
            self._record(state)  # throttled; the closing record is always written

    def _note_events(self, state: _Active, events: tuple[StreamEvent, ...]) -> None:
        """Count reconnects and gaps, set the live status, and store the events."""
        if not events:
            return
        report = state.report
        for event in events:
            if event.kind == "stall":
                report.status = "reconnecting"
            elif event.kind in ("reconnect", "resume", "discontinuity"):
                report.status = "running"
                report.reconnects += event.kind == "reconnect"
                if event.gap_s is not None:
                    report.gaps += 1
                    report.gap_total_s += float(event.gap_s)
                    report.last_gap_s = float(event.gap_s)
        self._record_events(list(events))
        self._record(state, force=True)

    def _close_if_idle(self, state: _Active) -> None:
        if state.ending and state.commits == 0 and state.info.stream_id in self.active:
            state.report.status = state.ending
            self._record(state, force=True)
            self._closed[state.info.stream_id] = state.checkpoint
            if state.actor is not None:
                ray.kill(state.actor, no_restart=True)
            del self.active[state.info.stream_id]

    # -- the streams table ---------------------------------------------------------------------
    def _record(self, state: _Active, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - state.last_record < self.config.runtime.checkpoint_interval_s and not state.ending:
            return
        state.last_record = now
        self._record_report(state.report, state.checkpoint)

    def _record_report(self, report: StreamReport, checkpoint: Checkpoint) -> None:
        row = checkpoint.as_row()
        ref = self.sinks[STREAMS].record_stream.remote(
            report.stream_id, report.uri, report.status,
            frames_indexed=report.frames, last_committed_pts=report.last_pts, error=report.error,
            model=str(self.info["model"]), next_window=row["next_window"], resume_after=row["resume_after"],
            grid=row["grid"], last_wallclock=row["last_wallclock"], live=report.live, lag_s=report.lag_s,
            reconnects=report.reconnects, gaps=report.gaps, gap_total_s=report.gap_total_s,
            last_gap_s=report.last_gap_s, restarts=report.restarts, frames_skipped=report.skipped)
        self._records[ref] = report.stream_id

    def _record_events(self, events: list[StreamEvent]) -> None:
        if events:
            self._records[self.sinks[STREAMS].record_events.remote(events)] = ""

    def _prune_records(self) -> None:
        """Drop finished record writes; a lost one (sink died) is written again from current state."""
        if not self._records:
            return
        done, _ = ray.wait(list(self._records), num_returns=len(self._records), timeout=0)
        for ref in done:
            stream_id = self._records.pop(ref)
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                log.warning("streams record for %s failed (%s); writing it again", stream_id or "events", _message(exc))
                self._rerecord(stream_id)

    def _rerecord(self, stream_id: str) -> None:
        state = self.active.get(stream_id)
        if state is not None:
            self._record(state, force=True)
        elif stream_id in self._closed:
            self._record_report(self.reports[stream_id], self._closed[stream_id])

    def flush_records(self) -> None:
        """Wait until every `streams` row and event written so far is committed."""
        for _ in range(3):
            if not self._records:
                return
            ray.wait(list(self._records), num_returns=len(self._records), timeout=60)
            self._prune_records()


def run_index(sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None = None) -> IndexReport:
    """Index `sources` into config.db through Ray actors; a failing stream never stops the others."""
    ensure_ray()
    return IndexRun(sources, config, on_frames).run()


def serve_index(config: IndexConfig, stop: Callable[[], bool], poll_s: float = 1.0,
                on_start: Callable[[IndexRun], None] | None = None) -> IndexReport:
    """A long-running job on config.db: streams come and go through `stream_requests` rows.

    on_start(run) is called once Ray and the actors are up (e.g. to show the model warning and
    to install signal handlers, which ray.init would otherwise replace)."""
    ensure_ray()
    run = IndexRun([], config, None)
    if on_start is not None:
        on_start(run)
    return run.serve(stop, poll_s)
