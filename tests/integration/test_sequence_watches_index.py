"""Integration: a sequence watch ("a red circle" then "a blue square" within 5 s) while the Ray runtime
indexes the generated ab / ba / a_only streams of test_sequences_index: one event, on `ab`, with each
step at its true time; none on `ba` or `a_only`; replaying the run adds none and rewrites none.

The threshold is chosen from the data as a user would with `watch test`: just above the best score
either text gets on a clip that does not show its object (from a reference index of the same files).
"""

from __future__ import annotations

import pytest

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.storage.schema import STREAMS, sql_str
from streamvl.storage.store import Store
from streamvl.storage.watches import WatchTables
from streamvl.types import StreamInfo
from tests.e2e.service_support import index_streams
from tests.integration.test_sequences_index import A_TEXT, B_TEXT, TRUTH, absent_ceiling, api_vectors, inside, write_stream

pytestmark = pytest.mark.integration
WITHIN = 5.0


def test_sequence_watch_fires_once_on_ab_only_and_replay_adds_nothing(ray_local, tmp_path):
    paths = {sid: str(write_stream(tmp_path / f"{sid}.mp4", visible, seed)) for seed, (sid, visible) in
             enumerate(TRUTH.items(), 1)}
    ref = str(tmp_path / "ref")  # the same files indexed without Ray: where the threshold comes from
    index_streams(ref, [StreamInfo(sid, p) for sid, p in paths.items()], fps=2.0, window=4, stride=2)
    threshold = max(absent_ceiling(ref, A_TEXT), absent_ceiling(ref, B_TEXT)) + 1e-6
    a_vec, b_vec = api_vectors(ref, [A_TEXT, B_TEXT])

    db = str(tmp_path / "db")
    store = Store(db)
    tables = WatchTables(store.conn, store.reader, store.writer)
    wid = tables.add_sequence_watch([A_TEXT, B_TEXT], {"meanpool": [a_vec, b_vec]}, within_s=WITHIN,
                                    threshold=threshold, quiet_s=2.0)
    reverse = tables.add_sequence_watch([B_TEXT, A_TEXT], {"meanpool": [b_vec, a_vec]}, within_s=WITHIN,
                                        threshold=threshold, quiet_s=2.0)
    config = IndexConfig(db=db, model="default", sampling={"fps": 2.0}, clips={"window": 4, "stride": 2})
    report = api.index(api.discover(list(paths.values()), list(paths)), config)
    assert [s.status for s in report.streams] == ["done"] * 3, [s.error for s in report.streams]

    [ev] = tables.watch_events(watch_id=wid)
    assert ev["stream_id"] == "ab" and ev["status"] == "closed"
    a, b = ev["steps"]
    assert (a["text"], b["text"]) == (A_TEXT, B_TEXT)
    assert inside(a["start"], TRUTH["ab"][A_TEXT]) and inside(b["start"], TRUTH["ab"][B_TEXT])
    assert a["start"] < b["start"] <= a["end"] + WITHIN and ev["start"] == a["start"] and ev["end"] >= b["end"]
    assert min(a["score"], b["score"]) >= threshold and ev["peak_score"] >= threshold
    [rev] = tables.watch_events(watch_id=reverse)  # the other order fires on the other stream only
    assert rev["stream_id"] == "ba" and [s["text"] for s in rev["steps"]] == [B_TEXT, A_TEXT]

    # what the API and the service show: the events with their steps
    assert [e["event_id"] for e in api.watch_events(db, wid)] == [ev["event_id"]]

    # replay: forget every stream's checkpoint and index them again from the start (new sink processes)
    before = tables.watch_events()
    for sid in paths:
        store.delete(STREAMS, f"stream_id = {sql_str(sid)}")
    report = api.index(api.discover(list(paths.values()), list(paths)), config)
    assert [s.status for s in report.streams] == ["done"] * 3
    assert tables.watch_events() == before  # not one event added or rewritten (opened_at, updated_at included)
