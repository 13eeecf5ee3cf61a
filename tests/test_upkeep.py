"""Table upkeep under continuous appends: compaction bounds fragments; the ANN index is built once
the clips table is large enough and kept up to date as rows keep arriving. No Ray."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from streamvl.store import CLIPS, STREAMS, Store, clips_schema

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
        store.record_stream("cam", "rtsp://cam", "running", frames_indexed=i)
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
