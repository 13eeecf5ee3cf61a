"""A kill -9 of a real, long-running live job: `streamvl serve-index` (its own local Ray) indexes a
real RTSP camera, the whole process tree is SIGKILLed, the job is down for a few seconds while
the camera keeps playing, and a fresh `serve-index` on the same database picks the stream up by
itself (from `stream_requests`) and resumes where it committed. The only hole in the timeline is
the wall-clock time the job was down, and it is recorded (a "resume" event, the `streams` gap
counters)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lancedb
import numpy as np
import psutil
import pyarrow.compute as pc
import pytest

from streamvl.storage.store import CLIPS, FRAMES, Store
from tests.live_servers import RtspServer, have_rtsp_tools
from tests.integration.test_faults import _job_tree
from tests.videos import make_video

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.skipif(not have_rtsp_tools(), reason="needs Debian's rtsp-server-perl and ffmpeg (see .ci/run)")]
MODEL = "streamvl-tiny@random:0"
BIN = Path(sys.executable).parent
SID = "cam1"
DOWNTIME_S = 4.0  # how long the job stays dead while the camera keeps playing
STARTUP_SLACK_S = 60.0  # a fresh job (Ray, model, actors, first connection) on a loaded 2-core machine
ENV = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "local"}  # its own Ray, killed with it
CONFIG = """\
[sampling]
fps = 2.0
batch_frames = 4
[clips]
window = 4
stride = 2
[runtime]
checkpoint_interval_s = 0.0
[live]
open_timeout_s = 5.0
stall_timeout_s = 3.0
backoff_initial_s = 0.2
backoff_max_s = 1.0
connect_give_up_s = 120.0
max_batch_delay_s = 0.0
rtsp_transport = "udp"
"""


@pytest.fixture
def camera(tmp_path):
    """As tests/test_live_runtime.py's: a generated clip looped in real time into rtsp-server-perl."""
    video = make_video(tmp_path / "cam.mp4", size=(160, 120), fps=25, seconds=6.0, gop=25)
    server = RtspServer(tmp_path).start()
    server.push(video.path, SID)
    yield server
    server.stop()


def _tail(path: Path, n: int = 3000) -> str:
    return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"


def start_job(db: Path, cfg: Path, log: Path) -> subprocess.Popen:
    """`streamvl serve-index` in its own session; stdout and stderr (with Ray's worker logs) to `log`."""
    cmd = [str(BIN / "streamvl"), "serve-index", "--db", str(db), "--model", MODEL, "--config", str(cfg), "--poll", "0.5"]
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, env=ENV, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _session(proc: subprocess.Popen) -> list[psutil.Process]:
    """The CLI, everything under it (its local Ray and the actor workers), and anything left in its session."""
    found = {p.pid: p for p in _job_tree(proc.pid)}
    for p in psutil.process_iter():
        try:
            if p.pid not in found and os.getsid(p.pid) == proc.pid:
                found[p.pid] = p
        except (OSError, psutil.Error):
            pass
    return list(found.values())


def kill_job(proc: subprocess.Popen) -> list[psutil.Process]:
    """SIGKILL the whole job at once (kill -9); returns whatever of it is still alive 30 s later."""
    tree = _session(proc)
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    try:
        proc.wait(timeout=30)  # reap the CLI here (psutil would take its exit status)
    except subprocess.TimeoutExpired:
        pass
    _, alive = psutil.wait_procs([p for p in tree if p.pid != proc.pid], timeout=30)
    return alive + ([] if proc.poll() is not None else [psutil.Process(proc.pid)])


def wait_for(check, what: str, proc: subprocess.Popen, log: Path, timeout: float = 300.0, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert proc.poll() is None, f"serve-index exited ({proc.returncode}) while waiting for {what}:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f}s waiting for {what}:\n{_tail(log)}"
        time.sleep(every)


def cam_frames(db: Path) -> tuple[np.ndarray, np.ndarray]:
    """(pts, wallclock) of every committed frame of the camera, in table order."""
    if FRAMES not in Store(str(db)).table_names():
        return np.empty(0), np.empty(0)
    frames = lancedb.connect(str(db)).open_table(FRAMES).to_arrow()
    frames = frames.filter(pc.equal(frames["stream_id"], SID))
    assert frames["wallclock"].null_count == 0, "a live frame without its arrival wall-clock"
    return frames["pts"].to_numpy(), frames["wallclock"].to_numpy()


def test_kill_9_of_a_live_serve_index_job_then_restart(camera, tmp_path):
    db, cfg = tmp_path / "db", tmp_path / "cfg.toml"
    cfg.write_text(CONFIG)
    url = camera.url(SID)
    store = Store(str(db))
    logs = [tmp_path / "serve-1.log", tmp_path / "serve-2.log"]
    job = start_job(db, cfg, logs[0])
    jobs = [job]
    try:
        add = subprocess.run([str(BIN / "streamvl"), "streams", "add", url, "--db", str(db), "--id", SID,
                              "--transport", "udp", "--fps", "2"], env=ENV, capture_output=True, text=True, timeout=120)
        assert add.returncode == 0, add.stderr[-3000:]

        # -- 1. the job indexes the camera; wait until clip windows are committed (checkpoint > 0)
        def committed():
            row = store.stream_state(SID) if db.exists() else None
            ok = (row and row.status == "running" and (row.next_window or 0) >= 4
                  and row.frames_indexed >= 8 and row.last_wallclock is not None)
            return ok and row

        wait_for(committed, "the first job to commit 8 frames and 2 windows of cam1", job, logs[0])
        t_kill = time.time()
        survivors = kill_job(job)
        assert not survivors, f"processes of the killed job still alive: {survivors}"
        assert job.returncode == -signal.SIGKILL

        # what the dead job left committed
        row_before = store.stream_state(SID)
        assert row_before.status == "running", "killed mid-stream: no clean 'stopped' record"
        events_before = store.events(SID)
        assert "resume" not in [e["kind"] for e in events_before], events_before
        assert row_before.restarts == sum(e["kind"] == "restart" for e in events_before), (row_before, events_before)
        pts_before, wall_before = cam_frames(db)
        last_pts, last_wall = float(pts_before.max()), float(wall_before.max())
        assert len(pts_before) >= 8 and last_wall <= t_kill
        clips_before = [c for c in store.clip_windows() if c["stream_id"] == SID]
        assert clips_before, "no clip committed before the kill"

        # -- 2. down for DOWNTIME_S while the camera keeps playing; then a fresh job, no `streams add`
        time.sleep(max(0.0, t_kill + DOWNTIME_S - time.time()))
        assert camera.pushers[SID].poll() is None, "the camera stopped while the job was down"
        t_restart = time.time()
        job = start_job(db, cfg, logs[1])
        jobs.append(job)

        def resumed():
            pts, wall = cam_frames(db)
            after = pts[wall >= t_restart]
            clips = [c for c in store.clip_windows() if c["stream_id"] == SID and len(after) and c["start"] >= after.min()]
            kinds = [e["kind"] for e in store.events(SID)]
            return len(after) >= 6 and clips and "resume" in kinds

        wait_for(resumed, "the restarted job to resume cam1 by itself (6 new frames, a new clip, a resume event)",
                 job, logs[1])
        t_seen = time.time()

        # -- 3. a clean stop (SIGTERM): the stream's row says "stopped", the checkpoint stays
        job.send_signal(signal.SIGTERM)
        try:
            job.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail(f"serve-index did not stop within 120 s of SIGTERM:\n{_tail(logs[1])}")
        assert job.returncode == 0, _tail(logs[1])
        assert "stopped      cam1" in logs[1].read_text(errors="replace"), _tail(logs[1])
    finally:
        for j in jobs:
            if j.poll() is None or _session(j):
                kill_job(j)

    # -- 4a. exactly once: no duplicate keys; one strictly increasing timeline across the restart
    pts, wall = cam_frames(db)
    assert len(np.unique(pts)) == len(pts), "duplicate (stream_id, pts) frame rows"
    order = np.argsort(pts)
    pts, wall = pts[order], wall[order]
    assert np.all(np.diff(pts) > 0) and np.all(np.diff(wall) >= 0), "pts and arrival order disagree"
    clips = lancedb.connect(str(db)).open_table(CLIPS).to_arrow().to_pylist()
    keys = [(c["stream_id"], c["adapter"], c["start"]) for c in clips]
    assert len(keys) == len(set(keys)), "duplicate (stream_id, adapter, start) clip rows"
    assert all(c["end"] > c["start"] for c in clips)

    # frames on both sides of the kill, none from the time the job was down
    before, after = wall <= t_kill, wall >= t_restart
    assert before.sum() == len(pts_before) >= 8 and after.sum() >= 6
    assert np.all(before | after), "frames stamped while no job was running"
    first_pts, first_wall = float(pts[after][0]), float(wall[after][0])
    # the timeline continues after the last committed frame, offset by the wall-clock downtime
    assert first_pts - last_pts == pytest.approx(first_wall - last_wall, abs=0.75)

    # -- 4b. the downtime is recorded: one resume event, with the gap
    events = store.events(SID)
    resumes = [e for e in events if e["kind"] == "resume"]
    assert len(resumes) == 1, events
    gap = resumes[0]["gap_s"]
    real_down = t_restart - t_kill
    assert gap is not None and gap >= real_down >= DOWNTIME_S, (gap, real_down)
    assert gap >= t_restart - last_wall  # from the last committed frame to the first new one
    assert gap < (t_kill - last_wall) + real_down + STARTUP_SLACK_S, f"gap {gap:.1f}s, down {real_down:.1f}s"
    assert gap <= t_seen - last_wall
    assert resumes[0]["pts"] == pytest.approx(last_pts + gap, abs=1e-3)
    assert resumes[0]["wallclock"] >= t_restart and resumes[0]["pts"] <= first_pts + 1e-6
    assert first_wall - last_wall == pytest.approx(gap, abs=0.75)

    # -- 4c. ... and counted on the stream's row
    row = store.stream_state(SID)
    in_run_restarts = sum(e["kind"] == "restart" for e in events)
    gap_events = [e["gap_s"] for e in events if e["gap_s"] is not None]
    assert row.status == "stopped" and row.live and row.uri == url, row
    assert row.restarts == 1 + in_run_restarts, (row.restarts, events)
    assert row.gaps == len(gap_events) >= 1, (row.gaps, events)
    assert row.gap_total_s == pytest.approx(sum(gap_events)) and row.gap_total_s >= gap
    later_gaps = [e["gap_s"] for e in events if e["wallclock"] > resumes[0]["wallclock"] and e["gap_s"] is not None]
    assert row.last_gap_s == pytest.approx(later_gaps[-1] if later_gaps else gap)
    assert row.frames_indexed > row_before.frames_indexed and row.next_window > row_before.next_window
    assert row.last_committed_pts > last_pts and row.last_wallclock > t_restart

    # the CLI shows it
    shown = subprocess.run([str(BIN / "streamvl"), "streams", "--db", str(db)], env=ENV, capture_output=True,
                           text=True, timeout=120)
    line = next(ln for ln in shown.stdout.splitlines() if f" {SID} " in ln)
    assert line.startswith("stopped") and f"gaps={row.gaps}" in line and f"restarts={row.restarts}" in line, line
    print(f"\nkilled after {len(pts_before)} frames; down {real_down:.1f}s; recorded gap {gap:.1f}s "
          f"(last frame {t_kill - last_wall:.1f}s before the kill, restart to first frame {first_wall - t_restart:.1f}s); "
          f"{after.sum()} frames after; row restarts={row.restarts} gaps={row.gaps} "
          f"gap_total_s={row.gap_total_s:.1f}")
