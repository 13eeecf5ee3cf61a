"""Recorder: throttled `streams` rows stay within MAX_ROWS_PER_S however many streams run (no Ray)."""

from __future__ import annotations

from streamvl.runtime.recorder import MAX_ROWS_PER_S, Recorder
from streamvl.runtime.report import StreamReport
from streamvl.runtime.scheduler import ActiveStream
from streamvl.storage.ledger import Checkpoint
from streamvl.types import StreamInfo


class RowsBackend:
    """Counts the `streams` rows the recorder sends (record_states; its writes finish at once)."""

    def __init__(self) -> None:
        self.rows: list[str] = []
        self.writes = 0

    def record_states(self, states):
        self.rows.extend(state.stream_id for state in states)
        self.writes += 1
        return self.writes

    def wait(self, refs, num_returns, timeout):
        return list(refs)

    def get(self, ref):
        return None


def run_for(streams: int, seconds: float, interval_s: float = 1.0) -> tuple[list[str], list[ActiveStream]]:
    """Ask to record every running stream every 0.1 s of a fake clock, as the run loop does per batch."""
    now = [0.0]
    backend = RowsBackend()
    reports = {f"s{i}": StreamReport(f"s{i}", f"rtsp://h/{i}", live=True, status="running") for i in range(streams)}
    ledger = {sid: Checkpoint("g") for sid in reports}
    recorder = Recorder(backend, ledger, reports, interval_s, clock=lambda: now[0])
    states = [ActiveStream(StreamInfo(sid, r.uri), r) for sid, r in reports.items()]
    for i, s in enumerate(states):
        s.last_record = -0.05 * i  # streams started at different times
    while now[0] < seconds:
        now[0] += 0.1
        for s in states:
            recorder.record(s)
        recorder.prune()  # the end of a step of the run: the rows due go out as one write
    return backend.rows, states


def test_few_streams_write_a_row_every_interval():
    rows, _ = run_for(streams=4, seconds=10.0)
    assert 36 <= len(rows) <= 40  # each of 4 streams about once a second


def test_many_streams_share_the_row_budget_and_each_still_gets_rows():
    rows, _ = run_for(streams=200, seconds=30.0)
    assert len(rows) <= MAX_ROWS_PER_S * 30 + 200  # the budget (+ one burst when the counts start)
    assert len(rows) >= MAX_ROWS_PER_S * 30 * 0.8
    assert set(rows) == {f"s{i}" for i in range(200)}  # nobody starves


def test_a_forced_row_is_written_whatever_the_budget():
    now = [5.0]
    backend = RowsBackend()
    reports = {f"s{i}": StreamReport(f"s{i}", "rtsp://h", live=True, status="running") for i in range(500)}
    recorder = Recorder(backend, {sid: Checkpoint("g") for sid in reports}, reports, 1.0, clock=lambda: now[0])
    state = ActiveStream(StreamInfo("s0", "rtsp://h"), reports["s0"])
    state.last_record = 4.9
    recorder.record(state)
    recorder.prune()
    assert backend.rows == []
    recorder.record(state, force=True)
    recorder.prune()
    assert backend.rows == ["s0"]
