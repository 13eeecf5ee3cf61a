"""Integration: the Ray runtime on a local Ray, real decoding, the tiny random model, LanceDB."""

from pathlib import Path

import lancedb
import pytest

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.storage.store import CLIPS, FRAMES, Store
from tests.videos import make_text_as_mp4, make_truncated, make_video, make_zero_byte

pytestmark = pytest.mark.integration
MODEL = "streamvl-tiny@random:0"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    good = {
        "a.mp4": make_video(root / "a.mp4", seconds=12.0, fps=25, size=(320, 240)),
        "b.avi": make_video(root / "b.avi", codec="mpeg4", seconds=5.0, fps=24, size=(160, 120)),
    }
    bad = {
        "trunc.mp4": make_truncated(root / "trunc.mp4", seconds=10.0),
        "empty.mp4": make_zero_byte(root / "empty.mp4"),
        "text.mp4": make_text_as_mp4(root / "text.mp4"),
    }
    return root, good, bad


def config(db, **kw):
    return IndexConfig(db=str(db), model=MODEL, **kw)


def by_stream(table, column="stream_id"):
    counts = {}
    for sid in table[column].to_pylist():
        counts[sid] = counts.get(sid, 0) + 1
    return counts


def test_mixed_job_indexes_good_streams_and_records_bad_ones(ray_local, corpus, tmp_path):
    root, good, bad = corpus
    streams = api.discover([str(root)])
    assert len(streams) == 5
    db = tmp_path / "db"
    report = api.index(streams, config(db, clips={"window": 4, "stride": 2}))
    status = {Path(s.uri).name: s for s in report.streams}
    assert {n for n, s in status.items() if s.status == "done"} == set(good)
    assert {n for n, s in status.items() if s.status == "error"} == set(bad)
    for name, spec in good.items():  # 1 frame/s over the whole file, each frame committed
        assert status[name].frames == int(spec.duration) or status[name].frames == int(spec.duration) + 1
    assert "Decode" in status["trunc.mp4"].error and status["trunc.mp4"].frames > 0  # good part kept
    assert "SourceError" in status["empty.mp4"].error and "empty.mp4" in status["empty.mp4"].error

    store = Store(str(db))
    rows = {r.stream_id: r for r in store.stream_states()}
    for s in report.streams:  # the streams table says the same as the report
        assert rows[s.stream_id].status == s.status
        assert rows[s.stream_id].frames_indexed == s.frames
        assert (rows[s.stream_id].error is None) == (s.error is None)
    frames = lancedb.connect(str(db)).open_table(FRAMES).to_arrow()
    assert by_stream(frames) == {s.stream_id: s.frames for s in report.streams if s.frames}
    clips = lancedb.connect(str(db)).open_table(CLIPS).to_arrow()
    a = next(s for s in report.streams if s.uri.endswith("a.mp4"))
    a_clips = sorted(r["start"] for r in clips.to_pylist() if r["stream_id"] == a.stream_id)
    assert a_clips == pytest.approx([0.0, 2.0, 4.0, 6.0, 8.0], abs=0.05)  # 12 frames: window 4, stride 2


def test_reindex_is_idempotent(ray_local, corpus, tmp_path):
    root, good, _ = corpus
    db = tmp_path / "db"
    streams = api.discover([str(root / "a.mp4"), str(root / "b.avi")])
    api.index(streams, config(db))
    store = Store(str(db))
    first = (store.count(FRAMES), store.count(CLIPS), len(store.stream_states()))
    report = api.index(streams, config(db))
    assert all(s.status == "done" for s in report.streams)
    assert (store.count(FRAMES), store.count(CLIPS), len(store.stream_states())) == first
    clips = lancedb.connect(str(db)).open_table(CLIPS).to_arrow().to_pylist()
    keys = [(r["stream_id"], r["adapter"], r["start"]) for r in clips]
    assert len(keys) == len(set(keys))


def test_search_after_index(ray_local, corpus, tmp_path):
    root, _, _ = corpus
    db = tmp_path / "db"
    api.index(api.discover([str(root / "a.mp4")]), config(db))
    hits = api.search("a grey square", str(db), k=3)
    assert hits and all(h.uri.endswith("a.mp4") for h in hits)
    assert all(0.0 <= h.start < h.end <= 13.0 for h in hits)
    assert Store(str(db)).meta()["streamvl.weights"] == "RANDOM"


def test_backpressure_bounds_inflight_batches(ray_local, tmp_path):
    """Many streams and small batches: the driver never holds more than its bounds."""
    from streamvl.runtime.driver import IndexRun

    paths = [make_video(tmp_path / f"s{i}.mp4", seconds=6.0, fps=10, size=(96, 64)).path for i in range(5)]
    cfg = config(tmp_path / "db", sampling={"fps": 4.0, "batch_frames": 2}, runtime={"max_active_streams": 2, "inflight_per_stream": 2})
    run = IndexRun(api.discover([str(p) for p in paths]), cfg, None)
    report = run.run()
    assert all(s.status == "done" for s in report.streams)
    assert run.peak_pending <= 2 * 2
    assert run.peak_commits <= 4


def test_real_clips(ray_local, shared_videos, tmp_path):
    files = sorted(shared_videos.glob("*"))
    report = api.index(api.discover([str(f) for f in files]), config(tmp_path / "db", sampling={"fps": 2.0}))
    for s in report.streams:
        assert s.status == "done", s.error
    frames = {Path(s.uri).name: s.frames for s in report.streams}
    assert frames["arm_wrestling.mp4"] in (20, 21)
    assert frames["apply_eye_makeup.avi"] in (13, 14)
    assert frames["cleaning_pool_1s.mp4"] in (2, 3)


def test_static_stream_skips_are_counted_in_the_streams_table(ray_local, tmp_path):
    """Through Ray (repeat pixels are not shipped): a static camera's repeats keep their frame rows
    and windows, and the skip count reaches the report, the `streams` row and `streamvl streams`."""
    from click.testing import CliRunner

    from streamvl.cli import main

    static = make_video(tmp_path / "static.mp4", pattern="static", seconds=12.0)
    moving = make_video(tmp_path / "moving.mp4", pattern="moving", seconds=12.0)
    db = tmp_path / "db"
    report = api.index(api.discover([str(static.path), str(moving.path)]), config(db, clips={"window": 4, "stride": 2}))
    by_name = {Path(s.uri).name: s for s in report.streams}
    assert [(by_name[n].status, by_name[n].frames, by_name[n].skipped) for n in ("static.mp4", "moving.mp4")] == [
        ("done", 12, 11), ("done", 12, 0)]
    rows = {Path(r.uri).name: r for r in Store(str(db)).stream_states()}
    assert rows["static.mp4"].frames_skipped == 11 and rows["moving.mp4"].frames_skipped == 0
    frames = lancedb.connect(str(db)).open_table(FRAMES).to_arrow()
    assert by_stream(frames) == {by_name["static.mp4"].stream_id: 12, by_name["moving.mp4"].stream_id: 12}
    out = CliRunner().invoke(main, ["streams", "--db", str(db)]).output
    assert "skipped=11/12" in out and out.count("skipped=") == 1
