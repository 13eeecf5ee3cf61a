"""Live sources: backoff, the monotonic timeline, and reconnects against real servers (a TCP
MPEG-TS server in this process; Debian's rtsp-server-perl fed by Debian's ffmpeg)."""

from __future__ import annotations

import functools
import http.server
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from streamvl.config import LiveConfig, SamplingConfig
from streamvl.errors import DecodeError, SourceError
from streamvl.sources import LiveSource, stream_id_for
from streamvl.sources.decode import transport_options
from streamvl.sources.live import Backoff, LiveResume, LiveTimeline
from streamvl.types import FrameBatch, StreamInfo
from tests.live_servers import FFMPEG, RtspServer, TcpServer, free_port, garbage, have_rtsp_tools, spawn
from tests.videos import make_video

FAST = LiveConfig(open_timeout_s=2.0, stall_timeout_s=1.0, backoff_initial_s=0.2, backoff_max_s=0.8,
                  connect_give_up_s=2.0, max_batch_delay_s=0.0)


def info(url: str) -> StreamInfo:
    return StreamInfo(stream_id_for(url), url)


def read(source: LiveSource, frames: int, timeout: float = 30.0) -> list[FrameBatch]:
    """Batches until `frames` frames arrived (or timeout), then stop the source."""
    got, n, end = [], 0, time.monotonic() + timeout
    gen = iter(source)
    for batch in gen:
        got.append(batch)
        n += len(batch)
        if n >= frames or time.monotonic() > end:
            break
    gen.close()
    return got


def events(batches: list[FrameBatch]) -> list:
    return [e for b in batches for e in b.events]


# -- pure logic ------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_resets():
    b = Backoff(0.5, 4.0)
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    b.reset()
    assert b.next_delay() == 0.5
    with pytest.raises(ValueError):
        Backoff(2.0, 1.0)


def test_timeline_is_monotonic_across_reconnects_and_clock_jumps():
    tl = LiveTimeline(step=0.04)
    assert tl.stamp(5.0, 100.0).t == 0.0  # first frame of the stream: t = 0
    s = tl.stamp(5.5, 100.5)
    assert s.t == pytest.approx(0.5) and s.gap_s is None
    tl.new_connection()  # reconnect 3 s (wall) later; the new connection's clock starts at 0
    s = tl.stamp(0.0, 103.5)
    assert s.t == pytest.approx(3.5) and s.gap_s == pytest.approx(3.0)
    s = tl.stamp(1.0, 104.5)
    assert s.t == pytest.approx(4.5) and s.gap_s is None
    back = tl.stamp(0.2, 104.6)  # the clock went backwards within a connection: re-anchored, forward
    assert back.t > 4.5 and back.gap_s is not None
    jump = tl.stamp(1000.0, 104.7)  # a jump far beyond the wall clock: re-anchored too
    assert back.t < jump.t < back.t + 1.0


def test_timeline_resumes_after_downtime():
    tl = LiveTimeline(last_pts=50.0, last_wallclock=1000.0)
    s = tl.stamp(0.0, 1012.0)
    assert s.t == pytest.approx(62.0) and s.gap_s == pytest.approx(12.0)


# -- tcp:// MPEG-TS --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ts_payload(tmp_path_factory) -> bytes:
    spec = make_video(tmp_path_factory.mktemp("live") / "live.ts", size=(160, 120), fps=25, seconds=4.0)
    return spec.path.read_bytes()


def test_tcp_stream_that_stalls_is_reconnected_on_one_timeline(ts_payload):
    stall_s = 2.0

    def handler(conn, n):
        if n == 1:  # half the stream, then silence longer than the stall timeout
            conn.sendall(ts_payload[: len(ts_payload) // 2])
            time.sleep(stall_s)
        else:
            conn.sendall(ts_payload)
            time.sleep(5.0)

    server = TcpServer(handler)
    try:
        source = LiveSource(info(server.url), SamplingConfig(fps=2.0, size=32, batch_frames=4), FAST)
        batches = read(source, 9)
    finally:
        server.close()
    pts = np.concatenate([b.pts for b in batches])
    clocks = np.concatenate([b.wallclock for b in batches])
    assert np.all(np.diff(pts) > 0), "timeline must stay monotonic across the reconnect"
    assert np.all(np.diff(clocks) >= 0) and clocks.shape == pts.shape
    kinds = [e.kind for e in events(batches)]
    assert kinds[:2] == ["stall", "reconnect"]
    stall, reconnect = events(batches)[:2]
    assert "timed out" in stall.message and reconnect.attempts >= 1 and reconnect.gap_s > 0
    # (the demuxer hands out the last buffered frames only when the read times out, so the gap
    # measured from the last frame's arrival is shorter than the silence on the wire)
    before = np.concatenate([b.pts for b in batches if b.pts.size and b.pts[-1] < reconnect.pts])
    assert pts[len(before)] >= before[-1] + reconnect.gap_s  # the timeline jumps by the wall-clock gap
    idx = [b.first_index for b in batches]  # grid indices continue through empty event batches
    assert idx == list(np.cumsum([0] + [len(b) for b in batches[:-1]]))
    assert server.connections >= 2


def test_stream_that_never_connects_fails_with_a_typed_error():
    url = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(SourceError, match="gave up: no frame after") as err:
        read(LiveSource(info(url), SamplingConfig(size=32), FAST), 1)
    assert type(err.value) is SourceError and err.value.stream_id == stream_id_for(url) and err.value.uri == url
    assert "cannot connect" in err.value.message
    assert time.monotonic() - started < 20  # gave up, did not hang


def test_stream_of_garbage_bytes_fails_with_a_decode_error():
    server = TcpServer(garbage)
    url = server.url
    # Each attempt probes 1 MiB of junk; generous open and read timeouts keep a slow probe (or the
    # junk server's thread starved for a second) on a busy machine from being reported as a
    # connection or data timeout instead (CI once saw "timed out waiting for data" here).
    patient = FAST.model_copy(update={"open_timeout_s": 20.0, "stall_timeout_s": 20.0})
    try:
        with pytest.raises(DecodeError, match="no decodable media") as err:
            read(LiveSource(info(url), SamplingConfig(size=32), patient), 1)
    finally:
        server.close()
    assert err.value.stream_id == stream_id_for(url) and "gave up" in err.value.message


def _audio_only_ts() -> bytes:
    """One second of silent MPEG-TS audio: a stream that opens fine and has no video in it."""
    import io

    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mpegts") as out:
        stream = out.add_stream("mp2", rate=44100, layout="stereo")
        for i in range(40):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 2 * 1152), np.int16), format="s16", layout="stereo")
            frame.sample_rate, frame.pts = 44100, i * 1152
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def test_stream_without_video_fails_with_a_decode_error():
    payload = _audio_only_ts()
    server = TcpServer(lambda conn, n: (conn.sendall(payload), time.sleep(2.0)))
    try:
        with pytest.raises(DecodeError, match="no decodable media") as err:
            read(LiveSource(info(server.url), SamplingConfig(size=32), FAST), 1)
    finally:
        server.close()
    assert "no video stream" in err.value.message and "gave up" in err.value.message


def test_resumed_live_source_reports_the_downtime_and_continues_the_timeline(ts_payload):
    server = TcpServer(lambda conn, n: (conn.sendall(ts_payload), time.sleep(5.0)))
    last_wall = time.time() - 7.0  # the job was down for 7 s
    try:
        source = LiveSource(info(server.url), SamplingConfig(fps=2.0, size=32, batch_frames=4), FAST, first_index=12,
                            resume=LiveResume(last_pts=30.0, last_wallclock=last_wall))
        batches = read(source, 3)
    finally:
        server.close()
    first = events(batches)[0]
    assert first.kind == "resume" and first.gap_s == pytest.approx(7.0, abs=1.5)
    assert batches[0].first_index == 12 and batches[0].pts[0] >= 30.0 + 6.0


def test_rtsp_transport_option_reaches_ffmpeg():
    assert transport_options("rtsp://cam/1", "tcp") == {"rtsp_transport": "tcp"}
    assert transport_options("rtsp://cam/1", "udp") == {"rtsp_transport": "udp"}
    assert transport_options("rtsp://cam/1", "auto") == {}  # FFmpeg's default: UDP, then TCP
    assert transport_options("tcp://host:1", "tcp") == {}


# -- RTSP: a real server -----------------------------------------------------------------------

needs_rtsp = pytest.mark.skipif(not have_rtsp_tools(), reason="needs Debian's rtsp-server-perl and ffmpeg (see .ci/run)")


@pytest.fixture(scope="module")
def rtsp(tmp_path_factory):
    root = tmp_path_factory.mktemp("rtsp")
    video = make_video(root / "cam.mp4", size=(160, 120), fps=25, seconds=6.0, gop=25)
    server = RtspServer(root).start()
    yield server, video.path
    server.stop()


@needs_rtsp
def test_rtsp_udp_stream_stalls_then_comes_back(rtsp):
    server, video = rtsp
    server.push(video, "stall")
    source = LiveSource(info(server.url("stall")), SamplingConfig(fps=2.0, size=32, batch_frames=4),
                        FAST.model_copy(update={"rtsp_transport": "udp", "connect_give_up_s": 10.0}))
    got, seen, stopped = [], 0, False
    gen = iter(source)
    try:
        for batch in gen:
            got.append(batch)
            seen += len(batch)
            if seen >= 3 and not stopped:  # the camera goes away for 3 s
                server.stop_push("stall")
                threading.Timer(3.0, server.push, args=(video, "stall"), kwargs={"wait": False}).start()
                stopped = True
            if stopped and any(e.kind == "reconnect" for e in batch.events):
                break
    finally:
        gen.close()
        server.stop_push("stall")
    pts = np.concatenate([b.pts for b in got])
    assert np.all(np.diff(pts) > 0)
    stall, reconnect = [e for e in events(got) if e.kind in ("stall", "reconnect")][:2]
    assert (stall.kind, reconnect.kind) == ("stall", "reconnect")
    assert reconnect.gap_s > 2.0 and reconnect.attempts >= 1
    assert np.all(np.concatenate([b.wallclock for b in got]) > time.time() - 60)


# -- HLS over http: a live playlist written by ffmpeg, served over HTTP ----------------------------


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@needs_rtsp
def test_live_hls_over_http_is_read_as_a_live_stream(rtsp, tmp_path):
    _, video = rtsp
    ffmpeg = spawn(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video), "-c", "copy",
         "-f", "hls", "-hls_time", "1", "-hls_list_size", "4", "-hls_flags", "delete_segments",
         str(tmp_path / "live.m3u8")], stdin=subprocess.DEVNULL)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        deadline = time.monotonic() + 15
        while not (tmp_path / "live.m3u8").exists() or "live1.ts" not in (tmp_path / "live.m3u8").read_text():
            assert time.monotonic() < deadline, "ffmpeg wrote no playlist"
            time.sleep(0.1)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/live.m3u8"
        batches = read(LiveSource(info(url), SamplingConfig(fps=2.0, size=32, batch_frames=2), FAST), 6)
    finally:
        httpd.shutdown()
        httpd.server_close()
        ffmpeg.terminate()
        ffmpeg.wait(timeout=10)
    pts = np.concatenate([b.pts for b in batches])
    assert len(pts) >= 6 and np.all(np.diff(pts) > 0)
    assert all(b.wallclock is not None and len(b.wallclock) == len(b) for b in batches)  # live: arrival clock
    assert not any(b.final for b in batches)


@needs_rtsp
def test_udp_mpegts_stream_is_read_live(rtsp):
    _, video = rtsp
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"udp://127.0.0.1:{port}"
    ffmpeg = spawn(
        [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video), "-c", "copy",
         "-f", "mpegts", f"{url}?pkt_size=1316"], stdin=subprocess.DEVNULL)
    try:
        batches = read(LiveSource(info(url), SamplingConfig(fps=2.0, size=32, batch_frames=2), FAST), 4)
    finally:
        ffmpeg.terminate()
        ffmpeg.wait(timeout=10)
    pts = np.concatenate([b.pts for b in batches])
    assert len(pts) >= 4 and np.all(np.diff(pts) > 0)
    assert all(b.wallclock is not None for b in batches)


def test_servers_started_by_tests_die_with_the_test_process():
    """A killed pytest must not leave its RTSP server or ffmpeg publisher running (spawn)."""
    child = (
        "import os, signal, subprocess, time, psutil\n"
        "from tests.live_servers import spawn\n"
        "p = spawn(['sleep', '60'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
        "while psutil.Process(p.pid).name() != 'sleep': time.sleep(0.01)  # setpriv has set it up and exec'd\n"
        "print(p.pid, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=30,
                         cwd=Path(__file__).resolve().parents[2])
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid):
        assert time.monotonic() < deadline, f"sleep {pid} outlived the process that started it"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
