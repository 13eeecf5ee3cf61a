"""Watches off the commit path (WatchThread through TableSink): same events as the synchronous
path, exactly once under replay, queued batches written at close, and a kill with batches still
queued completed by the next sink's catch-up."""

import numpy as np
import pyarrow as pa

from streamvl.search.watch_thread import WatchThread
from streamvl.search.watches import Watcher
from streamvl.storage.schema import CLIPS
from streamvl.storage.sink import TableSink
from streamvl.storage.store import Store
from streamvl.types import Status, StreamState
from tests.unit.test_watches import RED, clip_table, tables, timeline

SPEC = "..rrr.r.......rr......."  # two episodes on each stream: (2 .. 8) and (14 .. 17)


def spans(store):
    return sorted((e["stream_id"], e["start"], e["end"], e["status"]) for e in tables(store).watch_events())


def feed(sink, specs, step=3):
    rows = {sid: timeline(sid, spec) for sid, spec in specs.items()}
    for i in range(0, max(len(r) for r in rows.values()), step):
        sink.write(clip_table([r for sid in rows for r in rows[sid][i:i + step]]))


def with_watch(path):
    store = Store(path)
    tables(store).add_watch("red", {"meanpool": RED}, threshold=0.9, quiet_s=2.0, watch_id="w")
    return store


def test_background_sink_stores_the_same_events_as_the_synchronous_one(tmp_path):
    specs = {"cam1": SPEC, "cam2": "rr" + SPEC[2:]}
    sync_store, bg_store = with_watch(tmp_path / "sync"), with_watch(tmp_path / "bg")
    feed(TableSink(sync_store.uri, CLIPS), specs)
    bg = TableSink(bg_store.uri, CLIPS, watch_in_background=True)
    assert bg.watcher is None and bg.watch_thread is not None
    feed(bg, specs)
    assert bg.flush_watches(timeout=60)
    assert spans(bg_store) == spans(sync_store)
    assert ("cam1", 14.0, 17.0, "closed") in spans(bg_store)
    ids = [e["event_id"] for e in tables(bg_store).watch_events()]
    assert len(ids) == len(set(ids)) == len(spans(sync_store)) == 4
    bg.close()


def test_replay_through_a_new_background_sink_adds_nothing(tmp_path):
    store = with_watch(tmp_path / "db")
    first = TableSink(store.uri, CLIPS, watch_in_background=True)
    feed(first, {"cam": SPEC})
    first.close()  # writes what is still queued, then stops the thread
    before = tables(store).watch_events()
    assert [e["start"] for e in before] == [2.0, 14.0]
    second = TableSink(store.uri, CLIPS, watch_in_background=True)
    feed(second, {"cam": SPEC}, step=5)  # the same rows again, in other batches
    second.close()
    assert tables(store).watch_events() == before


def test_a_kill_with_batches_queued_is_completed_by_the_next_sink(tmp_path):
    """Rows committed, their batches still queued when the process dies: the successor's watcher
    rescores the stored tail at its first batch, so no event is lost or doubled."""
    store = with_watch(tmp_path / "db")
    rows = timeline("cam", "..rrrr.......rr.")
    first = TableSink(store.uri, CLIPS, watch_in_background=True)
    first.write(clip_table(rows[:4]))
    assert first.flush_watches(timeout=60)
    store.upsert(CLIPS, clip_table(rows[4:10]))  # committed; "killed" before the watcher saw them
    store.record_state(StreamState("cam", "rtsp://x", Status.RUNNING, last_committed_pts=3.0))
    assert [(e["start"], e["end"]) for e in tables(store).watch_events()] == [(2.0, 5.0)]
    second = TableSink(store.uri, CLIPS, watch_in_background=True)
    second.write(clip_table(rows[10:]))
    second.close()
    assert spans(store) == [("cam", 2.0, 7.0, "closed"), ("cam", 13.0, 16.0, "open")]


def test_a_failing_batch_restarts_the_watcher_from_the_table(tmp_path):
    store = with_watch(tmp_path / "db")
    made = []

    def make():
        made.append(Watcher(store))
        return made[-1]

    thread = WatchThread(make)
    thread.watcher.on_commit = lambda clips: (_ for _ in ()).throw(OSError("disk gone"))
    store.upsert(CLIPS, clip_table(timeline("cam", "..rr")))
    thread.submit(clip_table(timeline("cam", "..rr")))
    assert thread.flush(timeout=60)
    assert thread.failures == 1 and len(made) == 2  # a fresh watcher, restored from the table
    thread.submit(clip_table(timeline("cam", "..rr")))
    thread.close()
    assert [e["start"] for e in tables(store).watch_events()] == [2.0]
    assert np.isclose(tables(store).watch_events()[0]["peak_score"], 1.0)


def test_small_growth_waits_for_a_bigger_step_or_the_close(tmp_path):
    """An open event's end is stored when it first moves GROWTH_WRITE_S (5 s) past the stored end,
    and always at its close; smaller steps are not a commit each."""
    from streamvl.search.watches import GROWTH_WRITE_S

    store = with_watch(tmp_path / "db")
    rows = timeline("cam", "rrrrrrrrrr.....")  # windows 0..9 match (2 s each), the gap closes the event
    w = Watcher(store)
    ends = []
    for i in range(len(rows)):
        w.on_commit(clip_table(rows[i:i + 1]))
        [ev] = tables(store).watch_events()
        ends.append((ev["end"], ev["status"]))
    assert GROWTH_WRITE_S == 5.0
    assert ends[:5] == [(2.0, "open")] * 5  # 3, 4, 5, 6: less than 5 s past 2
    assert ends[5:10] == [(7.0, "open")] * 5  # 7 is 5 s past 2; then 8..11 wait
    assert ends[-1] == (11.0, "closed")  # the close stores the whole span
    assert w.events_written == 3


def test_a_watch_added_later_does_not_fire_on_rows_committed_before_it(tmp_path):
    """The start-up catch-up rescoring is for a restart; a watch that appears while the sink runs
    applies to rows committed from then on, not to the stored tail."""
    store = Store(tmp_path / "db")
    clock = [0.0]
    w = Watcher(store, reload_s=1.0, clock=lambda: clock[0])
    rows = timeline("cam", "rrrr....rr")
    store.upsert(CLIPS, clip_table(rows[:4]))
    store.record_state(StreamState("cam", "rtsp://x", Status.RUNNING, last_committed_pts=3.0))
    assert w.on_commit(clip_table(rows[:4])) == 0  # no watches yet
    tables(store).add_watch("red", {"meanpool": RED}, threshold=0.9, quiet_s=2.0, watch_id="w")
    clock[0] = 2.0
    store.upsert(CLIPS, clip_table(rows[4:]))
    w.on_commit(clip_table(rows[4:]))
    assert [e["start"] for e in tables(store).watch_events()] == [8.0]


def test_batches_that_do_not_concatenate_restart_the_watcher_and_the_thread_lives_on(tmp_path):
    store = with_watch(tmp_path / "db")
    thread = WatchThread(lambda: Watcher(store))
    bad = clip_table(timeline("cam", "r")).set_column(1, "start", pa.array(["x"]))  # start as text
    thread.submit(clip_table(timeline("cam", "..")))
    thread.submit(bad)
    assert thread.flush(timeout=60)
    assert thread.failures == 1
    thread.submit(clip_table(timeline("cam", "..rr")))
    thread.close()
    assert [e["start"] for e in tables(store).watch_events()] == [2.0]


# -- sequence watches run in the same thread: the same events as on the commit path, exactly once


def seq_commit(db, table, size=3, background=True):
    """Commit `table` through a clips sink, `size` rows a batch; close it (queued batches scored)."""
    sink = TableSink(str(db), CLIPS, watch_in_background=background)
    for i in range(0, table.num_rows, size):
        sink.write(table.slice(i, size))
    sink.close()
    return sink


def test_sequence_watches_run_in_the_watch_thread_with_the_same_events(tmp_path):
    from tests.unit.test_sequence_watches import A_ONLY, AB, BA, RED, clips, events, red_then_blue
    from tests.unit.test_sequence_watches import tables as seq_tables

    data = pa.concat_tables([clips("ab", AB + AB), clips("ba", BA), clips("a_only", A_ONLY)])
    got = {}
    for mode in ("sync", "bg"):
        t = seq_tables(Store(tmp_path / mode))
        red_then_blue(t, watch_id="seq")
        t.add_watch("red", {"meanpool": RED}, threshold=0.9, quiet_s=2.0, watch_id="plain")
        sink = seq_commit(tmp_path / mode, data, background=mode == "bg")
        assert (sink.sequences is None) == (mode == "bg")  # nothing on the commit path when in the background
        got[mode] = [(e["watch_id"], e["stream_id"], e["start"], e["end"], e["status"],
                      [(s["text"], s["start"]) for s in e["steps"] or ()]) for e in events(t, "seq") + events(t, "plain")]
    assert got["bg"] == got["sync"]
    assert [g[1:4] for g in got["bg"] if g[0] == "seq"] == [("ab", 4.0, 11.0), ("ab", 21.0, 28.0)]


def test_sequence_replay_through_a_background_sink_rewrites_nothing(tmp_path):
    from streamvl.storage.schema import EVENTS
    from tests.unit.test_sequence_watches import AB, clips, events, red_then_blue
    from tests.unit.test_sequence_watches import tables as seq_tables

    store = Store(tmp_path / "db")
    t = seq_tables(store)
    red_then_blue(t, watch_id="seq")
    data = clips("ab", AB + AB)
    seq_commit(tmp_path / "db", data)
    first, version = events(t, "seq"), store.conn.open(EVENTS).version
    seq_commit(tmp_path / "db", data, size=5)  # a new sink replays the stream from its start
    seq_commit(tmp_path / "db", data.slice(6, 8), size=2)  # ... and a part of it
    assert len(first) == 2 and events(t, "seq") == first
    assert store.conn.open(EVENTS).version == version


def test_sequence_batches_queued_at_a_kill_are_completed_by_the_next_background_sink(tmp_path):
    """Rows committed while their batches still waited in the thread (the process dies): the next
    sink rebuilds the trackers from the stored rows before its first batch and stores the chain once."""
    from tests.unit.test_sequence_watches import clips, events, red_then_blue
    from tests.unit.test_sequence_watches import tables as seq_tables

    store = Store(tmp_path / "db")
    t = seq_tables(store)
    red_then_blue(t, watch_id="seq")
    rows = clips("cam", "..rrr...bbb.......")
    store.upsert(CLIPS, rows.slice(0, 9))  # committed; "killed" before the thread scored them (A and B's start)
    seq_commit(tmp_path / "db", rows.slice(9), size=3)
    [ev] = events(t, "seq")
    assert (ev["start"], ev["status"]) == (4.0, "closed")
    assert [(s["text"], s["start"]) for s in ev["steps"]] == [("red", 4.0), ("blue", 8.0)]
    seq_commit(tmp_path / "db", rows.slice(9), size=3)  # and again: nothing new
    assert len(events(t, "seq")) == 1


def test_closes_are_held_to_share_one_upsert_and_a_kill_before_it_loses_nothing(tmp_path):
    """upsert_every_s (the background sink's): a close is stored once upsert_every_s stream seconds
    passed on its stream, in one commit with the others held meanwhile; new events are appended at
    once. A watcher dropped with a close held (a kill) leaves its event open in the table; the next
    one closes it from the stored tail, without a new event."""
    from streamvl.storage.schema import EVENTS

    store = with_watch(tmp_path / "db")  # quiet gap 2 s; windows 2 s long, one a second
    rows = {sid: timeline(sid, "rr......rr......rr.........") for sid in ("a", "b")}
    w = Watcher(store, upsert_every_s=10.0)

    def step(watcher, i):
        batch = clip_table([rows["a"][i], rows["b"][i]])
        store.upsert(CLIPS, batch)
        for sid in rows:
            store.record_state(StreamState(sid, "rtsp://x", Status.RUNNING, last_committed_pts=float(i)))
        watcher.on_commit(batch)

    for i in range(7):
        step(w, i)  # the first episodes (0..3) close at 6 (6 > 3 + 2): held
    assert spans(store) == [("a", 0.0, 2.0, "open"), ("b", 0.0, 2.0, "open")]
    version = store.conn.open(EVENTS).version
    for i in range(7, 16):
        step(w, i)  # the second episodes open at 8 (appended at once) and close at 14 (held)
    assert spans(store) == [("a", 0.0, 2.0, "open"), ("a", 8.0, 10.0, "open"),
                            ("b", 0.0, 2.0, "open"), ("b", 8.0, 10.0, "open")]
    assert store.conn.open(EVENTS).version == version + 1
    step(w, 16)  # 10 s after the first close: ONE upsert of the four closes (and the third episodes' append)
    assert store.conn.open(EVENTS).version == version + 3
    assert [s for s in spans(store) if s[3] == "closed"] == [("a", 0.0, 3.0, "closed"), ("a", 8.0, 11.0, "closed"),
                                                             ("b", 0.0, 3.0, "closed"), ("b", 8.0, 11.0, "closed")]
    for i in range(17, 24):
        step(w, i)  # the third episodes (16..19) close at 22: held, then the process dies
    assert ("a", 16.0, 18.0, "open") in spans(store)
    again = Watcher(store, upsert_every_s=10.0)
    step(again, 24)  # restores the events, rescores the stored tail: the close again, held
    assert again.flush_held() == 2
    assert len(spans(store)) == 6
    assert [s for s in spans(store) if s[1] == 16.0] == [("a", 16.0, 19.0, "closed"), ("b", 16.0, 19.0, "closed")]


def test_watch_events_are_compacted_only_after_enough_event_commits(tmp_path):
    """The clips sink's upkeep compacts `watch_events` once its watchers committed to it
    EVENTS_COMPACT_COMMITS times since the last compaction (a compaction of an unchanged table costs
    as much as a clips write), counting the plain and sequence watchers of the watch thread."""
    from streamvl.storage.sink import EVENTS_COMPACT_COMMITS

    store = with_watch(tmp_path / "db")
    sink = TableSink(store.uri, CLIPS, watch_in_background=True)
    feed(sink, {"cam": SPEC})
    assert sink.flush_watches(timeout=60)
    made = sink.watch_thread.watcher.commits
    assert made >= 2 and not sink._events_due()  # events written, but fewer commits than the step
    sink.watch_thread.sequences.commits = EVENTS_COMPACT_COMMITS - made
    assert sink._events_due() and not sink._events_due()  # due once, then counted from there
    sink.close()


def test_flush_held_stores_the_small_growth_of_an_open_event(tmp_path):
    """Growth of an open event below GROWTH_WRITE_S is not written as it happens; flush_held (what a sink
    runs before it stops) writes it, so a stopped run leaves every stored event equal to its rules."""
    store = with_watch(tmp_path / "db")  # quiet gap 2 s; windows 2 s long, one a second
    rows = timeline("a", "rrrr")
    w = Watcher(store, upsert_every_s=10.0)
    for i in range(4):
        batch = clip_table([rows[i]])
        store.upsert(CLIPS, batch)
        w.on_commit(batch)
    assert spans(store) == [("a", 0.0, 2.0, "open")]  # appended when it opened; grown 3 s since: not written
    assert w.flush_held() == 1
    assert spans(store) == [("a", 0.0, 5.0, "open")]
    assert w.flush_held() == 0  # nothing changed since


def test_a_live_restart_after_a_gap_catches_up_from_where_the_killed_run_stopped(tmp_path):
    """A live stream resumes where the camera is now, not where the killed run stopped: the new watcher's
    catch-up must still reach the rows the killed run committed without scoring (it snapshots each
    stream's checkpoint when it starts, before its sink's first commit moves it on)."""
    store = with_watch(tmp_path / "db")  # quiet gap 2 s; windows 2 s long, one a second
    rows = timeline("a", "rrrr" + "." * 40)

    def commit(i, watcher=None):
        batch = clip_table([rows[i]])
        store.upsert(CLIPS, batch)
        store.record_state(StreamState("a", "rtsp://x", Status.RUNNING, last_committed_pts=float(i)))
        if watcher is not None:
            watcher.on_commit(batch)

    w = Watcher(store)
    commit(0, w)
    commit(1, w)  # the event is stored open at 0..3
    commit(2)
    commit(3)  # committed, then the run is killed before its watcher scored them
    again = Watcher(store)  # the restarted sink's watcher, created before its first commit
    commit(40, again)  # the camera is 37 s further on
    assert spans(store) == [("a", 0.0, 5.0, "closed")]
