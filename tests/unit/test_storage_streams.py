"""The stream tables (streamvl.storage.streams) through a Store on a real local LanceDB."""

from __future__ import annotations

import dataclasses

import lancedb
import pytest

from streamvl.errors import StoreError
from streamvl.storage.ledger import Checkpoint, from_state, grid_key
from streamvl.storage.schema import STREAMS, streams_schema
from streamvl.storage.store import Store
from streamvl.types import Status, StreamEvent, StreamState


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(str(tmp_path / "db"))


def test_states_record_update_and_read(store):
    assert store.stream_states() == [] and store.stream_state("a") is None and store.stream("a") is None
    store.record_state(StreamState("b", "file:///b.mp4", Status.QUEUED))
    store.record_state(StreamState("a", "file:///a.mp4", Status.RUNNING, frames_indexed=10, last_committed_pts=4.5,
                                   model="tiny"))
    store.record_state(StreamState("a", "file:///a.mp4", Status.ERROR, frames_indexed=12, last_committed_pts=5.0,
                                   error="boom"))
    assert [s.stream_id for s in store.stream_states()] == ["a", "b"]
    a = store.stream_state("a")
    assert (a.status, a.frames_indexed, a.last_committed_pts, a.error, a.model) == (Status.ERROR, 12, 5.0, "boom", "")
    assert a.updated_at.tzinfo is not None  # stamped at write
    assert store.stream_state("b").last_committed_pts is None
    assert store.stream_state("o'neil") is None
    with pytest.raises(StoreError, match="status"):
        store.record_state(StreamState("a", "x", Status.REQUESTED))


def test_states_of_several_streams_are_one_commit(store):
    """record_states: one table version for all rows (the runtime's rows of one step); a stream
    given twice keeps its last state."""
    store.record_state(StreamState("a", "u", Status.QUEUED))
    before = store.conn.open(STREAMS).version
    states = [StreamState("a", "u", Status.RUNNING, frames_indexed=1), StreamState("b", "v", Status.RUNNING),
              StreamState("a", "u", Status.RUNNING, frames_indexed=2)]
    assert store.stream_tables.record_states(states) == 2
    assert store.conn.open(STREAMS).version == before + 1
    assert [(s.stream_id, s.frames_indexed) for s in store.stream_states()] == [("a", 2), ("b", 0)]
    assert store.stream_tables.record_states([]) == 0 and store.conn.open(STREAMS).version == before + 1


def test_record_stream_keywords_and_the_row_dict_are_the_same_state(store):
    """The runtime's forms: record_stream(id, uri, status, **columns) and stream(id) -> row dict."""
    store.record_stream("a", "rtsp://a", "running", frames_indexed=4, last_committed_pts=1.5, model="m",
                        next_window=2, resume_after=0.5, grid="g", live=True, reconnects=1)
    state = store.stream_state("a")
    assert state == StreamState("a", "rtsp://a", Status.RUNNING, frames_indexed=4, last_committed_pts=1.5, model="m",
                                updated_at=state.updated_at, next_window=2, resume_after=0.5, grid="g", live=True,
                                reconnects=1)
    row = store.stream("a")
    assert row["status"] == "running" and row["frames_indexed"] == 4 and row["gaps"] is None
    assert list(row) == streams_schema().names
    with pytest.raises(StoreError, match="status"):
        store.record_stream("a", "x", "finished")
    with pytest.raises(StoreError, match="no column.*'bogus'"):
        store.record_stream("a", "x", "done", bogus=1)


def test_an_unknown_status_written_by_another_client_is_an_error_on_read(store):
    store.record_state(StreamState("a", "u", Status.DONE))
    lancedb.connect(store.uri).open_table(STREAMS).update(values={"status": "paused"})
    with pytest.raises(StoreError, match="unknown status 'paused'"):
        store.stream_state("a")


def test_the_checkpoint_of_a_state(store):
    grid = grid_key(1.0, 8, 4, ["meanpool"])
    cp = Checkpoint(grid).advance(4, 3.0, 10, 9.0, None)
    store.record_state(dataclasses.replace(StreamState("a", "u", Status.RUNNING), **cp.as_row()))
    assert from_state(store.stream_state("a"), grid) == cp
    assert from_state(store.stream_state("a"), "another grid").at_start
    assert from_state(None, grid).at_start


def test_stream_uris_reads_only_the_asked_streams(store):
    assert store.stream_uris(["a"]) == {}  # no streams table yet
    for sid, uri in (("a", "file:///a.mp4"), ("o'neil", "file:///o.mp4"), ("c", "file:///c.mp4")):
        store.record_state(StreamState(sid, uri, Status.DONE))
    assert store.stream_uris(["o'neil", "a", "missing"]) == {"a": "file:///a.mp4", "o'neil": "file:///o.mp4"}
    assert store.stream_uris([]) == {}


def test_stream_uris_see_every_new_version_of_the_streams_table(store, tmp_path, monkeypatch):
    store.record_state(StreamState("a", "file:///a.mp4", Status.DONE))
    assert store.stream_uris(["a", "b"]) == {"a": "file:///a.mp4"}
    other = Store(str(tmp_path / "db"))  # another process's writes: a new version, seen at the next call
    other.record_state(StreamState("b", "rtsp://cam/b", Status.RUNNING))
    other.record_state(StreamState("a", "file:///a2.mp4", Status.DONE))
    assert store.stream_uris(["a", "b"]) == {"a": "file:///a2.mp4", "b": "rtsp://cam/b"}
    monkeypatch.setattr("streamvl.storage.streams.URI_CACHE_ROWS", 1)  # a big table: only the asked rows are read
    other.record_state(StreamState("c", "file:///c.mp4", Status.DONE))
    assert store.stream_uris(["c", "missing"]) == {"c": "file:///c.mp4"}


def test_events_are_idempotent_and_requests_hold_the_desired_state(store):
    events = [StreamEvent("cam", "reconnect", 100.0, attempts=2), StreamEvent("cam", "gap", 105.0, gap_s=5.0),
              StreamEvent("other", "restart", 101.0)]
    assert store.record_events(events) == 3 and store.record_events(events[:1]) == 1
    assert [(e["stream_id"], e["kind"]) for e in store.events()] == [("cam", "reconnect"), ("other", "restart"),
                                                                      ("cam", "gap")]
    assert [e["gap_s"] for e in store.events("cam")] == [None, 5.0]
    store.request_stream("cam", "rtsp://cam", "run", fps=2.0)
    store.request_stream("cam", "rtsp://cam", "remove")
    assert [(r["stream_id"], r["action"], r["fps"]) for r in store.requests()] == [("cam", "remove", None)]
    with pytest.raises(StoreError, match="action"):
        store.request_stream("cam", "rtsp://cam", "pause")
