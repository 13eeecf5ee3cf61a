"""A running source: decoded frames -> presentation-time samples -> square RGB FrameBatches."""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType

import numpy as np

from streamvl.config import SamplingConfig
from streamvl.errors import DecodeError
from streamvl.pipeline.thumbnails import Thumbnailer
from streamvl.sources.decode import AV_ERRORS, VideoReader, keyframes_only, transport_options
from streamvl.sources.resize import SquareResizer
from streamvl.sources.sampling import SlotSampler
from streamvl.sources.static import RepeatDetector
from streamvl.types import FrameBatch, StreamInfo


class Source:
    """Iterator of FrameBatch for one stream; a context manager; iterate once.

    Batches hold at most `sampling.batch_frames` frames, seq counts from 0, and the last batch of
    a cleanly ended stream has final=True (possibly with 0 frames). If the stream fails, the good
    frames sampled so far are yielded first (final=False), then DecodeError is raised.
    stats: frames_decoded, frames_sampled, frames_skipped (sampled frames marked repeat: see
    streamvl.sources.static), last_pts (time of the last sampled frame), keyframes_only (the
    decode mode chosen: see SamplingConfig.decode).
    """

    def __init__(
        self,
        info: StreamInfo,
        sampling: SamplingConfig,
        start_after: float | None = None,
        open_timeout: float = 10.0,
        first_index: int = 0,
    ) -> None:
        self.info = info
        self.sampling = sampling
        self.start_after = start_after
        self.first_index = first_index  # grid index of the first frame this source yields
        self._yielded = 0
        self._reader = VideoReader(info, open_timeout, options=transport_options(info.uri, info.transport))
        self._resizer = SquareResizer(sampling.size, sar=self._reader.stream.sample_aspect_ratio)
        self._thumbnailer = Thumbnailer(sampling.thumbnail_width)
        if keyframes_only(sampling.decode, info.uri, sampling.fps, self._reader.live):
            self._reader.decode_keyframes_only()
        self._batches: Iterator[FrameBatch] | None = None
        self.stats: dict[str, float | int | None] = {"frames_decoded": 0, "frames_sampled": 0, "frames_skipped": 0,
                                                     "last_pts": None, "keyframes_only": self._reader.keyframes_only}

    @property
    def live(self) -> bool:
        """True for network sources without an end (wallclock is filled)."""
        return self._reader.live

    @property
    def duration(self) -> float | None:
        """Duration the container declares, seconds (None for live / unknown)."""
        return self._reader.duration

    def __iter__(self) -> Iterator[FrameBatch]:
        if self._batches is None:
            self._batches = self._generate()
        return self._batches

    def close(self) -> None:
        if self._batches is not None:
            self._batches.close()  # type: ignore[attr-defined]
        self._reader.close()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _generate(self) -> Iterator[FrameBatch]:
        size, cap = self.sampling.size, self.sampling.batch_frames
        sampler = SlotSampler(self.sampling.fps, self.start_after)
        detector = RepeatDetector(self.sampling.static_threshold)  # new per run: its first frame is never a repeat
        live = self._reader.live
        seq = 0
        pts: list[float] = []
        clocks: list[float] = []
        repeats: list[bool] = []
        thumbs: list[bytes | None] = []
        frames = np.empty((cap, size, size, 3), dtype=np.uint8)
        try:
            for decoded in self._reader.frames(self.start_after):
                self.stats["frames_decoded"] = self._reader.frames_decoded
                if not sampler.take(decoded.t):
                    continue
                try:
                    frames[len(pts)] = self._resizer(decoded.frame)
                except AV_ERRORS as exc:
                    message = f"cannot resize frame at t={decoded.t:.3f}s: {exc}"
                    raise DecodeError(message, stream_id=self.info.stream_id, uri=self.info.uri) from exc
                repeats.append(detector.is_repeat(frames[len(pts)]))
                thumbs.append(self._thumbnailer(decoded.frame, repeats[-1]))
                pts.append(decoded.t)
                if live:
                    clocks.append(decoded.wallclock or 0.0)
                self.stats["frames_sampled"] = int(self.stats["frames_sampled"] or 0) + 1
                self.stats["frames_skipped"] = int(self.stats["frames_skipped"] or 0) + repeats[-1]
                self.stats["last_pts"] = decoded.t
                if len(pts) == cap:
                    yield self._batch(seq, pts, frames, clocks, repeats, final=False, thumbs=thumbs)
                    seq += 1
                    pts, clocks, repeats, thumbs = [], [], [], []
                    frames = np.empty((cap, size, size, 3), dtype=np.uint8)
        except DecodeError as exc:
            if pts:  # good frames first, so they get indexed; then the error is recorded
                yield self._batch(seq, pts, frames, clocks, repeats, final=False, thumbs=thumbs)
            if exc.pts is None:
                exc.pts = self.stats["last_pts"]  # type: ignore[assignment]
            self._reader.close()
            raise
        finally:
            self.stats["frames_decoded"] = self._reader.frames_decoded
        self._reader.close()  # release the container as soon as the stream is done
        yield self._batch(seq, pts, frames, clocks, repeats, final=True, thumbs=thumbs)

    def _batch(self, seq: int, pts: list[float], frames: np.ndarray, clocks: list[float], repeats: list[bool], *,
               final: bool, thumbs: list[bytes | None] = ()) -> FrameBatch:
        n = len(pts)
        first = self.first_index + self._yielded
        self._yielded += n
        return FrameBatch(
            stream_id=self.info.stream_id,
            uri=self.info.uri,
            pts=np.asarray(pts, dtype=np.float64),
            frames=frames if n == frames.shape[0] else frames[:n].copy(),
            seq=seq,
            final=final,
            wallclock=np.asarray(clocks, dtype=np.float64) if self._reader.live else None,
            first_index=first,
            fps=self.sampling.fps,
            repeat=np.asarray(repeats, dtype=bool) if self.sampling.static_threshold else None,
            thumbs=tuple(thumbs) if self._thumbnailer.enabled else None,
        )


def open_source(
    info: StreamInfo,
    sampling: SamplingConfig,
    start_after: float | None = None,
    open_timeout: float = 10.0,
    first_index: int = 0,
) -> Source:
    """Open `info.uri` now (SourceError if it cannot be) and return its batch iterator.

    start_after: resume point (the last committed pts): yields exactly the samples an
        uninterrupted run yields after it; files seek to the keyframe before it when their index
        allows. Live sources restart t at 0 on each connection, so it rarely applies there.
    open_timeout: seconds a URL may take to connect, and later to deliver data, before failing.
    first_index: the sampled-frame index of the first frame yielded (a resume passes the index of
        the first uncommitted clip window, with start_after the time of the frame before it).
    info.fps, when set, overrides sampling.fps for this stream.
    """
    return Source(info, with_stream_fps(sampling, info), start_after=start_after, open_timeout=open_timeout,
                  first_index=first_index)


def with_stream_fps(sampling: SamplingConfig, info: StreamInfo) -> SamplingConfig:
    """The sampling config with the stream's own rate, if it has one."""
    return sampling if not info.fps else sampling.model_copy(update={"fps": float(info.fps)})
