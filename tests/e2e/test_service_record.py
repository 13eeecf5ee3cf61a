"""`streamvl serve --index --record DIR` on a real RTSP camera (rtsp-server-perl fed by ffmpeg):
the live stream is indexed and recorded at once, and a live hit's video_url, fetched over HTTP,
is a clip of about the hit's length that shows the frames the index saw at the hit's start."""

from __future__ import annotations

import io
import time

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.service_support import Server
from tests.live_servers import RtspServer, have_rtsp_tools
from tests.videos import LEVEL_PERIOD, index_mod_period, make_video

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not have_rtsp_tools(), reason="needs rtsp-server-perl and /usr/bin/ffmpeg (.ci/run)")]
FPS = 25


def level_index(rgb: np.ndarray) -> int:
    return index_mod_period(rgb)


def frames_apart(a: int, b: int) -> int:
    d = abs(a - b) % LEVEL_PERIOD
    return min(d, LEVEL_PERIOD - d)


def test_live_hits_play_from_the_recording(tmp_path):
    # grey frames whose level names the frame (mod 50 = 2 s), a keyframe every second, looped in real time
    video = make_video(tmp_path / "cam.mp4", size=(320, 240), fps=FPS, seconds=8.0, gop=FPS).path
    cfg = tmp_path / "index.toml"
    cfg.write_text('model = "streamvl-tiny@random:0"\n\n[sampling]\nfps = 2.0\n\n[clips]\nwindow = 4\nstride = 2\n')
    rtsp = RtspServer(tmp_path).start()
    srv = None
    try:
        rtsp.push(video, "cam1")
        srv = Server(str(tmp_path / "db"), "--index", "--config", str(cfg), "--record", str(tmp_path / "rec"),
                     "--record-segment-s", "2", log=tmp_path / "server.log").start()
        with srv.client() as http:
            made = http.post("/api/v1/streams", json={"uri": rtsp.url("cam1"), "id": "cam", "fps": 2})
            assert made.status_code == 201, made.text
            # a window of the live timeline indexed a while after recording began (the random test model
            # scores grey frames alike, so an unfiltered search is one hit over everything indexed)
            hit, deadline = None, time.monotonic() + 480
            while hit is None and time.monotonic() < deadline:
                time.sleep(3)
                try:  # the first search loads the model, on a machine busy indexing
                    rows = {r["stream_id"]: r for r in http.get("/api/v1/streams").json()}
                    last = rows.get("cam", {}).get("last_committed_pts") or 0.0
                    if last < 30:
                        continue
                    window = {"q": "a grey picture", "k": 5, "stream": "cam", "start": last - 14, "end": last - 6}
                    hits = http.get("/api/v1/search", params=window).json()["hits"]
                except httpx.TimeoutException:
                    continue
                played = [h for h in hits if h["video_url"] and h["end"] - h["start"] >= 1.5]
                hit = played[0] if played else None
            assert hit is not None, "no live hit got a video_url:\n" + "".join(srv.output[-40:])
            assert hit["video_url"].startswith("/api/v1/streams/cam/clip.mp4?start=")
            assert hit["wallclock"] is not None

            clip = http.get(hit["video_url"])
            assert clip.status_code == 200, clip.text
            assert clip.headers["content-type"] == "video/mp4"
            with av.open(io.BytesIO(clip.content)) as c:
                frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
                assert c.streams.video[0].codec_context.name == "h264"
            want = hit["end"] - hit["start"]
            assert len(frames) / FPS == pytest.approx(want, abs=0.2)

            # the index's own picture of the hit's start (its stored thumbnail of that sampled frame)
            thumb = http.get("/api/v1/streams/cam/thumbnail.jpg", params={"t": hit["start"]})
            assert thumb.status_code == 200
            seen = level_index(np.asarray(Image.open(io.BytesIO(thumb.content)).convert("RGB")))
            shown = level_index(frames[0])
            # the recorder and the indexer read the camera on two connections, both stamping arrival
            # in UTC: they agree to a few frames (25 fps); a wrong segment or offset is off by many
            assert frames_apart(seen, shown) <= 8, (seen, shown)

            # outside what was indexed and recorded: a 404 that says why
            gone = http.get("/api/v1/streams/cam/clip.mp4", params={"start": 1e6, "end": 1e6 + 2})
            assert gone.status_code == 404 and "no indexed frames" in gone.json()["error"]
            health = http.get("/api/v1/health").json()["recording"]
            assert health["streams"]["cam"]["segments"] >= 2 and health["bytes"] > 0
        assert list((tmp_path / "rec").iterdir())
    finally:
        code = srv.stop(timeout_s=120) if srv is not None else None
        rtsp.stop()
    assert code == 0, "".join(srv.output[-40:])
