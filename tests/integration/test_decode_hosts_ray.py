"""Integration: decoders of several streams sharing one process (runtime.streams_per_decoder), on a local Ray."""

import os
import signal
from pathlib import Path

import lancedb
import pytest
import ray

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.runtime.driver import IndexRun
from streamvl.storage.store import FRAMES
from tests.videos import make_text_as_mp4, make_truncated, make_video

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"


def frame_counts(db: Path) -> dict[str, list[float]]:
    rows = lancedb.connect(str(db)).open_table(FRAMES).to_arrow().select(["stream_id", "pts"]).to_pylist()
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["stream_id"], []).append(r["pts"])
    return out


def test_shared_decoders_index_good_streams_and_fail_bad_ones_alone(ray_local, tmp_path):
    good = [make_video(tmp_path / f"g{i}.mp4", seconds=6.0, fps=10, size=(96, 64)).path for i in range(3)]
    bad = [make_truncated(tmp_path / "trunc.mp4", seconds=6.0).path, make_text_as_mp4(tmp_path / "text.mp4")]
    streams = api.discover([str(p) for p in good + bad])
    db = tmp_path / "db"
    cfg = IndexConfig(db=str(db), model=MODEL, sampling={"fps": 2.0, "batch_frames": 4},
                      runtime={"streams_per_decoder": 2, "max_active_streams": 5})
    run = IndexRun(streams, cfg, None)
    report = run.run()
    status = {Path(s.uri).name: s for s in report.streams}
    assert {n for n, s in status.items() if s.status == "done"} == {p.name for p in good}
    assert {n for n, s in status.items() if s.status == "error"} == {"trunc.mp4", "text.mp4"}
    counts = frame_counts(db)
    for name in (p.name for p in good):
        sid = status[name].stream_id
        assert len(counts[sid]) == len(set(counts[sid])) == status[name].frames == 12  # 6 s at 2 frames/s, once each
    assert len(run.backend.hosts.hosts) == 0  # every host ended with its last stream
    assert run.backend.hosts.started <= 3  # 5 streams, 2 per process


def test_a_killed_decode_host_replays_its_streams_exactly_once(ray_local, tmp_path):
    paths = [make_video(tmp_path / f"s{i}.mp4", seconds=20.0, fps=10, size=(96, 64)).path for i in range(3)]
    db = tmp_path / "db"
    cfg = IndexConfig(db=str(db), model=MODEL, sampling={"fps": 4.0, "batch_frames": 4},
                      runtime={"streams_per_decoder": 4, "inflight_per_stream": 1})
    run = IndexRun(api.discover([str(p) for p in paths]), cfg, None).start()
    killed = False
    while run.queue or run.active or run.commits:
        run.step()
        if not killed and sum(r.frames for r in run.reports.values()) >= 8:
            host = run.backend.hosts.hosts[0]
            os.kill(ray.get(host.actor.pid.remote()), signal.SIGKILL)
            killed = True
    run.flush_records()
    run.close()
    assert killed
    assert all(r.status == "done" and r.frames == 80 for r in run.reports.values()), run.reports
    assert sum(r.restarts for r in run.reports.values()) >= 1
    counts = frame_counts(db)
    assert all(len(pts) == len(set(pts)) == 80 for pts in counts.values())  # nothing lost, nothing twice
    assert run.backend.hosts.started >= 2  # the replays went to a new process
