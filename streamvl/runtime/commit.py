"""The commit step: batch ready frames across streams into encoder calls, write each call's rows
through the sinks as one write group, and move the checkpoints of its streams once it is
committed. Plain Python over a Backend.

Exactly once. A write group (one encoder call: frame rows + clip rows of several streams) is
committed by the frames and clips sinks; only then is each stream's checkpoint advanced
(streamvl.storage.ledger) and, at most every runtime.checkpoint_interval_s, written to the
`streams` table. Groups retire in submission order. Each stream's batches go to its own encoder
(streamvl.runtime.routing; runtime.encoders): one call per encoder per turn. At most
MAX_ENCODES_AHEAD calls run ahead on each encoder, and at most MAX_COMMITS_WAITING groups per
encoder wait for their commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from streamvl.runtime.backend import Backend, BatchMeta, Ref, TaskFailed
from streamvl.runtime.recorder import Recorder
from streamvl.runtime.scheduler import StreamScheduler, ActiveStream
from streamvl.runtime.streams import StreamControl
from streamvl.storage.ledger import Ledger
from streamvl.storage.store import CLIPS, FRAMES

MAX_ENCODES_AHEAD = 2
MAX_COMMITS_WAITING = 4


@dataclass(frozen=True)
class Part:
    """One stream's share of a write group, from the decoder generation that produced it."""

    meta: BatchMeta
    generation: int


@dataclass
class WriteGroup:
    """The sink writes of one encoder call (or of a stream's tail) and the call's progress ref."""

    refs: list[Ref]
    parts: list[Part]
    progress: Ref | None = None
    encoder: str | None = None


@dataclass(frozen=True)
class Wait:
    """The loop has nothing to send: wait for one of these refs (up to timeout s)."""

    refs: list[Ref]
    timeout: float


class CommitQueue:
    """Write groups in submission order, and the encoder calls still running."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.groups: list[WriteGroup] = []
        self.running: list[tuple[str | None, Ref]] = []  # (encoder, progress ref) of calls not finished
        self.width = 1  # encoders up: the bounds scale with them
        self.peak = 0  # most groups waiting at once (backpressure check)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def encodes(self) -> list[Ref]:
        return [ref for _, ref in self.running]

    def full(self) -> bool:
        return len(self.running) >= MAX_ENCODES_AHEAD * self.width or len(self.groups) >= MAX_COMMITS_WAITING * self.width

    def busy(self, encoder: str | None) -> bool:
        """This encoder has MAX_ENCODES_AHEAD calls running already."""
        return sum(1 for key, _ in self.running if key == encoder) >= MAX_ENCODES_AHEAD

    def refs(self) -> list[Ref]:
        """Every sink write in flight."""
        return [r for g in self.groups for r in g.refs]

    def add(self, group: WriteGroup) -> None:
        if group.progress is not None:
            self.running.append((group.encoder, group.progress))
        self.groups.append(group)
        self.peak = max(self.peak, len(self.groups))

    def retire(self) -> Iterator[tuple[WriteGroup, TaskFailed | None, dict[str, Any]]]:
        """The head groups whose writes are all done, in order: (group, failure, progress by stream)."""
        self.running = [(k, r) for k, r in self.running if not self.backend.wait([r], timeout=0)]
        while self.groups:
            head = self.groups[0]
            if head.refs and len(self.backend.wait(head.refs, num_returns=len(head.refs), timeout=0)) < len(head.refs):
                return
            self.groups.pop(0)
            failure, progress = None, {}
            try:
                self.backend.get(head.refs)
                progress = {p.stream_id: p for p in self.backend.get(head.progress)} if head.progress else {}
            except TaskFailed as exc:
                failure = exc
            yield head, failure, progress


class Batcher:
    """Sends the ready head batches (in stream order) to their encoders, one call per encoder, and
    each call's rows to the sinks."""

    def __init__(self, backend: Backend, scheduler: StreamScheduler, control: StreamControl, committer: "Committer",
                 encode_batch: int):
        self.backend, self.scheduler, self.control, self.committer = backend, scheduler, control, committer
        self.encode_batch = encode_batch

    def feed(self) -> Wait | None:
        """Send one call per encoder that has ready batches; else say what to wait for."""
        commits = self.committer.queue
        commits.width = max(1, len(self.backend.encoders()))
        if commits.full():
            return Wait(commits.encodes + commits.refs(), 1.0)
        heads = self.scheduler.heads()
        if not heads:
            return Wait(commits.refs(), 0.2)
        if not self.backend.wait(list(heads), num_returns=1, timeout=1.0):
            return None
        calls: dict[str | None, tuple[list[Part], list[Ref]]] = {}
        frames: dict[str | None, int] = {}
        busy = False
        for meta_ref in self.backend.wait(list(heads), num_returns=len(heads), timeout=0):
            state = heads[meta_ref]
            key = state.encoder
            if key not in calls and commits.busy(key):
                busy = True  # this encoder has enough calls running: the batch waits
                continue
            if frames.get(key, 0) >= self.encode_batch:
                continue  # this encoder's call is full: the batch goes in a later one
            meta = self.control.take(state)
            if meta is None:
                continue
            parts, batches = calls.setdefault(key, ([], []))
            parts.append(Part(meta, state.generation))
            if not meta.failed:
                batches.append(state.batch)
                frames[key] = frames.get(key, 0) + meta.frames
        for key, (parts, batches) in calls.items():
            self._submit(key, parts, batches)
        return Wait(commits.encodes, 1.0) if busy and not calls else None

    def _submit(self, encoder: str | None, parts: list[Part], batches: list[Ref]) -> None:
        refs, progress = [], None
        if batches:
            frame_rows, clip_rows, progress = self.backend.encode(batches, encoder)
            refs = [self.backend.write(FRAMES, frame_rows), self.backend.write(CLIPS, clip_rows)]
        for part in parts:
            if part.meta.failed:  # keep the frames that decoded before the failure
                refs.append(self.backend.write(CLIPS, self.backend.finish(part.meta.stream_id, encoder)))
        self.committer.submit(WriteGroup(refs, parts, progress, encoder))


class Committer:
    """Retires committed write groups: advances checkpoints, replays or ends streams, closes them."""

    def __init__(self, backend: Backend, scheduler: StreamScheduler, control: StreamControl, ledger: Ledger,
                 recorder: Recorder, on_frames: Callable[[int], None]):
        self.backend, self.scheduler, self.control = backend, scheduler, control
        self.ledger, self.recorder, self.on_frames = ledger, recorder, on_frames
        self.queue = CommitQueue(backend)

    def submit(self, group: WriteGroup) -> None:
        for part in group.parts:
            self.scheduler.active[part.meta.stream_id].commits += 1
        self.queue.add(group)

    def settle(self) -> None:
        """Retire write groups in order; a stream ends once its last group is committed."""
        for group, failure, progress in self.queue.retire():
            self._apply(group, failure, progress)

    def _apply(self, group: WriteGroup, failure: TaskFailed | None, progress: dict[str, Any]) -> None:
        if failure is not None and failure.system:
            self.backend.await_restarts()  # a replay sent to a process still restarting would fail at once
        for part in group.parts:
            meta = part.meta
            state = self.scheduler.active.get(meta.stream_id)
            if state is None:
                continue
            state.commits -= 1
            self._note_events(state, meta.events)
            if part.generation != state.generation or state.ending:
                self.control.close_if_idle(state)  # stale: an older decoder's data, or the stream is ending
                continue
            p = progress.get(meta.stream_id)
            if failure is not None and failure.system:
                self.control.rewind(state, f"encode or write failed: {failure.message}")
            elif failure is not None:
                self.control.end(state, "error", f"encode or write failed: {failure.message}")
            elif p is not None and p.error:
                self.control.rewind(state, f"encoder refused a batch: {p.error}")
            else:
                self._advance(state, meta, p)
            self.control.close_if_idle(state)

    def _advance(self, state: ActiveStream, meta: BatchMeta, p: Any) -> None:
        if p is not None:
            if self.ledger.commit(state.stream_id, p.next_window, p.resume_after, p.seen, p.last_pts, p.last_wallclock):
                state.rewinds = 0
            grown = state.report.committed(self.ledger[state.stream_id], p, time.time())
            if grown > 0:
                self.on_frames(grown)
        if meta.failed:
            self.control.end(state, "error", meta.error)
        elif meta.final:
            self.control.end(state, "done")
        else:
            self.recorder.record(state)  # throttled; the closing record is always written

    def _note_events(self, state: ActiveStream, events: tuple) -> None:
        """Count reconnects and gaps, set the live status, and store the events."""
        if not events:
            return
        state.report.note(events)
        self.recorder.events(list(events))
        self.recorder.record(state, force=True)
