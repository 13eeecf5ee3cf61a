"""One optimiser at a time: a lease row per job in a small `leases` table of the same store.

Why a lease in the store: compaction and index upkeep rewrite fragments and commit new index
deltas; two of them at once (two index processes, or sinks on several Ray nodes, on one
object-store database) make one fail with a commit conflict after doing all the work, or leave
extra index deltas. The store is the only thing every writer shares (no Ray across separate runs,
no lock service), and Lance gives it what a lease needs: a conditional commit. acquire() is one
merge_insert on the lease name that inserts the row when absent and updates it only when it has
expired or is already ours; Lance commits it with a conditional PUT and re-runs a conflicting
merge_insert against the new version (its condition then fails), so exactly one holder wins,
and the holder is read back to be sure. A holder that dies leaves the row until it expires
(ttl_s, longer than any upkeep); clocks of the nodes must agree to well within ttl_s (NTP).
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from typing import Callable

import pyarrow as pa

from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.schema import sql_str

LEASES = "leases"
LEASE_TTL_S = 900.0
_SCHEMA = pa.schema([pa.field("name", pa.string(), nullable=False), pa.field("holder", pa.string(), nullable=False),
                     pa.field("expires", pa.float64(), nullable=False)])


def holder_id() -> str:
    """Who holds a lease: host, process and a random part (a restarted process is someone else)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """A named lease in a store's `leases` table (see the module docstring)."""

    def __init__(self, conn: Connection, name: str, *, holder: str | None = None, ttl_s: float = LEASE_TTL_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.conn, self.name, self.ttl_s, self.clock = conn, name, ttl_s, clock
        self.holder = holder or holder_id()

    def _table(self):
        handle = self.conn.open(LEASES)
        if handle is None:
            with lance_errors(LEASES, "create"):  # exist_ok: another optimiser may create it at the same moment
                self.conn.db.create_table(LEASES, schema=_SCHEMA, exist_ok=True)
            handle = self.conn.open(LEASES)
        return handle

    def acquire(self) -> bool:
        """Take the lease if it is free, expired or ours; True when we hold it now."""
        now = self.clock()
        row = pa.table({"name": [self.name], "holder": [self.holder], "expires": [now + self.ttl_s]}, schema=_SCHEMA)
        handle = self._table()
        free = f"target.expires < {now!r} OR target.holder = {sql_str(self.holder)}"
        with lance_errors(LEASES, "acquire lease"):
            handle.merge_insert("name").when_matched_update_all(where=free).when_not_matched_insert_all().execute(row)
            handle.checkout_latest()
        return self.current() == self.holder

    def current(self) -> str | None:
        """The holder of an unexpired lease, or None."""
        handle = self.conn.open(LEASES)
        if handle is None:
            return None
        with lance_errors(LEASES, "read lease"):
            rows = handle.search().where(f"name = {sql_str(self.name)}").to_arrow().to_pylist()
        live = [r for r in rows if r["expires"] >= self.clock()]
        return live[0]["holder"] if live else None

    def release(self) -> None:
        """Give the lease up (only if ours): the next optimiser need not wait for it to expire."""
        handle = self.conn.open(LEASES)
        if handle is None:
            return
        with lance_errors(LEASES, "release lease"):
            handle.update(where=f"name = {sql_str(self.name)} AND holder = {sql_str(self.holder)}",
                          values={"expires": 0.0})
