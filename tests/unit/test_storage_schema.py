"""streamvl.storage.schema: table schemas, SQL literals, and the one mapping of StreamState to its row."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pyarrow as pa
import pytest

from streamvl.errors import StoreError
from streamvl.storage.schema import (
    CLIPS, FRAMES, KEYS, STATUSES, STREAMS, clip_filter, clips_schema, frames_schema, stream_row, stream_state,
    streams_schema, streams_table,
)
from streamvl.types import Status, StreamState
from tests.rows import D, LABELS, META

T0 = dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def test_schemas_have_plain_arrow_types_and_metadata():
    f = frames_schema(D, META)
    assert f.names == ["stream_id", "pts", "wallclock", "embedding", "model"]
    assert f.field("embedding").type == pa.list_(pa.float32(), D)
    assert f.field("wallclock").nullable and not f.field("pts").nullable
    assert f.metadata[b"streamvl.model"] == b"tiny@random:0"
    c = clips_schema(D, [LABELS], META)
    assert c.names == ["stream_id", "start", "end", "adapter", "embedding", "model", "labels"]
    s = streams_schema()
    assert s.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert s.field("last_committed_pts").nullable and s.field("error").nullable
    assert s.metadata is None
    assert {FRAMES, CLIPS, STREAMS, "stream_events", "stream_requests"} <= set(KEYS)


def test_clip_extra_column_clash_is_rejected():
    with pytest.raises(StoreError, match="clips.*'start'"):
        clips_schema(D, [pa.field("start", pa.string())], {})


def test_clip_filter_quotes_strings_and_checks_numbers():
    where = clip_filter("mean'pool", ["o'brien", "b"], 1.0, 2.5)
    assert where == "adapter = 'mean''pool' AND stream_id IN ('o''brien', 'b') AND `end` >= 1.0 AND `start` <= 2.5"
    with pytest.raises(StoreError):
        clip_filter("a", None, float("nan"))
    with pytest.raises(StoreError):
        clip_filter(3, None)  # type: ignore[arg-type]


# ---------------------------------------------------------------- StreamState <-> streams row


def live_state() -> StreamState:
    return StreamState("cam", "rtsp://h/cam", Status.RECONNECTING, frames_indexed=40, last_committed_pts=19.5,
                       error=None, model="m", updated_at=T0, next_window=36, resume_after=17.5, grid="fps=2",
                       last_wallclock=1000.25, live=True, lag_s=0.4, reconnects=2, gaps=1, gap_total_s=3.5,
                       last_gap_s=3.5, restarts=0, frames_skipped=7)


def test_stream_state_fields_are_the_streams_columns_in_order():
    assert [f.name for f in dataclasses.fields(StreamState)] == streams_schema().names


@pytest.mark.parametrize("state", [live_state(), StreamState("a", "file:///a.mp4", Status.DONE, updated_at=T0),
                                   StreamState("o'neil", "x", Status.ERROR, error="boom", updated_at=T0)])
def test_stream_state_round_trips_through_its_arrow_row(state):
    table = streams_table([state])
    assert table.schema == streams_schema()
    [row] = table.to_pylist()  # what LanceDB hands back
    assert row["status"] == state.status.value and isinstance(row["status"], str)
    back = stream_state(row)
    assert back == state and back.status is state.status
    assert stream_row(back) == row


def test_a_state_with_nothing_recorded_keeps_nulls_not_zeros():
    row = streams_table([StreamState("a", "u", Status.QUEUED, updated_at=T0)]).to_pylist()[0]
    assert row["frames_indexed"] == 0 and row["reconnects"] is None and row["live"] is None
    assert stream_state(row).restarts is None


def test_a_row_of_an_older_table_without_the_live_columns_reads():
    row = {"stream_id": "a", "uri": "u", "status": "done", "frames_indexed": 3, "last_committed_pts": 1.0,
           "error": None, "model": "m", "updated_at": T0}
    state = stream_state(row)
    assert (state.status, state.frames_indexed, state.next_window, state.live) == (Status.DONE, 3, None, None)


def test_an_unknown_status_in_a_row_is_a_store_error_naming_the_stream():
    row = stream_row(live_state()) | {"status": "finished"}
    with pytest.raises(StoreError, match="unknown status 'finished'") as err:
        stream_state(row)
    assert err.value.stream_id == "cam"
    with pytest.raises(ValueError):
        StreamState("a", "u", "finished")  # type: ignore[arg-type]


def test_the_streams_table_holds_every_status_but_requested():
    assert set(STATUSES) == {s.value for s in Status} - {"requested"}
    with pytest.raises(StoreError, match="status must be one of"):
        streams_table([StreamState("a", "u", Status.REQUESTED, updated_at=T0)])
    assert StreamState("a", "u", "running").status is Status.RUNNING  # a status string is coerced
    assert Status.RUNNING.active and Status.RECONNECTING.active and not Status.DONE.active
