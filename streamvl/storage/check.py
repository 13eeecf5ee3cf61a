"""`streamvl check`: verify every table of a database, and the resume ledger against the rows.

Per table (a Lance dataset `<db>/<table>.lance`, on a local disk or an object store: its objects
are listed and sized through storage.tablefiles):
- the version chain: every version opens; no newer version is named by `latest_version_hint.json`
  (local disks) or by a transaction file `_transactions/<read_version>-*.txn` (everywhere): a lost
  latest manifest silently rolls a table back, an unreadable one stops it from opening;
- every data file of the current version: present, of the size its manifest recorded, and its
  footer and first rows readable; deletion files present;
- every index (ANN and scalar): its files under `_indices/<uuid>/` present and not empty.
Ledger vs rows: every file stream's checkpoint in `streams` is compared with its keys in
`frames` and `clips` (ledger.held_checkpoint); a checkpoint the rows do not hold is reported
with the window the next index run will redo from.

Reading only: safe while nothing writes. A writer committing meanwhile can make a new version
look missing or half-written to the check (report it again once writes have stopped).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamvl.errors import StoreError
from streamvl.storage.objectstore import StorageConfig, resolve
from streamvl.storage.tablefiles import FileInfo, TableFiles

HINT = "_versions/latest_version_hint.json"


def short_reason(exc: BaseException | str) -> str:
    """A Lance error as one short line (no Rust source paths, no nested prefixes)."""
    text = " ".join(str(exc).split())
    text = re.sub(r",? ?/rustc/\S+", "", text)
    text = re.sub(r"(?:External error: |lance error: |LanceError\(\w+\): )", "", text)
    return text[:300]


def damaged_path(text: str) -> str | None:
    """The data file, manifest or index file a Lance error names, if it names one."""
    found = re.findall(r"[\w./-]*\.(?:lance|manifest|idx|arrow)\b", text)
    return found[-1] if found else None


@dataclass
class TableVerdict:
    """What `check` found for one table."""

    table: str
    version: int | None = None  # the version the table opens at
    problems: list[str] = field(default_factory=list)
    bad_path: str | None = None  # the first damaged file
    lost_versions: list[int] = field(default_factory=list)  # versions whose manifest is gone or unreadable
    rows: int | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def line(self) -> str:
        head = f"{self.table:16} v{self.version if self.version is not None else '?'}"
        if self.ok:
            return f"{head} ok ({self.rows} rows)"
        return f"{head} DAMAGED: " + "; ".join(self.problems)


@dataclass
class LedgerVerdict:
    """A stream whose checkpoint claims rows the tables do not hold."""

    stream_id: str
    claimed_window: int
    held_window: int

    def line(self) -> str:
        return (f"stream {self.stream_id}: checkpoint at window {self.claimed_window} but rows only up to window "
                f"{self.held_window}; the next index run redoes it from there")


@dataclass
class CheckReport:
    db: str
    tables: list[TableVerdict]
    ledger: list[LedgerVerdict]
    ledger_error: str | None = None

    @property
    def ok(self) -> bool:
        return all(t.ok for t in self.tables) and not self.ledger and self.ledger_error is None

    def lines(self) -> list[str]:
        out = [t.line() for t in self.tables]
        out += [v.line() for v in self.ledger]
        if self.ledger_error:
            out.append(f"ledger not checked: {self.ledger_error}")
        out.append("ok" if self.ok else f"damaged: run `streamvl repair --db {self.db}`")
        return out


def table_names(db: str, storage: StorageConfig | None = None) -> list[str]:
    """Tables of a database: its `<name>.lance` folders (listed by LanceDB on an object store)."""
    target = resolve(db, storage)
    if not target.local:
        from streamvl.storage.connection import Connection

        names = Connection(target.uri, storage=storage).table_names()
        if not names:
            raise StoreError(f"no database at {target.uri!r} (no tables under that prefix)")
        return names
    root = Path(target.uri)
    if not root.is_dir():
        raise StoreError(f"no database at {db!r}")
    return sorted(p.name[:-len(".lance")] for p in root.iterdir() if p.is_dir() and p.name.endswith(".lance"))


def hinted_version(files: TableFiles) -> int | None:
    """The latest version `_versions/latest_version_hint.json` names (None if absent or unreadable;
    Lance writes it on local disks, not on object stores)."""
    try:
        return int(json.loads(files.read_bytes(HINT))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def newer_transactions(files: TableFiles, version: int) -> list[FileInfo]:
    """Transaction files written against `version` or later: commits of versions the table does
    not have (their manifest was lost), or of a writer that died between writing its transaction
    and its manifest. Lance writes `_transactions/<read_version>-<uuid>.txn` before the manifest."""
    return [f for v, f in files.transactions() if v >= version]


def version_problems(ds: Any, files: TableFiles) -> tuple[list[str], str | None]:
    """Problems of the version `ds` is at: its data and deletion files. ([], None) if sound."""
    problems: list[str] = []
    bad: str | None = None
    deletions = {f.name.split("-")[0] for f in files.list("_deletions")}
    for frag in ds.get_fragments():
        meta = frag.metadata
        for df in meta.files:
            rel = f"data/{df.path}"
            size, expected = files.size(rel), getattr(df, "file_size_bytes", None)
            if size is None:
                problems.append(f"data file {files.show(rel)} missing (fragment {meta.id})")
            elif expected and size != expected:
                problems.append(f"data file {files.show(rel)} is {size} bytes, {expected} expected (fragment {meta.id})")
            else:
                continue
            bad = bad or files.show(rel)
        if meta.deletion_file is not None and str(meta.id) not in deletions:
            problems.append(f"deletion file of fragment {meta.id} missing")
            bad = bad or files.show("_deletions")
        if not problems:
            try:
                frag.head(1)  # reads the file footer and the first page of every column
            except Exception as exc:  # noqa: BLE001 (any Lance read error is damage here)
                problems.append(f"fragment {meta.id} unreadable: {short_reason(exc)}")
                bad = bad or files.show(f"data/{meta.files[0].path}")
    return problems, bad


def lost_indices(ds: Any, files: TableFiles) -> list[tuple[dict, str]]:
    """Indices (ANN and scalar) of the version `ds` is at with a segment whose files are missing
    or empty: ({name, type, fields}, its folder `_indices/<uuid>`)."""
    out = []
    for index in ds.describe_indices():
        for segment in index.segments:
            rel = f"_indices/{segment.uuid}"
            found = files.list(rel)
            if not found or any(f.size == 0 for f in found):
                out.append(({"name": index.name, "type": index.index_type, "fields": list(index.field_names)},
                            files.show(rel)))
                break
    return out


def newest_readable(files: TableFiles) -> tuple[Any, list[int]]:
    """(dataset at the newest version whose manifest opens or None, the newer versions that do not)."""
    bad = []
    for v in sorted(files.manifests(), reverse=True):
        try:
            return files.dataset(version=v), bad
        except Exception:  # noqa: BLE001 (an unreadable manifest: try an older one)
            bad.append(v)
    return None, bad


def check_table(db: str, table: str, storage: StorageConfig | None = None) -> TableVerdict:
    """Verify one table: its version chain, its current version's files and indices."""
    files = TableFiles(db, table, storage)
    verdict = TableVerdict(table)
    try:
        ds = files.dataset()
    except Exception as exc:  # noqa: BLE001
        verdict.problems.append(f"cannot open: {short_reason(exc)}")
        _, bad = newest_readable(files)
        manifests = files.manifests()
        verdict.lost_versions = sorted(bad)
        named = damaged_path(str(exc))
        verdict.bad_path = (files.show(manifests[max(bad)].rel) if bad else None) or named or files.show("_versions")
        return verdict
    verdict.version = ds.version
    for v in (x["version"] for x in ds.versions()):
        try:
            files.dataset(version=v)
        except Exception as exc:  # noqa: BLE001
            verdict.lost_versions.append(v)
            verdict.problems.append(f"version {v} unreadable: {short_reason(exc)}")
    newest = max([hinted_version(files) or 0] + [f_v + 1 for f_v, _ in files.transactions()])
    if newest > ds.version:
        verdict.lost_versions += list(range(ds.version + 1, newest + 1))
        verdict.problems.append(f"versions {ds.version + 1}..{newest} missing (latest manifest lost): their rows are gone")
        verdict.bad_path = files.show("_versions")
    problems, bad = version_problems(ds, files)
    verdict.problems += problems
    verdict.bad_path = verdict.bad_path or bad
    if not problems:
        verdict.rows = ds.count_rows()
    for index, where in lost_indices(ds, files):
        verdict.problems.append(f"index {index['name']} files missing or empty ({where})")
        verdict.bad_path = verdict.bad_path or where
    return verdict


def check_ledger(db: str, storage: StorageConfig | None = None) -> list[LedgerVerdict]:
    """Streams whose stored checkpoint claims more than `frames` and `clips` hold."""
    from streamvl.storage.ledger import from_state, grid_params, held_checkpoint
    from streamvl.storage.store import Store

    store = Store(db, storage=storage)
    out = []
    for state in store.stream_states():
        params = grid_params(state.grid or "")
        if state.live or params is None:
            continue
        checkpoint = from_state(state, state.grid)
        window, stride, adapters = params
        frame_pts, clip_starts = store.stream_keys(state.stream_id)
        held = held_checkpoint(checkpoint, window=window, stride=stride, done=state.status.value == "done",
                               adapters=adapters, frame_pts=frame_pts, clip_starts=clip_starts)
        if held != checkpoint:
            out.append(LedgerVerdict(state.stream_id, checkpoint.next_window, held.next_window))
    return out


def check(db: str, storage: StorageConfig | None = None) -> CheckReport:
    """Verify every table of a database (local or object store), then the ledger (if the tables it
    reads are sound)."""
    db = os.fspath(db)
    tables = [check_table(db, t, storage) for t in table_names(db, storage)]
    damaged = _unreadable(tables)
    report = CheckReport(db, tables, [])
    if damaged & {"streams", "frames", "clips"}:
        report.ledger_error = f"table(s) {', '.join(sorted(damaged))} unreadable"
        return report
    try:
        report.ledger = check_ledger(db, storage)
    except StoreError as exc:
        report.ledger_error = short_reason(exc)
    return report


def _unreadable(tables: list[TableVerdict]) -> set[str]:
    """Tables whose current version cannot be read (a lost latest version still reads)."""
    return {t.table for t in tables if t.rows is None}
