"""streamvl.storage.writer: a write group commits its batches once, or nothing at all."""

from __future__ import annotations

import lancedb
import numpy as np
import pytest

from streamvl.errors import StoreError
from streamvl.storage.connection import Connection
from streamvl.storage.schema import CLIPS, FRAMES
from streamvl.storage.store import Store
from streamvl.storage.writer import Writer
from tests.rows import clips, frames, unit


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "db"))


def versions(store: Store, table: str) -> int:
    return len(lancedb.connect(store.uri).open_table(table).list_versions())


def test_a_group_of_batches_is_one_commit(store):
    store.upsert(FRAMES, frames("a", [0], unit(1)))
    before = versions(store, FRAMES)
    with store.group(FRAMES) as group:
        for i in range(1, 5):
            assert group.write(frames("a", [i, i + 0.5], unit(2, seed=i))) == 2
        assert store.count(FRAMES) == 1  # nothing is visible before the commit
    assert group.rows == 8 and store.count(FRAMES) == 9
    assert versions(store, FRAMES) == before + 1
    one_by_one = Store(store.uri + "-2")
    for i in range(1, 5):
        one_by_one.upsert(FRAMES, frames("a", [i], unit(1, seed=i)))
    assert versions(one_by_one, FRAMES) >= 4  # what the group saves: a version (and a fragment) per batch


def test_a_group_keeps_the_last_row_per_key_across_batches(store):
    emb = unit(3)
    with store.group(FRAMES) as group:
        group.write(frames("a", [1, 2], emb[:2]))
        group.write(frames("a", [1], emb[2:]))
    assert group.rows == 2
    _, got = store.frames_for("a", 0, 5)
    np.testing.assert_allclose(got, emb[[2, 1]])


def test_a_failed_group_commits_nothing(store):
    store.upsert(CLIPS, clips("a", [0], unit(1)))
    before = versions(store, CLIPS)
    with pytest.raises(RuntimeError, match="worker died"):
        with store.group(CLIPS) as group:
            group.write(clips("a", [2, 4], unit(2)))
            raise RuntimeError("worker died")
    assert store.count(CLIPS) == 1 and versions(store, CLIPS) == before
    with pytest.raises(StoreError, match="already finished"):
        group.write(clips("a", [6], unit(1)))


def test_a_bad_batch_fails_at_write_before_any_commit(store):
    with pytest.raises(StoreError, match=r"expected dim 8, got \[4\]"):
        with store.group(FRAMES) as group:
            group.write(frames("a", [0], unit(1)))  # a new table takes this batch's schema
            group.write(frames("a", [1], unit(1, d=4)))
    assert store.table_names() == []  # not even created


def test_a_group_creates_its_table_once_it_commits_rows(tmp_path):
    writer = Writer(Connection(tmp_path / "db"))
    with writer.group(FRAMES) as group:
        group.write(frames("a", [], np.zeros((0, 8), np.float32)))
    assert group.rows == 0 and writer.conn.table_names() == []
    with writer.group(FRAMES) as group:
        group.write(frames("a", [0, 1], unit(2)))
    assert writer.conn.table_names() == [FRAMES] and versions(Store(tmp_path / "db"), FRAMES) == 2  # create, upsert
    with pytest.raises(StoreError, match="not started"):
        writer.group(FRAMES).write(frames("a", [2], unit(1)))
    with pytest.raises(StoreError, match="unknown table"):
        writer.group("nope")
