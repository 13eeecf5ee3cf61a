"""Watches: the tables, the matcher (one product per adapter), the event builder, and restart/replay."""

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from streamvl.errors import StoreError
from streamvl.search.watches import EventBuilder, Match, Watch, WatchMatcher, Watcher
from streamvl.storage.schema import clips_schema
from streamvl.storage.store import Store
from streamvl.storage.watches import WatchTables, feed_cursor, parse_cursor

D = 8
RED, BLUE, GREEN = (np.eye(D, dtype=np.float32)[i] for i in range(3))


def tables(store: Store) -> WatchTables:
    return WatchTables(store.conn, store.reader, store.writer)


def clip_table(rows):
    """rows: (stream, start, vector) -> a clips-schema Arrow table (window 2 s, adapter meanpool)."""
    return pa.Table.from_pylist([{"stream_id": s, "start": float(t), "end": float(t) + 2.0, "adapter": "meanpool",
                                  "embedding": np.asarray(v, np.float32).tolist(), "model": "m"} for s, t, v in rows],
                                schema=clips_schema(D))


def timeline(stream, spec):
    """spec: a string, one char per 1 s window start: r(ed) b(lue) .(nothing)."""
    vec = {"r": RED, "b": BLUE, ".": GREEN}
    return [(stream, float(i), vec[c]) for i, c in enumerate(spec)]


def test_watch_table_round_trip_and_remove(tmp_path):
    t = tables(Store(tmp_path / "db"))
    wid = t.add_watch("a red thing", {"meanpool": RED, "prompt": BLUE}, streams=["cam1"], threshold=0.5,
                      webhook="http://127.0.0.1:9/h")
    rows = t.watch_rows()
    assert {r["adapter"] for r in rows} == {"meanpool", "prompt"}
    assert all(r["watch_id"] == wid and r["streams"] == ["cam1"] and r["threshold"] == 0.5 for r in rows)
    [w] = Watch.from_rows(rows)
    assert w.streams == {"cam1"} and set(w.vectors) == {"meanpool", "prompt"}
    assert t.remove_watch(wid) and not t.remove_watch(wid)
    assert t.watch_rows() == [] and len(t.watch_rows(active_only=False)) == 2


def test_watch_of_another_dim_is_refused(tmp_path):
    t = tables(Store(tmp_path / "db"))
    t.add_watch("x", {"meanpool": RED})
    with pytest.raises(StoreError, match="8-d"):
        t.add_watch("y", {"meanpool": np.ones(4, np.float32)})


def test_matcher_is_one_product_with_filters_and_thresholds():
    watches = [Watch("red", "red", 0.9, frozenset(), 4.0, {"meanpool": RED}),
               Watch("blue-cam2", "blue", 0.9, frozenset({"cam2"}), 4.0, {"meanpool": BLUE}),
               Watch("loose", "red-ish", 0.5, frozenset(), 4.0, {"meanpool": (RED + GREEN) / np.sqrt(2)})]
    m = WatchMatcher(watches)
    emb = np.stack([RED * 3, BLUE, BLUE, GREEN])  # unnormalised rows are fine: cosine
    got = m.match(["cam1", "cam1", "cam2", "cam1"], [0, 1, 2, 3], [2, 3, 4, 5], ["meanpool"] * 4, emb)
    assert {(g.watch_id, g.stream_id, g.start) for g in got} == {
        ("red", "cam1", 0.0), ("blue-cam2", "cam2", 2.0), ("loose", "cam1", 0.0), ("loose", "cam1", 3.0)}
    assert m.scores(emb, "meanpool").shape == (4, 3)
    assert m.match(["cam1"], [0], [2], ["prompt"], emb[:1]) == []  # no watch has a prompt vector


def _builder_run(spec, quiet=2.0, builder=None):
    builder = builder or EventBuilder(quiet)
    m = WatchMatcher([Watch("w", "red", 0.9, frozenset(), quiet, {"meanpool": RED})])
    rows = timeline("cam", spec)
    out = {}
    for i in range(0, len(rows), 3):  # committed three windows at a time
        part = clip_table(rows[i:i + 3])
        matches = m.match(part["stream_id"].to_pylist(), part["start"].to_pylist(), part["end"].to_pylist(),
                          part["adapter"].to_pylist(), np.stack([r[2] for r in rows[i:i + 3]]))
        for ev in builder.feed(matches, {"cam": rows[min(i + 2, len(rows) - 1)][1]}):
            out[ev["start"]] = ev
    return builder, out


def test_consecutive_matches_make_one_event_and_a_quiet_gap_closes_it():
    _, events = _builder_run("..rrr.r.......rr.......")  # the single '.' gap is under the quiet gap
    assert sorted(events) == [2.0, 14.0]
    first = events[2.0]
    assert first["end"] == 8.0 and first["status"] == "closed" and first["peak_time"] in (2.0, 3.0, 4.0, 6.0)
    assert events[14.0]["end"] == 17.0 and events[14.0]["status"] == "closed"


def test_open_event_stays_open_until_the_gap_passes():
    _, events = _builder_run("..rr.")
    assert list(events) == [2.0] and events[2.0]["status"] == "open"


def test_restart_from_stored_events_continues_without_new_events(tmp_path):
    store = Store(tmp_path / "db")
    t = tables(store)
    t.add_watch("red", {"meanpool": RED}, threshold=0.9, quiet_s=2.0, watch_id="w")
    spec = "..rrr.r.......rr......."
    rows = timeline("cam", spec)
    first = Watcher(store)
    for i in range(0, 12, 3):
        first.on_commit(clip_table(rows[i:i + 3]))
    before = t.watch_events()
    assert [e["start"] for e in before] == [2.0]
    # kill -9: a new watcher replays from an earlier checkpoint (windows 6..) and goes on to the end
    second = Watcher(store)
    for i in range(6, len(rows), 3):
        second.on_commit(clip_table(rows[i:i + 3]))
    after = t.watch_events()
    assert [e["start"] for e in after] == [2.0, 14.0]
    assert after[0]["opened_at"] == before[0]["opened_at"] and after[0]["event_id"] == before[0]["event_id"]
    assert after[0]["end"] == 8.0 and all(e["status"] == "closed" for e in after)
    # the same rows again change nothing
    third = Watcher(store)
    for i in range(0, len(rows), 3):
        third.on_commit(clip_table(rows[i:i + 3]))
    assert t.watch_events() == after


def test_watcher_reloads_watches_and_filters_streams(tmp_path):
    store = Store(tmp_path / "db")
    t = tables(store)
    clock = [0.0]
    w = Watcher(store, reload_s=5.0, clock=lambda: clock[0])
    assert w.on_commit(clip_table(timeline("cam1", "rr"))) == 0  # no watches yet
    t.add_watch("red", {"meanpool": RED}, threshold=0.9, streams=["cam2"], watch_id="w")
    assert w.on_commit(clip_table(timeline("cam2", "rr"))) == 0  # not reloaded yet
    clock[0] = 6.0
    assert w.on_commit(clip_table(timeline("cam1", "rr"))) == 0  # reloaded; cam1 is filtered out
    assert w.on_commit(clip_table([("cam2", 10.0, RED)])) == 1
    [ev] = t.watch_events(watch_id="w")
    assert ev["stream_id"] == "cam2" and ev["start"] == 10.0


def test_feed_cursor_orders_events(tmp_path):
    t = tables(Store(tmp_path / "db"))
    base = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    rows = [{"watch_id": "w", "stream_id": "s", "start": float(i), "end": i + 1.0, "peak_score": 0.9, "peak_time": float(i),
             "status": "open", "event_id": f"e{i}", "adapter": "meanpool", "opened_at": base + dt.timedelta(seconds=i),
             "updated_at": base, "wallclock": None} for i in range(3)]
    t.record_watch_events(rows)
    t.record_watch_events(rows[:1])  # a replay rewrites, never duplicates
    assert len(t.watch_events()) == 3
    cursor = feed_cursor(t.watch_events()[0])
    assert [e["event_id"] for e in t.events_after(cursor)] == ["e1", "e2"]
    assert [e["event_id"] for e in t.watch_events(since=base + dt.timedelta(seconds=1))] == ["e1", "e2"]
    with pytest.raises(StoreError, match="cursor"):
        parse_cursor("nope")


def test_builder_replay_inside_an_event_does_not_reopen():
    b, events = _builder_run("rrrr....")
    assert list(events) == [0.0]
    assert b.feed([Match("w", "cam", 1.0, 3.0, 0.99, "meanpool")], {"cam": 1.0}) == []  # inside, nothing grows
    [grown] = b.feed([Match("w", "cam", 3.0, 6.0, 0.99, "meanpool")], {"cam": 3.0})
    assert grown["start"] == 0.0 and grown["end"] == 6.0 and len(b.events[("w", "cam")]) == 1


def test_rows_committed_without_their_events_are_caught_up_at_start(tmp_path):
    """A sink killed between the clips commit and the events upsert: the next watcher rescores the
    stored tail (from before each stream's checkpoint), so the event is completed, not lost."""
    from streamvl.storage.schema import CLIPS
    from streamvl.types import Status, StreamState

    store = Store(tmp_path / "db")
    t = tables(store)
    t.add_watch("red", {"meanpool": RED}, threshold=0.9, quiet_s=2.0, watch_id="w")
    rows = timeline("cam", "..rrrr.......rr.")
    first = Watcher(store)
    store.upsert(CLIPS, clip_table(rows[:4]))
    first.on_commit(clip_table(rows[:4]))
    store.upsert(CLIPS, clip_table(rows[4:10]))  # committed; killed before on_commit
    store.record_state(StreamState("cam", "rtsp://x", Status.RUNNING, last_committed_pts=3.0))
    assert [(e["start"], e["end"]) for e in t.watch_events()] == [(2.0, 5.0)]
    second = Watcher(store)
    second.on_commit(clip_table(rows[10:]))  # the live stream goes on; nothing is replayed
    assert [(e["start"], e["end"], e["status"]) for e in t.watch_events()] == [(2.0, 7.0, "closed"), (13.0, 16.0, "open")]
