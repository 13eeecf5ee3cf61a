"""The append path of the hot tables (storage/appender.py, claims.py) on a local LanceDB table:
fresh rows are appended in one commit without a merge_insert; replays (same writer, a restarted
writer, a second writer of the same stream) and commits whose result is unknown (a fake handle
that commits and then raises, or raises without committing) end with every key exactly once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from streamvl.config import StoreConfig
from streamvl.errors import StoreError
from streamvl.storage.appender import Appender
from streamvl.storage.claims import CLAIM_TTL_S, WriteClaims
from streamvl.storage.schema import CLIPS, FRAMES
from streamvl.storage.sink import TableSink
from streamvl.storage.store import Store
from tests.rows import clips, frames, unit


class Clock:
    """One fake clock for the claims (wall time) and the appender's waits; sleep moves it on."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.slept = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


class Spy:
    """A table handle that counts merge_insert/add calls and can make add() fail once, before or
    after the commit, with Lance's "commit result unknown" text (or any other error)."""

    def __init__(self, handle, fail: str | None = None, error: str = "Commit result unknown: timed out") -> None:
        self._handle, self.fail, self.error, self.calls = handle, fail, error, Counter()

    def add(self, rows):
        self.calls["add"] += 1
        if self.fail == "before":
            self.fail = None
            raise RuntimeError(self.error)
        self._handle.add(rows)
        if self.fail == "after":
            self.fail = None
            raise RuntimeError(self.error)

    def merge_insert(self, *a, **k):
        self.calls["merge_insert"] += 1
        return self._handle.merge_insert(*a, **k)

    def __getattr__(self, name):
        return getattr(self._handle, name)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "db"))


def writer(store: Store, clock: Clock, table: str = FRAMES, holder: str = "w1", wait_s: float = 2 * CLAIM_TTL_S) -> Appender:
    claims = WriteClaims(store.conn, table, holder=holder, clock=clock)
    return Appender(store.conn, table, claims, wait_s=wait_s, sleep=clock.sleep, clock=clock)


def write(store: Store, appender: Appender, data: pa.Table, spy: Spy | None = None) -> int:
    """One write group through the appender (as TableSink does), optionally through a spy handle."""
    commit = appender.commit if spy is None else (lambda handle, rows: appender.commit(spy, rows))
    with store.writer.group(appender.table, commit) as group:
        group.write(data)
    return group.rows


def keys(store: Store, table: str = FRAMES) -> list[tuple]:
    col = "pts" if table == FRAMES else "start"
    got = store.read(table, columns=["stream_id", col]).to_pylist()
    return [(r["stream_id"], r[col]) for r in got]


def batch(sid: str, pts, seed: int = 0) -> pa.Table:
    return frames(sid, [float(p) for p in pts], unit(len(pts), seed=seed))


def test_fresh_rows_are_appended_one_commit_each_without_a_merge_insert(store):
    clock = Clock()
    a = writer(store, clock)
    write(store, a, batch("s", range(0, 4)))
    handle = store.conn.open(FRAMES)
    spy = Spy(handle)
    v0 = handle.version
    for start in (4, 8, 12):
        write(store, a, pa.concat_tables([batch("s", range(start, start + 4)), batch("t", range(start, start + 4))]), spy)
    assert spy.calls == Counter(add=3)  # no merge_insert, no lookup beyond each claim's first mark
    assert store.conn.open(FRAMES).version == v0 + 3
    assert sorted(keys(store)) == sorted({("s", float(i)) for i in range(16)} | {("t", float(i)) for i in range(4, 16)})
    assert a.stats["lookups"] == 2  # the mark of s and of t, read once when their claims were taken


def test_a_replay_by_the_same_writer_is_upserted_last_wins(store):
    clock = Clock()
    a = writer(store, clock)
    write(store, a, batch("s", range(0, 8)))
    spy = Spy(store.conn.open(FRAMES))
    write(store, a, batch("s", range(0, 8), seed=5), spy)  # the whole group again: an upsert
    write(store, a, batch("s", range(6, 12), seed=5), spy)  # overlaps: 6, 7 held, 8..11 new
    assert spy.calls == Counter(merge_insert=2)
    got = keys(store)
    assert len(got) == len(set(got)) == 12
    replaced = Store(store.uri).read(FRAMES, "pts = 0.0", ["embedding"])["embedding"].to_pylist()[0]
    assert np.allclose(replaced, unit(8, seed=5)[0])  # last wins, as with upserts


def test_a_hole_below_the_mark_is_filled_by_the_replay(store):
    clock = Clock()
    a = writer(store, clock)
    write(store, a, batch("s", [0, 1, 2, 5, 6]))  # a later group committed, an earlier one failed
    write(store, a, batch("s", range(0, 7)))  # the rewound decoder replays 0..6
    assert sorted(keys(store)) == [("s", float(i)) for i in range(7)]


def test_a_restarted_writer_waits_out_the_dead_claim_then_reads_what_the_table_holds(store):
    clock = Clock()
    first = writer(store, clock, holder="dead")
    write(store, first, batch("s", range(0, 8)))  # then the process dies, its claim left behind
    second = writer(store, clock, holder="new")
    write(store, second, batch("s", range(4, 12)))  # replays from a lagging checkpoint
    assert clock.slept >= CLAIM_TTL_S * 0.9  # it waited for the claim to expire
    got = keys(store)
    assert len(got) == len(set(got)) == 12


def test_a_second_writer_of_the_same_stream_waits_and_fails_in_one_line_then_goes_on(store):
    clock = Clock()
    a, b = writer(store, clock, holder="a"), writer(store, clock, holder="b", wait_s=5.0)
    write(store, a, batch("s", range(0, 8)))
    with pytest.raises(StoreError, match="being written by another writer") as err:
        write(store, b, batch("s", range(0, 8)))
    assert "\n" not in str(err.value) and "stream 's'" in str(err.value) and "(a)" in str(err.value)
    a.close()  # a stops cleanly: its claims are given up at once
    write(store, b, batch("s", range(0, 10)))
    got = keys(store)
    assert len(got) == len(set(got)) == 10


def test_idle_claims_are_given_up(store):
    clock = Clock()
    a = writer(store, clock, holder="a")
    write(store, a, batch("s", range(4)))
    clock.now += a.claims.idle_s + 1
    a.release_idle()
    b = writer(store, clock, holder="b", wait_s=0.0)
    write(store, b, batch("s", range(2, 6)))  # no wait needed
    assert sorted(keys(store)) == [("s", float(i)) for i in range(6)]


@pytest.mark.parametrize("when", ["after", "before"])
def test_an_unknown_commit_result_ends_with_exactly_one_copy(store, when):
    clock = Clock()
    a = writer(store, clock, table=CLIPS)
    write(store, a, clips("s", [0.0, 2.0], unit(2, seed=1)))
    spy = Spy(store.conn.open(CLIPS), fail=when)
    assert write(store, a, clips("s", [4.0, 6.0, 8.0], unit(3, seed=2)), spy) == 3
    assert spy.calls["add"] == (1 if when == "after" else 2)  # landed: looked up, not appended again
    assert a.stats["retries"] == 1
    got = keys(store, CLIPS)
    assert sorted(got) == [("s", s) for s in (0.0, 2.0, 4.0, 6.0, 8.0)]


def test_other_append_errors_are_not_retried(store):
    clock = Clock()
    a = writer(store, clock)
    write(store, a, batch("s", range(2)))
    spy = Spy(store.conn.open(FRAMES), fail="before", error="schema mismatch")
    with pytest.raises(StoreError, match="schema mismatch"):
        write(store, a, batch("s", range(2, 4)), spy)
    assert spy.calls["add"] == 1 and len(keys(store)) == 2


def test_the_sink_appends_hot_tables_when_told_and_upserts_by_default(tmp_path):
    db = str(tmp_path / "db")
    sink = TableSink(db, FRAMES, StoreConfig(append_hot_tables=True), watch=False)
    assert sink.appender is not None
    for _ in range(2):  # the second write is a replay
        sink.write(batch("s", range(6)))
    got = keys(Store(db))
    assert len(got) == len(set(got)) == 6
    sink.release_claims()  # a replaced sink: its successor takes the stream at once
    write(Store(db), writer(Store(db), Clock(), holder="successor", wait_s=0.0), batch("s", range(6, 8)))
    assert len(keys(Store(db))) == 8
    plain = TableSink(str(tmp_path / "db2"), FRAMES, watch=False)
    assert plain.appender is None
    plain.write(batch("s", range(6)))
    plain.write(batch("s", range(6)))
    assert len(keys(Store(str(tmp_path / "db2")))) == 6
    assert TableSink(db, "streams").appender is None


def test_a_claim_of_a_dead_process_of_this_host_is_taken_over_at_once(store):
    import socket
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    clock = Clock()
    dead = writer(store, clock, holder=f"{socket.gethostname()}:{int(gone.stdout)}:abcd")
    write(store, dead, batch("s", range(0, 8)))  # then the run is interrupted
    alive = writer(store, clock, holder=f"{socket.gethostname()}:{__import__('os').getpid()}:beef", wait_s=0.0)
    write(store, alive, batch("s", range(4, 12)))  # no wait: the holder is gone
    assert clock.slept == 0.0
    got = keys(store)
    assert len(got) == len(set(got)) == 12
    other = writer(store, clock, holder="elsewhere:1:x", wait_s=1.0)  # another host: waited out
    with pytest.raises(StoreError, match="another writer"):
        write(store, other, batch("s", range(12, 14)))


def test_claims_are_renewed_together_one_commit_per_half_life(store):
    clock = Clock()
    a = writer(store, clock, table=CLIPS)
    for i in range(60):  # 8 streams, one new every commit at first; a commit every 2 s for 120 s
        write(store, a, clips(f"cam{i % 8}", [float(100 * i)], unit(1, seed=i)))
        clock.now += 2.0
    assert a.stats["commits"] == 60 and a.stats["upserts"] == 0
    assert a.claims.commits <= 8 + 120 / (CLAIM_TTL_S / 2) + 1, a.claims.commits  # not one per stream per renewal
    assert all(a.claims.holds(f"cam{k}") for k in range(8))


def test_a_failed_compaction_of_the_leases_table_does_not_fail_the_write(tmp_path, monkeypatch):
    sink = TableSink(str(tmp_path / "db"), CLIPS, StoreConfig(optimize_every_writes=1, append_hot_tables=True), watch=False)
    real = sink.store.upkeep.maintain

    def maintain(table, **kw):
        if table == "leases":
            raise RuntimeError("Retryable commit conflict: This Rewrite transaction was preempted")
        return real(table, **kw)

    monkeypatch.setattr(sink.store.upkeep, "maintain", maintain)
    assert sink.write(clips("s", [0.0, 2.0], unit(2, seed=1))) == 2  # upkeep ran after it, leases failed quietly
    assert sink.upkeeps == 1 and Store(str(tmp_path / "db")).count(CLIPS) == 2


def test_two_rows_of_one_claim_inserted_at_once_are_held_by_neither_until_they_expire(store):
    """Two writers that both found no claim row insert one each at the same instant (merge_insert does
    not stop two inserts of one key): neither may then believe it holds the stream alone."""
    from streamvl.storage.lease import LEASES, _SCHEMA

    clock = Clock()
    a = WriteClaims(store.conn, FRAMES, holder="a", clock=clock)
    b = WriteClaims(store.conn, FRAMES, holder="b", clock=clock)
    assert a.claim(["s"])[0] == {"s"}
    clock.now += CLAIM_TTL_S / 2 + 1  # a's claim is due for renewal
    store.conn.open(LEASES).add(pa.table({"name": [b.name("s")], "holder": ["b"],  # b's insert, landed alongside
                                          "expires": [clock.now + CLAIM_TTL_S]}, schema=_SCHEMA))
    assert b.claim(["s"])[0] == set()  # b sees a's row too: not held, and b (the greater id) gives its row up
    assert a.claim(["s"])[0] == {"s"} and b.claim(["s"])[0] == set()  # a's renewal at half life sees only its own
