"""Recorded live video on disk: where a stream's segments live, which cover a wall-clock range,
retention (by age and total size, oldest first), and the cut of a range into one mp4.

Layout: DIR/<stream key>/<start_ms>_<end_ms>.<ext>, where the stream key is a hash of the stream
id and the times are UTC epoch milliseconds of the segment's first frame and of its end. Names
come only from server-side values (never from a request); a segment is renamed to this form when
it is closed, so a listed segment is always complete. Segment times are wall-clock UTC because
that is the one clock the recorder (its own connection) and the index (frames.wallclock) share.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import av

from streamvl.errors import SourceError
from streamvl.service.media import cut_clip

SEGMENT_NAME = re.compile(r"^(\d{13})_(\d{13})\.(mp4|mkv)$")
MAX_GAP_S = 1.0  # a hole between segments up to this long still counts as covered (keyframe rounding)
EDGE_S = 0.25  # the range may overhang the recording by this much (the two connections' arrival jitter)


def stream_key(stream_id: str) -> str:
    """The folder name of a stream's recording: a hash, so no id ever becomes a path."""
    return hashlib.sha256(stream_id.encode()).hexdigest()[:24]


def segment_name(start: float, end: float, ext: str) -> str:
    return f"{int(round(start * 1000)):013d}_{int(round(end * 1000)):013d}.{ext}"


@dataclass(frozen=True)
class Segment:
    """One closed recording segment: [start, end) in UTC epoch seconds."""

    path: Path
    start: float
    end: float

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


class NotRecorded(LookupError):
    """The asked range is not (fully) in the recording; the message says why, in one line."""


class Recordings:
    """The recording folder: listing, lookup, retention and cuts; thread-safe."""

    def __init__(self, root: str | Path, keep_s: float | None = None, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.keep_s, self.max_bytes = keep_s, max_bytes
        self._lock = threading.Lock()

    def folder(self, stream_id: str) -> Path:
        return self.root / stream_key(stream_id)

    def segments(self, stream_id: str) -> list[Segment]:
        """The stream's closed segments, oldest first."""
        return _list(self.folder(stream_id))

    def covering(self, stream_id: str, start: float, end: float) -> list[Segment]:
        """The segments that together cover [start, end] (UTC seconds); NotRecorded if they do not."""
        have = self.segments(stream_id)
        if not have:
            raise NotRecorded("no recording of this stream (not a live stream, or --record was off)")
        first, last = have[0].start, have[-1].end
        if start < first - EDGE_S:
            raise NotRecorded(f"starts before the recording, which begins at {_utc(first)} (older parts deleted "
                              "by retention, or the recording began later)")
        if end > last + EDGE_S:
            raise NotRecorded(f"ends after the last closed segment ({_utc(last)}): the newest segment is still "
                              "being written, or the recording stopped")
        picked = [s for s in have if s.end > start and s.start < end]
        for a, b in zip(picked, picked[1:]):
            if b.start - a.end > MAX_GAP_S:
                raise NotRecorded(f"the recording has a gap from {_utc(a.end)} to {_utc(b.start)} (the camera was down)")
        return picked

    def cut(self, stream_id: str, start: float, end: float, out: Path) -> str:
        """Write [start, end] (UTC seconds) of the recording to `out` as mp4; "remux" or "transcode"."""
        picked = self.covering(stream_id, start, end)
        with tempfile.TemporaryDirectory(prefix="streamvl-span-") as tmp:
            span = Path(tmp) / f"span.{picked[0].path.suffix.lstrip('.')}"
            origin = join_segments(picked, span)
            return cut_clip(span, max(0.0, start - origin), end - origin, out)

    # -- retention

    def enforce(self, now: float | None = None) -> list[Path]:
        """Delete segments older than keep_s, then the oldest until the total is under max_bytes."""
        now = time.time() if now is None else now
        deleted: list[Path] = []
        with self._lock:
            every = sorted((s for d in _folders(self.root) for s in _list(d)), key=lambda s: (s.end, s.start))
            sizes = {s.path: s.size for s in every}
            total = sum(sizes.values())
            for s in every:
                old = self.keep_s is not None and s.end < now - self.keep_s
                big = self.max_bytes is not None and total > self.max_bytes
                if not (old or big):
                    break
                s.path.unlink(missing_ok=True)
                total -= sizes[s.path]
                deleted.append(s.path)
        return deleted

    def total_bytes(self) -> int:
        return sum(s.size for d in _folders(self.root) for s in _list(d))


def join_segments(segments: list[Segment], out: Path) -> float:
    """Stream-copy consecutive segments into one file on one timeline (each placed at its UTC
    start, so a hole stays a hole); returns the UTC time of the file's t=0."""
    origin = segments[0].start
    last_dts = -math.inf  # seconds on the joined timeline: segments whose estimated starts overlap by a
    try:                  # few ms are pushed just past the previous one (dts must increase)
        with av.open(str(out), "w") as dst:
            ostream = None
            for seg in segments:
                with av.open(str(seg.path)) as src:
                    stream = src.streams.video[0]
                    if ostream is None:
                        ostream = dst.add_stream_from_template(stream)
                    tb = stream.time_base
                    first = shift = None
                    for packet in src.demux(stream):
                        if packet.dts is None or packet.pts is None:
                            continue
                        if first is None:
                            first = packet.pts
                            shift = int(round((seg.start - origin) / tb))
                            behind = last_dts - float((packet.dts - first + shift) * tb)
                            if behind >= 0:
                                shift += int(behind / tb) + 1
                        packet.pts, packet.dts = packet.pts - first + shift, packet.dts - first + shift
                        last_dts = max(last_dts, float(packet.dts * tb))
                        packet.stream = ostream
                        dst.mux(packet)
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise SourceError(f"cannot read the recording: {exc}", uri=str(segments[0].path.parent)) from exc
    return origin


def _folders(root: Path) -> list[Path]:
    try:
        return [p for p in root.iterdir() if p.is_dir()]
    except OSError:
        return []


def _list(folder: Path) -> list[Segment]:
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    found = []
    for name in names:
        m = SEGMENT_NAME.match(name)
        if m:
            found.append(Segment(folder / name, int(m.group(1)) / 1000, int(m.group(2)) / 1000))
    return sorted(found, key=lambda s: s.start)


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"
