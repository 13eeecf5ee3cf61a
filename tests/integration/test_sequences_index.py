"""Integration: sequence queries over generated videos of known order, indexed on a local Ray with the shipped model.

Three 20 s shapes-world streams (plain backgrounds, 128x128): in `ab` a red circle is visible 3-7 s,
then a blue square 10-14 s; in `ba` the same two in the other order; in `a_only` the red circle
alone. The shipped model (streamvl-shapes@v3) knows shapes and colours (not actions), so the steps
are objects appearing. "a red circle" --then "a blue square" --within 5 must find `ab`, at the
right times, and not the others.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamvl import api
from streamvl.config import IndexConfig
from streamvl.storage.store import CLIPS, Store

pytestmark = pytest.mark.integration

A_TEXT, B_TEXT = "a red circle", "a blue square"
SECONDS, FPS, SIZE = 20.0, 8.0, 128
TRUTH = {  # stream -> {step text: visible [start, end) seconds}
    "ab": {A_TEXT: (3.0, 7.0), B_TEXT: (10.0, 14.0)},
    "ba": {B_TEXT: (3.0, 7.0), A_TEXT: (10.0, 14.0)},
    "a_only": {A_TEXT: (3.0, 7.0)},
}


def write_stream(path: Path, visible: dict[str, tuple[float, float]], seed: int) -> Path:
    """Render the objects named in `visible` during their time ranges on a plain background."""
    from streamvl.lab.synthetic import write_video
    from streamvl.lab.synthetic.world import Background, ObjectState, SceneState, render_background, render_frame

    objects = {A_TEXT: ObjectState("circle", "red", 0.17, 0.3, 0.4), B_TEXT: ObjectState("square", "blue", 0.17, 0.7, 0.6)}
    bg = Background("plain", seed)
    canvas = render_background(bg, SIZE, SIZE)

    def frames():
        for i in range(int(SECONDS * FPS)):
            t = i / FPS
            shown = tuple(objects[text] for text, (s, e) in visible.items() if s <= t < e)
            yield render_frame(SceneState(bg, shown), SIZE, SIZE, background=canvas)

    return write_video(path, frames(), FPS)


@pytest.fixture(scope="module")
def indexed(ray_local, tmp_path_factory):
    root = tmp_path_factory.mktemp("sequences")
    paths = [str(write_stream(root / f"{sid}.mp4", visible, seed)) for seed, (sid, visible) in enumerate(TRUTH.items(), 1)]
    db = str(root / "db")
    config = IndexConfig(db=db, model="default", sampling={"fps": 2.0}, clips={"window": 4, "stride": 2})
    report = api.index(api.discover(paths, list(TRUTH)), config)
    assert [s.status for s in report.streams] == ["done"] * 3, [s.error for s in report.streams]
    return db


def absent_ceiling(db: str, text: str) -> float:
    """The best score `text` gets on a clip that does not overlap the object's visible time: what
    a clip without the object scores at most (a threshold chosen from the data, as a user would)."""
    store = Store(db)
    (vec,) = api_vectors(db, [text])
    rows = store.search_clips(vec, store.count(CLIPS), adapter="meanpool")
    absent = [r["score"] for r in rows
              if text not in TRUTH[r["stream_id"]] or not (r["start"] < TRUTH[r["stream_id"]][text][1]
                                                           and TRUTH[r["stream_id"]][text][0] < r["end"])]
    return max(absent)


def api_vectors(db: str, texts: list[str]) -> list[np.ndarray]:
    from streamvl.search import query

    store = query.open_store(db)
    encoder = query._encoder(query._default_plugins(), "meanpool", query.indexed_model(store), {})
    return encoder.encode_many(texts)


def inside(t: float, span: tuple[float, float], slack: float = 1.0) -> bool:
    return span[0] - slack <= t <= span[1]


def test_a_then_b_finds_the_stream_where_b_follows_a(indexed):
    res = api.search_sequence([A_TEXT, B_TEXT], indexed, within=5, k=5)
    assert res.certified and res.hits
    top = res.hits[0]
    assert top.stream_id == "ab"
    a, b = top.steps
    assert inside(a.start, TRUTH["ab"][A_TEXT]) and inside(b.start, TRUTH["ab"][B_TEXT])
    assert a.start < b.start <= a.end + 5 and (top.start, top.end) == (a.start, b.end)
    others = [h for h in res.hits if h.stream_id != "ab"]
    assert others and all(h.score < top.score for h in others)
    for h in others:  # what the others chain through: a step on a clip where its object is not seen
        assert any(not inside((s.start + s.end) / 2, TRUTH[h.stream_id].get(s.text, (-1e9, -1e9)), 0.0)
                   for s in h.steps)


def test_with_a_threshold_from_the_data_only_the_true_order_is_left(indexed):
    floor = max(absent_ceiling(indexed, A_TEXT), absent_ceiling(indexed, B_TEXT))
    res = api.search_sequence([A_TEXT, B_TEXT], indexed, within=5, k=5, min_score=floor + 1e-6)
    assert [h.stream_id for h in res.hits] == ["ab"] and res.certified
    reverse = api.search_sequence([B_TEXT, A_TEXT], indexed, within=5, k=5, min_score=floor + 1e-6)
    assert [h.stream_id for h in reverse.hits] == ["ba"]  # the other order finds the other stream
    # B appears 3 s after A is gone, but clip windows (2 s, every 1 s) blur each edge: the last clip
    # seeing A ends at 8 s, the first seeing B starts at 9 s. A 0.5 s gap is too short, 1 s is not.
    assert api.search_sequence([A_TEXT, B_TEXT], indexed, within=0.5, k=5, min_score=floor + 1e-6).hits == []
    (near,) = api.search_sequence([A_TEXT, B_TEXT], indexed, within=1, k=5, min_score=floor + 1e-6).hits
    assert near.stream_id == "ab" and near.steps[1].start - near.steps[0].end == pytest.approx(1.0)


def test_the_cli_prints_the_sequence(indexed):
    from click.testing import CliRunner

    from streamvl.cli import main

    result = CliRunner().invoke(main, ["search", A_TEXT, "--then", B_TEXT, "--within", "5", "--db", indexed,
                                       "--k", "1", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    (hit,) = json.loads(result.stdout)
    assert hit["stream_id"] == "ab" and [s["text"] for s in hit["steps"]] == [A_TEXT, B_TEXT]
    assert hit["uri"].endswith("ab.mp4")
