"""`streamvl repair`: bring a damaged database back to a state every reader and writer accepts.

For each table `check` finds damaged:
- a table whose current version cannot be read is restored to its newest readable version
  (Lance keeps old versions: `checkout_version(v).restore()` commits a copy of version v as the
  newest), so the rows committed after it are gone from the table;
- a table whose newest manifest cannot be read (truncated, garbled) has it moved aside to
  `<table>.lance/_streamvl_damaged/` (copy + delete: object stores have no rename), so Lance opens
  the newest readable version again and the next commit reuses the freed version number;
- a table whose latest manifest was lost already reads at the version before it; repair rewrites
  the version hint (local disks) and moves the lost versions' transaction files aside, so `check` agrees;
- indices whose files are missing are dropped and rebuilt (scalar: `stream_id` ...; the ANN index on
  `embedding` by the next upkeep, Upkeep.maintain).
Then every file stream whose checkpoint claims rows the tables no longer hold is re-queued: its
`streams` row gets the checkpoint the rows hold (ledger.held_checkpoint) and status queued, so the
next `streamvl index` of the same files redoes exactly the lost windows (upserts: no duplicates).

The same on a local disk and on an object store (s3://, gs://, az://): the files are reached
through storage.tablefiles. Safe while nothing writes. Run it with writers stopped: it refuses while a stream of the database
is running (a `serve-index` job or an index run updated a running stream's row within
`LIVE_WINDOW_S`); a writer that starts during a repair may commit on top of a damaged version
and fail, or have its commit rolled back by the restore (its checkpoint is then pulled back by
the next run's ledger check, so nothing is lost for good).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass, field

from streamvl.errors import StoreError
from streamvl.storage.check import (HINT, CheckReport, check, check_table, hinted_version, lost_indices,
                                    newer_transactions, newest_readable, short_reason, version_problems)
from streamvl.storage.objectstore import StorageConfig
from streamvl.storage.tablefiles import MOVED, TableFiles

LIVE_WINDOW_S = 120.0  # a running stream's row younger than this means a writer may be live


@dataclass
class RepairReport:
    db: str
    actions: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requeued: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = list(self.actions) + [f"FAILED: {f}" for f in self.failed]
        if self.requeued:
            out.append(f"re-queued {len(self.requeued)} stream(s) whose rows were lost: {', '.join(self.requeued)}; "
                       "index the same inputs again to fill them in")
        if not out:
            out.append("nothing to repair")
        return out


def live_writers(db: str, storage: StorageConfig | None = None) -> list[str]:
    """Streams whose `streams` row says a writer is running them right now."""
    from streamvl.storage.store import Store

    now = dt.datetime.now(dt.timezone.utc)
    out = []
    try:
        states = Store(db, storage=storage).stream_states()
    except StoreError:
        return []
    for s in states:
        if s.status.active and s.updated_at is not None:
            updated = s.updated_at if s.updated_at.tzinfo else s.updated_at.replace(tzinfo=dt.timezone.utc)
            if (now - updated).total_seconds() < LIVE_WINDOW_S:
                out.append(s.stream_id)
    return out


def drop_unreadable_manifests(files: TableFiles) -> str:
    """A table whose newest manifest(s) cannot be read: move them aside so Lance opens the newest
    readable version (the versions moved aside are lost; their streams are re-queued)."""
    ds, bad = newest_readable(files)
    if ds is None:
        raise StoreError(f"table {files.table!r}: no readable version left; drop the table and index again")
    manifests = files.manifests()
    moved = [files.move_aside(manifests[v].rel) for v in sorted(bad)]
    return (f"{files.table}: version(s) {', '.join(map(str, sorted(bad)))} unreadable, moved aside ({len(moved)} "
            f"manifest(s) to {files.show(MOVED)}); table reads at version {ds.version}")


def restore_table(files: TableFiles) -> str:
    """Restore a table whose current version is unreadable to its newest readable version."""
    ds = files.dataset()
    current = ds.version
    for v in sorted((x["version"] for x in ds.versions()), reverse=True):
        if v >= current:
            continue
        try:
            old = files.dataset(version=v)
            problems, _ = version_problems(old, files)
        except Exception:  # noqa: BLE001 (an unreadable manifest: try an older one)
            continue
        if not problems:
            old.restore()
            return f"{files.table}: restored version {v} (version {current} was damaged) as version {files.dataset().version}"
    raise StoreError(f"table {files.table!r}: no readable version left; drop the table and index again")


def forget_lost_versions(files: TableFiles) -> str:
    """Versions committed but whose manifests are gone: point the version hint (local disks) back
    at the version the table reads at, and move the transaction files of the lost versions aside,
    so `check` agrees and the next commit takes the next version number cleanly."""
    version = files.dataset().version
    before = max([hinted_version(files) or 0] + [v + 1 for v, _ in files.transactions()])
    if hinted_version(files) is not None:
        files.write_bytes(HINT, json.dumps({"version": version}).encode())
    for f in newer_transactions(files, version):
        files.move_aside(f.rel)
    return (f"{files.table}: versions {version + 1}..{before} were lost (their manifests are gone); "
            f"table reads at version {version}")


def rebuild_indices(files: TableFiles) -> list[str]:
    """Drop indices whose files are missing; rebuild the scalar ones now (the ANN one at upkeep)."""
    ds = files.dataset()
    out = []
    for index, _ in lost_indices(ds, files):
        ds.drop_index(index["name"])
        ds = files.dataset()
        if index["type"] in ("BTree", "Bitmap", "LabelList"):
            ds.create_scalar_index(index["fields"][0], index_type=index["type"].upper())
            out.append(f"{files.table}: rebuilt index {index['name']}")
        else:
            out.append(f"{files.table}: dropped index {index['name']} (its files were lost); the next upkeep rebuilds it")
    return out


def requeue(db: str, report: CheckReport, storage: StorageConfig | None = None) -> list[str]:
    """Pull every stream whose rows were lost back to what the rows hold, status queued."""
    from streamvl.storage.ledger import from_state, grid_params, held_checkpoint
    from streamvl.storage.store import Store
    from streamvl.types import Status

    store = Store(db, storage=storage)
    lost = {v.stream_id for v in report.ledger}
    out = []
    for state in store.stream_states():
        if state.stream_id not in lost:
            continue
        window, stride, adapters = grid_params(state.grid)  # type: ignore[misc] (check found it parseable)
        frame_pts, clip_starts = store.stream_keys(state.stream_id)
        held = held_checkpoint(from_state(state, state.grid), window=window, stride=stride,
                               done=state.status is Status.DONE, adapters=adapters, frame_pts=frame_pts,
                               clip_starts=clip_starts)
        store.record_state(dataclasses.replace(state, status=Status.QUEUED, error=None, **held.as_row()))
        out.append(state.stream_id)
    return out


def repair(db: str, force: bool = False, storage: StorageConfig | None = None) -> RepairReport:
    """Repair what `check` finds; refuses while a writer looks live (force=True skips that test)."""
    db = os.fspath(db)
    out = RepairReport(db)
    if not force:
        running = live_writers(db, storage)
        if running:
            raise StoreError(f"stream(s) {', '.join(running[:5])} of {db!r} are being written right now; stop the "
                             "index / serve-index job first (or pass --force if it is dead)")
    first = check(db, storage)
    for verdict in first.tables:
        if verdict.ok:
            continue
        files = TableFiles(db, verdict.table, storage)
        try:
            if verdict.version is None:  # the newest manifest does not open
                out.actions.append(drop_unreadable_manifests(files))
                verdict = check_table(db, verdict.table, storage)
            if verdict.rows is None:
                out.actions.append(restore_table(files))
            elif verdict.version is not None and verdict.lost_versions and max(verdict.lost_versions) > verdict.version:
                out.actions.append(forget_lost_versions(files))
            out.actions += rebuild_indices(files)
            after = check_table(db, verdict.table, storage)
            if not after.ok:
                out.failed.append(after.line())
        except Exception as exc:  # noqa: BLE001 (one table's failure is reported, the others go on)
            out.failed.append(f"{verdict.table}: {short_reason(exc)}")
    second = check(db, storage)
    if second.ledger_error is None:
        out.requeued = requeue(db, second, storage)
    else:
        out.failed.append(f"ledger not repaired: {second.ledger_error}")
    return out
