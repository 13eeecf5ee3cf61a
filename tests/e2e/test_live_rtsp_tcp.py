"""RTSP over TCP transport (RTP interleaved in the RTSP connection), end to end, against
GStreamer's RTSP server offering a mount over TCP only: the live source reads it with
rtsp_transport "tcp" (and "auto", which falls back to TCP), fails with a typed error when
forced to UDP, and the Ray runtime indexes it into LanceDB with a per-stream transport."""

from __future__ import annotations

import time

import lancedb
import numpy as np
import pyarrow.compute as pc
import pytest

from streamvl.config import IndexConfig, SamplingConfig
from streamvl.errors import SourceError
from streamvl.sources import LiveSource
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import StreamInfo
from tests.live_servers import GstRtspTcpServer, have_gst_rtsp
from tests.e2e.test_live import FAST, events, info, read
from tests.e2e.test_live_runtime import step_until
from tests.videos import index_mod_period, level_for_index, make_video

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_gst_rtsp(), reason="needs GStreamer's RTSP server for /usr/bin/python3: "
                                 "apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi (see .ci/run)")]
MODEL = "streamvl-tiny@random:0"
SAMPLING = SamplingConfig(fps=2.0, size=32, batch_frames=4)


@pytest.fixture(scope="module")
def tcp_only(tmp_path_factory):
    """The TCP-only server; each reader starts the 60 s clip anew (one reader at a time here)."""
    root = tmp_path_factory.mktemp("gst-rtsp")
    video = make_video(root / "cam.mp4", size=(160, 120), fps=25, seconds=60.0, gop=25)
    server = GstRtspTcpServer(video.path, root).start()
    yield server
    server.stop()


@pytest.mark.parametrize("transport", ["tcp", "auto"])  # auto: FFmpeg asks for UDP, gets 461, takes TCP
def test_rtsp_over_tcp_delivers_live_frames(tcp_only, transport):
    started = time.time()
    live = FAST.model_copy(update={"rtsp_transport": transport, "stall_timeout_s": 5.0})  # slack on a busy machine
    source = LiveSource(info(tcp_only.url), SAMPLING, live)
    batches = read(source, 8, timeout=30.0)
    pts = np.concatenate([b.pts for b in batches])
    clocks = np.concatenate([b.wallclock for b in batches])
    frames = np.concatenate([b.frames for b in batches])
    assert len(pts) >= 8 and np.all(np.diff(pts) > 0)
    assert pts[-1] - pts[0] == pytest.approx((len(pts) - 1) / SAMPLING.fps, abs=0.2)  # on the 2 fps grid
    assert clocks.shape == pts.shape and np.all(np.diff(clocks) >= 0)
    assert started <= clocks[0] and clocks[-1] <= time.time()
    assert clocks[-1] - clocks[0] > 0.5 * (pts[-1] - pts[0])  # paced in real time (not a burst of a file)
    # A steady stream: no stall, no reconnect, and no re-anchoring at the start (an RTSP session's
    # first IDR comes without pts and FFmpeg's start_time is a later B-frame's: the decoder must
    # anchor live timelines on the first timed frame instead).
    assert events(batches) == []
    assert not any(b.final for b in batches)
    for frame in frames:  # real decoded pictures: make_video's flat grey levels
        assert frame.std() < 3 and abs(frame.mean() - level_for_index(index_mod_period(frame))) < 3


def test_rtsp_over_udp_against_a_tcp_only_server_fails_with_a_typed_error(tcp_only):
    url = tcp_only.url
    started = time.monotonic()
    with pytest.raises(SourceError, match="gave up: no frame after") as err:
        read(LiveSource(info(url), SAMPLING, FAST.model_copy(update={"rtsp_transport": "udp"})), 1)
    assert type(err.value) is SourceError and err.value.uri == url and err.value.stream_id == info(url).stream_id
    assert "cannot connect" in err.value.message and "Protocol not supported" in err.value.message  # SETUP: 461
    assert time.monotonic() - started < 20


def test_ray_runtime_indexes_a_tcp_only_rtsp_stream(ray_local, tcp_only, tmp_path):
    from streamvl.runtime.driver import IndexRun

    db = tmp_path / "db"
    config = IndexConfig(db=str(db), model=MODEL, sampling={"fps": 2.0, "batch_frames": 4},
                         clips={"window": 4, "stride": 2}, runtime={"checkpoint_interval_s": 0.0},
                         live={"open_timeout_s": 2.0, "stall_timeout_s": 1.0, "backoff_initial_s": 0.2,
                               "backoff_max_s": 0.8, "connect_give_up_s": 5.0, "max_batch_delay_s": 0.0,
                               "rtsp_transport": "udp"})  # the config says UDP; the stream's own transport wins
    run = IndexRun([StreamInfo("cam1", tcp_only.url, transport="tcp")], config, None).start()
    report = run.reports["cam1"]
    step_until(run, lambda: report.frames >= 6 or report.status == "error", timeout=90.0)
    assert report.status == "running", report.error
    run.flush_records()
    row = Store(str(db)).stream_state("cam1")
    assert row.status == "running" and row.live and row.error is None
    run.remove("cam1")
    step_until(run, lambda: "cam1" not in run.active)
    run.flush_records()
    frames = lancedb.connect(str(db)).open_table(FRAMES).to_arrow()
    cam = frames.filter(pc.equal(frames["stream_id"], "cam1"))
    pts = np.sort(cam["pts"].to_numpy())
    assert len(pts) >= 6 and np.all(np.diff(pts) > 0) and cam["wallclock"].null_count == 0
    clips = lancedb.connect(str(db)).open_table(CLIPS).to_arrow()
    assert pc.sum(pc.equal(clips["stream_id"], "cam1")).as_py() >= 1
    assert Store(str(db)).stream_state("cam1").status == "removed"
