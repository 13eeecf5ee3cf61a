"""Table upkeep under continuous appends: compaction bounds fragments; the ANN index is built once
the clips table is large enough, kept up to date as rows keep arriving, and its deltas merged into
one (which would otherwise fence one more fragment per upkeep); the sink reopens its
handles after upkeep so LanceDB's per-version cache entries do not pile up. No Ray."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import weakref

import numpy as np
import pyarrow as pa
import pytest
from lancedb.table import IndexStatistics

from streamvl.config import StoreConfig
from streamvl.errors import StoreError
from streamvl.storage.sink import SINK_PROCESS_ENV, TableSink
from streamvl.storage.schema import CLIPS, STREAMS, clips_schema
from streamvl.storage.store import Store
from streamvl.storage.upkeep import INDEX_MAX_DELTAS
from streamvl.types import Status, StreamState

D = 16
META = {"streamvl.model": "tiny@random:0"}


def clips(sid: str, starts: np.ndarray, rng: np.random.Generator) -> pa.Table:
    emb = rng.normal(size=(len(starts), D)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return pa.Table.from_pydict({
        "stream_id": [sid] * len(starts), "start": starts, "end": starts + 2.0, "adapter": ["meanpool"] * len(starts),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), D), "model": ["m"] * len(starts),
    }, schema=clips_schema(D, meta=META))


def test_compaction_keeps_fragments_bounded_under_many_small_appends(tmp_path):
    store, rng = Store(tmp_path / "db"), np.random.default_rng(0)
    peak = 0
    for i in range(150):  # one small upsert per live commit
        store.upsert(CLIPS, clips("cam", np.arange(i * 4, i * 4 + 4, dtype=np.float64), rng))
        store.record_state(StreamState("cam", "rtsp://cam", Status.RUNNING, frames_indexed=i))
        if i % 50 == 49:  # what the sink does every optimize_every_writes writes
            for table in (CLIPS, STREAMS):
                peak = max(peak, store.fragments(table))
                got = store.maintain(table, keep_versions_s=0)
                assert got["fragments"] <= 2
    assert 50 <= peak < 100
    assert store.count(CLIPS) == 600 and store.count(STREAMS) == 1


def test_ann_index_is_built_past_the_threshold_and_covers_new_rows(tmp_path):
    store, rng = Store(tmp_path / "db"), np.random.default_rng(1)
    store.upsert(CLIPS, clips("cam", np.arange(200, dtype=np.float64), rng))
    assert store.maintain(CLIPS, index_min_rows=300)["indexed"] is False  # too small: exact search
    store.upsert(CLIPS, clips("cam", np.arange(200, 600, dtype=np.float64), rng))
    assert store.maintain(CLIPS, index_min_rows=300)["indexed"] is True
    handle = store.db.open_table(CLIPS)
    (index,) = [ix for ix in handle.list_indices() if "embedding" in ix.columns]
    store.upsert(CLIPS, clips("cam", np.arange(600, 700, dtype=np.float64), rng))  # appended after the build
    assert handle.index_stats(index.name).num_unindexed_rows == 100
    assert store.maintain(CLIPS, index_min_rows=300)["indexed"] is True
    assert store.db.open_table(CLIPS).index_stats(index.name).num_unindexed_rows == 0  # folded in by optimize
    query = store.db.open_table(CLIPS).to_arrow()["embedding"][650].values.to_numpy()
    hits = store.search_clips(query, 5, adapter="meanpool", candidates=50)
    assert hits[0]["start"] == pytest.approx(650.0)  # a row added after the build is found


def vector_index_stats(store: Store) -> IndexStatistics | None:
    """LanceDB's statistics of the index on clips.embedding (None without one)."""
    handle = store.db.open_table(CLIPS)
    names = [ix.name for ix in handle.list_indices() if "embedding" in ix.columns]
    return handle.index_stats(names[0]) if names else None


def append_and_maintain(store: Store, end: int, rng: np.random.Generator, rounds: int,
                        upkeep=lambda s: s.maintain(CLIPS, index_min_rows=300)) -> tuple[int, list[int], list]:
    """`rounds` x (3 small live commits of 4 rows; upkeep), checking after each upkeep that every
    row is indexed. Returns (next start, clips fragments after each upkeep, upkeep results)."""
    fragments, results = [], []
    for _ in range(rounds):
        for _ in range(3):
            store.upsert(CLIPS, clips("cam", np.arange(end, end + 4, dtype=np.float64), rng))
            end += 4
        results.append(upkeep(store))
        stats = vector_index_stats(store)
        assert stats is not None and stats.num_unindexed_rows == 0 and stats.num_indexed_rows == end
        fragments.append(store.fragments(CLIPS))
    return end, fragments, results


def test_fragments_stay_bounded_once_the_ann_index_exists(tmp_path):
    """Each optimize indexes the new rows as one more delta of the vector index and compaction never
    merges fragments of different deltas: without the delta merge, 30 upkeeps leave ~30 fragments."""
    store, rng = Store(tmp_path / "db"), np.random.default_rng(4)
    store.upsert(CLIPS, clips("cam", np.arange(400, dtype=np.float64), rng))
    assert store.maintain(CLIPS, index_min_rows=300)["indexed"] is True
    end, fragments, results = append_and_maintain(store, 400, rng, 30)
    assert max(fragments) <= 2, fragments  # main's upkeep: 2, 2, 3, 4, ... 30
    assert vector_index_stats(store).num_indices == 1
    assert all(r["deltas"] == 1 and r["fragments"] == f for r, f in zip(results, fragments))
    assert sum(r["merged"] > 0 for r in results) >= 25  # optimize adds a delta each upkeep; maintain merges it
    assert all(r["merged"] == 0 or r["merge_s"] > 0 for r in results)
    # the merged index still finds old rows (no row lost or mis-assigned by the merges)
    table = store.db.open_table(CLIPS).to_arrow()
    for row in (0, 399, 400, end - 401):
        query = table["embedding"][row].values.to_numpy()
        assert store.search_clips(query, 1, adapter="meanpool", candidates=50)[0]["start"] == table["start"][row].as_py()
    # a row appended after the last upkeep is found before the next one (LanceDB scans unindexed
    # fragments exactly next to the ANN search) and, once folded into the index, after it
    fresh = clips("cam", np.array([float(end)]), rng)
    query = fresh["embedding"][0].values.to_numpy()
    store.upsert(CLIPS, fresh)
    assert vector_index_stats(store).num_unindexed_rows == 1
    assert store.search_clips(query, 5, adapter="meanpool", candidates=50)[0]["start"] == pytest.approx(end)
    store.maintain(CLIPS, index_min_rows=300)
    assert vector_index_stats(store).num_unindexed_rows == 0
    assert store.search_clips(query, 5, adapter="meanpool", candidates=50)[0]["start"] == pytest.approx(end)


def test_a_larger_delta_bound_merges_less_often(tmp_path):
    store, rng = Store(tmp_path / "db"), np.random.default_rng(6)
    store.upsert(CLIPS, clips("cam", np.arange(400, dtype=np.float64), rng))
    store.maintain(CLIPS, index_min_rows=300)
    _, fragments, results = append_and_maintain(
        store, 400, rng, 12, upkeep=lambda s: s.maintain(CLIPS, index_min_rows=300, index_max_deltas=4))
    assert max(r["deltas"] for r in results) == 4 and max(fragments) <= 5, fragments
    assert 2 <= sum(r["merged"] > 0 for r in results) <= 4  # one merge per 4 upkeeps, not one per upkeep
    with pytest.raises(StoreError, match="index_max_deltas"):
        store.maintain(CLIPS, index_max_deltas=0)


def test_merging_needs_pylance_and_says_so(tmp_path, monkeypatch):
    store, rng = Store(tmp_path / "db"), np.random.default_rng(7)
    store.upsert(CLIPS, clips("cam", np.arange(400, dtype=np.float64), rng))
    store.maintain(CLIPS, index_min_rows=300)
    store.upsert(CLIPS, clips("cam", np.arange(400, 410, dtype=np.float64), rng))
    monkeypatch.setitem(sys.modules, "lance", None)  # `import lance` now raises ImportError
    with pytest.raises(StoreError, match="pylance") as err:
        for _ in range(3):  # Lance folds the first append into the build's delta; later ones add deltas
            store.upsert(CLIPS, clips("cam", np.arange(410 + 10 * _, 420 + 10 * _, dtype=np.float64), rng))
            store.maintain(CLIPS, index_min_rows=300)
    assert "clips" in str(err.value)


def test_store_optimize_merges_deltas_instead_of_adding_one_per_call(tmp_path):
    """Store.optimize (whole-database upkeep) goes through maintain: once clips has an index, calling
    it after appends keeps one delta and 1-2 fragments, and it never builds an index itself."""
    store, rng = Store(tmp_path / "db"), np.random.default_rng(8)
    store.upsert(CLIPS, clips("cam", np.arange(400, dtype=np.float64), rng))
    store.optimize()
    assert vector_index_stats(store) is None  # optimize never builds the ANN index
    store.maintain(CLIPS, index_min_rows=300)
    _, fragments, _ = append_and_maintain(store, 400, rng, 12, upkeep=lambda s: s.optimize(keep_versions_s=3600))
    assert max(fragments) <= 2, fragments
    assert vector_index_stats(store).num_indices == 1


def test_sink_upkeep_merges_the_index_deltas(tmp_path):
    """The sink's default upkeep (StoreConfig()) keeps the clips table at 1-2 fragments once indexed."""
    upkeep = StoreConfig(optimize_every_writes=2, keep_versions_s=3600, index_min_rows=256)
    sink, rng = TableSink(str(tmp_path / "db"), CLIPS, upkeep), np.random.default_rng(5)
    sink.write(clips("cam", np.arange(300, dtype=np.float64), rng))
    results = []
    for i in range(30):
        sink.write(clips("cam", np.array([300.0 + i]), rng))
        if i % 2 == 0:  # this write made the sink's 2nd since its last upkeep
            results.append(sink.last_upkeep)
    assert sink.upkeeps == len(results) == 15 and all(r["indexed"] for r in results)
    assert max(r["fragments"] for r in results) <= 2, [r["fragments"] for r in results]
    assert max(r["deltas"] for r in results) == 1 and any(r["merged"] for r in results)
    assert StoreConfig().index_max_deltas == INDEX_MAX_DELTAS == 1  # one default for the sink and Upkeep.maintain


def sink_cache_items(tmp_path, release: bool) -> tuple[list[int], TableSink]:
    """LanceDB cache items held by a clips sink after each of 120 one-row writes (upkeep every 20)."""
    upkeep = StoreConfig(optimize_every_writes=20, keep_versions_s=3600, release_after_upkeep=release)
    sink, rng, items = TableSink(str(tmp_path / f"db-{release}"), CLIPS, upkeep), np.random.default_rng(2), []
    for i in range(120):
        sink.write(clips("cam", np.array([float(i)]), rng))
        items.append(sink.store.cache_stats()["items"])
    return items, sink


def test_sink_reopens_its_handles_after_upkeep_so_cache_entries_do_not_pile_up(tmp_path):
    kept, kept_sink = sink_cache_items(tmp_path, release=False)
    released, sink = sink_cache_items(tmp_path, release=True)
    assert kept_sink.upkeeps == sink.upkeeps == 6
    assert kept[-1] > kept[40] > kept[20] > 0  # one handle for the whole run: entries grow with every version
    assert max(released) * 3 < kept[-1]  # bounded by what one upkeep interval adds
    assert released[19] == 0  # the upkeep after the 20th write dropped the caches
    # reopened handles see every committed row, and a replayed batch after a reopen changes nothing
    assert sink.store.count(CLIPS) == 120
    assert sink.write(clips("cam", np.array([5.0, 6.0]), np.random.default_rng(2))) == 2
    assert sink.store.count(CLIPS) == 120


def test_sink_upkeep_frees_the_connection_it_drops_even_from_a_reference_cycle(tmp_path):
    """An exception raised inside LanceDB leaves a traceback cycle that holds the connection (and
    its caches); a slow-paced sink process runs Python's full collection only every few minutes, so
    the upkeep that drops the connection must collect it itself."""
    sink = TableSink(str(tmp_path / "db"), STREAMS, StoreConfig(optimize_every_writes=1000, keep_versions_s=3600))
    sink.record_state(StreamState("cam", "rtsp://cam", Status.RUNNING, frames_indexed=1))
    old_db = weakref.ref(sink.store.db)
    gc.collect()
    gc.disable()  # the automatic collector runs whenever it likes; the sink must not depend on it
    try:
        with pytest.raises(ValueError):
            sink.store.db.open_table("no_such_table")  # any LanceDB error: its traceback refers to the connection
        sink.upkeep_now()
        alive = old_db() is not None
    finally:
        gc.enable()
    assert not alive
    assert sink.store.stream_state("cam").frames_indexed == 1  # and the reopened store still reads it


def test_sink_upkeep_is_due_by_writes_or_by_time(tmp_path):
    now = [0.0]
    upkeep = StoreConfig(optimize_every_writes=50, optimize_every_s=60.0, keep_versions_s=3600)
    sink, rng = TableSink(str(tmp_path / "db"), CLIPS, upkeep, clock=lambda: now[0]), np.random.default_rng(3)
    for i in range(10):
        sink.write(clips("cam", np.array([float(i)]), rng))
    assert sink.upkeeps == 0
    now[0] = 61.0
    sink.write(clips("cam", np.array([10.0]), rng))
    assert sink.upkeeps == 1 and sink.last_upkeep["rows"] == 11


def test_a_sink_taking_over_a_table_compacts_what_its_predecessor_left(tmp_path):
    """A replaced or restarted sink process (upkeep_first, as the runtime's sinks run) compacts at its
    first write; a plain one would add its own 50 writes to the 40 fragments left behind."""
    upkeep = StoreConfig(optimize_every_writes=50, optimize_every_s=3600.0, keep_versions_s=3600)
    db, rng = str(tmp_path / "db"), np.random.default_rng(4)
    old = TableSink(db, CLIPS, upkeep)
    for i in range(40):
        old.write(clips("cam", np.array([float(i)]), rng))
    assert old.upkeeps == 0 and old.store.fragments(CLIPS) == 40
    plain = TableSink(db, CLIPS, upkeep)
    plain.write(clips("cam", np.array([40.0]), rng))
    assert plain.upkeeps == 0
    fresh = TableSink(db, CLIPS, upkeep, upkeep_first=True)
    fresh.write(clips("cam", np.array([41.0]), rng))
    assert fresh.upkeeps == 1 and fresh.last_upkeep["fragments"] <= 2 and fresh.last_upkeep["rows"] == 42
    for i in range(42, 60):  # then the usual cadence: no upkeep before the 50th write
        fresh.write(clips("cam", np.array([float(i)]), rng))
    assert fresh.upkeeps == 1


def test_sink_process_env_puts_arrow_on_the_system_allocator():
    """pyarrow's default mimalloc pool keeps freed pages resident; the sinks' env must switch it off."""
    env = {k: v for k, v in os.environ.items() if k not in SINK_PROCESS_ENV} | SINK_PROCESS_ENV
    code = "import pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    got = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "system"


def test_indexed_search_keeps_adapters_apart_with_and_without_the_prefilter(tmp_path):
    store, rng = Store(tmp_path / "db"), np.random.default_rng(2)
    store.upsert(CLIPS, clips("cam", np.arange(400, dtype=np.float64), rng))
    assert store.maintain(CLIPS, index_min_rows=300)["indexed"] is True
    assert [ix.columns for ix in store.db.open_table(CLIPS).list_indices() if "adapter" in ix.columns] == [["adapter"]]
    query = store.db.open_table(CLIPS).to_arrow()["embedding"][7].values.to_numpy()
    only = store.search_clips(query, 5, adapter="meanpool", candidates=100)  # one adapter: the filter is dropped
    assert only[0]["start"] == pytest.approx(7.0) and len(only) == 5
    assert store.search_clips(query, 5, adapter="xclip") == []
    other = clips("cam", np.arange(3, 12, dtype=np.float64), rng)  # another adapter's rows, near the query
    other = other.set_column(other.schema.get_field_index("adapter"), "adapter", pa.array(["xclip"] * other.num_rows))
    other = other.set_column(other.schema.get_field_index("embedding"), "embedding",
                             pa.FixedSizeListArray.from_arrays(pa.array(np.tile(query, other.num_rows)), D))
    store.upsert(CLIPS, other)
    mean = store.search_clips(query, 5, adapter="meanpool", candidates=100)
    assert {r["adapter"] for r in mean} == {"meanpool"} and mean[0]["start"] == pytest.approx(7.0)
    x = store.search_clips(query, 5, adapter="xclip", candidates=100)
    assert {r["adapter"] for r in x} == {"xclip"} and len(x) == 5


def test_tiered_compaction_leaves_full_fragments_alone_and_merges_them_a_tier_up(tmp_path):
    """Sink upkeep with small tiers (32 rows, 2 per tier): a fragment that reached a tier's size is
    never rewritten by a later upkeep except by the one tier merge, so the rows an upkeep rewrites stay
    bounded; rows and the ANN index survive; compact_rows=0 is LanceDB's one growing fragment."""
    def run(cfg: StoreConfig) -> tuple[TableSink, list[dict[int, int]]]:
        sink, rng, seen = TableSink(str(tmp_path / f"db{cfg.compact_rows}"), CLIPS, cfg), np.random.default_rng(7), []
        for i in range(60):
            sink.write(clips("cam", np.arange(i * 8, i * 8 + 8, dtype=np.float64), rng))
            if i % 2 == 1:  # after each upkeep: fragment id -> rows
                seen.append({f.fragment_id: f.count_rows() for f in sink.store.conn.open(CLIPS).to_lance().get_fragments()})
        return sink, seen

    cfg = StoreConfig(optimize_every_writes=2, keep_versions_s=3600, index_min_rows=256, compact_rows=32,
                      compact_tier_factor=2, compact_tiers=1)
    sink, seen = run(cfg)
    assert sink.upkeeps == 30 and sink.store.count(CLIPS) == 480 and sink.last_upkeep["indexed"]
    top = {f: r for f, r in seen[-1].items() if r >= 64}
    assert len(top) >= 4 and sum(seen[-1].values()) == 480
    assert max(seen[-1].values()) < 4 * 64  # no fragment beyond the top tier (+ what one merge can add)
    for before, after in zip(seen, seen[1:]):  # a top-tier fragment, once written, is never rewritten
        assert {f: r for f, r in before.items() if r >= 64}.items() <= after.items()
    hits = sink.store.search_clips(np.ones(D, np.float32) / np.sqrt(D), k=5, adapter="meanpool")
    assert len(hits) == 5
    old, old_seen = run(cfg.model_copy(update={"compact_rows": 0}))
    assert old.store.count(CLIPS) == 480 and len(old_seen[-1]) <= 2 and max(old_seen[-1].values()) > 256
