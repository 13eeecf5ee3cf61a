"""Open a container (local file or URL) and iterate its video frames with times in seconds.

Every PyAV/FFmpeg failure leaves this module as a typed error: SourceError when a source cannot
be opened, DecodeError when it opened but its data is corrupt, stalls, or ends well before the
duration the container declares. Frame times are seconds from the stream's start.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import unquote, urlsplit

import av
import av.container

from streamvl.errors import DecodeError, SourceError
from streamvl.types import StreamInfo

# What PyAV raises: FFmpegError for libav* failures, OSError for file-level ones.
AV_ERRORS: tuple[type[BaseException], ...] = (av.error.FFmpegError, OSError)

# Schemes that are live by nature (no end, wall-clock matters).
LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "rtp", "tcp", "udp", "srt"})
# rtmp's `timeout` option means "listen for an incoming connection"; only rw_timeout is safe there.
_NO_TIMEOUT_OPTION = frozenset({"rtmp", "rtmps", "rtmpe", "rtmpt", "rtmpte", "rtmpts"})

# Truncation: decoding must stop short of the declared duration by more than both of these.
TRUNCATED_FRACTION = 0.9
TRUNCATED_SECONDS = 1.0

_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")

ARRIVALS_KEPT = 512  # packets a live decoder may hold before their frames come out


def url_scheme(uri: str) -> str | None:
    """Lower-case scheme of a `scheme://...` URI, else None."""
    m = _URL_RE.match(uri)
    return m.group(1).lower() if m else None


def is_url(uri: str) -> bool:
    """True for network URIs; `file://` and plain paths are local."""
    scheme = url_scheme(uri)
    return scheme is not None and scheme != "file"


def local_path(uri: str) -> Path:
    """The filesystem path of a plain path or `file://` URI (user-expanded, not resolved)."""
    if url_scheme(uri) == "file":
        return Path(unquote(urlsplit(uri).path))
    return Path(uri).expanduser()


def network_options(uri: str, timeout: float) -> dict[str, str]:
    """FFmpeg protocol options so connecting and reading give up after `timeout` seconds.

    rw_timeout is the generic I/O timeout of every protocol; `timeout` is the socket timeout of
    rtsp/http/tcp/udp/srt (microseconds) but would switch rtmp into listen mode, so not there.
    """
    micros = str(max(1, int(timeout * 1_000_000)))
    options = {"rw_timeout": micros}
    if url_scheme(uri) not in _NO_TIMEOUT_OPTION:
        options["timeout"] = micros
    return options


def _describe(exc: BaseException) -> str:
    """A short reason from an av/OS error, without the errno noise."""
    if isinstance(exc, av.error.ExitError):  # PyAV's interrupt callback fired
        return "timed out waiting for data"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason)


def declared_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    """Seconds the container declares for the stream (stream header first, then container)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    return None


def transport_options(uri: str, transport: str | None) -> dict[str, str]:
    """FFmpeg options for an rtsp lower transport ("udp" or "tcp"); none for other schemes/auto."""
    if url_scheme(uri) in ("rtsp", "rtsps") and transport in ("udp", "tcp"):
        return {"rtsp_transport": transport}
    return {}


def open_container(uri: str, open_timeout: float, *, stream_id: str | None = None, read_timeout: float | None = None,
                   options: dict[str, str] | None = None) -> av.container.InputContainer:
    """av.open with timeouts for URLs and file checks for paths; SourceError on any failure.

    read_timeout: seconds without data before a read fails (URLs; default open_timeout).
    options: extra FFmpeg protocol/demuxer options for URLs (e.g. rtsp_transport).
    """
    ctx = {"stream_id": stream_id, "uri": uri}
    kwargs: dict[str, object] = {"metadata_errors": "replace"}  # odd tag bytes must not fail the open
    if is_url(uri):
        target = uri
        read_timeout = open_timeout if read_timeout is None else read_timeout
        kwargs["options"] = network_options(uri, max(open_timeout, read_timeout)) | (options or {})
        kwargs["timeout"] = (open_timeout, read_timeout)  # PyAV's interrupt callback: a backstop
    else:
        path = local_path(uri)
        if not path.exists():
            raise SourceError(f"no such file: {path}", **ctx)
        if not path.is_file():
            raise SourceError(f"not a regular file: {path}", **ctx)
        if path.stat().st_size == 0:
            raise SourceError(f"empty file (0 bytes): {path}", **ctx)
        target = str(path)
    try:
        return av.open(target, mode="r", **kwargs)  # type: ignore[arg-type]
    except AV_ERRORS as exc:
        if is_url(uri) and isinstance(exc, av.error.InvalidDataError):  # connected, but not media
            raise DecodeError(f"no decodable media from {uri}: {_describe(exc)}", **ctx) from exc
        what = "cannot connect to" if is_url(uri) else "not a readable media file"
        raise SourceError(f"{what} {uri}: {_describe(exc)}", **ctx) from exc


def probe_duration(path: str | Path) -> float | None:
    """Declared duration of a local video file, or None if it cannot be probed (no error)."""
    try:
        with av.open(str(path), mode="r", metadata_errors="replace") as container:
            stream = container.streams.best("video")
            return declared_duration(container, stream) if stream is not None else None
    except AV_ERRORS:
        return None


# "auto" decode mode: how far into a file the keyframe interval is measured (demux only, no decoding).
KEYFRAME_PROBE_SECONDS = 20.0
KEYFRAME_PROBE_PACKETS = 2000


def keyframe_gap(uri: str, horizon_s: float = KEYFRAME_PROBE_SECONDS,
                 max_packets: int = KEYFRAME_PROBE_PACKETS) -> float | None:
    """Longest time between keyframes of a local file's video within its first `horizon_s` seconds.

    Demuxes packets without decoding them (milliseconds). The stretch from the last keyframe to
    the last packet read counts too (to the end of the file when it is shorter than the horizon).
    None when it cannot be told: a URL, no readable video, no keyframe, or no timestamps.
    """
    if is_url(uri):
        return None
    try:
        with av.open(str(local_path(uri)), mode="r", metadata_errors="replace") as container:
            stream = container.streams.best("video")
            if stream is None or stream.time_base is None:
                return None
            tb = stream.time_base
            keys: list[float] = []
            first = end = None
            for n, packet in enumerate(container.demux(stream)):
                if packet.pts is None or n >= max_packets:
                    if packet.pts is None and not packet.size:
                        continue  # the flush packet at the end
                    break
                t = float(packet.pts * tb)
                first = t if first is None else min(first, t)
                end = max(end or t, t + float((packet.duration or 0) * tb))
                if packet.is_keyframe:
                    keys.append(t)
                if t - first > horizon_s:
                    break
    except AV_ERRORS:
        return None
    if not keys or first is None or end is None:
        return None
    keys.sort()
    stretches = [keys[0] - first, *(b - a for a, b in zip(keys, keys[1:])), end - keys[-1]]
    return max(stretches)


def keyframes_only(mode: str, uri: str, fps: float, live: bool) -> bool:
    """Whether to decode keyframes only, for decode mode "all" | "keyframes" | "auto".

    auto: only for local files whose measured keyframe interval is at most the sampling interval,
    so every sampling slot still holds a keyframe (one sample per slot, as decoding all gives);
    live sources and URLs decode all (their keyframe interval is not known ahead).
    """
    if mode == "keyframes":
        return True
    if mode != "auto" or live:
        return False
    gap = keyframe_gap(uri)
    return gap is not None and gap <= 1.0 / fps + 1e-6


@dataclass(frozen=True, slots=True)
class DecodedFrame:
    """A decoded frame, its time in seconds from stream start, and receipt time for live sources."""

    t: float
    frame: av.VideoFrame
    wallclock: float | None = None


class VideoReader:
    """The best video stream of an open source; `frames()` yields every decoded frame in order."""

    def __init__(self, info: StreamInfo, open_timeout: float = 10.0, read_timeout: float | None = None,
                 options: dict[str, str] | None = None) -> None:
        self.stream_id = info.stream_id
        self.uri = info.uri
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        self._options = options
        self.container = open_container(info.uri, open_timeout, stream_id=info.stream_id, read_timeout=read_timeout,
                                        options=options)
        try:
            stream = self.container.streams.best("video")
        except AV_ERRORS:
            stream = None
        if stream is None:
            self.container.close()
            raise self._no_video()
        self.stream: av.VideoStream = stream
        self.time_base: Fraction = stream.time_base or Fraction(1, av.time_base)
        self.duration = declared_duration(self.container, stream)
        # Live: a network source that is live by scheme or declares no end (live HLS, streams).
        self.live = is_url(info.uri) and (url_scheme(info.uri) in LIVE_SCHEMES or self.duration is None)
        # pts of t=0. Live: the first decoded frame's, because a live start_time is only the first pts
        # FFmpeg saw (past the B-frames after an RTSP session's first IDR), and frames before it follow.
        self.origin: int | None = None if self.live else stream.start_time
        self.frames_decoded = 0
        self._arrived: dict[int, float] = {}  # live: pts -> when its packet arrived (a frame's wallclock)
        self._last_wall = 0.0
        self.last_t: float | None = None  # time of the last frame decoded successfully
        self._last_end: float | None = None  # ... plus its duration
        rate = stream.average_rate or stream.guessed_rate
        self._step = 1.0 / float(rate) if rate else 0.04
        self.keyframes_only = False
        self._demuxed_end: float | None = None  # end of the last packet read (keyframes only: frames lag it)

    def decode_keyframes_only(self) -> None:
        """From now on the decoder drops every frame that is not a keyframe (FFmpeg skip_frame NONKEY):
        packets are still demuxed, but the expensive decoding of the frames between keyframes is skipped."""
        self.keyframes_only = True
        self.stream.codec_context.skip_frame = "NONKEY"

    def frames(self, start_after: float | None = None) -> Iterator[DecodedFrame]:
        """Every decoded frame, in presentation order; starts near `start_after` when seekable.

        Raises DecodeError on corrupt or stalled data (pts=None: the caller knows the last good
        sample) and, after a clean end, if the data stopped well short of the declared duration.
        """
        packets = self._packets(start_after)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except AV_ERRORS as exc:
                raise self._error(f"reading failed after t={self._at()}: {_describe(exc)}") from exc
            if self.live and packet.pts is not None:  # stamp arrival now: decoders hold frames back a few packets
                self._arrived[packet.pts] = time.time()
                if len(self._arrived) > ARRIVALS_KEPT:
                    del self._arrived[next(iter(self._arrived))]
            if self.keyframes_only and packet.pts is not None and self.origin is not None:
                end = self._time_of(packet.pts) + float((packet.duration or 0) * self.time_base)
                self._demuxed_end = end if self._demuxed_end is None else max(self._demuxed_end, end)
            try:
                decoded = packet.decode()
                if self.live and self.keyframes_only and packet.is_keyframe:
                    decoded = [*decoded, *self._drain()]
            except AV_ERRORS as exc:
                tail = self._tail(packets)
                if tail is None:  # good data follows: the stream is corrupt here
                    raise self._error(f"corrupt data after t={self._at()}: {_describe(exc)}") from exc
                for frame in tail:  # a partial last packet: the data just ends (truncated)
                    yield self._stamp(frame)
                break
            for frame in decoded:
                if frame.pts is None and self.live and self.last_t is None:
                    continue  # a live session's untimed first picture (RTSP's IDR): no place on the timeline
                yield self._stamp(frame)
        self._check_complete(start_after)

    def close(self) -> None:
        self.container.close()

    def _drain(self) -> list[av.VideoFrame]:
        """The frames the decoder still holds, and a decoder ready for the next packet. Decoding
        keyframes only, H.264's reorder buffer (has_b_frames) fills with keyframes alone: each one
        would come out only after the next has_b_frames keyframes arrived (2 GOPs, 2 s and more,
        of live latency); keyframes are never reordered among themselves, so draining after each
        one gives the same frames in the same order, at once."""
        context = self.stream.codec_context
        frames = context.decode(None)
        context.flush_buffers()
        return frames

    # -- internals -------------------------------------------------------------------------

    def _packets(self, start_after: float | None) -> Iterator[av.Packet]:
        """Demuxed packets of the video stream, from the keyframe before start_after if possible."""
        if start_after is None or start_after <= 0 or self.live or self.origin is None:
            return iter(self.container.demux(self.stream))
        tb = self.time_base
        target = self.origin + int(start_after * tb.denominator // tb.numerator)
        try:
            self.container.seek(target, stream=self.stream, backward=True)
            packets = iter(self.container.demux(self.stream))
            first = next(packets, None)
            if first is not None and first.is_keyframe:
                first_pts = first.pts if first.pts is not None else first.dts
                if first_pts is not None and self._time_of(first_pts) <= start_after:
                    return itertools.chain([first], packets)
        except AV_ERRORS:
            pass
        # Overshot, landed off a keyframe, or failed (index-less formats: mpegts, raw h264). Seeking
        # back to 0 is no safer there (mpegts lands past the first GOP), so reopen and decode all.
        self._reopen()
        return iter(self.container.demux(self.stream))

    def _no_video(self) -> SourceError:
        """A source that opened but holds no video. From a URL that is a peer which connected and sent
        no decodable video (a DecodeError, as for bytes no demuxer recognises): random bytes, for one,
        sometimes probe as a container without streams."""
        if is_url(self.uri):
            return DecodeError(f"no decodable media from {self.uri}: no video stream", stream_id=self.stream_id, uri=self.uri)
        return SourceError("no video stream", stream_id=self.stream_id, uri=self.uri)

    def _reopen(self) -> None:
        """Fresh container positioned at the start (after a seek that cannot be trusted)."""
        self.container.close()
        self.container = open_container(self.uri, self._open_timeout, stream_id=self.stream_id,
                                        read_timeout=self._read_timeout, options=self._options)
        stream = self.container.streams.best("video")
        if stream is None:
            raise self._no_video()
        self.stream = stream
        if self.keyframes_only:
            self.decode_keyframes_only()

    def _time_of(self, pts: int) -> float:
        if self.origin is None:
            self.origin = pts
        tb = self.time_base
        return (pts - self.origin) * tb.numerator / tb.denominator

    def _stamp(self, frame: av.VideoFrame) -> DecodedFrame:
        if frame.pts is not None:
            t = self._time_of(frame.pts)
        else:  # no timestamp: assume the nominal frame interval
            t = 0.0 if self.last_t is None else self.last_t + self._step
        self.frames_decoded += 1
        self.last_t = t
        dur = frame.duration * self.time_base.numerator / self.time_base.denominator if frame.duration else 0.0
        self._last_end = t + dur
        wallclock = None
        if self.live:  # when its packet, and every earlier frame's, had arrived: monotonic despite reordering
            arrived = self._arrived.pop(frame.pts, None) if frame.pts is not None else None
            wallclock = max(time.time() if arrived is None else arrived, self._last_wall)
            self._last_wall = wallclock
        return DecodedFrame(t=t, frame=frame, wallclock=wallclock)

    def _tail(self, packets: Iterator[av.Packet]) -> list[av.VideoFrame] | None:
        """After a decode error: None if more data follows; else the frames the decoder still
        holds, drained with the closing flush packets."""
        frames: list[av.VideoFrame] = []
        try:
            for packet in packets:
                if packet.size:
                    return None
                frames.extend(packet.decode())
        except AV_ERRORS:
            pass
        return frames

    def _at(self) -> str:
        return "start" if self.last_t is None else f"{self.last_t:.3f}s"

    def _declared(self) -> str:
        return "" if self.duration is None else f" (declared duration {self.duration:.3f}s)"

    def _error(self, message: str, pts: float | None = None) -> DecodeError:
        return DecodeError(message + self._declared(), stream_id=self.stream_id, uri=self.uri, pts=pts)

    def _check_complete(self, start_after: float | None) -> None:
        if self.frames_decoded == 0 and start_after is None:
            raise self._error("no frame could be decoded")
        if self.live or self.duration is None or self.last_t is None:
            return
        end = self._last_end if self._last_end is not None else self.last_t
        if self.keyframes_only and self._demuxed_end is not None:  # data may go on well past the last keyframe
            end = max(end, self._demuxed_end)
        if end < TRUNCATED_FRACTION * self.duration and self.duration - end > TRUNCATED_SECONDS:
            raise self._error(f"truncated: decoding stopped at t={self.last_t:.3f}s", pts=self.last_t)
