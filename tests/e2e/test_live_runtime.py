"""Live streams through the Ray runtime: a real RTSP camera next to one that never connects and
one that sends garbage; reconnects and gaps in the `streams` table; a crashed job resumes with
the downtime recorded; a stream removed while the others run."""

from __future__ import annotations

import threading
import time

import lancedb
import numpy as np
import pyarrow.compute as pc
import pytest

from streamvl.config import IndexConfig
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import StreamInfo
from tests.live_servers import RtspServer, TcpServer, free_port, garbage, have_rtsp_tools
from tests.videos import make_video

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not have_rtsp_tools(), reason="needs Debian's rtsp-server-perl and ffmpeg (see .ci/run)")]
MODEL = "streamvl-tiny@random:0"


@pytest.fixture(scope="module")
def camera(tmp_path_factory):
    root = tmp_path_factory.mktemp("cam")
    video = make_video(root / "cam.mp4", size=(160, 120), fps=25, seconds=6.0, gop=25)
    server = RtspServer(root).start()
    server.push(video.path, "cam1")
    yield server, video.path
    server.stop()


def config(db) -> IndexConfig:
    return IndexConfig(db=str(db), model=MODEL, sampling={"fps": 2.0, "batch_frames": 4},
                       clips={"window": 4, "stride": 2}, runtime={"checkpoint_interval_s": 0.0},
                       live={"open_timeout_s": 2.0, "stall_timeout_s": 1.0, "backoff_initial_s": 0.2,
                             "backoff_max_s": 0.8, "connect_give_up_s": 3.0, "max_batch_delay_s": 0.0,
                             "rtsp_transport": "udp"})


def step_until(run, done, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        if time.monotonic() > end:
            state = {s: (r.status, r.frames, r.error) for s, r in run.reports.items()}
            raise AssertionError(f"timed out waiting for the run: {state}")
        run.step()


def crash(ray, run) -> None:
    """Every actor of the run dies at once, like a kill -9 of the job (the driver object is dropped)."""
    for actor in [run.encoder, *run.sinks.values(), *(s.decoder.actor for s in run.active.values() if s.decoder)]:
        ray.kill(actor, no_restart=True)


def test_live_streams_fail_alone_reconnect_resume_and_are_removed(ray_local, camera, tmp_path):
    from streamvl.runtime.driver import IndexRun

    server, video = camera
    db = tmp_path / "db"
    junk = TcpServer(garbage)
    cam = StreamInfo("cam1", server.url("cam1"))
    nowhere = StreamInfo("nowhere", f"tcp://127.0.0.1:{free_port()}")
    noise = StreamInfo("noise", junk.url)
    store = Store(str(db))
    try:
        run = IndexRun([cam, nowhere, noise], config(db), None).start()
        step_until(run, lambda: run.reports["cam1"].frames >= 6 and {"nowhere", "noise"}.isdisjoint(run.active))
        run.flush_records()
        rows = {r.stream_id: r for r in store.stream_states()}
        assert rows["nowhere"].status == "error" and rows["nowhere"].error.startswith("SourceError: gave up")
        assert "stream=nowhere" in rows["nowhere"].error
        assert rows["noise"].status == "error" and "DecodeError" in rows["noise"].error
        assert "no decodable media" in rows["noise"].error
        assert rows["cam1"].status == "running" and rows["cam1"].live and rows["cam1"].lag_s is not None

        # the camera stalls for 3 s and comes back: a reconnect and its gap land in `streams`
        server.stop_push("cam1")
        threading.Timer(3.0, server.push, args=(video, "cam1"), kwargs={"wait": False}).start()
        step_until(run, lambda: run.reports["cam1"].reconnects >= 1 and run.reports["cam1"].status == "running")
        step_until(run, lambda: ((s := store.stream_state("cam1")) is not None and (s.reconnects or 0) >= 1))
        row = store.stream_state("cam1")
        assert row.gaps >= 1 and row.last_gap_s > 2.0 and row.status == "running"
        before = run.reports["cam1"].last_pts

        crash(ray_local, run)  # the job dies ...
        del run
        time.sleep(2.0)  # ... and is down for 2 s
        run = IndexRun([cam], config(db), None).start()  # a fresh start resumes from the checkpoint
        step_until(run, lambda: run.reports["cam1"].last_pts is not None and run.reports["cam1"].last_pts > before + 3)
        run.flush_records()
        resume = [e for e in store.events("cam1") if e["kind"] == "resume"]
        assert len(resume) == 1 and resume[0]["gap_s"] >= 2.0 and resume[0]["pts"] > before
        assert run.reports["cam1"].restarts == 1

        run.remove("cam1")  # removed while running; the run keeps serving (nothing else here)
        step_until(run, lambda: "cam1" not in run.active)
        run.flush_records()
    finally:
        junk.close()
    row = store.stream_state("cam1")
    assert row.status == "removed" and row.restarts == 1 and row.reconnects >= 1
    frames = lancedb.connect(str(db)).open_table(FRAMES).to_arrow()
    cam_frames = frames.filter(pc.equal(frames["stream_id"], "cam1"))
    pts = np.sort(cam_frames["pts"].to_numpy())
    assert len(pts) >= 10 and np.all(np.diff(pts) > 0)
    assert cam_frames["wallclock"].null_count == 0
    clips = lancedb.connect(str(db)).open_table(CLIPS).to_arrow().to_pylist()
    keys = [(r["stream_id"], r["adapter"], r["start"]) for r in clips]
    assert len(keys) == len(set(keys)) and any(k[0] == "cam1" for k in keys)
    kinds = {e["kind"] for e in store.events("cam1")}
    assert {"stall", "reconnect", "resume"} <= kinds
