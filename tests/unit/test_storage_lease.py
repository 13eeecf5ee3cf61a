"""streamvl.storage.lease: one optimiser per table at a time, through a lease row in the store."""

from __future__ import annotations

from streamvl.storage.connection import Connection
from streamvl.storage.lease import Lease
from streamvl.storage.schema import CLIPS
from streamvl.storage.store import Store
from streamvl.storage.upkeep import Upkeep
from tests.rows import clips, unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_holder_at_a_time_until_release_or_expiry(tmp_path):
    clock = Clock()
    a = Lease(Connection(tmp_path / "db"), "optimize:clips", holder="a", ttl_s=60, clock=clock)
    b = Lease(Connection(tmp_path / "db"), "optimize:clips", holder="b", ttl_s=60, clock=clock)
    assert a.acquire()
    assert not b.acquire() and b.current() == "a"
    assert a.acquire()  # renewing one's own lease
    a.release()
    assert b.acquire() and a.current() == "b"
    clock.now += 61  # b died without releasing: its lease expires
    assert a.current() is None
    assert a.acquire() and b.current() == "a"
    other = Lease(Connection(tmp_path / "db"), "optimize:frames", holder="b", ttl_s=60, clock=clock)
    assert other.acquire()  # leases are per name


def test_upkeep_skips_while_another_optimiser_holds_the_table(tmp_path):
    store = Store(str(tmp_path / "db"))
    for i in range(3):
        store.upsert(CLIPS, clips(f"s{i}", [0.0, 2.0], unit(2, seed=i)))
    assert store.fragments(CLIPS) == 3
    Lease(store.conn, f"optimize:{CLIPS}", holder="elsewhere").acquire()
    upkeep = Upkeep(store.conn, lease=True)
    result = upkeep.maintain(CLIPS)
    assert result["skipped"] and upkeep.skipped == 1 and store.fragments(CLIPS) == 3
    Lease(store.conn, f"optimize:{CLIPS}", holder="elsewhere").release()
    result = upkeep.maintain(CLIPS)
    assert "skipped" not in result and result["fragments"] == 1 and result["rows"] == 6
    assert Lease(store.conn, f"optimize:{CLIPS}").current() is None  # released after upkeep


def test_a_local_store_takes_no_lease_unless_asked(tmp_path):
    store = Store(str(tmp_path / "db"))
    store.upsert(CLIPS, clips("s", [0.0], unit(1)))
    Lease(store.conn, f"optimize:{CLIPS}", holder="elsewhere").acquire()
    assert "skipped" not in Upkeep(store.conn).maintain(CLIPS)
