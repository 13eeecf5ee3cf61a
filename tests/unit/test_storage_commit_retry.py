"""streamvl.storage.writer: a commit whose result is unknown (or a retryable conflict) is resolved
by an idempotent retry: every row present once, whether or not the failed attempt committed."""

from __future__ import annotations

import pytest

from streamvl.errors import StoreError
from streamvl.storage.schema import CLIPS, KEYS
from streamvl.storage.store import Store
from streamvl.storage.writer import retryable_commit_error, upsert_with_retry
from tests.rows import clips as _clips, unit


def clips(sid, starts):
    return _clips(sid, starts, unit(len(starts), seed=len(sid) + len(starts)))

UNKNOWN = RuntimeError("lance error: Commit result unknown: the manifest PUT timed out")


class FlakyHandle:
    """Wraps a real LanceDB table: its first merge_insert raises, after committing (commit_first)
    or without committing. The rest are the real table's."""

    def __init__(self, handle, exc: BaseException, *, commit_first: bool, failures: int = 1) -> None:
        self.handle, self.exc, self.commit_first, self.failures = handle, exc, commit_first, failures
        self.calls = self.checkouts = 0

    def merge_insert(self, keys):
        builder = self.handle.merge_insert(keys)
        outer = self

        class Builder:
            def when_matched_update_all(self):
                builder.when_matched_update_all()
                return self

            def when_not_matched_insert_all(self):
                builder.when_not_matched_insert_all()
                return self

            def execute(self, rows):
                outer.calls += 1
                if outer.calls <= outer.failures:
                    if outer.commit_first:
                        builder.execute(rows)
                    raise outer.exc
                return builder.execute(rows)

        return Builder()

    def checkout_latest(self):
        self.checkouts += 1
        self.handle.checkout_latest()

    def __getattr__(self, name):  # schema, version, ...: the real table's
        return getattr(self.handle, name)


@pytest.fixture
def table(tmp_path):
    store = Store(str(tmp_path / "db"))
    store.upsert(CLIPS, clips("s1", [0.0]))  # the table exists
    return store, store.conn.open(CLIPS)


@pytest.mark.parametrize("committed", [True, False], ids=["committed-unseen", "not-committed"])
def test_an_unknown_commit_result_is_retried_to_exactly_one_copy(table, committed):
    store, handle = table
    flaky = FlakyHandle(handle, UNKNOWN, commit_first=committed)
    rows = clips("s2", [0.0, 2.0, 4.0])
    upsert_with_retry(CLIPS, flaky, KEYS[CLIPS], rows, sleep=lambda s: None)
    assert flaky.calls == 2 and flaky.checkouts == 1
    got = store.read(CLIPS, columns=["stream_id", "start"]).to_pylist()
    assert sorted((r["stream_id"], r["start"]) for r in got) == [("s1", 0.0), ("s2", 0.0), ("s2", 2.0), ("s2", 4.0)]


def test_a_retryable_conflict_is_retried_through_the_writer(table, monkeypatch):
    store, handle = table
    flaky = FlakyHandle(handle, RuntimeError("Retryable commit conflict for version 3: try again"), commit_first=False)
    monkeypatch.setattr(store.conn, "open", lambda name: flaky)
    monkeypatch.setattr("streamvl.storage.writer.time.sleep", lambda s: None)
    assert store.upsert(CLIPS, clips("s3", [0.0, 2.0])) == 2
    assert flaky.calls == 2
    assert store.count(CLIPS) == 3


def test_other_errors_are_not_retried(table):
    store, handle = table
    flaky = FlakyHandle(handle, ValueError("Schema error: field embedding type mismatch"), commit_first=False)
    with pytest.raises(ValueError):
        upsert_with_retry(CLIPS, flaky, KEYS[CLIPS], clips("s2", [0.0]), sleep=lambda s: None)
    assert flaky.calls == 1 and flaky.checkouts == 0


def test_retries_are_bounded_and_the_last_error_is_a_store_error(table, monkeypatch):
    store, handle = table
    flaky = FlakyHandle(handle, UNKNOWN, commit_first=False, failures=100)
    monkeypatch.setattr(store.conn, "open", lambda name: flaky)
    monkeypatch.setattr("streamvl.storage.writer.time.sleep", lambda s: None)
    with pytest.raises(StoreError, match="upsert on table 'clips'.*result unknown"):
        store.upsert(CLIPS, clips("s2", [0.0]))
    assert flaky.calls == 6


def test_which_errors_are_retryable():
    assert retryable_commit_error(UNKNOWN)
    assert retryable_commit_error(OSError("Too many concurrent writers. Please retry"))
    assert not retryable_commit_error(ValueError("Invalid user input: no such column"))
