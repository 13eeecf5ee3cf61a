"""Exactly-once resume without Ray: windows, checkpoints, and a crash simulated between commits."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from streamvl.storage.ledger import Checkpoint, from_row, grid_key
from streamvl.config import IndexConfig, SamplingConfig
from streamvl.pipeline.encode import EncodeStage
from streamvl.sources import open_source, stream_id_for
from streamvl.sources.sampling import sample_times
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import StreamInfo
from streamvl.pipeline.windows import Windower
from tests.videos import make_video

MODEL = "streamvl-tiny@random:0"


def expected_window_starts(n: int, window: int, stride: int) -> list[int]:
    """Frame indices where windows start for n frames: the full grid, plus one tail window for
    frames no full window covers (stated independently of Windower)."""
    starts = list(range(0, n - window + 1, stride)) if n >= window else []
    covered = starts[-1] + window if starts else 0
    if n > covered:
        starts.append(starts[-1] + stride if starts else 0)
    return starts


def push_all(w: Windower, pts: np.ndarray, chunks: list[int]) -> list[float]:
    out, i = [], 0
    for size in chunks:
        out += [win.start for win in w.push(pts[i : i + size], np.zeros((len(pts[i : i + size]), 2), np.float32))]
        i += size
    return out


@pytest.mark.parametrize("n, window, stride", [(0, 8, 4), (3, 8, 4), (8, 8, 4), (13, 8, 4), (40, 8, 4), (17, 4, 2),
                                               (23, 5, 5), (30, 6, 1)])
def test_windower_resumed_at_any_checkpoint_emits_exactly_the_rest(n, window, stride):
    pts = np.arange(n, dtype=np.float64) * 0.25
    full = Windower("s", window, stride, 0.25)
    starts = push_all(full, pts, [1] * n) + [w.start for w in full.flush()]
    assert starts == [float(pts[i]) for i in expected_window_starts(n, window, stride)]
    rng = np.random.default_rng(n)
    for cut in range(n + 1):  # a crash after `cut` frames were pushed and their windows committed
        first = Windower("s", window, stride, 0.25)
        before = push_all(first, pts, [cut])
        next_window, resume_after = first.checkpoint()
        assert next_window % stride == 0 and next_window <= cut
        assert resume_after == (None if next_window == 0 else pts[next_window - 1])
        rest = pts[next_window:]
        chunks = list(np.diff([0, *sorted(rng.choice(np.arange(1, len(rest) + 1), min(3, len(rest)), False))]))
        chunks += [len(rest) - sum(chunks)]
        second = Windower("s", window, stride, 0.25, start_index=next_window)
        after = push_all(second, rest, chunks) + [w.start for w in second.flush()]
        assert sorted(set(before) | set(after)) == starts  # nothing missing
        assert set(after) - set(before) == set(starts) - set(before)  # overlap only rewrites keys


def test_windower_rejects_a_resume_off_the_grid():
    with pytest.raises(ValueError, match="not a window start"):
        Windower("s", 8, 4, 1.0, start_index=6)


def test_checkpoint_advances_monotonically_and_round_trips():
    grid = grid_key(1.0, 8, 4, ["meanpool"])
    cp = Checkpoint(grid).advance(4, 3.0, 10, 9.0, None)
    assert (cp.next_window, cp.resume_after, cp.frames, cp.last_pts) == (4, 3.0, 10, 9.0)
    assert cp.advance(4, None, 11, 10.0, None).resume_after == 3.0  # no new window: same resume point
    assert cp.advance(0, None, 2, 1.0, None) == cp  # an older group never moves it back
    row = cp.as_row() | {"status": "running"}
    assert from_row(row, grid) == cp
    assert from_row(row, grid_key(2.0, 8, 4, ["meanpool"])).at_start  # another grid: start over
    assert from_row(None, grid).at_start
    assert from_row(row | {"resume_after": None}, grid).at_start  # inconsistent: not trusted


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("resume") / "v.mp4", seconds=9.0, fps=10, size=(64, 48), gop=10)


def test_source_resumed_after_a_frame_yields_the_rest_with_grid_indices(video):
    info = StreamInfo(stream_id_for(str(video.path)), str(video.path))
    sampling = SamplingConfig(fps=3.0, size=32, batch_frames=4)
    full = np.concatenate([b.pts for b in open_source(info, sampling)])
    assert full.tolist() == pytest.approx(sample_times(list(video.times), 3.0))
    for n in (1, 4, 12, len(full) - 1, len(full)):
        batches = list(open_source(info, sampling, start_after=float(full[n - 1]), first_index=n))
        got = np.concatenate([b.pts for b in batches])
        assert got.tolist() == full[n:].tolist()
        assert [b.first_index for b in batches] == list(n + np.cumsum([0] + [len(b) for b in batches[:-1]]))


def _commit(store: Store, frames: pa.Table, clips: pa.Table) -> None:
    store.upsert(FRAMES, frames)
    store.upsert(CLIPS, clips)


def test_crash_between_commits_then_resume_gives_every_window_once(video, tmp_path):
    """Run the encode stage over a file, 'crash' after each possible write group (the checkpoint
    of the last group is what a real run would have stored, or an older one), resume in a fresh
    stage from that checkpoint: the table ends with exactly the windows of an uninterrupted run."""
    config = IndexConfig(db=str(tmp_path / "ref"), model=MODEL, sampling={"fps": 3.0, "batch_frames": 4},
                         clips={"window": 4, "stride": 2})
    stage = EncodeStage(config)
    sampling = config.sampling.model_copy(update={"size": stage.model.image_size})
    info = StreamInfo("v", str(video.path))
    n = len(sample_times(list(video.times), 3.0))
    truth = expected_window_starts(n, 4, 2)
    reference = []
    for batch in open_source(info, sampling):
        _, clips, progress = stage.process([batch])
        reference.append((clips, progress[0]))
    assert sum(c.num_rows for c, _ in reference) == len(truth)
    for crash_after in (1, 3, len(reference) - 1):
        store = Store(tmp_path / f"crash{crash_after}")
        first = EncodeStage(config, model=stage.model)
        checkpoint = Checkpoint("g")
        for i, batch in enumerate(open_source(info, sampling)):
            if i == crash_after:
                break
            frames, clips, progress = first.process([batch])
            _commit(store, frames, clips)
            p = progress[0]
            checkpoint = checkpoint.advance(p.next_window, p.resume_after, p.seen, p.last_pts, None)
        second = EncodeStage(config, model=stage.model)  # a fresh process: no window state
        for batch in open_source(info, sampling, start_after=checkpoint.resume_after, first_index=checkpoint.next_window):
            frames, clips, _ = second.process([batch])
            _commit(store, frames, clips)
        rows = store.db.open_table(CLIPS).to_arrow()
        keys = list(zip(rows["stream_id"].to_pylist(), rows["adapter"].to_pylist(), rows["start"].to_pylist()))
        assert len(keys) == len(set(keys)) == len(truth), f"crash after group {crash_after}"
        assert store.count(FRAMES) == n


def test_stage_refuses_a_batch_that_does_not_continue_the_windows(video):
    config = IndexConfig(model=MODEL, sampling={"fps": 3.0, "batch_frames": 4}, clips={"window": 4, "stride": 2})
    stage = EncodeStage(config)
    sampling = config.sampling.model_copy(update={"size": stage.model.image_size})
    batches = list(open_source(StreamInfo("v", str(video.path)), sampling))
    stage.process([batches[0]])
    frames, clips, progress = stage.process([batches[2]])  # batch 1 was lost
    assert frames.num_rows == 0 and clips.num_rows == 0
    assert "out of sync" in progress[0].error
    fresh = EncodeStage(config, model=stage.model)  # a restarted encoder has no windows
    assert "decoder restart" in fresh.process([batches[1]])[2][0].error
