"""streamvl.storage's Store (writer, reader, upkeep behind it) against a real local LanceDB
(tiny tables, random unit vectors, no models). Schemas: test_storage_schema.py; write groups:
test_storage_writer.py; the stream tables: test_storage_streams.py."""

from __future__ import annotations

import pickle

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamvl.errors import StoreError
from streamvl.storage.schema import CLIPS, FRAMES, STREAMS
from streamvl.storage.store import Store
from streamvl.types import Status, StreamState
from tests.rows import D, META, clips, frames, unit


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "db"))


# ---------------------------------------------------------------- upserts


def test_upsert_creates_table_and_is_idempotent(store):
    emb = unit(5)
    assert store.upsert(FRAMES, frames("a", range(5), emb)) == 5
    assert store.upsert(FRAMES, frames("a", range(5), emb)) == 5
    assert store.count(FRAMES) == 5
    changed = unit(2, seed=9)
    store.upsert(FRAMES, frames("a", [1, 7], changed))  # one update, one insert
    assert store.count(FRAMES) == 6
    pts, got = store.frames_for("a", 0, 10)
    np.testing.assert_array_equal(pts, [0, 1, 2, 3, 4, 7])
    np.testing.assert_allclose(got[1], changed[0])
    np.testing.assert_allclose(got[0], emb[0])


def test_upsert_empty_is_a_noop(store):
    assert store.upsert(FRAMES, frames("a", [], np.zeros((0, D), np.float32))) == 0
    assert store.table_names() == []
    assert store.count(FRAMES) == 0


def test_in_batch_duplicates_keep_the_last_row(store):
    emb = unit(3)
    assert store.upsert(FRAMES, frames("a", [1, 1, 2], emb)) == 2
    store.upsert(FRAMES, frames("a", [1, 1], emb[:2]))  # lancedb alone rejects this as ambiguous
    _, got = store.frames_for("a", 0, 5)
    assert len(got) == 2
    np.testing.assert_allclose(got[0], emb[1])


def test_dim_mismatch_names_table_and_dims(store):
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    with pytest.raises(StoreError, match=r"'frames'.*'embedding'.*expected dim 8, got \[4\]"):
        store.upsert(FRAMES, frames("a", [1], unit(1, d=4)))
    as_lists = pa.table({"stream_id": ["a"], "pts": [2.0], "embedding": [[0.5] * 3], "model": ["m"]})
    with pytest.raises(StoreError, match=r"expected dim 8, got \[3\]"):
        store.upsert(FRAMES, as_lists)


def test_missing_and_unknown_columns(store):
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    with pytest.raises(StoreError, match="'frames'.*missing required column 'model'"):
        store.upsert(FRAMES, frames("a", [1], unit(1)).drop_columns(["model"]))
    with pytest.raises(StoreError, match="'frames' has no column.*'bogus'"):
        store.upsert(FRAMES, frames("a", [1], unit(1)).append_column("bogus", pa.array([1])))
    with pytest.raises(StoreError, match="unknown table"):
        store.upsert("nope", frames("a", [1], unit(1)))


def test_data_is_conformed_to_the_table_schema(store):
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    loose = pa.table({"model": ["m"], "embedding": [unit(1)[0].astype(np.float64).tolist()],
                      "pts": pa.array([3], pa.int64()), "stream_id": ["a"]})  # no wallclock, other types/order
    assert store.upsert(FRAMES, loose) == 1
    row = lancedb.connect(store.uri).open_table(FRAMES).to_arrow().filter(pc.field("pts") == 3.0)
    assert row["wallclock"].to_pylist() == [None]
    assert row.schema.field("embedding").type == pa.list_(pa.float32(), D)


def test_rows_of_another_model_are_refused(store):
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    with pytest.raises(StoreError, match="holds embeddings of model 'tiny@random:0'"):
        store.upsert(FRAMES, frames("a", [1], unit(1), meta={"streamvl.model": "big@x"}))


def test_new_table_needs_fixed_size_embeddings(store):
    as_lists = pa.table({"stream_id": ["a"], "pts": [2.0], "embedding": [[0.5] * D], "model": ["m"]})
    with pytest.raises(StoreError, match="fixed_size_list"):
        store.upsert(FRAMES, as_lists)


def test_extra_plugin_columns_round_trip(store):
    store.upsert(CLIPS, clips("a", [0, 2, 4], unit(3)))
    rows = store.search_clips(unit(3)[2], 3, adapter="meanpool")
    best = rows[0]
    assert (best["start"], best["labels"], best["model"]) == (4.0, ["l2"], "tiny")
    assert best["confidence"] == pytest.approx(1.0)
    assert "embedding" not in best and "_distance" not in best


# ---------------------------------------------------------------- interoperability and metadata


def test_plain_lancedb_client_reads_every_table(store):
    store.upsert(FRAMES, frames("a", [0.0, 0.5], unit(2)))
    store.upsert(CLIPS, clips("a", [0.0], unit(1)))
    store.record_state(StreamState("a", "file:///a.mp4", Status.DONE, frames_indexed=2, last_committed_pts=0.5))
    db = lancedb.connect(store.uri)
    assert sorted(db.list_tables().tables) == [CLIPS, FRAMES, STREAMS] == store.table_names()
    f = db.open_table(FRAMES).to_arrow().sort_by("pts")
    assert f.column_names == ["stream_id", "pts", "wallclock", "embedding", "model"]
    assert f["pts"].to_pylist() == [0.0, 0.5]
    assert len(f["embedding"][0]) == D
    c = db.open_table(CLIPS).to_arrow()
    assert c["labels"].to_pylist() == [["l0"]] and c["end"].to_pylist() == [2.0]
    assert db.open_table(STREAMS).to_arrow()["status"].to_pylist() == ["done"]


def test_metadata_survives_create_upsert_and_optimize(store):
    assert store.meta() == {}
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    assert store.meta() == META  # frames, while there are no clips yet
    for i in range(3):
        store.upsert(CLIPS, clips("a", [i], unit(1, seed=i)))
    store.upsert(CLIPS, clips("a", [0], unit(1)).replace_schema_metadata(None))  # rows without metadata
    fragments = store.optimize()
    assert fragments[CLIPS] == 1
    assert Store(store.uri).meta() == META
    raw = lancedb.connect(store.uri).open_table(CLIPS).schema.metadata
    assert raw[b"streamvl.models.weights"] == b"RANDOM"


def test_fragments_grow_per_upsert_until_optimize(store):
    for i in range(4):
        store.upsert(FRAMES, frames("a", [i], unit(1, seed=i)))
    stats = lancedb.connect(store.uri).open_table(FRAMES).stats()
    assert stats["fragment_stats"]["num_fragments"] == 4
    assert store.optimize()[FRAMES] == 1
    assert store.count(FRAMES) == 4
    table = lancedb.connect(store.uri).open_table(FRAMES)
    assert len(table.list_versions()) > 2
    with pytest.warns(UserWarning, match="removes every version"):  # lancedb's own warning
        store.optimize(keep_versions_s=0)
    assert len(table.list_versions()) == 1 and store.count(FRAMES) == 4


def test_store_pickles_by_uri(store):
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    copy = pickle.loads(pickle.dumps(store))
    assert copy.uri == store.uri and copy.count(FRAMES) == 1


def test_a_second_store_sees_new_writes(store):
    reader = Store(store.uri)
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    assert reader.count(FRAMES) == 1
    store.upsert(FRAMES, frames("a", [1], unit(1)))
    assert reader.count(FRAMES) == 2


def test_looking_for_a_missing_table_leaves_no_reference_cycle(store):
    """Asking for a table that does not exist yet (the streams sink's upkeep asks for
    stream_events every time) must not go through a LanceDB exception: its traceback cycle kept
    the connection and its caches alive after reconnect() until Python's full garbage collection."""
    import gc
    import weakref

    store.upsert(FRAMES, frames("a", [0], unit(1)))
    old_db = weakref.ref(store.db)
    gc.collect()
    gc.disable()
    try:
        assert store.table("stream_events") is None and store.events() == []
        store.table_names()  # a round trip through LanceDB's event loop: its thread lets go of earlier calls
        store.reconnect()
        alive = old_db() is not None
    finally:
        gc.enable()
    assert not alive
    assert store.count(FRAMES) == 1


# ---------------------------------------------------------------- search and frames


@pytest.fixture
def clip_store(store) -> tuple[Store, np.ndarray]:
    emb = unit(6, seed=3)
    store.upsert(CLIPS, clips("a", [0, 2, 4], emb[:3]))
    store.upsert(CLIPS, clips("o'b", [0, 2, 4], emb[3:]))
    store.upsert(CLIPS, clips("a", [0, 2, 4], emb[3:], adapter="xclip"))
    return store, emb


def test_search_clips_scores_are_cosine_in_descending_order(clip_store):
    store, emb = clip_store
    q = emb[4]
    rows = store.search_clips(q, 10, adapter="meanpool")
    assert len(rows) == 6
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)
    assert (rows[0]["stream_id"], rows[0]["start"], rows[0]["score"]) == ("o'b", 2.0, pytest.approx(1.0, abs=1e-5))
    expected = {("a", s): float(emb[i] @ q) for i, s in enumerate([0.0, 2.0, 4.0])}
    for r in rows:
        if r["stream_id"] == "a":
            assert r["score"] == pytest.approx(expected[("a", r["start"])], abs=1e-5)
    assert len(store.search_clips(q, 2, adapter="meanpool")) == 2


def test_search_clips_filters(clip_store):
    store, emb = clip_store
    q = emb[0]
    assert {r["adapter"] for r in store.search_clips(q, 10, adapter="xclip")} == {"xclip"}
    assert store.search_clips(q, 10, adapter="none") == []
    only = store.search_clips(q, 10, adapter="meanpool", stream_ids=["o'b"])
    assert {r["stream_id"] for r in only} == {"o'b"}
    assert store.search_clips(q, 10, adapter="meanpool", stream_ids=[]) == []
    # clips [0,2] [2,4] [4,6]: overlap with [4.5, 5] is only the last; touching [2,2] gives the first two
    assert {r["start"] for r in store.search_clips(q, 10, adapter="meanpool", start=4.5, end=5)} == {4.0}
    assert {r["start"] for r in store.search_clips(q, 10, adapter="meanpool", start=2, end=2)} == {0.0, 2.0}
    assert {r["start"] for r in store.search_clips(q, 10, adapter="meanpool", start=5)} == {4.0}
    assert {r["start"] for r in store.search_clips(q, 10, adapter="meanpool", end=1)} == {0.0}


def test_search_clips_on_empty_store_and_bad_vector(store, clip_store):
    assert Store(store.uri + "-empty").search_clips(unit(1)[0], 5, adapter="meanpool") == []
    with pytest.raises(StoreError, match=r"'clips'.*dim 4, expected 8"):
        store.search_clips(unit(1, d=4)[0], 5, adapter="meanpool")


def test_frames_for_returns_sorted_range(store):
    emb = unit(6)
    store.upsert(FRAMES, frames("a", [5, 1, 3], emb[:3]))
    store.upsert(FRAMES, frames("a", [2, 4], emb[3:5]))
    store.upsert(FRAMES, frames("b", [3], emb[5:]))
    pts, got = store.frames_for("a", 2, 4)
    np.testing.assert_array_equal(pts, [2.0, 3.0, 4.0])
    assert got.dtype == np.float32 and got.shape == (3, D)
    np.testing.assert_allclose(got, emb[[3, 2, 4]])
    pts, got = store.frames_for("a", 10, 20)
    assert pts.shape == (0,) and got.shape == (0, D)
    pts, got = Store(store.uri + "-empty").frames_for("a", 0, 1)
    assert pts.shape == (0,) and got.shape == (0, 0)


class _CreatingDb:
    """A LanceDB connection while another process creates `streams`: listed, not yet openable."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def list_tables(self, page_token=None):
        return type("Page", (), {"tables": ["streams"], "page_token": None})()

    def open_table(self, name):
        raise self.error


def test_a_table_being_created_by_another_process_reads_as_missing(tmp_path, monkeypatch):
    import lancedb as lancedb_module

    monkeypatch.setattr(lancedb_module, "connect", lambda *a, **k: _CreatingDb(ValueError("Table 'streams' was not found")))
    store = Store(str(tmp_path / "db"))
    assert store.table("streams") is None and store.stream_states() == [] and store.count("streams") == 0
    monkeypatch.setattr(lancedb_module, "connect", lambda *a, **k: _CreatingDb(OSError("permission denied")))
    with pytest.raises(StoreError, match="open table 'streams' failed: permission denied"):
        Store(str(tmp_path / "db")).stream_states()
