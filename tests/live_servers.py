"""Real live servers for tests, started and stopped by pid: an RTSP server (Debian's
rtsp-server-perl: clients on one port, sources on another, UDP transport only) fed by Debian's
ffmpeg, a TCP-only RTSP server (GStreamer's, tests/gst_rtsp_server.py), and small TCP servers
that send MPEG-TS, stall, or send garbage."""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

RTSP_SERVER = "rtsp-server-perl"
FFMPEG = "/usr/bin/ffmpeg"  # Debian's ffmpeg (PyAV bundles its own libraries, not the binary)
SYSTEM_PYTHON = "/usr/bin/python3"  # has Debian's python3-gi (the venv has no GStreamer bindings)
GST_RTSP_SERVER = Path(__file__).with_name("gst_rtsp_server.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_udp_block(count: int, low: int = 20_100, high: int = 32_000, tries: int = 200) -> int:
    """The even first port of `count` consecutive UDP ports on 127.0.0.1 that nothing holds now,
    from a random place below the kernel's ephemeral range (32768+). rtsp-server-perl takes its RTP
    ports from such a block (2 per source and per client SETUP); its default, 20000 for every
    instance, made a second server (a rerun, another test) fail to receive its camera."""
    import random

    for _ in range(tries):
        base = random.randrange(low, high - count) & ~1
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {count} free consecutive UDP ports in {low}..{high}")


def probe_rtsp(url: str, timeout: float = 20.0, transport: str = "udp") -> bool:
    """True once `url` gives a decoded video frame (PyAV) within `timeout` seconds: the camera is
    really playing, not just announced."""
    import av

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with av.open(url, options={"rtsp_transport": transport, "stimeout": "3000000", "timeout": "3000000"},
                         timeout=(5.0, 3.0)) as box:
                for _ in box.decode(video=0):
                    return True
        except (av.error.FFmpegError, OSError):
            time.sleep(0.3)
    return False


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def have_rtsp_tools() -> bool:
    return shutil.which(RTSP_SERVER) is not None and Path(FFMPEG).exists()


@functools.cache
def have_gst_rtsp() -> bool:
    """True when the system python has GStreamer's RTSP server bindings and the elements
    tests/gst_rtsp_server.py needs (Debian: gir1.2-gst-rtsp-server-1.0, python3-gi)."""
    try:
        check = subprocess.run([SYSTEM_PYTHON, str(GST_RTSP_SERVER), "--check"], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return check.returncode == 0


def tied(cmd: list[str]) -> list[str]:
    """`cmd` run under util-linux's setpriv so the kernel sends it SIGTERM when the process that
    started it dies: a pytest killed mid-run must not leave servers and publishers running (they
    made the next run's live tests fail). The kernel ties the child to the thread that starts
    it, so a child started from another thread (a Timer's) is left untied: that thread's exit
    would kill it at once."""
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return list(cmd)
    return [setpriv, "--pdeathsig", "TERM", "--", *cmd]


def spawn(cmd: list[str], **popen) -> subprocess.Popen:
    """subprocess.Popen of `cmd`, tied to this process (`tied`): how tests start servers and publishers."""
    return subprocess.Popen(tied(cmd), **popen)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RtspServer:
    """rtsp-server-perl on 127.0.0.1; `push(video)` starts an ffmpeg that loops the video into a
    mount (real time, stream copy), `stop_push()` ends it (the stream stalls for its readers)."""

    RTP_PORTS = 200  # the server's UDP block: 2 ports per source stream and per client SETUP (reconnects add some)

    def __init__(self, log_dir: Path) -> None:
        self.client_port = self.source_port = self.rtp_port = 0
        self.log_dir = log_dir
        self.server: subprocess.Popen | None = None
        self.pushers: dict[str, subprocess.Popen] = {}

    def start(self, attempts: int = 5, timeout: float = 15.0) -> "RtspServer":
        """Start on ports the OS has free now (TCP ports from free_port, an RTP block from
        free_udp_block), and wait until this process listens on both TCP ports; a port taken in the
        meantime makes the server exit, and it is started again on fresh ports."""
        for attempt in range(1, attempts + 1):
            self.client_port, self.source_port = free_port(), free_port()
            self.rtp_port = free_udp_block(self.RTP_PORTS)
            log = open(self.log_dir / "rtsp-server.log", "ab")
            self.server = spawn(
                [RTSP_SERVER, "--clientport", str(self.client_port), "--serverport", str(self.source_port),
                 "--client_listen_address", "127.0.0.1", "--source_listen_address", "127.0.0.1", "--loglevel", "2",
                 "--rtp_start_port", str(self.rtp_port)],
                stdout=log, stderr=subprocess.STDOUT)
            if self._owns_ports(timeout):
                return self
            _stop(self.server)
        raise RuntimeError(f"rtsp-server-perl did not start in {attempts} attempts; see {self.log_dir / 'rtsp-server.log'}")

    def _owns_ports(self, timeout: float) -> bool:
        """True once the server process itself listens on its client and source ports."""
        import psutil

        want = {self.client_port, self.source_port}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.server.poll() is None:
            try:
                conns = psutil.Process(self.server.pid).net_connections(kind="tcp")
            except psutil.Error:
                conns = []
            if want <= {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}:
                return True
            time.sleep(0.05)
        return False

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.client_port}/{mount}"

    def push(self, video: Path, mount: str, wait: bool = True, attempts: int = 3) -> None:
        """Loop `video` into `mount` in real time. wait: return once a client decodes a frame from the
        mount (probe_rtsp), starting the publisher again if it did not get there (a file with a short
        GOP, e.g. make_video(gop=fps), gives a client its first picture within a second)."""
        for _ in range(attempts):
            self._spawn_pusher(video, mount)
            if not wait or probe_rtsp(self.url(mount)):
                return
            self.stop_push(mount)
        raise RuntimeError(f"camera {mount!r} did not start in {attempts} attempts; see {self.log_dir}/push-{mount}.log")

    def _spawn_pusher(self, video: Path, mount: str) -> None:
        log = open(self.log_dir / f"push-{mount}.log", "ab")
        self.pushers[mount] = spawn(
            [FFMPEG, "-hide_banner", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video), "-c", "copy",
             "-f", "rtsp", f"rtsp://127.0.0.1:{self.source_port}/{mount}"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def stop_push(self, mount: str) -> None:
        _stop(self.pushers.pop(mount, None))

    def stop(self) -> None:
        for mount in list(self.pushers):
            self.stop_push(mount)
        _stop(self.server)


class GstRtspTcpServer:
    """GStreamer's RTSP server on 127.0.0.1 serving one h264 file at one mount, TCP transport only
    (RTP interleaved in the RTSP connection; a client asking for UDP gets 461). Real-time paced,
    not looped: each client that finds no other one watching starts the file from its beginning."""

    def __init__(self, video: Path, log_dir: Path, mount: str = "cam1") -> None:
        self.video, self.log_dir, self.mount = video, log_dir, mount
        self.port = free_port()
        self.server: subprocess.Popen | None = None

    def start(self, timeout: float = 15.0) -> "GstRtspTcpServer":
        log_path = self.log_dir / "gst-rtsp-server.log"
        with open(log_path, "wb") as log:
            self.server = spawn([SYSTEM_PYTHON, str(GST_RTSP_SERVER), str(self.port), f"/{self.mount}", str(self.video)],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while "ready rtsp://" not in log_path.read_text(errors="replace"):
            if self.server.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"GStreamer RTSP server not ready: {log_path.read_text(errors='replace')!r}")
            time.sleep(0.05)
        wait_listening(self.port)
        return self

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{self.mount}"

    def stop(self) -> None:
        _stop(self.server)


class TcpServer:
    """A TCP server on 127.0.0.1 whose handler(conn, n) serves the n-th connection (from 1)."""

    def __init__(self, handler: Callable[[socket.socket, int], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.handler, self.connections, self.closed = handler, 0, threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn, self.connections), daemon=True).start()

    def _serve(self, conn: socket.socket, n: int) -> None:
        with conn:
            try:
                self.handler(conn, n)
            except OSError:
                pass

    def close(self) -> None:
        self.closed.set()
        self.sock.close()


def garbage(conn: socket.socket, n: int, seconds: float = 30.0) -> None:
    """Random bytes, steadily, as a broken encoder might send them."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn.sendall(os.urandom(16 * 1316))  # ~4 MB/s: FFmpeg's 1 MiB format probe fails fast
        time.sleep(0.005)
