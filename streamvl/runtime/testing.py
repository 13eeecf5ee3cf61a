"""In-memory stand-ins for a run's machinery, like bytewax's TestingSource / TestingSink.

ListSource is a stream given as its sampled frame times; MemoryDB holds the tables a run writes,
keyed like the LanceDB tables; FakeEncoder has the encode stage's contract (real clip windows,
no model). streamvl.runtime.memory_backend.MemoryBackend runs them in this process, so
streamvl.runtime.engine.Run is tested end to end without Ray (tests/unit/test_scheduler.py).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from streamvl.errors import DecodeError
from streamvl.pipeline.encode import StreamProgress
from streamvl.pipeline.windows import Windower
from streamvl.storage.schema import stream_state
from streamvl.storage.store import CLIPS, FRAMES
from streamvl.types import FrameBatch, StreamEvent, StreamInfo, StreamState


@dataclass
class ListSource:
    """A stream as its sampled frame times (the TestingSource), decoded `batch` frames at a time
    like streamvl.sources: full batches, then a final one (possibly empty); resumable after any
    time with a grid index; fail_at: a DecodeError at that frame, after the batches before it;
    events: live events delivered with the batch that holds the given frame index."""

    pts: Sequence[float]
    batch: int = 2
    fps: float = 1.0
    fail_at: int | None = None
    events: Mapping[int, Sequence[StreamEvent]] = field(default_factory=dict)

    def batches(self, info: StreamInfo, first_index: int, start_after: float | None) -> Iterator[FrameBatch]:
        rest = [(i, float(p)) for i, p in enumerate(self.pts) if start_after is None or p > start_after]
        good = [(i, p) for i, p in rest if self.fail_at is None or i < self.fail_at]
        chunks = [good[lo:lo + self.batch] for lo in range(0, len(good), self.batch)]
        if self.fail_at is None and len(good) % self.batch == 0:
            chunks.append([])  # a cleanly ended stream closes with a final batch, possibly empty
        index = first_index
        for seq, chunk in enumerate(chunks):
            pts = np.array([p for _, p in chunk], dtype=np.float64)
            yield FrameBatch(info.stream_id, info.uri, pts, np.zeros((len(chunk), 1, 1, 3), np.uint8), seq=seq,
                             final=self.fail_at is None and seq == len(chunks) - 1, first_index=index, fps=self.fps,
                             events=tuple(e for i, _ in chunk for e in self.events.get(i, ())),
                             wallclock=pts + 1e9 if info.uri.startswith("rtsp:") else None)
            index += len(chunk)
        if self.fail_at is not None:
            raise DecodeError("corrupt data", stream_id=info.stream_id, uri=info.uri, pts=self.pts[self.fail_at])


class MemoryDB:
    """The tables of a run in memory (the TestingSink): upserts replace rows of the same key
    (frames: stream and time; clips: stream, adapter and start), so a replay never duplicates."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[tuple, dict]] = {FRAMES: {}, CLIPS: {}}
        self.rows: dict[str, dict[str, Any]] = {}  # the `streams` table
        self.events: list[StreamEvent] = []
        self.request_rows: list[dict[str, Any]] = []
        self.rewrites: Counter[str] = Counter()  # rows written again under a key already held
        self._requests_made = 0

    def write(self, table: str, rows: list[dict[str, Any]]) -> int:
        for row in rows:
            key = (row["stream_id"], row["pts"]) if table == FRAMES else (row["stream_id"], row["adapter"], row["start"])
            self.rewrites[table] += key in self.tables[table]
            self.tables[table][key] = row
        return len(rows)

    def window_starts(self, stream_id: str) -> list[float]:
        return sorted(k[2] for k in self.tables[CLIPS] if k[0] == stream_id)

    def frame_times(self, stream_id: str) -> list[float]:
        return sorted(k[1] for k in self.tables[FRAMES] if k[0] == stream_id)

    def request(self, stream_id: str, uri: str, action: str = "run") -> None:
        """A `stream_requests` row, as `streamvl streams add/remove` writes it."""
        self._requests_made += 1
        self.request_rows = [r for r in self.request_rows if r["stream_id"] != stream_id]
        self.request_rows.append({"stream_id": stream_id, "uri": uri, "action": action,
                                  "requested_at": float(self._requests_made)})

    # the reads a run makes (streamvl.runtime.streams.StoreView)
    def stream(self, stream_id: str) -> dict[str, Any] | None:
        """A stream's stored row as a dict (column -> value), for tests."""
        row = self.rows.get(stream_id)
        return dict(row) if row is not None else None

    def stream_state(self, stream_id: str) -> StreamState | None:
        row = self.rows.get(stream_id)
        return stream_state(row) if row is not None else None

    def last_frame(self, stream_id: str) -> tuple[float | None, float | None]:
        rows = [r for k, r in self.tables[FRAMES].items() if k[0] == stream_id]
        if not rows:
            return None, None
        walls = [r["wallclock"] for r in rows if r["wallclock"] is not None]
        return max(r["pts"] for r in rows), max(walls) if walls else None

    def stream_keys(self, stream_id: str) -> tuple[list[float], dict[str, list[float]]]:
        starts: dict[str, list[float]] = {}
        for k in self.tables[CLIPS]:
            if k[0] == stream_id:
                starts.setdefault(k[1], []).append(k[2])
        return self.frame_times(stream_id), starts

    def requests(self) -> list[dict[str, Any]]:
        return list(self.request_rows)


class FakeEncoder:
    """The encode stage's contract without a model: a decoder's first batch (seq 0) starts its
    stream's windows at its grid index, later batches must continue them, others are refused."""

    def __init__(self, window: int, stride: int):
        self.window, self.stride = window, stride
        self.windows: dict[str, Windower] = {}

    def process(self, batches: Sequence[FrameBatch | None]) -> tuple[list, list, list[StreamProgress]]:
        frames, clips, progress = [], [], []
        for batch in (b for b in batches if b is not None):
            sid, refused = batch.stream_id, self._sync(batch)
            if refused is not None:
                progress.append(StreamProgress(sid, 0, 0, None, False, error=refused))
                continue
            windower = self.windows[sid]
            done = windower.push(batch.pts, np.zeros((len(batch), 1), np.float32))
            if batch.final:
                done += windower.flush()
                del self.windows[sid]
            walls = batch.wallclock if batch.wallclock is not None else [None] * len(batch)
            frames += [{"stream_id": sid, "pts": float(p), "wallclock": w} for p, w in zip(batch.pts, walls)]
            clips += _clip_rows(done)
            next_window, resume_after = windower.checkpoint()
            progress.append(StreamProgress(
                sid, len(batch), len(done), float(batch.pts[-1]) if len(batch) else None, batch.final,
                seen=windower.seen, next_window=next_window, resume_after=resume_after,
                last_wallclock=float(walls[-1]) if len(batch) and walls[-1] is not None else None))
        return frames, clips, progress

    def _sync(self, batch: FrameBatch) -> str | None:
        windower = self.windows.get(batch.stream_id)
        if batch.seq == 0:
            try:
                self.windows[batch.stream_id] = Windower(batch.stream_id, self.window, self.stride, 1.0 / batch.fps,
                                                         start_index=batch.first_index)
            except ValueError as exc:
                return str(exc)
            return None
        if windower is None or windower.seen != batch.first_index:
            return f"out of sync: batch {batch.seq} starts at frame {batch.first_index}"
        return None

    def finish(self, stream_id: str) -> list[dict[str, Any]]:
        windower = self.windows.pop(stream_id, None)
        return _clip_rows(windower.flush() if windower else [])


def _clip_rows(windows) -> list[dict[str, Any]]:
    return [{"stream_id": w.stream_id, "adapter": "meanpool", "start": w.start, "end": w.end} for w in windows]
