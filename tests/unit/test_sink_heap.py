"""A sink hands the free heap an upsert leaves back to the OS after every upsert, not only at upkeep.

Why (issue 43, goal 5; bench/frames_sink_memory.py): an upsert (merge_insert) reads the keys of
every fragment, so each commit allocates and frees buffers in proportion to the table's rows; glibc
(one arena in a sink) keeps those freed pages resident until the next malloc_trim. With the trim
only at upkeep (every 50 writes) the frames sink's RssAnon between upkeeps grew with the table,
x1.10 over a fast-forwarded hour of 40 streams; trimmed after every upsert, x1.02. The appender
(store.append_hot_tables) reads nothing of the table and needs no trim per write.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

import streamvl.storage.sink as sink_module
from streamvl.config import StoreConfig
from streamvl.storage.schema import FRAMES, frames_schema
from streamvl.storage.sink import TableSink
from streamvl.types import Status, StreamState

D = 8
NO_UPKEEP = StoreConfig(optimize_every_writes=10_000, optimize_every_s=1e9)


def frames(second: int, streams: int = 4) -> pa.Table:
    emb = np.random.default_rng(second).normal(size=(streams, D)).astype(np.float32)
    return pa.Table.from_pydict({
        "stream_id": [f"cam{i}" for i in range(streams)], "pts": [float(second)] * streams,
        "wallclock": [1e9 + second] * streams,
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), D), "model": ["m"] * streams,
    }, schema=frames_schema(D))


@pytest.fixture
def trims(monkeypatch):
    """Counts the sink's calls of release_free_heap (malloc_trim), without trimming this test process."""
    calls = []
    monkeypatch.setattr(sink_module, "release_free_heap", lambda: calls.append(1) or True)
    return calls


def test_every_upsert_releases_the_free_heap_between_upkeeps(tmp_path, trims):
    sink = TableSink(str(tmp_path / "db"), FRAMES, NO_UPKEEP, watch=False)
    for second in range(5):
        assert sink.write(frames(second)) == 4
    assert sink.upkeeps == 0 and len(trims) == 5
    assert sink.write(frames(0, streams=0)) == 0  # nothing written: nothing read, no trim
    assert len(trims) == 5
    assert sink.store.count(FRAMES) == 20


def test_the_streams_sink_releases_after_its_upserts_too(tmp_path, trims):
    sink = TableSink(str(tmp_path / "db"), "streams", NO_UPKEEP)
    states = [StreamState(f"cam{i}", f"rtsp://cam{i}", Status.RUNNING, frames_indexed=1) for i in range(3)]
    assert sink.record_states(states) == 3
    sink.record_state(states[0])
    assert len(trims) == 2


def test_upkeep_releases_once_and_the_switch_turns_both_off(tmp_path, trims):
    every_3 = StoreConfig(optimize_every_writes=3, optimize_every_s=1e9)
    sink = TableSink(str(tmp_path / "db"), FRAMES, every_3, watch=False)
    for second in range(3):
        sink.write(frames(second))
    assert sink.upkeeps == 1 and len(trims) == 3  # two after upserts, one after the upkeep the third write ran
    off = TableSink(str(tmp_path / "db2"), FRAMES, every_3.model_copy(update={"release_after_upkeep": False}), watch=False)
    for second in range(3):
        off.write(frames(second))
    assert off.upkeeps == 1 and len(trims) == 3


def test_appends_under_write_claims_read_nothing_and_skip_the_trim(tmp_path, trims):
    sink = TableSink(str(tmp_path / "db"), FRAMES, NO_UPKEEP.model_copy(update={"append_hot_tables": True}), watch=False)
    for second in range(3):
        sink.write(frames(second))
    sink.release_claims()
    assert sink.appender.stats["appended"] == 12 and trims == []
