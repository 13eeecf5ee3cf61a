"""Whole runs of fake streams through the run loop (scheduler, ledger, commit step, recorder) on
the in-memory backend: no Ray, no model. Calls complete in seeded random orders; workers are
killed mid-call; whole runs crash and resume. The tables must end with every clip window and
frame exactly once, and the run must keep within its backpressure bounds."""

from __future__ import annotations

import pytest

from streamvl.config import IndexConfig
from streamvl.runtime.commit import MAX_COMMITS_WAITING, MAX_ENCODES_AHEAD
from streamvl.runtime.engine import Run
from streamvl.runtime.memory_backend import MemoryBackend
from streamvl.runtime.testing import ListSource, MemoryDB
from streamvl.storage.store import CLIPS
from streamvl.types import StreamEvent, StreamInfo

FPS, WINDOW, STRIDE = 1.0, 4, 2
SEEDS = range(6)


def expected_window_starts(n: int) -> list[float]:
    """Start times of the windows an uninterrupted run stores for n frames at FPS: the grid, plus
    one tail window over frames no full window covers (stated independently of Windower)."""
    starts = list(range(0, n - WINDOW + 1, STRIDE)) if n >= WINDOW else []
    covered = starts[-1] + WINDOW if starts else 0
    if n > covered:
        starts.append(starts[-1] + STRIDE if starts else 0)
    return [i / FPS for i in starts]


def frames(n: int) -> list[float]:
    return [i / FPS for i in range(n)]


def uri(sid: str) -> str:
    return f"rtsp://cams/{sid}" if sid.startswith("live") else f"/videos/{sid}.mp4"


class Harness:
    """Streams by id (their frame counts), a MemoryDB that outlives runs, and a way to make runs."""

    def __init__(self, lengths: dict[str, int], batch: int = 2, **sources):
        self.lengths = lengths
        self.sources = {uri(s): ListSource(frames(n), batch=batch, fps=FPS, **sources.get(s, {}))
                        for s, n in lengths.items()}
        self.db = MemoryDB()
        self.frames_seen: list[int] = []

    def run(self, seed: int = 0, progress: float = 0.3, swap_sinks_every: int = 0, streams=None, **runtime) -> Run:
        self.backend = MemoryBackend(self.db, self.sources, WINDOW, STRIDE, seed=seed, progress=progress,
                                     swap_sinks_every=swap_sinks_every)
        config = IndexConfig(db="memory", sampling={"fps": FPS}, clips={"window": WINDOW, "stride": STRIDE},
                             runtime={"checkpoint_interval_s": 0.0, "max_active_streams": 2, **runtime})
        infos = [StreamInfo(s, uri(s)) for s in (streams if streams is not None else self.lengths)]
        return Run(infos, config, self.frames_seen.append, backend=self.backend, store=self.db)

    def assert_exactly_once(self, sid: str) -> None:
        n = self.lengths[sid]
        assert self.db.window_starts(sid) == pytest.approx(expected_window_starts(n)), f"{sid}: windows"
        assert self.db.frame_times(sid) == pytest.approx(frames(n)), f"{sid}: frames"

    def assert_ledger_within_tables(self) -> None:
        """Every `streams` row claims only what the tables hold (nothing committed is ever lost)."""
        for sid, row in self.db.rows.items():
            starts = set(self.db.window_starts(sid))
            claimed = [s for s in expected_window_starts(self.lengths[sid]) if s < row["next_window"] / FPS]
            assert set(claimed) <= starts, f"{sid}: checkpoint at window {row['next_window']} ahead of the clips"
            assert row["frames_indexed"] <= len(self.db.frame_times(sid))


def step_until(run: Run, done, limit: int = 20000) -> None:
    for _ in range(limit):
        if done():
            return
        run.step()
    raise AssertionError("the run did not finish")


def busy(run: Run) -> bool:
    return bool(run.queue or run.active or run.commits)


LENGTHS = {"a": 0, "b": 1, "c": 7, "d": 13, "e": 20}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("batch", [2, 3])
def test_a_run_stores_every_window_once_within_its_bounds(seed, batch):
    h = Harness(LENGTHS, batch=batch)
    run = h.run(seed, inflight_per_stream=2)
    report = run.run()
    assert {s.stream_id: s.status for s in report.streams} == dict.fromkeys(LENGTHS, "done")
    for sid, n in LENGTHS.items():
        h.assert_exactly_once(sid)
        row = h.db.stream(sid)
        assert (row["status"], row["frames_indexed"], row["restarts"]) == ("done", n, 0)
    assert {s.stream_id: s.frames for s in report.streams} == LENGTHS
    assert sum(h.frames_seen) == sum(LENGTHS.values()) == report.frames
    assert h.db.rewrites[CLIPS] == 0  # no failure: nothing written twice
    b = h.backend  # measured by the backend, not by the run's own counters
    assert 1 <= b.peak_asked <= 2 and b.peak_asked_total <= 2 * 2
    assert b.peak_file_decoders == 2
    assert b.peak_encodes <= MAX_ENCODES_AHEAD and run.peak_commits <= MAX_COMMITS_WAITING
    assert b.queued() == 0  # nothing left running
    assert b.blocking_gets == 0  # the loop only takes results it saw ready


@pytest.mark.parametrize("progress", [0.0, 1.0])
def test_backpressure_holds_with_stalled_and_with_instant_workers(progress):
    """progress 0: nothing completes unless the run waits for it (slow sinks and encoder)."""
    lengths = {f"s{i}": 30 for i in range(5)}
    h = Harness(lengths, batch=1)
    run = h.run(seed=1, progress=progress, inflight_per_stream=3, max_active_streams=3, encode_batch=2)
    assert all(s.status == "done" for s in run.run().streams)
    b = h.backend
    assert b.peak_asked == 3 and b.peak_asked_total <= 3 * 3 and b.peak_file_decoders == 3
    assert b.peak_encodes <= MAX_ENCODES_AHEAD and run.peak_commits <= MAX_COMMITS_WAITING
    assert b.blocking_gets == 0
    for sid in lengths:
        h.assert_exactly_once(sid)


def test_files_wait_for_a_slot_and_live_streams_never_do():
    lengths = {"f1": 6, "f2": 6, "f3": 6, "live1": 9, "live2": 9}
    h = Harness(lengths)
    run = h.run(max_active_streams=1).start()
    run.step()
    assert {"live1", "live2"} <= set(run.active) and len([s for s in run.active if s.startswith("f")]) == 1
    assert [q.stream_id for q in run.queue] == ["f2", "f3"]
    report = run.run()
    assert all(s.status == "done" for s in report.streams) and h.backend.peak_file_decoders == 1
    assert {s.stream_id for s in report.streams if s.live} == {"live1", "live2"}
    for sid in lengths:
        h.assert_exactly_once(sid)
    assert h.db.stream("live1")["last_wallclock"] == pytest.approx(1e9 + 8)


VICTIMS = [("decoder:d", False), ("encoder", False), ("sink:frames", False), ("sink:clips", False),
           ("sink:clips", True), ("sink:streams", False)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("victim, land", VICTIMS)
def test_a_worker_killed_mid_stream_is_replayed_from_the_checkpoint(seed, victim, land):
    """One replay per affected stream (max_rewinds=1): what an older decoder generation still
    delivers after the failure is ignored, never replayed again."""
    h = Harness({"d": 21, "e": 14})
    run = h.run(seed, max_rewinds=1).start()
    step_until(run, lambda: run.ledger["d"].next_window >= 6)
    h.backend.kill(victim, land=land)
    step_until(run, lambda: not busy(run))
    run.flush_records()
    h.assert_ledger_within_tables()
    for sid in ("d", "e"):
        h.assert_exactly_once(sid)
        report, row = run.reports[sid], h.db.stream(sid)
        assert report.status == row["status"] == "done", report.error
        assert row["restarts"] == report.restarts and row["frames_indexed"] == h.lengths[sid]
    restarts = [e for e in h.db.events if e.kind == "restart"]
    assert all(r.restarts <= 1 for r in run.reports.values())
    if victim == "decoder:d":  # the decoder held only d's batches: only d is replayed
        assert run.reports["d"].restarts == 1 and run.reports["e"].restarts == 0
        assert len(restarts) == 1 and "decode actor failed" in restarts[0].message
    elif victim != "sink:streams":  # a lost `streams` row is just written again
        assert len(restarts) == sum(r.restarts for r in run.reports.values())


def test_a_lost_streams_row_is_written_again():
    """The streams sink dies with the closing rows queued: they are written again from the run's state."""
    h = Harness({"c": 9, "d": 6})
    run = h.run(seed=9, progress=0.0).start()
    step_until(run, lambda: not busy(run))
    assert h.backend.queues["sink:streams"], "the closing rows should still be queued"
    h.backend.kill("sink:streams")
    run.flush_records()
    assert {sid: (r["status"], r["frames_indexed"]) for sid, r in h.db.rows.items()} == {"c": ("done", 9), "d": ("done", 6)}


@pytest.mark.parametrize("seed", SEEDS)
def test_a_crash_of_the_whole_run_resumes_every_stream_exactly_once(seed):
    lengths = {"c": 9, "d": 17, "live1": 12}  # an odd live length: see the xfail test below
    for crash_at in range(1, 60, 7):
        h = Harness(lengths)
        first = h.run(seed).start()
        for _ in range(crash_at):  # the whole job dies (kill -9): calls not run yet never run
            if not busy(first):
                break
            first.step()
            h.assert_ledger_within_tables()
        stored = {sid: h.db.stream(sid) for sid in lengths}
        report = h.run(seed + 100).run()
        h.assert_ledger_within_tables()
        for s in report.streams:
            assert s.status == "done", (crash_at, s)
            h.assert_exactly_once(s.stream_id)
            before = stored[s.stream_id]
            resumed = before is not None and before["next_window"] > 0 and before["status"] != "done"
            assert (s.resumed_from is not None) == (resumed or (before or {}).get("status") == "done")
            assert s.restarts == int(resumed)
        resumes = {e.stream_id for e in h.db.events if e.kind == "resume"}
        assert resumes == {sid for sid, r in stored.items() if r and r["next_window"] > 0
                           and r["status"] != "done" and not sid.startswith("live")}


@pytest.mark.xfail(strict=True, reason="known, older than this layout: a finished stream's checkpoint sits "
                   "after its tail window, off the window grid (Windower.flush); a live stream that ended and is "
                   "run again resumes there and the encoder refuses it (files are skipped as done instead)")
def test_a_live_stream_that_ended_off_the_grid_runs_again():
    h = Harness({"live1": 11})
    assert h.run().run().streams[0].status == "done"
    assert h.run(seed=1).run().streams[0].status == "done"


def test_a_done_file_is_skipped_by_the_next_run():
    h = Harness({"c": 9, "d": 5})
    h.run().run()
    report = h.run(seed=3).run()
    assert [s.status for s in report.streams] == ["done", "done"]
    assert h.backend.decoders == {} and h.backend._pullers == {}  # no decoder started
    assert h.db.rewrites[CLIPS] == 0


def test_a_failing_stream_fails_alone_and_keeps_its_good_frames():
    h = Harness({"bad": 12, "good": 8}, batch=2, bad={"fail_at": 7})
    report = h.run(seed=2).run()
    by_id = {s.stream_id: s for s in report.streams}
    assert by_id["good"].status == "done" and by_id["bad"].status == "error"
    assert "DecodeError: corrupt data" in by_id["bad"].error and "stream=bad" in by_id["bad"].error
    assert by_id["bad"].frames == 7 and h.db.frame_times("bad") == frames(7)  # every frame before the fault
    assert h.db.window_starts("bad") == pytest.approx(expected_window_starts(7))  # with the tail window
    assert h.db.stream("bad")["status"] == "error" and h.db.stream("bad")["error"] == by_id["bad"].error
    h.assert_exactly_once("good")


def test_a_stream_that_keeps_failing_without_progress_is_given_up():
    h = Harness({"d": 10, "e": 6})
    run = h.run(seed=4, progress=0.0, max_rewinds=2).start()
    for _ in range(500):
        if not busy(run):
            break
        if "d" in run.active and run.active["d"].decoder in h.backend.decoders:
            h.backend.kill("decoder:d")  # every decoder of d dies before it delivers
        run.step()
    run.flush_records()
    report = run.reports["d"]
    assert report.status == "error" and report.error.startswith("gave up after 2 restarts without progress")
    assert report.restarts == 3 and run.reports["e"].status == "done"
    h.assert_exactly_once("e")
    assert h.db.stream("d")["status"] == "error"


def test_live_events_are_counted_and_stored():
    events = {3: [StreamEvent("live1", "stall", 1.0)],
              4: [StreamEvent("live1", "reconnect", 2.0, pts=4.0, gap_s=2.5, attempts=2)],
              8: [StreamEvent("live1", "discontinuity", 3.0, pts=8.0, gap_s=1.0)]}
    h = Harness({"live1": 10}, batch=1, live1={"events": events})
    report = h.run(seed=5).run().streams[0]
    assert (report.reconnects, report.gaps, report.gap_total_s, report.last_gap_s) == (1, 2, 3.5, 1.0)
    row = h.db.stream("live1")
    assert (row["reconnects"], row["gaps"], row["gap_total_s"]) == (1, 2, 3.5) and row["live"]
    assert [e.kind for e in h.db.events] == ["stall", "reconnect", "discontinuity"]
    h.assert_exactly_once("live1")


@pytest.mark.parametrize("progress", [0.0, 0.5])
def test_streams_rows_go_out_together_one_write_at_a_time(progress):
    """Six streams recorded at every commit (interval 0): their rows share `streams` writes, never
    more than one in flight, a newer state replacing a waiting one; the rows end right."""
    lengths = {f"s{i}": 12 for i in range(6)}
    h = Harness(lengths, batch=1)
    run = h.run(seed=3, progress=progress, max_active_streams=6, encode_batch=6)
    assert all(s.status == "done" for s in run.run().streams)
    b = h.backend
    assert b.peak_state_writes == 1
    assert max(b.state_writes) > 1  # rows of several streams in one commit
    assert len(b.state_writes) < sum(lengths.values())  # far fewer commits than one per stream and batch
    assert {sid: (r["status"], r["frames_indexed"]) for sid, r in h.db.rows.items()} == {s: ("done", 12) for s in lengths}
    h.assert_ledger_within_tables()


@pytest.mark.parametrize("seed", SEEDS)
def test_sinks_are_swapped_only_with_no_write_in_flight(seed):
    lengths = {"c": 15, "d": 15, "e": 9}
    h = Harness(lengths)
    report = h.run(seed, swap_sinks_every=3).run()
    assert all(s.status == "done" and s.restarts == 0 for s in report.streams)
    assert h.backend.swaps >= 3 and h.backend.unsafe_swaps == 0
    for sid in lengths:
        h.assert_exactly_once(sid)


def test_serve_adds_and_removes_streams_from_requests():
    h = Harness({"long": 200, "short": 5})
    run = h.run(seed=6, streams=[])
    h.db.request("long", uri("long"))
    h.db.request("short", uri("short"))
    polls = []

    def stop() -> bool:
        polls.append(1)
        if len(polls) == 30:
            h.db.request("long", uri("long"), action="remove")
        return len(polls) > 30 and not run.active

    report = run.serve(stop, poll_s=0.0)
    by_id = {s.stream_id: s for s in report.streams}
    assert by_id["short"].status == "done" and by_id["long"].status == "removed"
    assert h.db.stream("long")["status"] == "removed"
    h.assert_exactly_once("short")
    kept = h.db.window_starts("long")
    assert 0 < len(kept) < len(expected_window_starts(200))
    assert kept == expected_window_starts(200)[:len(kept)]  # the grid up to the tail window at removal
    assert h.db.frame_times("long") == frames(len(h.db.frame_times("long")))


def test_serve_stops_with_checkpoints_kept_and_a_new_run_continues():
    h = Harness({"live1": 30})
    run = h.run(seed=7)
    report = run.serve(lambda: run.reports["live1"].frames >= 8, requests=False)
    assert report.streams[0].status == "stopped" and h.db.stream("live1")["status"] == "stopped"
    again = h.run(seed=8).run().streams[0]
    assert again.status == "done" and again.restarts == 1 and again.resumed_from is not None
    h.assert_exactly_once("live1")


def test_nothing_starts_in_the_constructor():
    h = Harness({"c": 3})
    run = h.run()
    assert not h.backend.started and h.db.rows == {} and not run.queue
    for call in (run.step, lambda: run.add(StreamInfo("x", uri("x"))), lambda: run.remove("c"), run.poll_requests):
        with pytest.raises(RuntimeError, match="start"):
            call()
    run.start()
    assert h.backend.started and [q.stream_id for q in run.queue] == ["c"] and h.db.stream("c") is None
    run.flush_records()
    assert h.db.stream("c")["status"] == "queued"
    run.close()
    assert h.backend.closed


def test_admission_and_requests_of_the_scheduler_alone():
    from streamvl.config import RuntimeConfig
    from streamvl.runtime.report import StreamReport
    from streamvl.runtime.scheduler import StreamScheduler

    sched = StreamScheduler(RuntimeConfig(max_active_streams=2, inflight_per_stream=3))
    for sid in ("f1", "live1", "f2", "f3", "live2"):
        sched.enqueue(StreamInfo(sid, uri(sid)))
    admitted = [i.stream_id for i in sched.admit()]
    assert admitted == ["f1", "live1", "f2", "live2"] and [q.stream_id for q in sched.queue] == ["f3"]
    states = {sid: sched.activate(StreamInfo(sid, uri(sid)), StreamReport(sid, uri(sid), live=sid.startswith("live")))
              for sid in admitted}
    assert sched.admit() == [] and sched.has("f3") and not sched.has("f9")
    assert sched.wanted(states["f1"]) == 3
    states["f1"].pending.extend([("m", "b")] * 2)
    assert sched.wanted(states["f1"]) == 1
    states["f1"].requested_final = True
    assert sched.wanted(states["f1"]) == 0
    states["f1"].ending = "done"
    assert sched.idle(states["f1"])
    sched.close(states["f1"])
    assert [i.stream_id for i in sched.admit()] == ["f3"]  # a file slot came free
    assert sched.unqueue("f3") is False and sched.may_replay(states["f2"]) and states["f2"].rewinds == 1


def test_a_report_resumes_from_a_stored_state():
    import dataclasses

    from streamvl.runtime.report import StreamReport
    from streamvl.storage.ledger import Checkpoint
    from streamvl.types import Status, StreamState

    stored = StreamState("s", "/v.mp4", Status.RUNNING, restarts=2, reconnects=1, gaps=1, gap_total_s=4.0,
                         frames_skipped=3)
    report = StreamReport("s", "/v.mp4")
    assert report.resume(stored, Checkpoint("g", 4, 3.5, 9, 8.0)) is True
    assert (report.frames, report.last_pts, report.resumed_from, report.restarts, report.gap_total_s) == (9, 8.0, 3.5, 3, 4.0)
    done = StreamReport("s", "/v.mp4")
    assert done.resume(dataclasses.replace(stored, status=Status.DONE), Checkpoint("g", 4, 3.5, 9, 8.0)) is False
    assert done.restarts == 2
    fresh = StreamReport("s", "/v.mp4")
    assert fresh.resume(stored, Checkpoint("g")) is False and fresh.restarts == 0 and fresh.resumed_from is None
    state = report.state(Checkpoint("g", 4, 3.5, 9, 8.0), "m")
    assert (state.next_window, state.resume_after, state.frames_indexed, state.restarts, state.model) == (4, 3.5, 9, 3, "m")
    assert state.status is Status.QUEUED and state.grid == "g"
