"""Write claims: one writer at a time appends the rows of a stream to a table.

Why: a plain append (one commit, no read of the table) is exactly-once only if the writer knows
which keys the table already holds, and it knows that only while nobody else writes rows of the
same stream (two `streamvl index` runs of the same file, or a stream moved to another node's
sink). A claim is a lease row `write/<table>/<stream>` in the store's `leases` table (lease.py):
taken and renewed for many streams at once with one conditional merge_insert (inserted when
absent, updated only when expired or already ours: Lance commits it with a conditional PUT, so
one holder wins) and read back. A holder renews its claims at half their life and gives up those
of streams it has not written for a while; one that dies leaves them until they expire (ttl_s).

A claim held by a process of the same host that no longer exists (an interrupted run started
again at once) is taken over without waiting for it to expire.

A claim the holder let lapse is a new claim when taken again: someone else may have written the
stream meanwhile, so the writer must re-read what the table holds (`acquired` says which).
Clocks of the writers' hosts must agree to well within ttl_s / 3 (NTP), and a commit must not
take longer than that margin (the holder stops trusting a claim ttl_s / 3 before it expires).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Callable, Iterable

import pyarrow as pa

from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.lease import LEASES, _SCHEMA, holder_id
from streamvl.storage.schema import sql_str

log = logging.getLogger(__name__)
CLAIM_TTL_S = 60.0
CLAIM_IDLE_S = 10.0  # a claim on a stream not written for this long is given up


def dead_here(holder: str) -> bool:
    """True if `holder` (lease.holder_id: host:pid:random) names a process of this host that is gone.
    A reused pid reads as alive: the claim is then waited out (the safe side)."""
    host, _, rest = holder.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False


class WriteClaims:
    """The claims of one writer (a sink process) on the streams of one table."""

    def __init__(self, conn: Connection, table: str, *, holder: str | None = None, ttl_s: float = CLAIM_TTL_S,
                 idle_s: float = CLAIM_IDLE_S, clock: Callable[[], float] = time.time) -> None:
        self.conn, self.table, self.ttl_s, self.idle_s, self.clock = conn, table, ttl_s, idle_s, clock
        self.holder = holder or holder_id()
        self._expires: dict[str, float] = {}  # stream -> when our claim expires (as written)
        self._used: dict[str, float] = {}  # stream -> last time rows of it were written
        self.commits = 0  # conditional commits made on `leases` (acquire, renew, release)

    def name(self, stream_id: str) -> str:
        return f"write/{self.table}/{stream_id}"

    def holds(self, stream_id: str) -> bool:
        """True while our claim is safely alive (up to ttl_s / 3 before it expires)."""
        return self._expires.get(stream_id, 0.0) - self.ttl_s / 3 > self.clock()

    def claim(self, stream_ids: Iterable[str]) -> tuple[set[str], set[str]]:
        """Take or renew claims on `stream_ids` (and renew our other claims past half their life).

        Returns (held, acquired): the streams of `stream_ids` held now, and those among them that
        were not safely held before this call (their table contents must be read again)."""
        now = self.clock()
        wanted = set(stream_ids)
        for sid in wanted:
            self._used[sid] = now
        lapsed = {s for s in wanted if not self.holds(s)}
        held_now = {s for s in self._expires if self.holds(s)}
        due = any(self._expires[s] - self.ttl_s / 2 <= now for s in held_now)
        if lapsed or due:  # renew every claim we hold with it: they share one expiry, one commit renews all
            others = self._write(sorted(lapsed | held_now), now)
            dead = sorted({h for s, h in others.items() if s in wanted and dead_here(h)})
            if dead:  # a process of this host that died holding them (an interrupted run): take over now
                self._write(sorted(s for s, h in others.items() if h in dead), now, dead)
        held = {s for s in wanted if self.holds(s)}
        return held, held & lapsed

    def _write(self, names: list[str], now: float, dead: list[str] = ()) -> dict[str, str]:
        """Claim `names` (free, expired, ours, or held by one of `dead`); returns {stream: holder}
        of those another writer holds."""
        handle = self._table()
        rows = pa.table({"name": [self.name(s) for s in names], "holder": [self.holder] * len(names),
                         "expires": [now + self.ttl_s] * len(names)}, schema=_SCHEMA)
        free = f"target.expires < {now!r} OR target.holder = {sql_str(self.holder)}"
        if dead:
            free += f" OR target.holder IN ({', '.join(sql_str(h) for h in dead)})"
        try:
            with lance_errors(LEASES, "claim streams", self.conn.uri):
                handle.merge_insert("name").when_matched_update_all(where=free).when_not_matched_insert_all().execute(rows)
                handle.checkout_latest()
        except Exception as exc:  # noqa: BLE001 (a conflict with another claimer: read back what we got)
            log.info("claims on %s: %s", self.table, str(exc).splitlines()[0][:200])
        self.commits += 1
        rows = self._rows(names)
        others, yield_ = {}, []
        for sid in names:
            live = {h: e for h, e in rows.get(self.name(sid), []) if e >= now}
            rivals = sorted(h for h in live if h != self.holder)
            if self.holder in live and not rivals:
                self._expires[sid] = live[self.holder]
                continue
            self._expires.pop(sid, None)
            if rivals:
                others[sid] = rivals[0]
                if self.holder in live and self.holder > rivals[0]:
                    yield_.append(sid)  # both inserted a row at once: the greater holder id gives way
        if yield_:
            self.release(yield_, force=True)
        return others

    def _rows(self, sids: list[str]) -> dict[str, list[tuple[str, float]]]:
        """{claim name: [(holder, expires), ...]}: usually one row per name, but two writers that both
        found none insert one each in the same instant (merge_insert does not stop two inserts of one
        key). Neither holds such a claim; the greater holder id gives its row up (_write)."""
        handle = self._table()
        names = ", ".join(sql_str(self.name(s)) for s in sids)
        with lance_errors(LEASES, "read claims", self.conn.uri):
            rows = handle.search().where(f"name IN ({names})").limit(None).to_arrow().to_pylist()
        got: dict[str, list[tuple[str, float]]] = {}
        for r in rows:
            got.setdefault(r["name"], []).append((r["holder"], r["expires"]))
        return got

    def holder_of(self, stream_id: str) -> str | None:
        """Who holds an unexpired claim on the stream (None: nobody)."""
        now = self.clock()
        live = sorted(h for h, e in self._rows([stream_id]).get(self.name(stream_id), []) if e >= now)
        return live[0] if live else None

    def release_idle(self) -> list[str]:
        """Give up the claims of streams not written for idle_s (another writer need not wait out ttl_s)."""
        now = self.clock()
        idle = [s for s in self._expires if now - self._used.get(s, 0.0) >= self.idle_s]
        if idle:
            self.release(idle)
        return idle

    def release(self, stream_ids: Iterable[str] | None = None, *, force: bool = False) -> None:
        """Give up our claims on these streams (all: None; force: also rows we no longer count as held)."""
        chosen = set(self._expires) if stream_ids is None else set(stream_ids)
        sids = sorted(chosen if force else chosen & set(self._expires))
        if not sids:
            return
        for sid in sids:
            self._expires.pop(sid, None)
        handle = self._table()
        names = ", ".join(sql_str(self.name(s)) for s in sids)
        with lance_errors(LEASES, "release claims", self.conn.uri):
            handle.update(where=f"name IN ({names}) AND holder = {sql_str(self.holder)}", values={"expires": 0.0})
        self.commits += 1

    def _table(self):
        handle = self.conn.open(LEASES)
        if handle is None:
            with lance_errors(LEASES, "create", self.conn.uri):  # exist_ok: another writer may create it now
                self.conn.db.create_table(LEASES, schema=_SCHEMA, exist_ok=True)
            handle = self.conn.open(LEASES)
        return handle
