"""The SSE feed's keep-alive follows wall time: a slow table read must not stretch it (a client with a
read timeout then dropped the connection on a loaded machine: tests/e2e/test_live_watch_kill9.py)."""

import asyncio
import time

from streamvl.service import events


class SlowTables:
    """events_after takes `delay` seconds and finds nothing."""

    def __init__(self, delay: float) -> None:
        self.delay, self.reads = delay, 0

    def events_after(self, cursor):
        self.reads += 1
        time.sleep(self.delay)
        return []


def test_keep_alive_comes_after_heartbeat_seconds_even_when_reads_are_slow(monkeypatch):
    monkeypatch.setattr(events, "HEARTBEAT_S", 0.5)
    tables = SlowTables(delay=0.2)

    async def first_keep_alive() -> tuple[float, int]:
        t0 = time.monotonic()

        async def never() -> bool:
            return False

        async for msg in events.sse_feed(tables, None, never, poll_s=0.01):
            if msg.startswith(": keep-alive"):
                return time.monotonic() - t0, tables.reads
        raise AssertionError("the feed ended")

    waited, reads = asyncio.run(asyncio.wait_for(first_keep_alive(), timeout=30))
    # counting poll rounds (0.01 s each) would have needed 50 reads (10 s) before the first keep-alive
    assert waited >= 0.5 and reads < 10, (waited, reads)
