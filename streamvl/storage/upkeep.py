"""Table upkeep under continuous appends: compaction, the ANN index on clips, merging its deltas.

streamvl.storage.sink.TableSink runs `maintain` every few writes; `optimize` runs it over every
table at once (the CLI's and benches' one-off upkeep).

One optimiser at a time: on an object store (where several processes and Ray nodes write one
database) each table's upkeep first takes the lease `optimize:TABLE` (streamvl.storage.lease); a
writer that does not get it skips this upkeep (another one is compacting that table right now,
and the next upkeep comes a few writes later). On a local directory there is no lease unless asked
for (Upkeep(conn, lease=True)): one machine normally runs one indexing process per database.
"""

from __future__ import annotations

import datetime as dt
import importlib
import math
import time
from typing import Any

from streamvl.errors import StoreError
from streamvl.storage.compaction import Tiers, optimize_tiered
from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.lease import LEASES, Lease, holder_id
from streamvl.storage.schema import CLIPS, EMBEDDING, table_dim

# Upkeep merges clips.embedding's ANN index deltas into one once optimize has left more than this:
# compaction never merges fragments covered by different deltas (see Upkeep.maintain). 1: merge at
# every upkeep that added a delta (merge + compaction 0.15-0.3 s at 100k 128-d rows; the compaction
# grows with the table: README, "Fragments after the ANN index exists").
INDEX_MAX_DELTAS = 1


class Upkeep:
    """Compaction and index upkeep of a store's tables."""

    def __init__(self, conn: Connection, *, lease: bool | None = None) -> None:
        """lease: take the per-table optimiser lease (None: only on an object store)."""
        self.conn, self._lease = conn, lease
        self.holder = holder_id()
        self.skipped = 0  # upkeeps skipped because another optimiser held the lease

    def leased(self) -> bool:
        return self.conn.target.scheme != "file" if self._lease is None else self._lease

    def maintain(self, table: str, *, keep_versions_s: float | None = None, index_min_rows: int | None = None,
                 index_type: str = "IVF_PQ", index_max_deltas: int = INDEX_MAX_DELTAS,
                 tiers: Tiers | None = None) -> dict[str, Any]:
        """Upkeep of one table under continuous appends: compact fragments, fold new rows into
        existing indices, build the ANN index on `embedding` once the table has index_min_rows
        rows (clips only), and merge that index's deltas into one once it has more than
        index_max_deltas of them.

        Why the merge: each optimize indexes the rows appended since the last one as a new delta
        of the vector index, and Lance's compaction never merges fragments covered by different
        deltas, so every upkeep would leave one more fragment (and every search one more delta to
        probe). The merge keeps the centroids and codebooks trained at the build (no retraining),
        after which compaction merges the fragments again. index_min_rows=None never builds one.
        tiers: compact through Lance with these size tiers (streamvl.storage.compaction), so no
        upkeep rewrites fragments past the top tier; None: LanceDB's optimize (one growing fragment).
        Returns {fragments, rows, indexed, deltas (after upkeep), merged (deltas merged, 0 if none),
        merge_s (seconds of the merge and the compaction after it)}.
        """
        if index_max_deltas < 1:
            raise StoreError(f"table {table!r}: index_max_deltas must be >= 1, got {index_max_deltas}")
        handle = self.conn.open(table)
        if handle is None:
            return {"fragments": 0, "rows": 0, "indexed": False, "deltas": 0, "merged": 0, "merge_s": 0.0}
        if not self.leased():
            return self._maintain(table, handle, keep_versions_s, index_min_rows, index_type, index_max_deltas, tiers)
        lease = Lease(self.conn, f"optimize:{table}", holder=self.holder)
        if not lease.acquire():
            self.skipped += 1
            return {"fragments": self.fragments(table), "rows": int(handle.count_rows()), "indexed": vector_index(handle)[0]
                    is not None, "deltas": vector_index(handle)[1], "merged": 0, "merge_s": 0.0, "skipped": True}
        try:
            return self._maintain(table, handle, keep_versions_s, index_min_rows, index_type, index_max_deltas, tiers)
        finally:
            lease.release()

    def _maintain(self, table: str, handle: Any, keep_versions_s: float | None, index_min_rows: int | None,
                  index_type: str, index_max_deltas: int, tiers: Tiers | None = None) -> dict[str, Any]:
        older = None if keep_versions_s is None else dt.timedelta(seconds=keep_versions_s)
        merged, merge_s = 0, 0.0
        with lance_errors(table, "optimize", self.conn.uri):
            _optimize(handle, older, tiers)
            rows = int(handle.count_rows())
            name, deltas = vector_index(handle)
            if table == CLIPS and name is None and index_min_rows is not None and rows >= index_min_rows:
                _build_vector_index(handle, rows, index_type)
                name, deltas = vector_index(handle)
            elif name is not None and deltas > index_max_deltas:
                began = time.perf_counter()
                merged, deltas = deltas, _merge_index_deltas(table, handle, name, deltas, older, tiers)
                merge_s = time.perf_counter() - began
            if name is not None and table == CLIPS and not any(list(ix.columns) == ["adapter"] for ix in handle.list_indices()):
                from lancedb.index import Bitmap

                handle.create_index("adapter", config=Bitmap(), replace=True)
            fragments = int(handle.stats()["fragment_stats"]["num_fragments"])
        return {"fragments": fragments, "rows": rows, "indexed": name is not None, "deltas": deltas,
                "merged": merged, "merge_s": merge_s}

    def optimize(self, *, keep_versions_s: float | None = None,
                 index_max_deltas: int = INDEX_MAX_DELTAS) -> dict[str, int]:
        """Upkeep of every table as the sinks do it (maintain: compact, fold new rows into indices,
        merge the vector index's deltas past index_max_deltas); never builds the ANN index.

        Old versions are deleted once older than keep_versions_s (LanceDB's default: 7 days);
        0 is safe only when no other process reads the tables. Returns fragments per table.
        """
        return {name: self.maintain(name, keep_versions_s=keep_versions_s, index_max_deltas=index_max_deltas)["fragments"]
                for name in self.conn.table_names()}

    def fragments(self, table: str) -> int:
        """How many fragments (files of rows) the table has now; 0 if it does not exist."""
        handle = self.conn.open(table)
        if handle is None:
            return 0
        with lance_errors(table, "stats", self.conn.uri):
            return int(handle.stats()["fragment_stats"]["num_fragments"])

    def index_stats(self, table: str) -> dict[str, Any]:
        """{index name: LanceDB's stats of it} for every index of the table ({} if it does not exist)."""
        handle = self.conn.open(table)
        if handle is None:
            return {}
        with lance_errors(table, "index stats", self.conn.uri):
            return {ix.name: handle.index_stats(ix.name) for ix in handle.list_indices()}


def vector_index(handle: Any) -> tuple[str | None, int]:
    """(name, delta count) of the vector index on `embedding`; (None, 0) without one."""
    names = [ix.name for ix in handle.list_indices() if EMBEDDING in list(ix.columns)]
    if not names:
        return None, 0
    stats = handle.index_stats(names[0])
    return names[0], 1 if stats is None else int(stats.num_indices or 1)


def _optimize(handle: Any, older: dt.timedelta | None, tiers: Tiers | None) -> None:
    if tiers is None:
        handle.optimize(cleanup_older_than=older)
    else:
        optimize_tiered(handle, tiers, older)


def _merge_index_deltas(table: str, handle: Any, name: str, deltas: int, older: dt.timedelta | None,
                        tiers: Tiers | None = None) -> int:
    """Merge the `deltas` deltas of index `name` into one with Lance's own optimize_indices
    (lancedb's optimize can only add deltas: it does not expose num_indices_to_merge), then
    compact: the fragments the deltas kept apart now share one index and merge. Needs pylance
    (the Lance that lancedb bundles, see pyproject.toml). Returns the delta count after (1)."""
    try:
        importlib.import_module("lance")  # lazy: only a table with a vector index needs it
    except ImportError as exc:
        raise StoreError(f"table {table!r}: merging the {deltas} deltas of index {name!r} needs the pylance "
                         f"package, the version pinned in streamvl's dependencies ({exc})") from exc
    handle.checkout_latest()
    handle.to_lance().optimize.optimize_indices(num_indices_to_merge=deltas, index_names=[name])
    handle.checkout_latest()
    _optimize(handle, older, tiers)
    return vector_index(handle)[1]


def _build_vector_index(handle: Any, rows: int, index_type: str) -> None:
    dim = table_dim(handle.schema, CLIPS)
    # PQ sub-vectors of 8 dims (64 for 512-d): half the code a probe scans of 4-dim ones, as exact after the
    # re-rank (recall@10 1.000 either way at 1M rows) and ~x1.4 faster (bench/bench_ann_probes.py, ivf_pq_256_sv64)
    sub = next((d for d in (dim // 8, dim // 4, dim // 2, 1) if d >= 1 and dim % d == 0), 1)
    partitions = max(1, min(256, int(math.sqrt(rows))))
    options: dict[str, Any] = {"num_partitions": partitions}
    if "PQ" in index_type:
        options["num_sub_vectors"] = sub
    handle.create_index(metric="cosine", vector_column_name=EMBEDDING, index_type=index_type, replace=True, **options)
