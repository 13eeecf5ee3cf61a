"""Many RTSP cameras from one process: GStreamer's RTSP server on 127.0.0.1, one mount per camera.

    /usr/bin/python3 bench/gst_cameras.py PORT VIDEO_LIST      # VIDEO_LIST: one "MOUNT VIDEO" per line

The same pipeline as tests/gst_rtsp_server.py (the live tests' TCP-only RTSP server: h264 sent
as it is, paced in real time, RTP interleaved in the RTSP connection), with many mounts in one
GLib main loop, so a 150-camera run costs one server process instead of 150 ffmpeg ones. Videos
are not looped: give them longer than the run. Runs under the system python (python3-gi);
prints "ready N" once it listens and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from gst_rtsp_server import GLib, Gst, GstRtsp, GstRtspServer, launch_line  # noqa: E402


def serve(port: int, mounts: list[tuple[str, Path]]) -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    points = server.get_mount_points()
    for mount, video in mounts:
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(video))
        factory.set_shared(True)
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
        points.add_factory(mount if mount.startswith("/") else f"/{mount}", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready {len(mounts)}", flush=True)
    loop.run()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    lines = Path(sys.argv[2]).read_text().splitlines()
    serve(int(sys.argv[1]), [(m, Path(v)) for m, v in (line.split(" ", 1) for line in lines if line.strip())])
