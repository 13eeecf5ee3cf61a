"""A live source (tcp:// MPEG-TS from a local server) attaches one thumbnail per sampled frame:
the pictures the service shows for live streams, which have no file to go back to."""

from __future__ import annotations

import io
import time

import pytest
from PIL import Image

from streamvl.config import LiveConfig, SamplingConfig
from streamvl.sources import LiveSource
from streamvl.types import StreamInfo
from tests.live_servers import TcpServer
from tests.videos import make_video

pytestmark = pytest.mark.e2e


def test_live_batches_carry_a_thumbnail_per_frame(tmp_path):
    payload = make_video(tmp_path / "live.ts", size=(320, 240), fps=25, seconds=3.0, pattern="moving").path.read_bytes()

    def handler(conn, n):
        conn.sendall(payload)
        time.sleep(3.0)

    server = TcpServer(handler)
    live = LiveConfig(stall_timeout_s=1.0, open_timeout_s=5.0, backoff_initial_s=0.2, backoff_max_s=0.5,
                      connect_give_up_s=10.0, max_batch_delay_s=0.5)
    source = LiveSource(StreamInfo("cam", server.url), SamplingConfig(fps=4.0, size=32, thumbnail_width=128), live)
    batches, frames = [], 0
    try:
        for batch in source:
            batches.append(batch)
            frames += len(batch)
            if frames >= 8:
                break
    finally:
        server.close()
    with_frames = [b for b in batches if len(b)]
    assert with_frames and all(b.thumbs is not None and len(b.thumbs) == len(b) for b in with_frames)
    sizes = {Image.open(io.BytesIO(t)).size for b in with_frames for t in b.thumbs}
    assert sizes == {(128, 96)} and all(b.wallclock is not None for b in with_frames)
