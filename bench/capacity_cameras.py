"""Live cameras on 127.0.0.1 for bench_capacity: generated h264 videos served in real time.

rtsp (default): one GStreamer RTSP server process with a mount per camera (bench/gst_cameras.py,
the pipeline of the live tests' TCP-only server tests/gst_rtsp_server.py). tcp: one ffmpeg per
camera sending MPEG-TS to the first tcp:// client (`-re`, looped). The live tests' other RTSP
server (rtsp-server-perl) needs an ffmpeg publisher per mount and speaks UDP only: at 150
cameras that is 150 publishers plus a relay, where GStreamer serves them all from one process.
"""

from __future__ import annotations

import subprocess
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import psutil

from streamvl.lab.synthetic.clips import iter_frames, sample_stream
from tests.live_servers import FFMPEG, SYSTEM_PYTHON, free_port, have_gst_rtsp, spawn, wait_listening

GST_CAMERAS = Path(__file__).with_name("gst_cameras.py")


def static_video(path: Path, seed: int, seconds: float, fps: int, size: tuple[int, int]) -> Path:
    """A still shapes-world scene with per-frame sensor noise, h264, a keyframe every second."""
    import av

    spec = sample_stream(seed, 1.0, width=size[0], height=size[1], fps=float(fps))
    still = next(iter(iter_frames(spec)))[1].astype(np.int16)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps, options={"g": str(fps), "preset": "veryfast", "crf": "23"})
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        for i in range(int(seconds * fps)):
            noisy = np.clip(still + rng.normal(0, 2.0, still.shape), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(noisy, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


class TsCameras:
    """One ffmpeg per camera serving a looping video as real-time MPEG-TS to the first tcp:// client."""

    transport = None

    def __init__(self, videos: list[Path], log_dir: Path) -> None:
        self.ports = [free_port() for _ in videos]
        self.urls = [f"tcp://127.0.0.1:{port}" for port in self.ports]
        self.procs = []
        for i, (video, url) in enumerate(zip(videos, self.urls)):
            log = open(log_dir / f"cam{i}.log", "wb")
            self.procs.append(spawn(
                [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
                 "-c", "copy", "-f", "mpegts", f"{url}?listen=1"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT))

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every ffmpeg listens (checked without connecting: its listener serves one client only)."""
        deadline = time.monotonic() + timeout
        waiting = set(self.ports)
        while waiting:
            waiting -= {c.laddr.port for c in psutil.net_connections("tcp4") if c.status == psutil.CONN_LISTEN}
            if any(p.poll() is not None for p in self.procs) or (waiting and time.monotonic() > deadline):
                raise RuntimeError(f"{len(waiting)} ffmpeg cameras did not start")
            time.sleep(0.2)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()


class RtspCameras:
    """One GStreamer RTSP server (TCP interleaved) with a mount per camera; videos are not looped."""

    transport = "tcp"

    def __init__(self, videos: list[Path], log_dir: Path) -> None:
        if not have_gst_rtsp():
            raise SystemExit("needs GStreamer's RTSP server (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi "
                             "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad), or use --cameras tcp")
        self.port = free_port()
        self.urls = [f"rtsp://127.0.0.1:{self.port}/cam{i}" for i in range(len(videos))]
        listing = log_dir / "mounts.txt"
        listing.write_text("".join(f"cam{i} {v}\n" for i, v in enumerate(videos)))
        self.log = log_dir / "gst-cameras.log"
        with open(self.log, "wb") as log:
            self.proc = spawn([SYSTEM_PYTHON, str(GST_CAMERAS), str(self.port), str(listing)],
                              stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.procs = [self.proc]

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while "ready" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"GStreamer cameras not ready: {self.log.read_text(errors='replace')[-500:]!r}")
            time.sleep(0.1)
        wait_listening(self.port)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def loop_video(src: Path, dst: Path, times: int) -> Path:
    """`src` repeated `times` times into one file by remuxing packets (no re-encode)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream_in = inp.streams.video[0]
        stream_out = out.add_stream_from_template(stream_in)
        packets = [p for p in inp.demux(stream_in) if p.dts is not None]
        span = max(p.pts for p in packets) + packets[1].duration if len(packets) > 1 else 1
        for k in range(times):
            for p in packets:
                shift = span if k else 0  # the packets are reused: each pass moves them one span on
                p.pts, p.dts, p.stream = p.pts + shift, p.dts + shift, stream_out
                out.mux(p)
    return dst


def live_cameras(kind: str, moving: list[Path], still: list[Path], n: int, n_static: int, video_s: float,
                 outlast_s: float, work: Path) -> "RtspCameras | TsCameras":
    """n cameras, the first n_static showing `still` videos, the rest `moving` (alternating). rtsp:
    GStreamer does not loop, so each video of video_s seconds is repeated to outlast outlast_s;
    tcp: ffmpeg loops them itself."""
    if kind == "rtsp":
        times = int(outlast_s // video_s) + 1
        moving = [loop_video(v, v.with_name(f"long-{v.name}"), times) for v in moving]
        still = [loop_video(v, v.with_name(f"long-{v.name}"), times) for v in still]
    return (RtspCameras if kind == "rtsp" else TsCameras)(
        [(still if i < n_static else moving)[i % 2] for i in range(n)], work)
