"""streamvl.search.sequences: the join on hand-made candidate lists, the widening proof, and the text path with fakes."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest

import streamvl.models.loading
from streamvl import api
from streamvl.errors import ConfigError, PluginError
from streamvl.plugins.contract import AdapterSpec
from streamvl.plugins.hookspecs import hookimpl
from streamvl.plugins.manager import Plugins, build_plugin_manager
from streamvl.search.sequences import Clip, _stream_chains, join, proven, sequence_vectors
from streamvl.storage.store import CLIPS, Store
from streamvl.storage.schema import clips_schema
from tests.rows import FakeTensor

D = 8
SPEC = "tiny@random:0"


def c(sid: str, start: float, score: float, length: float = 2.0) -> Clip:
    return Clip(sid, float(start), float(start) + length, float(score))


def spans(chains):
    return [(ch.stream_id, [cl.start for cl in ch.clips], round(ch.score, 6)) for ch in chains]


# ---------------------------------------------------------------- join: order, gap, streams


def test_b_must_start_after_a_starts():
    a = [c("s", 10, 0.9)]
    assert join([a, [c("s", 4, 0.9)]], within=30, k=5) == []  # B before A
    assert join([a, [c("s", 10, 0.9)]], within=30, k=5) == []  # same start: no order
    assert spans(join([a, [c("s", 11, 0.8)]], within=30, k=5)) == [("s", [10, 11], 0.8)]  # overlapping clip, later start


def test_gap_is_from_a_end_to_b_start_and_bounded_by_within():
    a = [c("s", 0, 0.9)]  # 0..2
    assert spans(join([a, [c("s", 7, 0.8)]], within=5, k=5)) == [("s", [0, 7], 0.8)]  # gap exactly 5
    assert join([a, [c("s", 7.01, 0.8)]], within=5, k=5) == []
    long_a = [Clip("s", 0.0, 20.0, 0.9)]  # a long first clip: the gap counts from its end
    assert spans(join([long_a, [c("s", 24, 0.8)]], within=5, k=5)) == [("s", [0, 24], 0.8)]


def test_steps_must_be_on_the_same_stream():
    got = join([[c("x", 0, 0.9), c("y", 20, 0.5)], [c("y", 3, 0.9), c("x", 30, 0.9), c("y", 22, 0.6)]], within=5, k=5)
    assert spans(got) == [("y", [20, 22], 0.5)]  # x's B is too late; y's first B is before its A


def test_three_steps_pick_the_best_chain_and_report_each_step():
    a = [c("s", 0, 0.9), c("s", 2, 0.6)]
    b = [c("s", 3, 0.5), c("s", 5, 0.8), c("s", 40, 0.99)]
    cc = [c("s", 8, 0.7), c("s", 9, 0.95)]
    (chain,) = join([a, b, cc], within=4, k=5)
    assert [(cl.start, cl.score) for cl in chain.clips] == [(0, 0.9), (5, 0.8), (9, 0.95)]
    assert chain.score == 0.8 and chain.mean == pytest.approx((0.9 + 0.8 + 0.95) / 3)
    assert (chain.start, chain.end) == (0, 11)
    assert join([a, b, [c("s", 1, 0.99)]], within=4, k=5) == []  # C before every B


def test_the_chain_score_is_the_weakest_step_then_the_mean():
    got = join([[c("p", 0, 0.9), c("q", 0, 0.7)], [c("p", 3, 0.6), c("q", 3, 0.7)]], within=5, k=5)
    assert spans(got) == [("q", [0, 3], 0.7), ("p", [0, 3], 0.6)]  # q: min 0.7 beats p: min 0.6 (mean 0.75)
    tied = join([[c("p", 0, 0.9), c("q", 0, 0.6)], [c("p", 3, 0.6), c("q", 3, 0.6)]], within=5, k=5)
    assert spans(tied) == [("p", [0, 3], 0.6), ("q", [0, 3], 0.6)]  # same min: the higher mean first


def test_the_best_predecessor_is_not_just_the_best_prefix():
    # p1 is the better prefix on its own (0.8 > 0.7) but both cap at B's 0.5: the mean decides (p1 0.8+0.5)
    a = [c("s", 0, 0.8), c("s", 1, 0.7)]
    (chain,) = join([a, [c("s", 4, 0.5)]], within=5, k=5)
    assert chain.clips[0].start == 0 and chain.mean == pytest.approx(0.65)
    # a two-step prefix: (0.9, 0.55) has the better min, (0.6, 0.95) the better sum; C = 0.5 caps both
    a, b = [c("s", 0, 0.9), c("s", 1, 0.6)], [c("s", 3, 0.55), c("s", 4, 0.95)]
    (chain,) = join([a, b, [c("s", 7, 0.5)]], within=1.5, k=5)  # 0->3 and 1->4 only (gap 1 each)
    assert [cl.start for cl in chain.clips] == [1, 4, 7]
    # the higher sum belongs to a prefix with the worse min: the min decides first
    a = [c("s", 0, 0.65), c("s", 2, 0.45)]
    b = [c("s", 3, 0.7), c("s", 5, 0.99)]  # b at 5 can follow only a at 2 (gap 1 <= 2; a at 0: gap 3)
    (chain,) = join([a, b, [c("s", 6, 0.6)]], within=2, k=5)
    assert [cl.start for cl in chain.clips] == [0, 3, 6] and chain.score == 0.6


def test_equal_chains_prefer_the_shorter_span():
    a = [c("s", 0, 0.8), c("s", 2, 0.8)]
    (chain,) = join([a, [c("s", 5, 0.8)]], within=5, k=5)
    assert [cl.start for cl in chain.clips] == [2, 5]


def test_one_hit_per_occurrence_and_separate_occurrences_both_found():
    a = [c("s", 0, 0.9), c("s", 1, 0.85), c("s", 100, 0.7)]
    b = [c("s", 4, 0.9), c("s", 5, 0.8), c("s", 103, 0.7)]
    got = join([a, b], within=5, k=5)
    assert spans(got) == [("s", [0, 4], 0.9), ("s", [100, 103], 0.7)]  # the overlapping (1, 5) chain dropped
    assert spans(join([a, b], within=5, k=1)) == [("s", [0, 4], 0.9)]


def test_min_score_drops_weak_chains():
    a, b = [c("s", 0, 0.9), c("t", 0, 0.9)], [c("s", 3, 0.4), c("t", 3, 0.6)]
    assert spans(join([a, b], within=5, k=5, min_score=0.5)) == [("t", [0, 3], 0.6)]


def test_empty_steps_give_no_chains():
    assert join([[c("s", 0, 0.9)], []], within=5, k=5) == []
    assert join([[], []], within=5, k=5) == []


def test_dense_candidates_match_a_pairwise_brute_force():
    """The best chain ending at every last-step clip, against trying every triple."""
    rng = np.random.default_rng(3)
    for trial in range(30):
        steps = [[c("s", float(rng.integers(0, 40)), round(float(rng.random()), 2), float(rng.uniform(0.5, 8)))
                  for _ in range(rng.integers(1, 20))] for _ in range(3)]
        within = float(rng.uniform(0.5, 10))
        best = {}
        for x in steps[0]:
            for y in steps[1]:
                for z in steps[2]:
                    if x.start < y.start <= x.end + within and y.start < z.start <= y.end + within:
                        val = (min(x.score, y.score, z.score), round(x.score + y.score + z.score, 9))
                        best[z] = max(best.get(z, val), val)
        got = {ch.clips[-1]: (ch.score, round(ch.mean * 3, 9)) for ch in _stream_chains(steps, within)}
        assert got == best, trial
        top = join(steps, within, k=1000)
        if best:  # the best chain overall is never suppressed
            assert (top[0].score, round(top[0].mean * 3, 9)) == max(best.values()), trial
        else:
            assert top == []


# ---------------------------------------------------------------- the proof that widening can stop


def test_proven_needs_k_hits_above_every_floor():
    chains = join([[c("s", 0, 0.9), c("t", 0, 0.8)], [c("s", 3, 0.9), c("t", 3, 0.8)]], within=5, k=2)
    assert proven(chains, [0.5, 0.7], k=2)
    assert not proven(chains, [0.5, 0.85], k=2)  # a clip beyond list 2 could still make a 0.85 chain
    assert not proven(chains, [0.5, 0.5], k=3)  # fewer than k hits while lists are cut
    assert proven(chains, [-math.inf, -math.inf], k=3)  # every clip seen
    assert proven(chains[:0], [0.4, 0.3], k=3, min_score=0.5)  # nothing beyond the lists passes min_score


# ---------------------------------------------------------------- sequence_vectors on a real (small) store


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def axis(i: int) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[i] = 1.0
    return v


def add_stream(store: Store, sid: str, emb: np.ndarray, stride: float = 1.0, length: float = 2.0) -> None:
    starts = np.arange(len(emb), dtype=np.float64) * stride
    store.upsert(CLIPS, pa.table({
        "stream_id": [sid] * len(starts), "start": starts, "end": starts + length, "adapter": ["meanpool"] * len(starts),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(unit(emb).ravel()), D), "model": [SPEC] * len(starts)},
        schema=clips_schema(D, [], {"streamvl.model": SPEC})))


def scripted(seq: list[int], noise: float, rng: np.random.Generator) -> np.ndarray:
    """One clip per entry: axis `i` (an object seen) or axis 7 (background), plus noise."""
    return np.stack([axis(i) for i in seq]) + noise * rng.standard_normal((len(seq), D)).astype(np.float32)


@pytest.fixture
def store(tmp_path) -> Store:
    rng = np.random.default_rng(0)
    s = Store(tmp_path / "db")
    bg = 7
    add_stream(s, "ab", scripted([bg] * 5 + [0] * 3 + [bg] * 2 + [1] * 3 + [bg] * 5, 0.2, rng))  # A at 5-7, B at 10-12
    add_stream(s, "ba", scripted([bg] * 5 + [1] * 3 + [bg] * 2 + [0] * 3 + [bg] * 5, 0.2, rng))  # B first
    add_stream(s, "a_only", scripted([bg] * 5 + [0] * 3 + [bg] * 10, 0.2, rng))
    for n in range(30):  # background streams: many clips that are not the answer
        add_stream(s, f"bg{n:02d}", scripted([bg] * 18, 0.6, rng))
    return s


def exact_chains(store: Store, vectors, within: float, k: int):
    """The join over every clip of the table (the definition the candidate lists must reproduce)."""
    rows = store.table(CLIPS).to_arrow().to_pylist()
    steps = [[Clip(r["stream_id"], r["start"], r["end"], float(unit(r["embedding"]) @ unit(v))) for r in rows]
             for v in vectors]
    return join(steps, within, k)


def test_sequence_vectors_finds_a_then_b_and_ranks_the_others_below(store):
    res = sequence_vectors(store, [axis(0), axis(1)], within=4, k=3, texts=["A", "B"])
    top = res.hits[0]
    assert top.stream_id == "ab" and 5 <= top.steps[0].start <= 7 and 10 <= top.steps[1].start <= 12
    assert [s.text for s in top.steps] == ["A", "B"] and top.start == top.steps[0].start
    assert top.end == top.steps[1].end and top.score == min(s.score for s in top.steps)
    assert all(h.score < top.score - 0.3 for h in res.hits[1:])  # BA and A-only only chain through background
    assert res.certified


def test_widening_reaches_the_exact_join(store):
    vectors, within = [axis(0), axis(1)], 4.0
    exact = exact_chains(store, vectors, within, k=5)
    res = sequence_vectors(store, vectors, within=within, k=5, width=4)
    assert res.certified and res.rounds > 1 and max(res.widths) > 4
    assert [(h.stream_id, [s.start for s in h.steps]) for h in res.hits] == \
        [(ch.stream_id, [cl.start for cl in ch.clips]) for ch in exact]
    assert [h.score for h in res.hits] == pytest.approx([ch.score for ch in exact], abs=1e-5)


def test_min_score_stops_the_widening_early(store):
    vectors = [axis(0), axis(1)]
    full = sequence_vectors(store, vectors, within=4, k=5, width=4)
    res = sequence_vectors(store, vectors, within=4, k=5, width=4, min_score=0.8)
    assert res.certified and res.rounds < full.rounds
    assert [h.stream_id for h in res.hits] == ["ab"] and res.hits[0] == full.hits[0]


def test_a_width_cap_is_reported_as_not_certified(store):
    res = sequence_vectors(store, [axis(0), axis(1)], within=4, k=5, width=4, max_width=8)
    assert not res.certified and max(res.widths) == 8


def test_prefilters_apply_to_every_step(store):
    res = sequence_vectors(store, [axis(0), axis(1)], within=4, k=5, stream_ids=["ba", "a_only"])
    assert {h.stream_id for h in res.hits} <= {"ba", "a_only"} and res.hits
    late = sequence_vectors(store, [axis(0), axis(1)], within=4, k=5, start=13.5)
    assert all(s.end >= 13.5 for h in late.hits for s in h.steps)


@pytest.mark.parametrize("kwargs,match", [
    ({"within": None}, "needs --within"), ({"within": 0}, "positive"), ({"within": -1.0}, "positive"),
    ({"within": float("nan")}, "positive"), ({"within": 2, "k": 0}, "k must be positive"),
])
def test_bad_queries_are_config_errors(store, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        sequence_vectors(store, [axis(0), axis(1)], **kwargs)


def test_one_step_is_not_a_sequence(store):
    with pytest.raises(ConfigError, match="at least two steps"):
        sequence_vectors(store, [axis(0)], within=3)


# ---------------------------------------------------------------- the text path (api.search_sequence) with fakes


class FakeAdapter:
    """Text 'object N' -> axis N; counts its text calls."""

    name = "meanpool"
    calls: list[list[str]] = []

    def __init__(self, model, options):
        self.options = options

    def encode_video(self, features, frames=None):
        raise NotImplementedError

    def encode_text(self, texts):
        FakeAdapter.calls.append(list(texts))
        return FakeTensor(np.stack([axis(int(t[-1])) for t in texts]))


class FakePlugin:
    @hookimpl
    def streamvl_adapters(self):
        return [AdapterSpec("meanpool", FakeAdapter)]


@pytest.fixture
def plugins(monkeypatch) -> Plugins:
    monkeypatch.setattr(streamvl.models.loading, "load_model", lambda spec: SimpleNamespace(name=spec, tokenizer=None))
    FakeAdapter.calls = []
    return Plugins(build_plugin_manager(extra=[FakePlugin()], entry_points=False))


def test_api_search_sequence_embeds_all_steps_in_one_call(store, plugins):
    res = api.search_sequence(["object 0", "object 1"], store.uri, within=4, k=2, plugins=plugins)
    assert FakeAdapter.calls == [["object 0", "object 1"]]
    assert res.hits[0].stream_id == "ab" and [s.text for s in res.hits[0].steps] == ["object 0", "object 1"]
    d = res.hits[0].as_dict()
    assert d["stream_id"] == "ab" and len(d["steps"]) == 2 and d["score"] == res.hits[0].score
    api.search_sequence(["object 1", "object 0", "object 2"], store.uri, within=4, k=2, plugins=plugins)
    assert FakeAdapter.calls[1:] == [["object 2"]]  # the others come from the text cache


def test_api_search_sequence_errors(store, plugins, tmp_path):
    with pytest.raises(ConfigError, match="not supported"):
        api.search_sequence(["object 0", "object 1"], store.uri, within=4, rerank="x", plugins=plugins)
    with pytest.raises(PluginError):
        api.search_sequence(["object 0", "object 1"], store.uri, within=4, adapter="nope", plugins=plugins)
    with pytest.raises(ConfigError, match="at least two"):
        api.search_sequence(["object 0"], store.uri, within=4, plugins=plugins)


# ---------------------------------------------------------------- the CLI: search --then --within


@pytest.fixture(scope="module")
def cli_db(tmp_path_factory):
    """Two streams of 20 random frames indexed by the real encode stage and the tiny random model."""
    from streamvl.config import IndexConfig
    from streamvl.pipeline.encode import EncodeStage
    from streamvl.storage.store import FRAMES
    from streamvl.types import FrameBatch

    path = str(tmp_path_factory.mktemp("seq-cli") / "db")
    stage = EncodeStage(IndexConfig(db=path, model="streamvl-tiny@random:0"))
    store = Store(path)
    rng = np.random.default_rng(0)
    for sid in ("cam-a", "cam-b"):
        batch = FrameBatch(sid, f"/videos/{sid}.mp4", np.arange(20, dtype=np.float64),
                           rng.integers(0, 255, (20, 64, 64, 3), dtype=np.uint8), final=True)
        f, clips, _ = stage.process([batch])
        store.upsert(FRAMES, f)
        store.upsert(CLIPS, clips)
        store.record_stream(sid, batch.uri, "done", frames_indexed=20, last_committed_pts=19.0, model=stage.model.name)
    return path


def invoke(*args):
    from click.testing import CliRunner

    from streamvl.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_cli_sequence_json_and_text(cli_db):
    result = invoke("search", "a dog", "--then", "a cat", "--then", "a bird", "--within", "3", "--db", cli_db,
                    "--k", "4", "--json")
    assert result.exit_code == 0, result.stderr
    hits = json.loads(result.stdout)
    assert 0 < len(hits) <= 4
    for h in hits:
        steps = h["steps"]
        assert [s["text"] for s in steps] == ["a dog", "a cat", "a bird"]
        assert h["start"] == steps[0]["start"] and h["end"] == steps[-1]["end"]
        assert h["score"] == pytest.approx(min(s["score"] for s in steps))
        for a, b in zip(steps, steps[1:]):
            assert a["start"] < b["start"] <= a["end"] + 3
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    text = invoke("search", "a dog", "--then", "a cat", "--within", "3", "--db", cli_db, "--k", "1").stdout
    assert "/videos/cam-" in text and " > " in text


@pytest.mark.parametrize("args,match", [
    (["--then", "a cat"], "needs --within"),
    (["--then", "a cat", "--within", "0"], "positive"),
    (["--then", "a cat", "--within", "-2"], "positive"),
    (["--within", "5"], "at least two steps"),
    (["--then", "a cat", "--within", "5", "--rerank", "x"], "not supported"),
])
def test_cli_sequence_usage_errors_exit_2(cli_db, args, match):
    result = invoke("search", "a dog", "--db", cli_db, *args)
    assert result.exit_code == 2 and "ConfigError" in result.stderr and match in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2  # one line (plus the random-weights warning)
