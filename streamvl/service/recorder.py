"""Live recording: each live stream's packets copied (no re-encode) into segments of about
`segment_s` seconds, each starting on a keyframe, on the stream's own connection.

Why here and not in the indexer (docs/service.md, "Recording"): like Frigate, whose record
process only moves and expires segments while detection reads its own frames, recording is kept
apart from analysis. The indexer samples a few frames a second inside a Ray actor, may lag,
restart, or run on another node; a recording needs every packet, on the machine that serves the
clips, and must go on while indexing stalls (and the reverse: a recorder error never touches
indexing). The price is a second connection per camera. Both sides stamp frames with wall-clock
UTC on arrival, which is how index times map to recorded segments (recordings.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from streamvl.errors import SourceError
from streamvl.service.recordings import Recordings, Segment, segment_name

log = logging.getLogger("streamvl.service.recorder")
MP4_CODECS = {"h264", "hevc", "av1", "vp9", "mpeg4", "mjpeg"}  # copied into .mp4; anything else into .mkv
Clock = Callable[[], float]


def container_for(codec: str) -> str:
    """The segment container that takes `codec` as it is: mp4 (browsers, faststart cuts) else Matroska."""
    return "mp4" if codec in MP4_CODECS else "mkv"


def unused_name(folder: Path, start: float, end: float, ext: str) -> tuple[Path, float]:
    """The segment's path, its end moved on by milliseconds while that name is taken: a source read
    faster than real time (a file, a replayed buffer) gives consecutive segments the same span, and
    a closed segment must never be replaced."""
    while (path := folder / segment_name(start, end, ext)).exists():
        end += 0.001
    return path, end


class SegmentWriter:
    """Packets of one video stream -> closed segment files in `folder`, named by their UTC span.

    A segment starts on a keyframe and closes at the first keyframe at least segment_s after its
    start (or at close()). Its UTC start is the earliest `arrival - (pts - first pts)` over its
    packets: a late packet can only make arrival later, so the least-delayed one places it best.
    """

    def __init__(self, folder: Path, segment_s: float, on_closed: Callable[[Segment], None] = lambda s: None) -> None:
        self.folder, self.segment_s, self.on_closed = folder, segment_s, on_closed
        self._out: av.container.OutputContainer | None = None
        self._ostream = None
        self._part: Path | None = None
        self._ext = "mp4"

    def write(self, packet: av.Packet, arrival: float) -> None:
        """Add one demuxed packet that arrived at `arrival` (UTC seconds)."""
        if packet.pts is None or packet.dts is None or packet.size == 0:
            return
        stream = packet.stream
        tb = float(packet.time_base)
        if self._out is not None and packet.is_keyframe and (packet.pts - self._first) * tb >= self.segment_s:
            self.close()
        if self._out is None:
            if not packet.is_keyframe:
                return  # a segment must start where a decoder can
            self._open(stream)
            self._first, self._tb, self._start, self._end_pts = packet.pts, tb, float("inf"), packet.pts
        rel = (packet.pts - self._first) * tb
        self._start = min(self._start, arrival - rel)
        self._end_pts = max(self._end_pts, packet.pts + (packet.duration or 0))
        packet.pts, packet.dts = packet.pts - self._first, packet.dts - self._first  # each file starts at 0
        packet.stream = self._ostream
        self._out.mux(packet)

    def _open(self, stream) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ext = container_for(stream.codec_context.name)
        self._part = self.folder / f"recording.part.{self._ext}"
        self._out = av.open(str(self._part), "w", format="mp4" if self._ext == "mp4" else "matroska")
        self._ostream = self._out.add_stream_from_template(stream)

    def close(self) -> Segment | None:
        """Finish the open segment (if any) and give it its final name."""
        if self._out is None:
            return None
        out, part = self._out, self._part
        self._out = self._ostream = self._part = None
        try:
            out.close()
        except av.error.FFmpegError as exc:
            part.unlink(missing_ok=True)
            raise OSError(f"cannot finish a segment: {exc}") from exc
        end = self._start + (self._end_pts - self._first) * self._tb
        if end <= self._start:
            part.unlink(missing_ok=True)
            return None
        final, end = unused_name(self.folder, self._start, end, self._ext)
        os.replace(part, final)
        seg = Segment(final, round(self._start, 3), round(end, 3))
        self.on_closed(seg)
        return seg


@dataclass
class RecorderStatus:
    """What one stream's recorder did: shown by GET /api/v1/health."""

    uri: str
    segments: int = 0
    errors: int = 0
    last_error: str | None = None
    connected: bool = False


class StreamRecorder:
    """A thread that records one live stream; reconnects with capped backoff; never raises."""

    def __init__(self, stream_id: str, uri: str, recordings: Recordings, segment_s: float, *,
                 open_timeout_s: float = 10.0, stall_timeout_s: float = 5.0, backoff_max_s: float = 10.0,
                 clock: Clock = time.time) -> None:
        self.stream_id, self.uri, self.recordings = stream_id, uri, recordings
        self.segment_s, self.clock = segment_s, clock
        self.open_timeout_s, self.stall_timeout_s, self.backoff_max_s = open_timeout_s, stall_timeout_s, backoff_max_s
        self.status = RecorderStatus(uri)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"record-{stream_id}", daemon=True)

    def start(self) -> "StreamRecorder":
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _closed(self, seg: Segment) -> None:
        self.status.segments += 1
        self.recordings.enforce()

    def _run(self) -> None:
        delay = 0.5
        while not self._stop.is_set():
            writer = SegmentWriter(self.recordings.folder(self.stream_id), self.segment_s, self._closed)
            got = False
            try:
                got = self._record(writer)
            except Exception as exc:  # noqa: BLE001 - any failure is one line, counted, then retried
                self._error(exc)
            finally:
                self.status.connected = False
                try:
                    writer.close()
                except Exception as exc:  # noqa: BLE001
                    self._error(exc)
            delay = 0.5 if got else min(self.backoff_max_s, delay * 2)
            self._stop.wait(delay)

    def _record(self, writer: SegmentWriter) -> bool:
        """Copy packets until the stream ends, stalls or we are stopped; True if any arrived."""
        from streamvl.sources.decode import open_container

        got = False
        with open_container(self.uri, self.open_timeout_s, stream_id=self.stream_id,
                            read_timeout=self.stall_timeout_s) as container:
            if not container.streams.video:
                raise SourceError("no video stream", stream_id=self.stream_id, uri=self.uri)
            stream = container.streams.video[0]
            self.status.connected = True
            for packet in container.demux(stream):
                if self._stop.is_set():
                    break
                writer.write(packet, self.clock())
                got = True
        if not self._stop.is_set():
            self._error(SourceError("the stream ended", stream_id=self.stream_id, uri=self.uri))
        return got

    def _error(self, exc: BaseException) -> None:
        line = " ".join(str(getattr(exc, "message", None) or exc).split())[:300] or type(exc).__name__
        self.status.errors += 1
        self.status.last_error = line
        log.warning("recording %s: %s", self.stream_id, line)


class Recorder:
    """Keeps one StreamRecorder per live stream the index knows (polled), and retention by age."""

    def __init__(self, recordings: Recordings, live_streams: Callable[[], dict[str, str]], segment_s: float,
                 poll_s: float = 2.0, **recorder_options) -> None:
        self.recordings, self.live_streams, self.segment_s = recordings, live_streams, segment_s
        self.poll_s, self.options = poll_s, recorder_options
        self.recorders: dict[str, StreamRecorder] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self.last_error: str | None = None

    def start(self) -> "Recorder":
        self.recordings.root.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.poll_s + 30)
        for rec in list(self.recorders.values()):
            rec._stop.set()
        for rec in list(self.recorders.values()):
            rec.stop()
        self.recorders.clear()

    def status(self) -> dict[str, dict]:
        return {sid: vars(r.status).copy() for sid, r in sorted(self.recorders.items())}

    def sync(self) -> None:
        """Start recorders for new live streams, stop those of streams no longer live, expire old segments."""
        wanted = self.live_streams()
        for sid, rec in list(self.recorders.items()):
            if wanted.get(sid) != rec.uri:
                rec.stop()
                del self.recorders[sid]
        for sid, uri in wanted.items():
            if sid not in self.recorders:
                self.recorders[sid] = StreamRecorder(sid, uri, self.recordings, self.segment_s, **self.options).start()
        self.recordings.enforce()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sync()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - a failed poll (table being rewritten) is retried
                self.last_error = " ".join(str(exc).split())[:300]
                log.warning("recorder: %s", self.last_error)
            self._stop.wait(self.poll_s)
