"""Several encoders (runtime.encoders: a count or "per-node") on the in-memory backend: each stream
sticks to one encoder with its decoder beside it, the calls are spread, and when a node dies
(its encoder and decoders gone for good) its streams continue on the survivors from their last
committed position: every window and frame exactly once. No Ray, no model."""

from __future__ import annotations

import pytest

from streamvl.config import IndexConfig
from streamvl.errors import ClusterError
from streamvl.runtime.commit import MAX_COMMITS_WAITING, MAX_ENCODES_AHEAD
from streamvl.runtime.engine import Run
from streamvl.runtime.memory_backend import MemoryBackend
from streamvl.runtime.routing import EncoderRouter
from tests.unit.test_scheduler import FPS, SEEDS, STRIDE, WINDOW, Harness, busy, step_until, uri

LENGTHS = {"a": 9, "b": 14, "c": 21, "d": 6, "e": 17, "f": 11}


class Cluster(Harness):
    """The scheduler tests' harness on a backend with `encoders` encoders (one per fake node)."""

    def run(self, seed: int = 0, progress: float = 0.3, encoders: int = 2, **runtime) -> Run:
        from streamvl.types import StreamInfo

        self.backend = MemoryBackend(self.db, self.sources, WINDOW, STRIDE, seed=seed, progress=progress,
                                     encoders=encoders)
        config = IndexConfig(db="memory", sampling={"fps": FPS}, clips={"window": WINDOW, "stride": STRIDE},
                             runtime={"checkpoint_interval_s": 0.0, "max_active_streams": 4, "encoders": encoders,
                                      **runtime})
        return Run([StreamInfo(s, uri(s)) for s in self.lengths], config, self.frames_seen.append,
                   backend=self.backend, store=self.db)


def test_the_router_keeps_a_stream_on_its_encoder_and_balances_new_ones():
    router = EncoderRouter()
    alive = ["n0", "n1"]
    assert [router.assign(s, alive) for s in "abcd"] == ["n0", "n1", "n0", "n1"]
    assert router.assign("a", alive) == "n0" and router.moves == 0  # sticky while up
    router.release("b")
    assert router.assign("e", alive) == "n1"  # b's place went free
    assert router.assign("a", ["n1"]) == "n1" and router.moves == 1  # n0 gone: a moves to the survivor
    with pytest.raises(ClusterError, match="stream a: no encoder"):
        router.assign("a", [])


@pytest.mark.parametrize("seed", SEEDS)
def test_two_encoders_share_the_streams_and_store_every_window_once(seed):
    h = Cluster(LENGTHS, batch=2)
    run = h.run(seed)
    report = run.run()
    assert {s.stream_id: s.status for s in report.streams} == dict.fromkeys(LENGTHS, "done")
    for sid in LENGTHS:
        h.assert_exactly_once(sid)
    b = h.backend
    assert set(b.encoded) == {"encoder:0", "encoder:1"} and sum(b.encoded.values()) == sum(LENGTHS.values())
    assert all(n > 0 for n in b.encoded.values())  # both did real work
    assert h.db.rewrites["clips"] == 0 and b.queued() == 0 and b.blocking_gets == 0
    assert b.peak_encodes <= MAX_ENCODES_AHEAD and run.peak_commits <= 2 * MAX_COMMITS_WAITING


def test_one_encoder_is_the_default():
    h = Cluster({"a": 5})
    run = Run([], IndexConfig(db="memory"), None, backend=MemoryBackend(h.db, h.sources, WINDOW, STRIDE), store=h.db)
    assert run.config.runtime.encoders == 1 and run.start().backend.encoders() == ["encoder"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("at_window", [2, 5])
def test_a_node_that_dies_mid_run_loses_nothing_and_doubles_nothing(seed, at_window):
    """Node 1 (its encoder and the decoders beside it) dies once stream c is at `at_window`: its
    streams are replayed on node 0 from their committed windows, and every table holds each key once."""
    h = Cluster(LENGTHS)
    run = h.run(seed, max_rewinds=1).start()  # one replay each: none may be wasted on the dead node
    b = h.backend
    step_until(run, lambda: run.ledger["c"].next_window >= at_window)
    # streams that still needed node 1's encoder (one whose last batch is already encoded, with only its
    # write group in flight, finishes without a replay)
    on_node1 = {sid for sid, state in run.active.items()
                if state.encoder == "encoder:1" and (state.pending or not state.requested_final)}
    assert on_node1, "nothing ran on node 1 before it died"
    before, placed = b.encoded["encoder:1"], len(b.placed)
    b.kill_node("encoder:1")
    step_until(run, lambda: not busy(run))
    run.flush_records()
    assert b.encoders() == ["encoder:0"] and b.encoded["encoder:1"] == before  # nothing more reached the dead node
    for sid in LENGTHS:
        h.assert_exactly_once(sid)  # same windows and frames as an uninterrupted run: no holes, no duplicates
        assert run.reports[sid].status == h.db.stream(sid)["status"] == "done", run.reports[sid].error
    h.assert_ledger_within_tables()
    later = list(b.placed)[placed:]
    replayed = {b.decoders_of[d] for d in later}
    last = {b.decoders_of[d]: b.placed[d] for d in later}  # each stream's last decoder
    assert set(last.values()) == {"encoder:0"}  # the replays ran beside the survivor
    assert on_node1 <= replayed and run.control.router.moves >= len(on_node1)  # node 1's streams moved over
    assert all(run.reports[s].restarts >= 1 for s in on_node1)
    assert all(r.restarts <= 1 for r in run.reports.values())
    assert b.queued() == 0


def test_with_no_encoder_left_the_streams_fail_through_their_replay_budget():
    """The last encoder is never dropped: its streams end as with one dead encoder before."""
    h = Cluster({"a": 30, "b": 30})
    run = h.run(encoders=2, max_rewinds=1).start()
    step_until(run, lambda: run.ledger["a"].next_window >= 2)
    h.backend.kill_node("encoder:0")
    h.backend.kill_node("encoder:1")
    step_until(run, lambda: not busy(run))
    assert h.backend.encoders() == ["encoder:1"]
    assert {r.status for r in run.reports.values()} == {"error"}
    assert all("gave up after 1 restarts" in r.error for r in run.reports.values())
