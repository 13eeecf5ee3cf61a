"""Live sources: reconnect on stalls with capped exponential backoff, one monotonic timeline.

A live stream (rtsp, tcp/udp MPEG-TS, live HLS) has no end: when no frame arrives for
`stall_timeout_s`, or the server closes the connection, the source reconnects (waits of
backoff_initial_s, doubling, capped at backoff_max_s). Each connection restarts its own clock,
so frame times are mapped onto one timeline that only moves forward: within a connection they
advance with the stream's pts; across a reconnect (or a job restart) they continue from the last
frame, offset by the wall-clock gap. Every frame carries its arrival wall-clock (UTC seconds).

What happened is reported as StreamEvents attached to the next batch ("stall" in an empty batch
as soon as the stall is seen, then "reconnect"/"resume"/"discontinuity" with the gap). A stream
that never delivers a frame fails after connect_give_up_s (SourceError, or DecodeError when it
connected but sent no decodable media); a stream that stalls fails after give_up_s, if set.

A URL that turns out to have an end (HTTP file, VOD HLS) is read once, like a file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from streamvl.config import LiveConfig, SamplingConfig
from streamvl.errors import DecodeError, SourceError
from streamvl.pipeline.thumbnails import Thumbnailer
from streamvl.sources.decode import AV_ERRORS, VideoReader, is_url, keyframes_only, transport_options
from streamvl.sources.resize import SquareResizer
from streamvl.sources.sampling import SlotSampler
from streamvl.sources.static import RepeatDetector
from streamvl.sources.source import Source, with_stream_fps
from streamvl.types import FrameBatch, StreamEvent, StreamInfo

Clock = Callable[[], float]


class Backoff:
    """Capped exponential waits: initial, 2*initial, 4*initial, ... up to cap; reset on success."""

    def __init__(self, initial: float, cap: float) -> None:
        if not 0 < initial <= cap:
            raise ValueError(f"backoff needs 0 < initial <= cap, got {initial}, {cap}")
        self.initial, self.cap, self.attempts = initial, cap, 0

    def next_delay(self) -> float:
        delay = min(self.cap, self.initial * 2.0**self.attempts)
        self.attempts += 1
        return delay

    def reset(self) -> None:
        self.attempts = 0


@dataclass(frozen=True)
class Stamp:
    """A frame's place on the stream timeline; gap_s is set when the timeline was re-anchored
    after earlier frames (a reconnect, a resume, or a jump in the stream's own clock)."""

    t: float
    gap_s: float | None = None


class LiveTimeline:
    """Maps per-connection frame times onto one strictly increasing stream timeline.

    last_pts / last_wallclock: where an earlier run stopped (resume); the first frame then lands
    at last_pts + the wall-clock time since last_wallclock. step: the nominal frame interval
    (minimum advance at a re-anchor). jump_s: a within-connection jump of the stream clock by
    more than this beyond the wall clock counts as a discontinuity.
    """

    def __init__(self, last_pts: float | None = None, last_wallclock: float | None = None,
                 step: float = 0.04, jump_s: float = 10.0) -> None:
        self.last_t, self.last_wall = last_pts, last_wallclock
        self.step, self.jump_s = step, jump_s
        self._anchor: tuple[float, float] | None = None  # (connection time, stream time)
        self._last_conn: float | None = None

    def new_connection(self) -> None:
        """The next frame comes from a new connection: its clock is unrelated to the last one."""
        self._anchor = None

    def stamp(self, conn_t: float, wallclock: float) -> Stamp:
        if self._anchor is not None and self._continuous(conn_t, wallclock):
            t = self._anchor[1] + (conn_t - self._anchor[0])
            if self.last_t is None or t > self.last_t:
                return self._keep(conn_t, wallclock, Stamp(t))
        if self.last_t is None:  # the very first frame of the stream
            return self._reanchor(conn_t, wallclock, 0.0, None)
        gap = wallclock - self.last_wall if self.last_wall is not None else 0.0
        return self._reanchor(conn_t, wallclock, self.last_t + max(self.step, gap), max(0.0, gap))

    def _continuous(self, conn_t: float, wallclock: float) -> bool:
        if self._last_conn is None or self.last_wall is None:
            return True
        ahead = (conn_t - self._last_conn) - (wallclock - self.last_wall)
        return conn_t > self._last_conn and ahead <= self.jump_s

    def _reanchor(self, conn_t: float, wallclock: float, t: float, gap: float | None) -> Stamp:
        self._anchor = (conn_t, t)
        return self._keep(conn_t, wallclock, Stamp(t, gap))

    def _keep(self, conn_t: float, wallclock: float, stamp: Stamp) -> Stamp:
        self.last_t, self.last_wall, self._last_conn = stamp.t, wallclock, conn_t
        return stamp


@dataclass(frozen=True)
class LiveResume:
    """Where a live stream's committed data ends: its last frame's time and arrival."""

    last_pts: float
    last_wallclock: float


class _Batcher:
    """Collects sampled frames into FrameBatches; live batches leave early for freshness."""

    def __init__(self, info: StreamInfo, sampling: SamplingConfig, first_index: int, max_delay: float) -> None:
        self.info, self.size, self.cap, self.fps = info, sampling.size, sampling.batch_frames, sampling.fps
        self.max_delay = max_delay
        self.detector = RepeatDetector(sampling.static_threshold)  # one per decoder run, across reconnects
        self.thumbnailer = Thumbnailer(sampling.thumbnail_width)
        self.index = first_index  # grid index of the next frame
        self.seq = 0
        self.events: list[StreamEvent] = []
        self._reset()

    def _reset(self) -> None:
        self.pts: list[float] = []
        self.clocks: list[float] = []
        self.repeats: list[bool] = []
        self.thumbs: list[bytes | None] = []
        self.frames = np.empty((self.cap, self.size, self.size, 3), dtype=np.uint8)

    def add(self, t: float, image: np.ndarray, wallclock: float, decoded=None) -> bool:
        """Add a sampled frame (and its decoded frame, for the thumbnail); True if it is a repeat."""
        self.frames[len(self.pts)] = image
        self.repeats.append(self.detector.is_repeat(self.frames[len(self.pts)]))
        self.thumbs.append(self.thumbnailer(decoded, self.repeats[-1]) if decoded is not None else None)
        self.pts.append(t)
        self.clocks.append(wallclock)
        return self.repeats[-1]

    def due(self, now: float) -> bool:
        """Full, or waiting for the next sample would hold the first frame past max_delay."""
        if not self.pts:
            return bool(self.events)
        return len(self.pts) == self.cap or now + 1.0 / self.fps - self.clocks[0] >= self.max_delay

    def take(self, final: bool = False) -> FrameBatch:
        n = len(self.pts)
        batch = FrameBatch(
            stream_id=self.info.stream_id, uri=self.info.uri, pts=np.asarray(self.pts, np.float64),
            frames=self.frames if n == self.cap else self.frames[:n].copy(), seq=self.seq, final=final,
            wallclock=np.asarray(self.clocks, np.float64), first_index=self.index, fps=self.fps,
            events=tuple(self.events), repeat=np.asarray(self.repeats, bool) if self.detector.enabled else None,
            thumbs=tuple(self.thumbs) if self.thumbnailer.enabled else None)
        self.seq += 1
        self.index += n
        self.events = []
        self._reset()
        return batch


class LiveSource:
    """Iterator of FrameBatch for a live URL that reconnects forever (or until it gives up)."""

    def __init__(self, info: StreamInfo, sampling: SamplingConfig, live: LiveConfig, *, first_index: int = 0,
                 resume: LiveResume | None = None, start_after: float | None = None,
                 clock: Clock = time.time, sleep: Callable[[float], None] = time.sleep) -> None:
        self.info = info
        self.sampling = with_stream_fps(sampling, info)
        self.live = live
        self.first_index, self.start_after = first_index, start_after
        self.clock, self.sleep = clock, sleep
        step = 1.0 / self.sampling.fps
        self.timeline = LiveTimeline(resume.last_pts if resume else None, resume.last_wallclock if resume else None,
                                     step=min(step, 0.04), jump_s=max(10.0, 2 * live.stall_timeout_s))
        self._resumed = resume is not None
        self._options = transport_options(info.uri, info.transport or live.rtsp_transport)
        self.stats = {"connections": 0, "reconnects": 0, "frames_sampled": 0, "frames_skipped": 0}

    def __iter__(self) -> Iterator[FrameBatch]:
        return self._generate()

    def _generate(self) -> Iterator[FrameBatch]:
        batcher = _Batcher(self.info, self.sampling, self.first_index, self.live.max_batch_delay_s)
        sampler = SlotSampler(self.sampling.fps)
        resizer = None
        backoff = Backoff(self.live.backoff_initial_s, self.live.backoff_max_s)
        started = last_frame_at = self.clock()
        delivered = stalled = False
        attempts = 0
        last_error: SourceError | None = None
        while True:
            attempts += 1
            try:
                reader = VideoReader(self.info, self.live.open_timeout_s, read_timeout=self.live.stall_timeout_s,
                                     options=self._options)
            except SourceError as exc:
                last_error = exc
                self._give_up_check(delivered, started, last_frame_at, attempts, exc)
                self.sleep(backoff.next_delay())
                continue
            if not reader.live:  # an HTTP file or VOD playlist: read it once, like a file
                reader.close()
                yield from Source(self.info, self.sampling, start_after=self.start_after,
                                  open_timeout=self.live.open_timeout_s, first_index=self.first_index)
                return
            self.stats["connections"] += 1
            if keyframes_only(self.sampling.decode, self.info.uri, self.sampling.fps, live=True):
                reader.decode_keyframes_only()  # only when asked for: "auto" decodes all on live sources
            if resizer is None:
                resizer = SquareResizer(self.sampling.size, sar=reader.stream.sample_aspect_ratio)
            self.timeline.new_connection()
            reason = "the server closed the connection"
            try:
                for decoded in reader.frames():
                    now = decoded.wallclock or self.clock()
                    stamp = self.timeline.stamp(decoded.t, now)
                    if stamp.gap_s is not None or (self._resumed and not delivered):
                        batcher.events.append(self._event(stamp, now, attempts, delivered))
                        self._resumed = False
                    attempts, last_frame_at = 0, now
                    backoff.reset()
                    delivered, stalled = True, False
                    if not sampler.take(stamp.t):
                        continue
                    try:
                        self.stats["frames_skipped"] += batcher.add(stamp.t, resizer(decoded.frame), now, decoded.frame)
                    except AV_ERRORS as exc:
                        raise DecodeError(f"cannot resize frame at t={stamp.t:.3f}s: {exc}", stream_id=self.info.stream_id,
                                          uri=self.info.uri, pts=stamp.t) from exc
                    self.stats["frames_sampled"] += 1
                    if batcher.due(self.clock()):
                        yield batcher.take()
            except DecodeError as exc:
                if "cannot resize" in exc.message:
                    raise
                reason, last_error = exc.message, exc
            finally:
                reader.close()
            # Stalled or closed: hand out what we have, say so, then reconnect after a pause.
            now = self.clock()
            if delivered and not stalled:
                batcher.events.append(StreamEvent(self.info.stream_id, "stall", now, pts=self.timeline.last_t,
                                                  message=reason))  # the gap is known at the reconnect
                stalled = True
            if batcher.pts or batcher.events:
                yield batcher.take()
            self._give_up_check(delivered, started, last_frame_at, max(attempts, 1), last_error)
            self.sleep(backoff.next_delay())

    def _event(self, stamp: Stamp, now: float, attempts: int, delivered: bool) -> StreamEvent:
        if not delivered and self._resumed:
            kind, message = "resume", "indexing resumed after downtime"
        elif attempts > 0:
            kind, message = "reconnect", f"reconnected after {attempts} attempt(s)"
            self.stats["reconnects"] += 1
        else:
            kind, message = "discontinuity", "the stream's clock jumped; timeline re-anchored"
        return StreamEvent(self.info.stream_id, kind, now, pts=stamp.t, gap_s=stamp.gap_s, attempts=attempts,
                           message=message)

    def _give_up_check(self, delivered: bool, started: float, last_frame_at: float, attempts: int,
                       error: SourceError | None) -> None:
        now = self.clock()
        ctx = {"stream_id": self.info.stream_id, "uri": self.info.uri}
        cause = f": {error.message}" if error is not None else ""
        if not delivered and now - started >= self.live.connect_give_up_s:
            cls = DecodeError if isinstance(error, DecodeError) else SourceError
            raise cls(f"gave up: no frame after {attempts} connection attempt(s) over {now - started:.1f}s{cause}", **ctx)
        if delivered and self.live.give_up_s is not None and now - last_frame_at >= self.live.give_up_s:
            raise DecodeError(f"gave up: stalled for {now - last_frame_at:.1f}s after {attempts} reconnect attempt(s)"
                              f"{cause}", pts=self.timeline.last_t, **ctx)

    def close(self) -> None:
        """Nothing held between batches beyond the generator; kept for Source's interface."""


def open_stream(info: StreamInfo, sampling: SamplingConfig, live: LiveConfig, *, first_index: int = 0,
                start_after: float | None = None, resume: LiveResume | None = None) -> Source | LiveSource:
    """The batch iterator of one stream, as the runtime reads it.

    Files: a Source from start_after (SourceError now if it cannot be opened). URLs: a LiveSource
    that reconnects (one that turns out to have an end is read once, from start_after); resume
    continues a live timeline where committed data ends.
    """
    if is_url(info.uri):
        return LiveSource(info, sampling, live, first_index=first_index, resume=resume, start_after=start_after)
    from streamvl.sources.source import open_source

    return open_source(info, sampling, start_after=start_after, first_index=first_index)
