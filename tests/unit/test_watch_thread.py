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
