"""A TCP-only RTSP server for tests: GStreamer's RTSP server serving one h264 file on 127.0.0.1.

    /usr/bin/python3 tests/gst_rtsp_server.py PORT MOUNT VIDEO      # e.g. 8554 /cam1 clip.mp4
    /usr/bin/python3 tests/gst_rtsp_server.py --check               # exit 0: everything is installed

Why: rtsp-server-perl (the other test server) speaks UDP transport only; this one offers the
mount with RTP interleaved in the RTSP connection only (a client asking for UDP gets 461
Unsupported Transport), so TCP transport is exercised for real. VIDEO is an h264 .mp4/.mov
or MPEG-TS (.ts) file, sent as it is (no re-encoding) and paced in real time; the media is
shared by the clients watching at once (one that finds nobody watching starts the file anew)
and not looped (use a clip longer than one reader's session). Runs under the system python
with Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 (not the project venv); prints
"ready rtsp://..." once it listens and stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

DEMUXERS = {".mp4": "qtdemux", ".mov": "qtdemux", ".ts": "tsdemux"}
ELEMENTS = ("filesrc", "qtdemux", "tsdemux", "h264parse", "rtph264pay")


def missing_elements() -> list[str]:
    """The GStreamer elements the pipelines need that are not installed."""
    Gst.init(None)
    return [name for name in ELEMENTS if Gst.ElementFactory.find(name) is None]


def launch_line(video: Path) -> str:
    """The media pipeline: demux the file's h264 track and packetize it as RTP payload 96.

    SPS/PPS go in the SDP only: with rtph264pay config-interval=-1 (in-band before each IDR)
    FFmpeg hands out each IDR as two packets with one pts and decodes a duplicate frame.
    """
    demux = DEMUXERS.get(video.suffix.lower())
    if demux is None:
        raise SystemExit(f"unsupported container {video.suffix!r}: use one of {sorted(DEMUXERS)}")
    location = GLib.strescape(str(video.resolve()), None)
    return (f'( filesrc location="{location}" ! {demux} ! h264parse ! '
            "rtph264pay name=pay0 pt=96 )")


def serve(port: int, mount: str, video: Path) -> None:
    """Serve `video` at rtsp://127.0.0.1:port/mount (TCP only) until SIGTERM/SIGINT."""
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(video))
    factory.set_shared(True)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        raise SystemExit(f"cannot listen on 127.0.0.1:{port}")
    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"ready rtsp://127.0.0.1:{server.get_bound_port()}{mount}", flush=True)
    loop.run()


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        missing = missing_elements()
        raise SystemExit(f"missing GStreamer elements: {', '.join(missing)}" if missing else 0)
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    port, mount, video = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    serve(port, mount if mount.startswith("/") else f"/{mount}", video)
