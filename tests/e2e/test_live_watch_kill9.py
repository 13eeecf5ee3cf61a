"""A watch on a live RTSP camera through a kill -9 of the indexing job: `streamvl serve-index`
indexes a real RTSP stream (a looped clip with one red episode per loop) with a watch for the
red episodes, is SIGKILLed with its whole tree, and a fresh job resumes. Every stored event is
exactly what the event rules give over the committed clip rows (no duplicate, none lost), and
events exist from before and after the kill."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from streamvl.config import IndexConfig
from streamvl.search.watches import EventBuilder, Watch, WatchMatcher
from streamvl.storage.schema import CLIPS, sql_str
from streamvl.storage.store import Store
from streamvl.storage.watches import WatchTables
from tests.conftest import index_file
from tests.e2e.test_live_kill9 import BIN, CONFIG, ENV, MODEL, _session, _tail, kill_job, start_job, wait_for
from tests.integration.test_watches_index import write_video
from tests.live_servers import RtspServer, have_rtsp_tools

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.skipif(not have_rtsp_tools(), reason="needs Debian's rtsp-server-perl and ffmpeg (see .ci/run)")]
SID = "cam1"
QUIET_S = 2.0


def reference_vectors(tmp_path: Path):
    """Clip embeddings of an all-red and an all-grey clip, through the real decoder and encode stage."""
    config = IndexConfig(db=str(tmp_path / "ref"), model=MODEL, sampling={"fps": 2.0}, clips={"window": 4, "stride": 2})
    out = []
    for name, red in (("red", [(0, 8)]), ("grey", [])):
        db = str(tmp_path / f"ref-{name}")
        index_file(write_video(tmp_path / f"{name}.mp4", 8, red), db, config.model_copy(update={"db": db}))
        v = np.array(Store(db).read(CLIPS)["embedding"].to_pylist(), np.float32)
        out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    return out


def recomputed(store: Store, watch: Watch) -> list[tuple[float, float, float]]:
    """The events the rules give over every committed clip row of the camera, in one pass."""
    rows = sorted(store.read(CLIPS, f"stream_id = {sql_str(SID)}").to_pylist(), key=lambda r: r["start"])
    emb = np.array([r["embedding"] for r in rows], np.float32)
    matches = WatchMatcher([watch]).match([r["stream_id"] for r in rows], [r["start"] for r in rows],
                                          [r["end"] for r in rows], [r["adapter"] for r in rows], emb)
    builder = EventBuilder(QUIET_S, keep=10_000)
    builder.feed(matches, {})
    return sorted((e["start"], e["end"], round(e["peak_score"], 5)) for evs in builder.events.values() for e in evs)


def test_live_watch_survives_kill_9_without_duplicate_or_lost_event(tmp_path):
    red, grey = reference_vectors(tmp_path)
    vec = red.mean(0) / np.linalg.norm(red.mean(0))
    lo, hi = float((grey @ vec).max()), float((red @ vec).min())
    assert hi > lo, "the model must tell red from grey for this test to mean anything"
    db, cfg = tmp_path / "db", tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    store = Store(str(db))
    tables = WatchTables(store.conn, store.reader, store.writer)
    wid = tables.add_watch("red", {"meanpool": vec}, threshold=(lo + hi) / 2, quiet_s=QUIET_S)
    [watch] = Watch.from_rows(tables.watch_rows())

    video = write_video(tmp_path / "cam.mp4", 10, [(2.0, 6.0)], fps=25)  # one 4 s red episode every 10 s
    camera = RtspServer(tmp_path).start()
    jobs = []
    try:
        camera.push(video, SID)
        logs = [tmp_path / "serve-1.log", tmp_path / "serve-2.log"]
        job = start_job(db, cfg, logs[0])
        jobs.append(job)
        add = subprocess.run([str(BIN / "streamvl"), "streams", "add", camera.url(SID), "--db", str(db), "--id", SID,
                              "--transport", "udp", "--fps", "2"], env=ENV, capture_output=True, text=True, timeout=120)
        assert add.returncode == 0, add.stderr[-3000:]
        wait_for(lambda: len(tables.watch_events(wid)) >= 1, "an event before the kill", job, logs[0])
        kill_job(job)
        before = tables.watch_events(wid)
        t_restart = time.time()
        job = start_job(db, cfg, logs[1])
        jobs.append(job)
        wait_for(lambda: any(e["opened_at"].timestamp() >= t_restart for e in tables.watch_events(wid)),
                 "an event opened by the restarted job", job, logs[1], timeout=400)
        job.send_signal(signal.SIGTERM)
        job.wait(timeout=120)
    finally:
        for j in jobs:
            if j.poll() is None or _session(j):
                kill_job(j)
        camera.stop()

    events = tables.watch_events(wid)
    stored = sorted((e["start"], e["end"], round(e["peak_score"], 5)) for e in events)
    assert len({(e["stream_id"], e["start"]) for e in events}) == len(events)
    assert stored == recomputed(store, watch), _tail(logs[1])
    for b in before:  # what the killed job stored is still there, under the same id
        assert b["event_id"] in {e["event_id"] for e in events}
