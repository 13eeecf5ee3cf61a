"""Wiring: start actors, pull frame batches, batch them across streams, commit, record status.

Memory stays bounded because nothing is produced unless asked for: each active stream has at
most `inflight_per_stream` batches requested, at most two encoder calls run ahead, and at most
four write groups wait for their commit.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import ray

from streamvl.config import IndexConfig
from streamvl.runtime.actors import BatchMeta, DecodeActor, EncodeActor, SinkActor
from streamvl.store import CLIPS, FRAMES, STREAMS
from streamvl.types import StreamInfo

log = logging.getLogger(__name__)
MAX_ENCODES_AHEAD = 2
MAX_COMMITS_WAITING = 4


@dataclass
class StreamReport:
    """Outcome of one stream in a run."""

    stream_id: str
    uri: str
    status: str = "queued"
    frames: int = 0
    clips: int = 0
    last_pts: float | None = None
    error: str | None = None


@dataclass
class IndexReport:
    """Outcome of a whole run: per-stream reports, the model used, and wall time."""

    streams: list[StreamReport]
    model: str
    warning: str | None
    seconds: float

    @property
    def frames(self) -> int:
        return sum(s.frames for s in self.streams)

    @property
    def failed(self) -> list[StreamReport]:
        return [s for s in self.streams if s.status == "error"]


@dataclass
class _Active:
    report: StreamReport
    actor: object
    pending: deque = field(default_factory=deque)  # (meta_ref, batch_ref), in request order
    pending_batch: object = None  # batch ref of the head just taken
    requested_final: bool = False
    commits: int = 0  # write groups not yet committed
    ending: str | None = None  # "done" or "error" once no more batches will come


@dataclass
class _Commit:
    refs: list
    metas: list[BatchMeta]
    progress_ref: object | None


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS (set under `ray job submit`) or start a local instance."""
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING, log_to_driver=True)


class IndexRun:
    """One indexing run over a fixed list of streams."""

    def __init__(self, sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None):
        self.config = config
        self.on_frames = on_frames or (lambda n: None)
        self.reports = {s.stream_id: StreamReport(s.stream_id, s.uri) for s in sources}
        self.queue = deque(sources)
        self.active: dict[str, _Active] = {}
        self.encodes: list = []
        self.commits: list[_Commit] = []
        self._records: list = []
        self.peak_pending = 0  # frame batches requested but not yet taken (backpressure check)
        self.peak_commits = 0
        rt = config.runtime
        self.encoder = EncodeActor.options(num_cpus=rt.encode_cpus).remote(config)
        self.sinks = {t: SinkActor.options(num_cpus=rt.sink_cpus).remote(config.db, t) for t in (FRAMES, CLIPS, STREAMS)}
        self.info = ray.get(self.encoder.describe.remote())
        sampling = config.sampling.model_copy(update={"size": int(self.info["meta"]["streamvl.image_size"])})
        self.sampling = sampling

    def run(self) -> IndexReport:
        start = time.monotonic()
        ray.get([self._record(r) for r in self.reports.values()])
        while self.queue or self.active or self.commits:
            self._activate()
            self._encode_ready()
            self._settle_commits()
        self._record_wait()
        return IndexReport(list(self.reports.values()), str(self.info["model"]), self.info["warning"], time.monotonic() - start)

    # -- streams ---------------------------------------------------------------------------
    def _activate(self) -> None:
        while self.queue and len(self.active) < self.config.runtime.max_active_streams:
            info = self.queue.popleft()
            actor = DecodeActor.options(num_cpus=self.config.runtime.decode_cpus).remote(info, self.sampling)
            state = _Active(self.reports[info.stream_id], actor)
            state.report.status = "running"
            self._record(state.report)
            self.active[info.stream_id] = state
            self._request(state)

    def _request(self, state: _Active) -> None:
        while not state.requested_final and len(state.pending) < self.config.runtime.inflight_per_stream:
            state.pending.append(tuple(state.actor.next_batch.remote()))
        self.peak_pending = max(self.peak_pending, sum(len(s.pending) for s in self.active.values()))

    # -- encode ----------------------------------------------------------------------------
    def _encode_ready(self) -> None:
        """Send every ready head batch (in stream order) to the encoder in one call."""
        if len(self.encodes) >= MAX_ENCODES_AHEAD or len(self.commits) >= MAX_COMMITS_WAITING:
            self._wait_some(self.encodes + [r for c in self.commits for r in c.refs])
            return
        heads = {s.pending[0][0]: s for s in self.active.values() if s.pending}
        if not heads:
            self._wait_some([r for c in self.commits for r in c.refs])
            return
        ready, _ = ray.wait(list(heads), num_returns=1, timeout=1.0)
        if not ready:
            return
        ready, _ = ray.wait(list(heads), num_returns=len(heads), timeout=0)
        metas, batch_refs, frames = [], [], 0
        for meta_ref in ready:
            state = heads[meta_ref]
            meta = self._take_head(state)
            if meta is None:
                continue
            metas.append(meta)
            if not meta.failed:
                batch_refs.append(state.pending_batch)
                frames += meta.frames
            if frames >= self.config.runtime.encode_batch:
                break
        if metas:
            self._submit(metas, batch_refs)

    def _take_head(self, state: _Active) -> BatchMeta | None:
        meta_ref, batch_ref = state.pending.popleft()
        try:
            meta: BatchMeta = ray.get(meta_ref)
        except ray.exceptions.RayError as exc:  # decoder process died
            sid = state.report.stream_id
            meta = BatchMeta(sid, -1, 0, state.report.last_pts, True, f"decode actor failed: {exc}")
        state.pending_batch = batch_ref
        if meta.final:
            state.requested_final = True
            state.pending.clear()
        else:
            self._request(state)
        return meta

    def _submit(self, metas: list[BatchMeta], batch_refs: list) -> None:
        refs, progress_ref = [], None
        if batch_refs:
            frames_ref, clips_ref, progress_ref = self.encoder.process.remote(*batch_refs)
            self.encodes.append(progress_ref)
            refs = [self.sinks[FRAMES].write.remote(frames_ref), self.sinks[CLIPS].write.remote(clips_ref)]
        for meta in metas:
            if meta.failed:  # keep the frames that decoded before the failure
                refs.append(self.sinks[CLIPS].write.remote(self.encoder.finish.remote(meta.stream_id)))
        for meta in metas:
            self.active[meta.stream_id].commits += 1
        self.commits.append(_Commit(refs, metas, progress_ref))
        self.peak_commits = max(self.peak_commits, len(self.commits))

    # -- commits ---------------------------------------------------------------------------
    def _wait_some(self, refs: list) -> None:
        if refs:
            ray.wait(refs, num_returns=1, timeout=1.0)
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
        write_error = None
        try:
            ray.get(commit.refs)
            progress = {p.stream_id: p for p in ray.get(commit.progress_ref)} if commit.progress_ref else {}
        except ray.exceptions.RayError as exc:
            write_error, progress = f"encode or write failed: {_cause(exc)}", {}
        for meta in commit.metas:
            state = self.active[meta.stream_id]
            state.commits -= 1
            report = state.report
            if write_error is not None:
                report.error, state.ending = write_error, "error"
            elif not meta.failed:
                report.frames += meta.frames
                report.clips += progress[meta.stream_id].clips if meta.stream_id in progress else 0
                report.last_pts = meta.last_pts if meta.last_pts is not None else report.last_pts
                self.on_frames(meta.frames)
            if meta.failed:
                report.error, state.ending = meta.error, "error"
            elif meta.final and state.ending is None:
                state.ending = "done"
            if state.ending and state.commits == 0:
                self._close(state)

    def _close(self, state: _Active) -> None:
        state.report.status = state.ending or "done"
        self._record(state.report)
        ray.kill(state.actor)
        del self.active[state.report.stream_id]

    def _record(self, report: StreamReport):
        ref = self.sinks[STREAMS].record_stream.remote(
            report.stream_id,
            report.uri,
            report.status,
            frames_indexed=report.frames,
            last_committed_pts=report.last_pts,
            error=report.error,
            model=str(self.info["model"]),
        )
        self._records.append(ref)
        return ref

    def _record_wait(self) -> None:
        ray.get(self._records)
        self._records.clear()


def _cause(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    return str(cause) if cause is not None else str(exc).splitlines()[0]


def run_index(sources: Sequence[StreamInfo], config: IndexConfig, on_frames: Callable[[int], None] | None = None) -> IndexReport:
    """Index `sources` into config.db through Ray actors; a failing stream never stops the others."""
    ensure_ray()
    return IndexRun(sources, config, on_frames).run()
