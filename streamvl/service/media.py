"""Video for the page: which indexed files a browser plays as they are, and cuts of any segment.

A stream's file is found only through its row in the streams table (by id): nothing a request
sends becomes a path. `clip` cuts [start, end] into an mp4: packets are copied (remux) when the
codec fits mp4 and a keyframe lies on the cut's start, else the segment is re-encoded to H.264
with PyAV. Cuts are kept in a small on-disk cache, since a video element asks for byte ranges
of the same cut several times.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from streamvl.errors import SourceError
from streamvl.sources.decode import is_url, local_path

# What Chromium/Firefox play in <video> without plugins (containers by FFmpeg's names).
BROWSER_CONTAINERS = {"mov,mp4,m4a,3gp,3g2,mj2": "video/mp4", "matroska,webm": "video/webm"}
BROWSER_VIDEO = {"h264", "vp8", "vp9", "av1"}
BROWSER_AUDIO = {"aac", "mp3", "opus", "vorbis", "flac"}
REMUX_VIDEO = {"h264", "av1", "vp9"}  # codecs copied as they are: mp4 carries them and browsers play them
CACHE_CLIPS = 64
KEYFRAME_SLACK_S = 0.05


@dataclass(frozen=True)
class VideoFile:
    path: Path
    mime: str | None  # set when a browser can play the file as it is


class MediaLibrary:
    """Finds stream files (by id, via the streams table) and cuts clips; thread-safe."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self._dir = Path(cache_dir or tempfile.mkdtemp(prefix="streamvl-clips-"))
        self._dir.mkdir(parents=True, exist_ok=True)
        self._owned = cache_dir is None
        self._probe: dict[tuple[str, int, int], str | None] = {}
        self._clips: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()
        self._cutting: dict[str, threading.Lock] = {}

    def close(self) -> None:
        if self._owned:
            shutil.rmtree(self._dir, ignore_errors=True)

    def file_of(self, row: dict | None) -> VideoFile | None:
        """The readable local video file of a streams row, or None (URL, moved, not a video)."""
        if row is None or not row.get("uri") or is_url(row["uri"]):
            return None
        path = local_path(row["uri"])
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        key = (str(path), st.st_mtime_ns, st.st_size)
        if key not in self._probe:
            self._probe[key] = _browser_mime(path)
        mime = self._probe[key]
        return None if mime == "" else VideoFile(path, mime)

    def clip(self, video: VideoFile, start: float, end: float) -> tuple[Path, str]:
        """An mp4 of [start, end] of the file, and how it was made ("remux" or "transcode")."""
        st = video.path.stat()
        key = f"{video.path}|{st.st_mtime_ns}|{st.st_size}|{start:.3f}|{end:.3f}"
        return self.cached(key, lambda out: cut_clip(video.path, start, end, out))

    def cached(self, what: str, make: Callable[[Path], str]) -> tuple[Path, str]:
        """The cut named by `what` (any string that changes when its source does): made once by
        make(out) -> "remux" | "transcode", kept in the cache, shared by concurrent requests."""
        key = hashlib.sha256(what.encode()).hexdigest()[:24]
        with self._lock:
            cutting = self._cutting.setdefault(key, threading.Lock())
        with cutting:  # one cut per key at a time; the others wait for it and reuse it
            with self._lock:
                done = self._clips.get(key)
                if done is not None and done.exists():
                    self._clips.move_to_end(key)
                    return done, done.suffixes[-2].lstrip(".")
            tmp = self._dir / f"{key}.part.mp4"
            try:
                how = make(tmp)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            final = self._dir / f"{key}.{how}.mp4"
            os.replace(tmp, final)
            with self._lock:
                self._clips[key] = final
                while len(self._clips) > CACHE_CLIPS:
                    _, old = self._clips.popitem(last=False)
                    old.unlink(missing_ok=True)
                self._cutting.pop(key, None)
            return final, how


def _browser_mime(path: Path) -> str:
    """The MIME type when a browser plays the file as it is; "" when it is not a video; None otherwise."""
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                return ""
            v = c.streams.video[0].codec_context
            mime = BROWSER_CONTAINERS.get(c.format.name)
            audio_ok = all(a.codec_context.name in BROWSER_AUDIO for a in c.streams.audio)
            pix_ok = (v.pix_fmt or "") in ("yuv420p", "yuvj420p", "yuv420p10le") or v.name != "h264"
            if mime and v.name in BROWSER_VIDEO and audio_ok and pix_ok:
                return mime
            return None  # type: ignore[return-value]
    except (av.error.FFmpegError, OSError):
        return ""


def cut_clip(path: Path, start: float, end: float, out: Path) -> str:
    """Write [start, end] (stream seconds) of a video file to `out` as mp4; returns "remux" or "transcode"."""
    try:
        with av.open(str(path)) as src:
            stream = src.streams.video[0]
            origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            if stream.codec_context.name in REMUX_VIDEO and _keyframe_at(src, stream, origin + start):
                _remux(src, stream, origin + start, origin + end, out)
                return "remux"
        with av.open(str(path)) as src:
            _transcode(src, src.streams.video[0], origin + start, origin + end, out)
            return "transcode"
    except (av.error.FFmpegError, OSError, IndexError) as exc:
        raise SourceError(f"cannot cut {start:.2f}-{end:.2f}s: {exc}", uri=str(path)) from exc


def _seek(src: av.container.InputContainer, stream: av.VideoStream, t: float) -> None:
    src.seek(max(0, int(t / stream.time_base)), stream=stream, backward=True)


def _keyframe_at(src: av.container.InputContainer, stream: av.VideoStream, t: float) -> bool:
    """Whether the keyframe a backward seek to t lands on is at t (within KEYFRAME_SLACK_S)."""
    _seek(src, stream, t + KEYFRAME_SLACK_S)
    for packet in src.demux(stream):
        if packet.pts is None:
            continue
        return bool(packet.is_keyframe) and abs(float(packet.pts * stream.time_base) - t) <= KEYFRAME_SLACK_S
    return False


def _remux(src: av.container.InputContainer, stream: av.VideoStream, t0: float, t1: float, out: Path) -> None:
    _seek(src, stream, t0 + KEYFRAME_SLACK_S)
    with av.open(str(out), "w", format="mp4") as dst:
        ostream = dst.add_stream_from_template(stream)
        first = None
        for packet in src.demux(stream):
            if packet.dts is None and packet.pts is None:
                continue
            t = float(packet.pts * stream.time_base) if packet.pts is not None else None
            if t is not None and t >= t1 - 1e-6 and packet.is_keyframe:
                break
            if t is not None and t >= t1 - 1e-6:
                continue
            if first is None:  # the keyframe at t0: its pts becomes 0 (dts may go below, as B-frames need)
                first = packet.pts if packet.pts is not None else packet.dts
            packet.pts = None if packet.pts is None else packet.pts - first
            packet.dts = None if packet.dts is None else packet.dts - first
            packet.stream = ostream
            dst.mux(packet)


def _transcode(src: av.container.InputContainer, stream: av.VideoStream, t0: float, t1: float, out: Path) -> None:
    stream.thread_type = "AUTO"
    rate = stream.average_rate or stream.guessed_rate or Fraction(25, 1)
    with av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        ostream = dst.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=rate,
                                 options={"preset": "veryfast", "crf": "23"})
        ctx = stream.codec_context
        ostream.width, ostream.height = ctx.width - ctx.width % 2, ctx.height - ctx.height % 2
        ostream.pix_fmt = "yuv420p"
        time_base = Fraction(1, 90000)
        ostream.codec_context.time_base = time_base
        _seek(src, stream, t0)
        shown = None  # the frame on screen at t0: the last one at or before it, shown from 0

        def put(frame: av.VideoFrame, at: float) -> None:
            img = frame.reformat(width=ostream.width, height=ostream.height, format="yuv420p")
            img.pts, img.time_base = int(round(at / time_base)), time_base
            dst.mux(ostream.encode(img))

        for frame in src.decode(stream):
            if frame.pts is None:
                continue
            t = float(frame.pts * frame.time_base)
            if t <= t0 + 1e-6:
                shown = frame
                continue
            if t >= t1 - 1e-6:
                break
            if shown is not None:
                put(shown, 0.0)
                shown = None
            put(frame, t - t0)
        if shown is not None:
            put(shown, 0.0)
        dst.mux(ostream.encode(None))
