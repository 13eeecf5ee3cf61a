"""`streamvl serve --record DIR` on a real RTSP camera (rtsp-server-perl fed by ffmpeg): while the
live stream is indexed (the real live source and encode stage, in this process: no Ray to start on
a loaded machine) the server records it on its own connection, and a live hit's video_url, fetched
over HTTP, is a clip of about the hit's length showing the frames the index saw at the hit's start."""

from __future__ import annotations

import io
import threading
import time

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from streamvl.config import IndexConfig, LiveConfig
from streamvl.sources import LiveSource
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import StreamInfo
from tests.e2e.service_support import MODEL, Server
from tests.live_servers import RtspServer, have_rtsp_tools
from tests.videos import LEVEL_PERIOD, index_mod_period, make_video

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not have_rtsp_tools(), reason="needs rtsp-server-perl and /usr/bin/ffmpeg (.ci/run)")]
FPS = 25


def frames_apart(a: int, b: int) -> int:
    d = abs(a - b) % LEVEL_PERIOD
    return min(d, LEVEL_PERIOD - d)


class LiveIndexer:
    """Indexes a live URL as the runtime's decode and encode actors do (LiveSource -> EncodeStage ->
    frames and clips rows with arrival times), in a thread, until stopped."""

    def __init__(self, db: str, stream_id: str, uri: str) -> None:
        self.db, self.info = db, StreamInfo(stream_id, uri)
        self.last_pts = 0.0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "LiveIndexer":
        self._thread.start()
        return self

    def _run(self) -> None:
        from streamvl.pipeline.encode import EncodeStage

        try:
            config = IndexConfig(db=self.db, model=MODEL, sampling={"fps": 2.0}, clips={"window": 4, "stride": 2})
            stage, store = EncodeStage(config), Store(self.db)
            sampling = config.sampling.model_copy(update={"size": stage.model.image_size})
            live = LiveConfig(stall_timeout_s=5.0, open_timeout_s=10.0, connect_give_up_s=60.0, max_batch_delay_s=1.0)
            source = LiveSource(self.info, sampling, live)
            for batch in source:
                if self._stop.is_set():
                    break
                if not len(batch):
                    continue
                rows, clips, _ = stage.process([batch])
                store.upsert(FRAMES, rows)
                if clips is not None and clips.num_rows:
                    store.upsert(CLIPS, clips)
                self.last_pts = float(batch.pts[-1])
        except BaseException as exc:  # reported by the test
            self.error = exc

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)


def test_live_hits_play_from_the_recording(tmp_path):
    # grey frames whose level names the frame (mod 50 = 2 s), a keyframe every second, looped in real time
    video = make_video(tmp_path / "cam.mp4", size=(320, 240), fps=FPS, seconds=8.0, gop=FPS).path
    db = str(tmp_path / "db")
    rtsp = RtspServer(tmp_path).start()
    srv = indexer = None
    try:
        rtsp.push(video, "cam1")
        Store(db).record_stream("cam", rtsp.url("cam1"), "running", live=True)  # what the indexing job writes
        srv = Server(db, "--record", str(tmp_path / "rec"), "--record-segment-s", "2", log=tmp_path / "server.log").start()
        indexer = LiveIndexer(db, "cam", rtsp.url("cam1")).start()
        with httpx.Client(base_url=srv.url, timeout=180.0) as http:  # the first search loads the model
            deadline = time.monotonic() + 300
            while indexer.last_pts < 30 and indexer.error is None and time.monotonic() < deadline:
                time.sleep(1)
            assert indexer.error is None and indexer.last_pts >= 30, repr(indexer.error)
            indexer.stop()
            time.sleep(3)  # the segment holding the last indexed seconds closes (2 s segments)
            # a window indexed well after recording began (the test model scores grey frames alike,
            # so an unfiltered search would be one hit over everything indexed)
            window = {"q": "a grey picture", "k": 5, "stream": "cam", "start": indexer.last_pts - 14,
                      "end": indexer.last_pts - 4}
            hits = http.get("/api/v1/search", params=window).json()["hits"]
            played = [h for h in hits if h["video_url"] and h["end"] - h["start"] >= 1.5]
            assert played, f"no live hit got a video_url: {hits}\n" + "".join(srv.output[-40:])
            hit = played[0]
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
            seen = index_mod_period(np.asarray(Image.open(io.BytesIO(thumb.content)).convert("RGB")))
            shown = index_mod_period(frames[0])
            # the recorder and the indexer read the camera on two connections, both stamping arrival
            # in UTC: they agree to a few frames (25 fps); a wrong segment or offset is off by many
            print(f"recorded vs indexed frame at the hit's start: {shown} vs {seen} (mod {LEVEL_PERIOD})")
            assert frames_apart(seen, shown) <= 8, (seen, shown)

            # outside what was indexed and recorded: a 404 that says why
            gone = http.get("/api/v1/streams/cam/clip.mp4", params={"start": 1e6, "end": 1e6 + 2})
            assert gone.status_code == 404 and "no indexed frames" in gone.json()["error"]
            early = http.get("/api/v1/streams/cam/clip.mp4", params={"start": 0.0, "end": 2.0})
            assert early.status_code in (200, 404)  # the recorder may have connected after t=0
            if early.status_code == 404:
                assert "starts before the recording" in early.json()["error"]
            health = http.get("/api/v1/health").json()["recording"]
            assert health["streams"]["cam"]["segments"] >= 10 and health["bytes"] > 0
            assert health["streams"]["cam"]["errors"] == 0, health
    finally:
        if indexer is not None:
            indexer.stop()
        code = srv.stop(timeout_s=120) if srv is not None else None
        rtsp.stop()
    assert code == 0, "".join(srv.output[-40:])
