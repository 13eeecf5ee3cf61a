"""Sequence watches ("A, then B within S"): the chain tracker, the events the clips sink stores, and
exactly-once events across batch boundaries, replays and a sink that died between commit and events."""

import numpy as np
import pyarrow as pa
import pytest

from streamvl.search.sequence_watches import ChainTracker, SequenceWatch, SequenceWatcher
from streamvl.search.watches import Watch, Watcher
from streamvl.storage.schema import CLIPS, EVENTS, clips_schema
from streamvl.storage.sink import TableSink
from streamvl.storage.store import Store
from streamvl.storage.watches import WatchTables

D = 8
RED, BLUE, GREEN, GREY = (np.eye(D, dtype=np.float32)[i] for i in range(4))
VEC = {"r": RED, "b": BLUE, "g": GREEN, ".": GREY}


def tables(store: Store) -> WatchTables:
    return WatchTables(store.conn, store.reader, store.writer)


def clips(stream: str, spec: str, offset: float = 0.0) -> pa.Table:
    """One clip per 1 s (window 2 s) per char of spec: r(ed) b(lue) g(reen) .(grey)."""
    return pa.Table.from_pylist([{"stream_id": stream, "start": offset + i, "end": offset + i + 2.0, "adapter": "meanpool",
                                  "embedding": VEC[c].tolist(), "model": "m"} for i, c in enumerate(spec)],
                                schema=clips_schema(D))


def red_then_blue(t: WatchTables, within: float = 3.0, **kw) -> str:
    return t.add_sequence_watch(["red", "blue"], {"meanpool": [RED, BLUE]}, within_s=within, threshold=0.9,
                                quiet_s=2.0, **kw)


def commit(db, table: pa.Table, size: int = 3) -> TableSink:
    """Commit `table` through a clips sink (the watcher hook runs after each commit), `size` rows a batch."""
    sink = TableSink(str(db), CLIPS)
    for i in range(0, table.num_rows, size):
        sink.write(table.slice(i, size))
    return sink


def events(t: WatchTables, wid: str) -> list[dict]:
    return sorted(t.watch_events(watch_id=wid), key=lambda e: (e["stream_id"], e["start"]))


AB = "..rrr...bbb......"
BA = "..bbb...rrr......"
A_ONLY = "..rrr............"


def tracker(within=3.0, texts=("red", "blue")) -> ChainTracker:
    vecs = {"meanpool": tuple(VEC[t[0]] for t in texts)}
    return ChainTracker(SequenceWatch("w", tuple(texts), 0.9, within, frozenset(), 2.0, vecs))


def run(tr: ChainTracker, spec: str) -> list:
    out = []
    for i, c in enumerate(spec):
        chain = tr.add(float(i), i + 2.0, [float(VEC[c] @ v) for v in tr.watch.vectors["meanpool"]])
        if chain:
            out.append(chain)
    return out


def test_tracker_completes_a_then_b_only_in_that_order_and_within_the_gap():
    chains = run(tracker(), AB)
    # A's latest clip (4-6 s), then each B clip starting within 3 s of its end (8, 9; not 10)
    assert [(c[0].start, c[1].start) for c in chains] == [(4.0, 8.0), (4.0, 9.0)]
    assert all(c[0].text == "red" and c[1].text == "blue" and c[1].score == pytest.approx(1.0) for c in chains)
    assert run(tracker(), BA) == [] and run(tracker(), A_ONLY) == []
    assert run(tracker(within=1.0), AB) == []  # the first B clip starts 2 s after A's last one ends
    assert len(run(tracker(within=2.0), AB)) == 1  # 8 <= 6 + 2: only the first B clip is within


def test_three_steps_need_every_step_in_order():
    tr = tracker(texts=("red", "blue", "green"))
    assert [(c[0].start, c[1].start, c[2].start) for c in run(tr, "rr..bb..gg")] == [(1.0, 5.0, 8.0), (1.0, 5.0, 9.0)]
    assert run(tracker(texts=("red", "blue", "green")), "rr..gg..bb") == []


def test_sink_stores_one_event_on_ab_none_on_ba_or_a_only_and_carries_steps(tmp_path):
    db = tmp_path / "db"
    t = tables(Store(db))
    wid = red_then_blue(t)
    plain = t.add_watch("red", {"meanpool": RED}, threshold=0.9, quiet_s=2.0)
    commit(db, pa.concat_tables([clips("ab", AB), clips("ba", BA), clips("a_only", A_ONLY)]))
    [ev] = events(t, wid)
    assert (ev["stream_id"], ev["start"], ev["end"], ev["status"]) == ("ab", 4.0, 11.0, "closed")
    assert [(s["text"], s["start"], s["end"]) for s in ev["steps"]] == [("red", 4.0, 6.0), ("blue", 8.0, 10.0)]
    assert ev["peak_score"] == pytest.approx(1.0) and all(s["score"] == pytest.approx(1.0) for s in ev["steps"])
    # the plain watch fires on red in all three streams; it never sees the sequence watch or its events
    assert sorted(e["stream_id"] for e in t.watch_events(watch_id=plain)) == ["a_only", "ab", "ba"]
    assert all(e["steps"] is None for e in t.watch_events(watch_id=plain))
    assert [w.watch_id for w in Watch.from_rows(t.watch_rows())] == [plain]
    assert [w.watch_id for w in SequenceWatch.from_rows(t.watch_rows())] == [wid]


@pytest.mark.parametrize("size", [1, 4, 100])
def test_events_do_not_depend_on_batch_boundaries(tmp_path, size):
    db = tmp_path / "db"
    t = tables(Store(db))
    wid = red_then_blue(t, watch_id="seq")
    commit(db, clips("ab", AB + AB), size=size)  # two occurrences, 17 s apart
    got = [(e["start"], e["end"], [s["start"] for s in e["steps"]]) for e in events(t, wid)]
    assert got == [(4.0, 11.0, [4.0, 8.0]), (21.0, 28.0, [21.0, 25.0])]


def test_replay_adds_nothing_and_rewrites_nothing(tmp_path):
    db = tmp_path / "db"
    store = Store(db)
    t = tables(store)
    wid = red_then_blue(t)
    data = clips("ab", AB + AB)
    commit(db, data)
    first = events(t, wid)
    version = store.conn.open(EVENTS).version
    commit(db, data, size=5)  # a new sink process replays the whole stream from its start
    commit(db, data.slice(6, 8), size=2)  # ... and a part of it
    assert events(t, wid) == first  # opened_at and updated_at included: not one row rewritten
    assert store.conn.open(EVENTS).version == version


def test_rows_committed_without_their_events_are_caught_up_by_the_next_sink(tmp_path):
    """A sink killed between its clips commit and the events: the next sink, on a live stream that
    resumes after a gap, rebuilds from the stored rows and stores the event, once."""
    ref_db, db = tmp_path / "ref", tmp_path / "db"
    live = clips("cam", AB[:10]), clips("cam", "......rrr..bbb....", offset=40.0)  # down 30 s, between the halves
    wid = red_then_blue(tables(Store(ref_db)), watch_id="seq")
    commit(ref_db, pa.concat_tables(live), size=2)
    t = tables(Store(db))
    red_then_blue(t, watch_id="seq")
    dead = TableSink(str(db), CLIPS, watch=False)  # commits rows, dies before any event
    dead.write(live[0])
    assert t.watch_events() == []
    commit(db, live[1], size=2)  # the restarted job: the stream resumes 30 s later
    strip = lambda evs: [(e["start"], e["end"], e["peak_score"], e["status"], e["steps"]) for e in evs]  # noqa: E731
    assert strip(events(t, wid)) == strip(events(tables(Store(ref_db)), wid))
    assert len(events(t, wid)) == 2


def test_a_chain_across_a_restart_is_completed_by_the_next_sink(tmp_path):
    db = tmp_path / "db"
    t = tables(Store(db))
    wid = red_then_blue(t)
    commit(db, clips("cam", "..rrr.."))  # A seen by the first sink...
    commit(db, clips("cam", "bbb......", offset=7.0))  # ... B by the next, 1 s later
    [ev] = events(t, wid)
    assert [(s["text"], s["start"]) for s in ev["steps"]] == [("red", 4.0), ("blue", 7.0)]


def test_stream_filter_and_removed_watch(tmp_path):
    db = tmp_path / "db"
    t = tables(Store(db))
    only_x = red_then_blue(t, streams=["x"])
    commit(db, clips("ab", AB))
    assert t.watch_events(watch_id=only_x) == []
    assert t.remove_watch(only_x)
    watcher = SequenceWatcher(Store(db))
    assert watcher.on_commit(clips("x", AB)) == 0 and watcher.watches == []


def test_sequence_watch_rows_are_checked(tmp_path):
    t = tables(Store(tmp_path / "db"))
    from streamvl.errors import StoreError

    with pytest.raises(StoreError, match="2\\+ steps"):
        t.add_sequence_watch(["red"], {"meanpool": [RED]}, within_s=1.0)
    t.add_watch("x", {"meanpool": RED})
    with pytest.raises(StoreError, match="dimensions"):
        t.add_sequence_watch(["a", "b"], {"meanpool": [np.ones(4), np.ones(4)]}, within_s=1.0)


def test_plain_watcher_restores_only_plain_events(tmp_path):
    db = tmp_path / "db"
    store = Store(db)
    t = tables(store)
    red_then_blue(t)
    commit(db, clips("ab", AB))
    w = Watcher(store)
    w.reload()
    assert w.builder.events == {}
