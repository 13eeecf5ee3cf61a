"""The CLI over a store built without Ray (EncodeStage + Store), and its error paths."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from streamvl.cli import main
from streamvl.config import IndexConfig
from streamvl.pipeline.encode import EncodeStage
from streamvl.storage.store import CLIPS, FRAMES, Store
from streamvl.types import FrameBatch, Status, StreamState

MODEL = "streamvl-tiny@random:0"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """Two streams of 12 frames indexed by the real encode stage (meanpool), written to LanceDB."""
    path = str(tmp_path_factory.mktemp("cli") / "db")
    stage = EncodeStage(IndexConfig(db=path, model=MODEL))
    store = Store(path)
    rng = np.random.default_rng(0)
    for sid in ("cam-a", "cam-b"):
        frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
        batch = FrameBatch(sid, f"/videos/{sid}.mp4", np.arange(12, dtype=np.float64), frames, final=True)
        f, c, _ = stage.process([batch])
        store.upsert(FRAMES, f)
        store.upsert(CLIPS, c)
        store.record_state(StreamState(sid, batch.uri, Status.DONE, frames_indexed=12, last_committed_pts=11.0,
                                       model=stage.model.name))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_plugins_lists_meanpool():
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert "meanpool" in info["adapters"] and any(p["module"] == "streamvl.plugins.meanpool" and p["builtin"] for p in info["plugins"])
    lines = invoke("plugins").stdout.splitlines()
    assert any(line.startswith("adapters: ") and "meanpool" in line.split(": ", 1)[1].split(", ") for line in lines)


def test_streams_json(db):
    rows = json.loads(invoke("streams", "--db", db, "--json").stdout)
    assert [(r["stream_id"], r["status"], r["frames_indexed"]) for r in rows] == [("cam-a", "done", 12), ("cam-b", "done", 12)]


def test_search_json_shape_filters_and_loud_warning(db):
    result = invoke("search", "anything", "--db", db, "--k", "5", "--json")
    hits = json.loads(result.stdout)
    assert hits and all(set(h) == {"stream_id", "uri", "start", "end", "score", "peak"} for h in hits)
    assert all(h["start"] <= h["peak"][0] < h["peak"][1] <= h["end"] for h in hits)  # the best window lies inside
    assert "RANDOM WEIGHTS" in result.stderr
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    only_b = json.loads(invoke("search", "anything", "--db", db, "--stream", "cam-b", "--json").stdout)
    assert only_b and {h["stream_id"] for h in only_b} == {"cam-b"}
    late = json.loads(invoke("search", "anything", "--db", db, "--start", "9", "--json").stdout)
    assert late and all(h["end"] > 9 for h in late)


def test_search_text_output(db):
    out = invoke("search", "anything", "--db", db, "--k", "1").stdout
    assert "/videos/cam-" in out


def test_errors_are_typed_and_clear(tmp_path):
    """Each error is one line naming its type, with the exit code of its kind (cli/errors.py)."""
    empty = invoke("search", "x", "--db", tmp_path / "nothing")
    assert empty.exit_code == 2 and empty.stderr.startswith("ConfigError: no database at") and empty.stderr.count("\n") == 1
    assert not (tmp_path / "nothing").exists()  # reading never creates a database
    bad = invoke("index", tmp_path, "--db", tmp_path / "db", "--stride", "99")
    assert bad.exit_code == 2 and "ConfigError" in bad.stderr and "Traceback" not in bad.stderr
    unknown = invoke("search", "x", "--db", tmp_path / "nothing", "--adapter", "nope")
    assert unknown.exit_code == 2


def test_streams_shows_live_health_and_requested_streams(tmp_path, monkeypatch):
    """`streams` renders StreamState: live counters and lag on the line, a requested stream (no
    `streams` row yet) with only what its request tells, in --json too."""
    db = str(tmp_path / "db")
    store = Store(db)
    store.record_state(StreamState("cam", "rtsp://h/cam", Status.RECONNECTING, frames_indexed=5, last_committed_pts=2.5,
                                   live=True, last_wallclock=1000.0, reconnects=2, gaps=1, gap_total_s=4.5,
                                   frames_skipped=3, restarts=1))
    store.record_state(StreamState("bad", "file:///bad.mp4", Status.ERROR, error="SourceError: boom"))
    store.request_stream("cam", "rtsp://h/cam", "run")
    store.request_stream("new", "rtsp://h/new", "run")
    store.request_stream("gone", "rtsp://h/gone", "remove")
    monkeypatch.setattr("time.time", lambda: 1010.0)
    assert invoke("streams", "--db", db).stdout.splitlines() == [
        "error        bad  frames=0 last_pts=-  file:///bad.mp4",
        "        SourceError: boom",
        "reconnecting cam  frames=5 last_pts=2.50 lag=10.0s reconnects=2 gaps=1 (4.5s) skipped=3/5 restarts=1  rtsp://h/cam",
        "requested    new  frames=0 last_pts=-  rtsp://h/new",
    ]
    rows = {r["stream_id"]: r for r in json.loads(invoke("streams", "--db", db, "--json").stdout)}
    assert list(rows) == ["bad", "cam", "new"]
    assert rows["cam"]["status"] == "reconnecting" and rows["cam"]["lag_now_s"] == 10.0 and rows["cam"]["gaps"] == 1
    assert rows["bad"]["lag_now_s"] is None and rows["bad"]["live"] is None
    assert list(rows["new"]) == ["stream_id", "uri", "status", "frames_indexed", "last_committed_pts", "error",
                                 "updated_at", "lag_now_s"]
    assert rows["new"]["status"] == "requested"
