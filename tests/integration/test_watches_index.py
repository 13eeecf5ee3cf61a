"""Integration: a watch fires while the Ray runtime indexes a stream, once per true episode; a replay adds nothing.

The stream is grey with two red episodes. The watch's vector is the mean clip embedding of a
separate all-red reference video (the tiny random model has no text knowledge of red), and its
threshold lies halfway between that vector's score on red and on grey reference clips.
"""

from pathlib import Path

import av
import numpy as np
import pytest

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.storage.schema import CLIPS, STREAMS, sql_str
from streamvl.storage.store import Store
from streamvl.storage.watches import WatchTables

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"
EPISODES = [(6.0, 11.0), (18.0, 23.0)]  # red, in seconds


def write_video(path: Path, seconds: float, red: list[tuple[float, float]], fps: int = 8) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream("h264", rate=fps)
        st.width, st.height, st.pix_fmt = 96, 96, "yuv420p"
        for i in range(int(seconds * fps)):
            t = i / fps
            img = np.full((96, 96, 3), 128, np.uint8)
            if any(a <= t < b for a, b in red):
                img[:] = (220, 30, 30)
            img = np.clip(img.astype(np.int16) + rng.integers(-3, 4, img.shape), 0, 255).astype(np.uint8)
            for packet in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in st.encode():
            out.mux(packet)
    return path


def config(db):
    return IndexConfig(db=str(db), model=MODEL, clips={"window": 2, "stride": 1})


def clip_vectors(store, stream_id):
    rows = store.read(CLIPS, f"stream_id = {sql_str(stream_id)}").to_pylist()
    v = np.array([r["embedding"] for r in rows], np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_watch_fires_once_per_episode_and_replay_adds_nothing(ray_local, tmp_path):
    ref_db = tmp_path / "ref"
    refs = [write_video(tmp_path / "red.mp4", 6, [(0, 6)]), write_video(tmp_path / "grey.mp4", 6, [])]
    api.index(api.discover([str(p) for p in refs], ["red", "grey"]), config(ref_db))
    ref = Store(str(ref_db))
    red, grey = clip_vectors(ref, "red"), clip_vectors(ref, "grey")
    vec = red.mean(0)
    vec /= np.linalg.norm(vec)
    lo, hi = float((grey @ vec).max()), float((red @ vec).min())
    assert hi > lo, "the model must tell red from grey for this test to mean anything"

    db = tmp_path / "db"
    store = Store(str(db))
    tables = WatchTables(store.conn, store.reader, store.writer)
    wid = tables.add_watch("red", {"meanpool": vec}, threshold=(lo + hi) / 2, quiet_s=2.0)
    other = tables.add_watch("red elsewhere", {"meanpool": vec}, threshold=(lo + hi) / 2, streams=["nope"])
    video = write_video(tmp_path / "cam.mp4", 30, EPISODES)
    api.index(api.discover([str(video)], ["cam"]), config(db))

    events = sorted(tables.watch_events(watch_id=wid), key=lambda e: e["start"])
    assert len(events) == len(EPISODES), events
    for ev, (a, b) in zip(events, EPISODES):  # each event lies on its episode (windows straddle the edges)
        assert ev["stream_id"] == "cam" and a - 2 <= ev["start"] <= a + 1 and b - 1 <= ev["end"] <= b + 2
        assert ev["status"] == "closed" and ev["peak_score"] >= (lo + hi) / 2
    assert tables.watch_events(watch_id=other) == []

    # replay: forget the stream's checkpoint and index it again from the start (new sink processes)
    store.delete(STREAMS, f"stream_id = {sql_str('cam')}")
    api.index(api.discover([str(video)], ["cam"]), config(db))
    assert sorted(tables.watch_events(watch_id=wid), key=lambda e: e["start"]) == events
