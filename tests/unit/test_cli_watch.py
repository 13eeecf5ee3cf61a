"""`streamvl watch` add / list / remove / test over a store built without Ray."""

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
    path = str(tmp_path_factory.mktemp("cliwatch") / "db")
    stage = EncodeStage(IndexConfig(db=path, model=MODEL))
    store = Store(path)
    rng = np.random.default_rng(1)
    for sid in ("cam-a", "cam-b"):
        frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
        batch = FrameBatch(sid, f"/videos/{sid}.mp4", np.arange(12, dtype=np.float64), frames, final=True)
        f, c, _ = stage.process([batch])
        store.upsert(FRAMES, f)
        store.upsert(CLIPS, c)
        store.record_state(StreamState(sid, batch.uri, Status.DONE, frames_indexed=12, model=stage.model.name))
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_add_list_remove(db):
    wid = invoke("watch", "add", "a red square", "--db", db, "--stream", "cam-a", "--threshold", "0.3",
                 "--webhook", "http://127.0.0.1:9/hook", "--name", "red").stdout.strip()
    rows = json.loads(invoke("watch", "list", "--db", db, "--json").stdout)
    [w] = [r for r in rows if r["watch_id"] == wid]
    assert w["streams"] == ["cam-a"] and w["threshold"] == 0.3 and w["name"] == "red" and w["adapters"] == ["meanpool"]
    assert f"{wid}  0.300  cam-a  red" in invoke("watch", "list", "--db", db).stdout
    assert invoke("watch", "remove", wid, "--db", db).exit_code == 0
    assert wid not in invoke("watch", "list", "--db", db).stdout
    assert "(removed)" in invoke("watch", "list", "--db", db, "--all").stdout
    again = invoke("watch", "remove", wid, "--db", db)
    assert again.exit_code == 2 and "no active watch" in again.output


def test_bad_input_is_one_line(db):
    bad = invoke("watch", "add", "x", "--db", db, "--webhook", "ftp://h")
    assert bad.exit_code == 2 and "webhook" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert invoke("watch", "add", "x", "--db", db, "--threshold", "3").exit_code == 2


def test_watch_test_counts_events_per_threshold_and_shows_the_best_clips(db):
    best = json.loads(invoke("search", "a blue circle", "--db", db, "--k", "1", "--json").stdout)[0]["score"]
    out = invoke("watch", "test", "a blue circle", "--db", db, "--threshold", str(best - 1e-4),
                 "--threshold", str(best + 1e-3), "--threshold", "-1").stdout.splitlines()
    assert out[0] == f"{len(Store(db).read(CLIPS))} clips scored"
    low, below_best, above_best = (int(line.split()[1]) for line in out[2:5])  # thresholds ascending
    assert low == 2  # at -1 every window matches: one event per stream
    assert below_best >= 1 and above_best == 0
    top = out[6].split()
    assert abs(float(top[0]) - best) < 1e-3


def test_sequence_watch_add_list_and_bad_input(db):
    wid = invoke("watch", "add", "a red square", "--then", "a blue circle", "--then", "a green star", "--within", "4",
                 "--db", db, "--threshold", "0.2").stdout.strip()
    rows = json.loads(invoke("watch", "list", "--db", db, "--json").stdout)
    [w] = [r for r in rows if r["watch_id"] == wid]
    assert (w["text"], w["then"], w["within"]) == ("a red square", ["a blue circle", "a green star"], 4.0)
    assert "then_embeddings" not in w and "embedding" not in w
    assert "[a red square -> a blue circle -> a green star within 4s]" in invoke("watch", "list", "--db", db).stdout
    invoke("watch", "remove", wid, "--db", db)
    for args in (["--then", "b"], ["--within", "3"], ["--then", "b", "--within", "0"]):
        bad = invoke("watch", "add", "a", "--db", db, *args)
        assert bad.exit_code == 2 and ("within" in bad.output.lower() or "two steps" in bad.output), bad.output
        assert len(bad.output.strip().splitlines()) == 1


def test_watch_test_of_a_sequence_counts_events_and_shows_each_step(db):
    out = invoke("watch", "test", "a blue circle", "--then", "a red square", "--within", "30", "--db", db,
                 "--threshold", "-1", "--threshold", "1.0", "--top", "2").stdout.splitlines()
    counts = {float(line.split()[0]): int(line.split()[1]) for line in out[2:4]}
    assert counts == {-1.0: 2, 1.0: 0}  # at -1 every clip matches every step: one event per stream; at 1 none
    tops = out[5:7]
    assert len(tops) == 2 and all("'a blue circle'" in t and "-> 'a red square'" in t for t in tops)
    starts = [[float(x.split("-")[0]) for x in t.split("'")[2::2]] for t in tops]
    assert all(a < b for a, b in starts), starts  # B after A
