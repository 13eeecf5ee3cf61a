"""Search reads: the prefiltered ANN over clips, a stream's frames, segments, clip windows, counts, metadata.

Every read answers "nothing" (0, [], empty arrays, None) for a table that does not exist yet.
`table()` and `read()` are the public ways to reach a table's rows or its LanceDB handle (for
benches and tests); nothing outside streamvl.storage touches a Connection's handles.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamvl.errors import StoreError
from streamvl.storage.connection import Connection, lance_errors
from streamvl.storage.schema import (
    CLIPS, EMBEDDING, FRAMES, SEGMENTS, TAGS, check_table, clip_filter, embeddings_array, sql_float, sql_str, table_dim,
)

# ANN searches re-rank this many times k rows exactly (refine_factor; no effect without an index). PQ codes alone
# give recall@10 ~0.91 at 1M rows; re-ranking 2 x k exactly already gives 1.00 there for the query path's
# 50-row fetch, but 0.96 for a bare 10-row search at 100k rows: 4 x k keeps a margin. Every further candidate
# is one more random read of a full vector (bench/bench_ann_probes.py, docs/benchmarks.md "Queries").
REFINE_CANDIDATES = 4
# IVF partitions every ANN search probes at least (LanceDB's default: 20). Probing is most of an IVF_PQ search's
# time; at 1M rows (256 partitions) 10 keeps recall@10 at 1.00 on in-distribution queries and halves the
# search (bench/bench_queries.py, docs/benchmarks.md "Queries"). Exact without a filter; with a prefilter only
# a minimum: a narrow prefilter still probes further partitions until it has k rows (see _ann).
ANN_NPROBES = 10


class Reader:
    """Reads of a store's tables (see the module docstring)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._sole_adapter: tuple[int, str, bool] | None = None  # (clips version, adapter, _one_adapter's answer)

    # -- whole tables

    def table(self, table: str) -> Any | None:
        """The LanceDB handle of a streamvl table for read-only use (None if it does not exist yet)."""
        check_table(table)
        return self.conn.open(table)

    def read(self, table: str, where: str | None = None, columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of a table as Arrow: all, or those matching a SQL predicate; all columns or these.
        An empty table (no columns) if the table does not exist yet."""
        handle = self.table(table)
        if handle is None:
            return pa.table({})
        with lance_errors(table, "read", self.conn.uri):
            query = handle.search()
            if where is not None:
                query = query.where(where)
            if columns is not None:
                query = query.select(list(columns))
            return query.limit(None).to_arrow()

    def count(self, table: str) -> int:
        handle = self.conn.open(table)
        if handle is None:
            return 0
        with lance_errors(table, "count", self.conn.uri):
            return int(handle.count_rows())

    def schema(self, table: str) -> pa.Schema | None:
        """The Arrow schema (with model metadata) of a table, or None if it does not exist yet."""
        handle = self.table(table)
        return None if handle is None else handle.schema

    def meta(self) -> dict[str, str]:
        """Schema metadata of the clips table (else frames): 'streamvl.model', 'streamvl.models.weights', ..."""
        for table in (CLIPS, FRAMES):
            handle = self.conn.open(table)
            metadata = None if handle is None else handle.schema.metadata  # one read: `.schema` is a round trip
            if metadata:
                return {k.decode(): v.decode() for k, v in metadata.items()}
        return {}

    # -- clips

    def search_clips(self, vector: np.ndarray, k: int, *, adapter: str, stream_ids: Sequence[str] | None = None,
                     start: float | None = None, end: float | None = None, tags: Sequence[str] | None = None,
                     candidates: int | None = None) -> list[dict[str, Any]]:
        """The k clips nearest to `vector` by cosine, prefiltered; dicts with `score` = 1 - distance.

        tags: keep only clips whose `tags` column holds every one of them (written by a tagging
        plugin such as alpro). candidates: with an ANN index on clips.embedding, re-rank this many
        rows exactly (refine_factor; default REFINE_CANDIDATES * k, which keeps recall@10 of IVF_PQ
        above 0.95, see bench/bench_ann_probes.py); a table without an index is searched exhaustively.
        """
        handle = self.conn.open(CLIPS)
        if handle is None or k <= 0 or (stream_ids is not None and len(stream_ids) == 0):
            return []
        schema = handle.schema  # one read: each `.schema` of a LanceDB handle is a round trip (checks the version)
        if tags and schema.get_field_index(TAGS) < 0:
            raise StoreError(f"table {CLIPS!r} has no {TAGS!r} column to filter on: index with a tagging adapter "
                             f"plugin installed (e.g. streamvl-alpro)")
        query = _query_vector(vector, table_dim(schema, CLIPS))
        columns = [n for n in schema.names if n != EMBEDDING]
        where = clip_filter(adapter, stream_ids, start, end, tags)
        candidates = REFINE_CANDIDATES * k if candidates is None else candidates
        with lance_errors(CLIPS, "vector search", self.conn.uri):
            only_adapter = stream_ids is None and start is None and end is None and not tags
            rows = None
            if only_adapter and self._only(handle, adapter):
                rows = _ann(handle, query, k, columns, None, candidates)
                if any(r["adapter"] != adapter for r in rows):  # another adapter's rows landed meanwhile
                    rows = None
            if rows is None:
                rows = _ann(handle, query, k, columns, where, candidates)
        return sorted((_scored(r) for r in rows), key=lambda r: (-r["score"], r["stream_id"], r["start"]))

    def _only(self, handle: Any, adapter: str) -> bool:
        """_one_adapter, kept per version of the clips table (a version check costs ~0.1 ms, the
        answer ~1.4 ms at 1M rows; a search between a write and this check is caught by search_clips)."""
        version = int(handle.version)
        if self._sole_adapter is None or self._sole_adapter[:2] != (version, adapter):
            self._sole_adapter = (version, adapter, _one_adapter(handle, adapter))
        return self._sole_adapter[2]

    def clip_windows(self, adapter: str | None = None) -> list[dict[str, Any]]:
        """(stream_id, start, end, adapter) of indexed clips, without embeddings; one adapter or all."""
        where = None if adapter is None else f"adapter = {sql_str(adapter)}"
        rows = self.read(CLIPS, where, ["stream_id", "start", "end", "adapter"]).to_pylist()
        return sorted(rows, key=lambda r: (r["stream_id"], r["adapter"], r["start"]))

    # -- frames and segments

    def frames_of(self, stream_id: str) -> tuple[np.ndarray, np.ndarray]:
        """Every frame of a stream: times float64 [N] (sorted) and embeddings float32 [N, D]."""
        return self._frames(f"stream_id = {sql_str(stream_id)}")

    def frames_for(self, stream_id: str, start: float, end: float) -> tuple[np.ndarray, np.ndarray]:
        """Frame times float64 [N] (sorted) and embeddings float32 [N, D] with start <= pts <= end."""
        return self._frames(f"stream_id = {sql_str(stream_id)} AND pts >= {sql_float(start)} AND pts <= {sql_float(end)}")

    def _frames(self, where: str) -> tuple[np.ndarray, np.ndarray]:
        handle = self.conn.open(FRAMES)
        if handle is None:
            return np.empty(0, np.float64), np.empty((0, 0), np.float32)
        dim = table_dim(handle.schema, FRAMES)
        got = self.read(FRAMES, where, ["pts", EMBEDDING])
        pts = got["pts"].to_numpy().astype(np.float64, copy=False)
        order = np.argsort(pts, kind="stable")
        return pts[order], embeddings_array(got[EMBEDDING], dim)[order]

    def last_frame(self, stream_id: str) -> tuple[float | None, float | None]:
        """(max pts, max wallclock) of a stream's committed frames, or (None, None)."""
        got = self.read(FRAMES, f"stream_id = {sql_str(stream_id)}", ["pts", "wallclock"])
        if got.num_rows == 0:
            return None, None
        pts, wall = pc.max(got["pts"]).as_py(), pc.max(got["wallclock"]).as_py()
        return pts, (None if wall is None or math.isnan(wall) else wall)

    def stream_keys(self, stream_id: str) -> tuple[list[float], dict[str, list[float]]]:
        """A stream's keys in the tables: its frame times, and its clip window starts per adapter
        (what the resume check compares a checkpoint with; two filtered reads of key columns)."""
        where = f"stream_id = {sql_str(stream_id)}"
        frames = self.read(FRAMES, where, ["pts"])
        clips = self.read(CLIPS, where, ["adapter", "start"])
        starts: dict[str, list[float]] = {}
        if clips.num_rows:
            for adapter, start in zip(clips["adapter"].to_pylist(), clips["start"].to_pylist()):
                starts.setdefault(adapter, []).append(start)
        return (frames["pts"].to_pylist() if frames.num_rows else []), starts

    def segments(self, adapter: str | None = None, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Rows of the `segments` table, best score first; optionally one adapter / one stream."""
        where = [f"adapter = {sql_str(adapter)}"] if adapter is not None else []
        where += [f"stream_id = {sql_str(stream_id)}"] if stream_id is not None else []
        rows = self.read(SEGMENTS, " AND ".join(where) or None).to_pylist()
        return sorted(rows, key=lambda r: (-r["score"], r["stream_id"], r["start"]))


def _one_adapter(handle: Any, adapter: str) -> bool:
    """True when every clip row is this adapter's: then the `adapter =` prefilter selects every
    row, and LanceDB pays for it inside the ANN search (about 100 ms at 1M rows, vs 10 ms without).
    Answered from the bitmap index upkeep builds next to the vector index (under 1 ms); without one, False."""
    columns = [list(ix.columns) for ix in handle.list_indices()]  # one listing per search, not two
    if [EMBEDDING] not in columns or ["adapter"] not in columns:
        return False
    return int(handle.count_rows(f"adapter != {sql_str(adapter)}")) == 0


def _ann(handle: Any, query: np.ndarray, k: int, columns: list[str], where: str | None,
         candidates: int) -> list[dict[str, Any]]:
    """The ANN search. Unfiltered it probes exactly ANN_NPROBES partitions: left open-ended (LanceDB's
    minimum_nprobes without a maximum) the same search took ~x1.6 longer at 1M rows with the same
    results; it is re-run open-ended only when those partitions held fewer than k rows. With a
    prefilter it probes further partitions until it has k rows."""
    rows = _ann_once(handle, query, k, columns, where, candidates, exact_probes=not where)
    if not where and len(rows) < k:
        rows = _ann_once(handle, query, k, columns, where, candidates, exact_probes=False)
    return rows


def _ann_once(handle: Any, query: np.ndarray, k: int, columns: list[str], where: str | None, candidates: int,
              exact_probes: bool) -> list[dict[str, Any]]:
    builder = handle.search(query, vector_column_name=EMBEDDING).distance_type("cosine")
    builder = builder.nprobes(ANN_NPROBES) if exact_probes else builder.minimum_nprobes(ANN_NPROBES)
    if where:
        builder = builder.where(where, prefilter=True)
    builder = builder.select([*columns, "_distance"]).limit(int(k))
    if candidates and candidates > k:
        builder = builder.refine_factor(math.ceil(candidates / k))
    return builder.to_arrow().to_pylist()


def _query_vector(vector: np.ndarray, dim: int) -> np.ndarray:
    q = np.asarray(vector, dtype=np.float32).reshape(-1)
    if q.shape[0] != dim:
        raise StoreError(f"table {CLIPS!r}, column {EMBEDDING!r}: query vector has dim {q.shape[0]}, expected {dim}")
    if not np.all(np.isfinite(q)) or not np.any(q):
        raise StoreError(f"table {CLIPS!r}: query vector must be finite and non-zero")
    return q


def _scored(row: dict[str, Any]) -> dict[str, Any]:
    row["score"] = 1.0 - float(row.pop("_distance"))
    return row
