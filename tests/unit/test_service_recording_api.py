"""Live hits and the recording, through the app: index times -> UTC (the frames table's arrival
times) -> recorded segments -> clip.mp4 showing the frames of that time; 404s that say why."""

from __future__ import annotations

import io
import time

import av
import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from streamvl.service.app import create_app
from streamvl.service.settings import ServiceSettings
from streamvl.storage.schema import frames_schema
from streamvl.storage.store import FRAMES, Store
from tests.unit.test_query import D, SPEC, add_clips, axis, unit
from tests.unit.test_service_recording import FPS, T0, record
from tests.videos import index_mod_period, make_video

LAG = 3.7  # the live timeline's t=0 is at T0 + LAG (UTC)
REC_AT = 2.0  # the recording starts at timeline t = 2.0 (the recorder connected later than the indexer)
DEAD = "rtsp://127.0.0.1:9/cam"  # nothing listens: the recorder's attempts fail, and say so


@pytest.fixture
def app(tmp_path):
    db = str(tmp_path / "db")
    store = Store(db)
    pts = np.arange(0.0, 20.0, 0.5)
    wall = T0 + LAG + pts + 0.15 * (np.arange(len(pts)) % 3)  # frames arrive up to 0.3 s late (a busy decoder)
    store.upsert(FRAMES, pa.table({"stream_id": ["cam"] * len(pts), "pts": pts, "wallclock": wall,
                                   "embedding": pa.FixedSizeListArray.from_arrays(
                                       pa.array(np.zeros(len(pts) * D, np.float32)), D),
                                   "model": [SPEC] * len(pts)}, schema=frames_schema(D, {"streamvl.model": SPEC})))
    add_clips(store, "cam", [0.0, 5.0], unit(np.stack([axis(0, 0.3, 1), axis(0)])), length=1.0)
    store.record_stream("cam", DEAD, "running", live=True)
    camera = make_video(tmp_path / "cam.ts", fps=FPS, seconds=12.0, gop=FPS)
    settings = ServiceSettings(db=db, warm=False, record_dir=str(tmp_path / "rec"), record_segment_s=4.0)
    application = create_app(settings)
    record(camera.path, application.state.service.recordings, "cam", 4.0, at=T0 + LAG + REC_AT)
    application.state.service.engine.embed = lambda text, adapter="meanpool": axis(0)
    with TestClient(application) as client:
        yield client


def frames_of(content: bytes) -> list[np.ndarray]:
    with av.open(io.BytesIO(content)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.parametrize("start,end,cut", [(5.0, 7.0, "remux"), (3.3, 9.1, "transcode"), (10.0, 13.5, "remux")])
def test_a_live_clip_shows_the_frames_recorded_at_that_time(app, start, end, cut):
    r = app.get("/api/v1/streams/cam/clip.mp4", params={"start": start, "end": end})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "video/mp4" and r.headers["x-streamvl-cut"] == cut
    frames = frames_of(r.content)
    assert len(frames) == pytest.approx((end - start) * FPS, abs=1)
    # timeline t is camera second t - REC_AT of the recording: the least-delayed frame places it
    first = int((start - REC_AT) * FPS + 1e-9)
    assert abs(index_mod_period(frames[0]) - first % 50) <= 1


def test_live_hits_link_a_cut_only_where_the_recording_covers_them(app):
    hits = {h["start"]: h for h in app.get("/api/v1/search", params={"q": "x", "k": 5}).json()["hits"]}
    assert set(hits) == {0.0, 5.0}
    assert hits[5.0]["video_url"] == "/api/v1/streams/cam/clip.mp4?start=5.00&end=6.00"
    assert hits[5.0]["wallclock"] == pytest.approx(T0 + LAG + 5.0, abs=1e-3)  # the delays do not shift it
    assert hits[0.0]["video_url"] is None  # indexed before the recording began
    assert app.get(hits[5.0]["video_url"]).status_code == 200


@pytest.mark.parametrize("start,end,reason", [
    (0.0, 1.0, "starts before the recording"),
    (12.0, 16.0, "ends after the last closed segment"),
    (500.0, 501.0, "no indexed frames"),
])
def test_outside_the_recording_is_a_404_that_says_why(app, start, end, reason):
    r = app.get("/api/v1/streams/cam/clip.mp4", params={"start": start, "end": end})
    assert r.status_code == 404 and reason in r.json()["error"], r.text


def test_a_recorder_that_cannot_connect_is_reported_and_keeps_trying(app):
    deadline = time.monotonic() + 60
    status = {}
    while time.monotonic() < deadline:
        status = app.get("/api/v1/health").json()["recording"]
        if status["streams"].get("cam", {}).get("errors", 0) >= 2:
            break
        time.sleep(0.2)
    cam = status["streams"]["cam"]
    assert cam["errors"] >= 2 and cam["uri"] == DEAD and not cam["connected"]
    assert "127.0.0.1:9" in cam["last_error"] and "\n" not in cam["last_error"]
    assert status["bytes"] > 0  # the segments recorded before are kept
