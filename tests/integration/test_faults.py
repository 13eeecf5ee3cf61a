"""Fault tests: actors killed mid-stream, and a kill -9 of the whole job; then rows per window are
compared with the ground truth of the file (0 duplicate keys, 0 missing windows)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import lancedb
import psutil
import pytest

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.sources.sampling import sample_times
from streamvl.storage.store import CLIPS, FRAMES, Store
from tests.integration.test_resume import expected_window_starts
from tests.videos import make_video

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"
FPS, WINDOW, STRIDE, BATCH = 4.0, 4, 2, 2
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("faults") / "clip.mp4", seconds=20.0, fps=10, size=(96, 64), gop=10)


def truth(spec) -> tuple[list[float], list[float]]:
    """(sampled frame times, window start times) of an uninterrupted run over the file."""
    pts = sample_times(list(spec.times), FPS)
    return pts, [pts[i] for i in expected_window_starts(len(pts), WINDOW, STRIDE)]


def check_exactly_once(db: Path, spec, stream_id: str) -> None:
    pts, starts = truth(spec)
    conn = lancedb.connect(str(db))
    clips = conn.open_table(CLIPS).to_arrow().to_pylist()
    keys = [(r["stream_id"], r["adapter"], r["start"]) for r in clips]
    assert len(keys) == len(set(keys)), "duplicate (stream_id, adapter, start) rows"
    got = sorted(r["start"] for r in clips if r["stream_id"] == stream_id)
    assert got == pytest.approx(starts), "windows missing or extra"
    frames = conn.open_table(FRAMES).to_arrow().to_pylist()
    assert sorted(r["pts"] for r in frames if r["stream_id"] == stream_id) == pytest.approx(pts)


def config(db: Path, **runtime) -> IndexConfig:
    return IndexConfig(db=str(db), model=MODEL, sampling={"fps": FPS, "batch_frames": BATCH},
                       clips={"window": WINDOW, "stride": STRIDE}, runtime={"checkpoint_interval_s": 0.0, **runtime})


VICTIMS = ("decode", "encode", "frames-sink", "clips-sink")


def test_actors_killed_mid_stream_resume_from_checkpoint(ray_local, clip, tmp_path):
    """The decoder, the encoder, the frames sink and the clips sink are killed one after another
    (at 20/40/60/80% of the windows); Ray restarts the encoder and sinks, the driver replays the
    stream from its checkpoint each time, and the table ends with every window exactly once."""
    from streamvl.runtime.driver import IndexRun

    stream = api.discover([str(clip.path)])[0]
    run = IndexRun([stream], config(tmp_path / "db"), None).start()
    n_windows = len(truth(clip)[1])
    killed: list[str] = []
    while run.queue or run.active or run.commits:
        run.step()
        state = run.active.get(stream.stream_id)
        if state is None or len(killed) == len(VICTIMS):
            continue
        if run.ledger[stream.stream_id].next_window >= n_windows * (len(killed) + 1) // (len(VICTIMS) + 1):
            victim = VICTIMS[len(killed)]
            target = {"decode": state.decoder.actor, "encode": run.encoder, "frames-sink": run.sinks[FRAMES],
                      "clips-sink": run.sinks[CLIPS]}[victim]
            ray_local.kill(target, no_restart=False)  # Ray restarts encode/sink actors (max_restarts)
            killed.append(victim)
    run.flush_records()
    assert killed == list(VICTIMS)
    report = run.reports[stream.stream_id]
    assert report.status == "done", report.error
    assert report.restarts >= len(VICTIMS)  # each kill replayed the stream from its checkpoint
    check_exactly_once(tmp_path / "db", clip, stream.stream_id)
    store = Store(str(tmp_path / "db"))
    row = store.stream_state(stream.stream_id)
    assert row.status == "done" and row.restarts == report.restarts
    assert row.frames_indexed == len(truth(clip)[0])
    restarts = [e for e in store.events(stream.stream_id) if e["kind"] == "restart"]
    assert len(restarts) == report.restarts and "decode actor failed" in restarts[0]["message"]


def test_a_replay_waits_for_the_killed_encoder_to_come_back(ray_local, clip, tmp_path):
    """With one replay allowed, an encoder crash costs exactly one: the driver waits for Ray to
    restart the encoder before it replays, instead of sending the replay to a process that is
    still starting (which failed again and used up the budget on busy machines)."""
    from streamvl.runtime.driver import IndexRun

    stream = api.discover([str(clip.path)])[0]
    run = IndexRun([stream], config(tmp_path / "db", max_rewinds=1), None).start()
    old_pid = ray_local.get(run.encoder.pid.remote())
    n_windows, killed = len(truth(clip)[1]), False
    while run.queue or run.active or run.commits:
        run.step()
        state = run.active.get(stream.stream_id)
        if not killed and state is not None and run.ledger[stream.stream_id].next_window >= n_windows // 4:
            os.kill(old_pid, signal.SIGKILL)  # a crash, as the OS would do it
            killed = True
    run.flush_records()
    report = run.reports[stream.stream_id]
    assert killed and report.status == "done", report.error
    assert report.restarts == 1
    assert ray_local.get(run.encoder.pid.remote()) != old_pid
    check_exactly_once(tmp_path / "db", clip, stream.stream_id)


def test_sinks_are_replaced_between_write_groups_without_losing_or_repeating_rows(ray_local, clip, tmp_path, monkeypatch):
    """runtime.sink_recycle_s: the sinks are swapped for fresh processes while three streams run
    (the new sinks find Ray CPUs although the decoders took theirs), each time only once no write
    is in flight; that is no failure (no replay) and every window is still stored exactly once."""
    from streamvl.runtime.driver import IndexRun

    copies = []  # three streams: their decoders take Ray CPUs the new sinks must still find
    for i in range(3):
        copies.append(tmp_path / f"cam{i}.mp4")
        shutil.copy(clip.path, copies[-1])
    streams = api.discover([str(c) for c in copies])
    run = IndexRun(streams, config(tmp_path / "db", sink_recycle_s=3.0), None).start()
    sinks = list(run.sinks.values())
    pids = {tuple(ray_local.get([s.pid.remote() for s in sinks]))}
    in_flight_at_kill = []
    real_kill = ray_local.kill

    def kill(actor, **kwargs):
        if any(actor is s for s in sinks):
            in_flight_at_kill.append(len(run.commits) + len(run.recorder.refs()))
        real_kill(actor, **kwargs)

    monkeypatch.setattr(ray_local, "kill", kill)
    active_at_swap = []
    while run.queue or run.active or run.commits:
        before = run.sink_recycles
        run.step()
        if run.sink_recycles > before:
            active_at_swap.append(len(run.active))
        sinks += [s for s in run.sinks.values() if not any(s is k for k in sinks)]
        pids.add(tuple(ray_local.get([s.pid.remote() for s in run.sinks.values()])))
    run.flush_records()
    assert run.sink_recycles >= 1 and len(pids) == run.sink_recycles + 1
    assert in_flight_at_kill == [0] * 3 * run.sink_recycles
    assert active_at_swap[0] == 3, "the new sinks had to wait for a stream to end"
    for stream in streams:
        report = run.reports[stream.stream_id]
        assert report.status == "done" and report.restarts == 0, report.error
        check_exactly_once(tmp_path / "db", clip, stream.stream_id)
        row = Store(str(tmp_path / "db")).stream_state(stream.stream_id)
        assert row.status == "done" and row.frames_indexed == len(truth(clip)[0])


def test_a_replacement_sink_that_fails_to_start_leaves_the_running_sinks_in_place(ray_local, clip, tmp_path, monkeypatch):
    """runtime.sink_recycle_s: when a new sink process dies in its constructor, the run keeps its
    current sinks (same processes), records the failure, and the stream still ends exactly once."""
    from streamvl.runtime.driver import IndexRun

    @ray_local.remote(num_cpus=0)
    class BrokenSink:
        def __init__(self):
            raise OSError("disk gone")

        def pid(self) -> int:
            return os.getpid()

    stream = api.discover([str(clip.path)])[0]
    run = IndexRun([stream], config(tmp_path / "db", sink_recycle_s=1.0), None).start()
    pids = ray_local.get([s.pid.remote() for s in run.sinks.values()])
    monkeypatch.setattr(run.backend.sinks, "_new_sink", lambda table: BrokenSink.remote())
    while run.queue or run.active or run.commits:
        run.step()
        if run.sink_recycle_failures:
            break
    assert run.sink_recycle_failures == 1 and run.sink_recycles == 0
    assert ray_local.get([s.pid.remote() for s in run.sinks.values()]) == pids
    monkeypatch.undo()
    run.run()
    report = run.reports[stream.stream_id]
    assert report.status == "done" and report.restarts == 0, report.error
    check_exactly_once(tmp_path / "db", clip, stream.stream_id)


def _job_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_kill_9_of_the_whole_job_then_restart(clip, tmp_path):
    """A real `streamvl index` process (its own local Ray) is SIGKILLed with all its processes
    while the file is half indexed; a fresh run resumes at the checkpoint and the table ends
    with every window exactly once."""
    db = tmp_path / "db"
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f"[sampling]\nfps = {FPS}\nbatch_frames = {BATCH}\n[clips]\nwindow = {WINDOW}\nstride = {STRIDE}\n"
                   "[runtime]\ncheckpoint_interval_s = 0.0\n")
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "local"}  # its own Ray, killed with it
    cmd = [str(BIN / "streamvl"), "index", str(clip.path), "--db", str(db), "--model", MODEL, "--config", str(cfg), "--json"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    n_windows = len(truth(clip)[1])
    store = Store(str(db))
    deadline = time.monotonic() + 300
    at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            rows = store.stream_states() if db.exists() else []
            if rows and (rows[0].next_window or 0) >= n_windows // 3:
                at = rows[0].next_window
                break
            time.sleep(0.1)
    finally:
        tree = _job_tree(proc.pid)  # the CLI, the local Ray it started, and the actor workers
        for p in tree:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        proc.communicate()  # reap the CLI here (psutil would take its exit status)
        psutil.wait_procs(tree[1:], timeout=30)
    assert at is not None, "the job finished or stalled before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    row = store.stream_state(rows[0].stream_id)
    assert row.status == "running" and row.next_window < 2 * n_windows  # killed mid-stream

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)["streams"][0]
    assert report["status"] == "done" and report["resumed_from"] is not None and report["restarts"] == 1
    check_exactly_once(db, clip, report["stream_id"])
    kinds = [e["kind"] for e in store.events(report["stream_id"])]
    assert kinds == ["resume"]


@pytest.mark.parametrize("victim", ["encode", "clips-sink"])
def test_kill_9_mid_commit_loses_and_repeats_nothing(ray_local, clip, tmp_path, victim):
    """kill -9 (SIGKILL from the OS, not ray.kill) of the encoder or the clips sink while write
    groups are in flight: the rows they were committing are either in the table or replayed, the
    checkpoint never claims more than the table holds, and every window ends up exactly once."""
    from streamvl.runtime.driver import IndexRun

    stream = api.discover([str(clip.path)])[0]
    run = IndexRun([stream], config(tmp_path / "db"), None).start()
    actor = run.encoder if victim == "encode" else run.sinks[CLIPS]
    pid = ray_local.get(actor.pid.remote())
    n_windows, killed = len(truth(clip)[1]), False
    while run.queue or run.active or run.commits:
        run.step()
        if not killed and run.commits and run.ledger[stream.stream_id].next_window >= n_windows // 3:
            os.kill(pid, signal.SIGKILL)  # with write groups in flight: mid-commit
            killed = True
    run.flush_records()
    report = run.reports[stream.stream_id]
    assert killed and report.status == "done", report.error
    assert report.restarts >= 1
    check_exactly_once(tmp_path / "db", clip, stream.stream_id)
    row = Store(str(tmp_path / "db")).stream_state(stream.stream_id)
    assert row.frames_indexed == len(truth(clip)[0])
