"""streamvl.search.query: segment merging, vector search over a tiny store, and the full text path with fakes."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import streamvl.models.loading
from streamvl.errors import PluginError, StoreError
from streamvl.plugins import AdapterSpec, Option, RerankContext, RerankerSpec, hookimpl
from streamvl.plugins.manager import Plugins, build_plugin_manager
from streamvl.search.query import merge_segments, search, search_vectors
from streamvl.storage.schema import CLIPS, clips_schema
from streamvl.storage.store import Store
from streamvl.types import Hit, Status, StreamState
from tests.rows import FakeTensor

D = 8
SPEC = "tiny@random:0"


def unit(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def axis(i: int, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    v = np.zeros(D, np.float32)
    v[i] = 1.0
    return unit(v + noise * np.random.default_rng(seed).standard_normal(D).astype(np.float32))


def add_clips(store: Store, sid: str, starts, emb, adapter="meanpool", length=2.0) -> None:
    starts = np.asarray(starts, np.float64)
    emb = np.asarray(emb, np.float32)
    data = pa.table({"stream_id": [sid] * len(starts), "start": starts, "end": starts + length,
                     "adapter": [adapter] * len(starts),
                     "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), D),
                     "model": [SPEC] * len(starts)},
                    schema=clips_schema(D, [], {"streamvl.model": SPEC}))
    store.upsert(CLIPS, data)


def hit(sid, start, end, score, adapter="m", **extra) -> Hit:
    return Hit(sid, f"file:///{sid}", start, end, score, adapter, extra, peak=(start, end))


# ---------------------------------------------------------------- merge_segments


def spans(hits):
    return [(h.stream_id, h.start, h.end, h.score) for h in hits]


def test_overlapping_hits_merge_with_max_score_and_best_extra():
    merged = merge_segments([hit("a", 0, 2, 0.5, tag="x"), hit("a", 1, 3, 0.9, tag="y"), hit("a", 2.5, 4, 0.1)])
    assert spans(merged) == [("a", 0, 4, 0.9)]
    assert merged[0].extra == {"tag": "y"} and merged[0].uri == "file:///a"
    assert merged[0].peak == (1, 3)  # the best window, inside the merged range


def test_touching_hits_merge_but_gaps_need_a_gap_allowance():
    assert spans(merge_segments([hit("a", 2, 4, 0.3), hit("a", 0, 2, 0.4)])) == [("a", 0, 4, 0.4)]
    apart = [hit("a", 0, 2, 0.4), hit("a", 2.5, 4, 0.3)]
    assert spans(merge_segments(apart)) == [("a", 0, 2, 0.4), ("a", 2.5, 4, 0.3)]
    assert spans(merge_segments(apart, gap=0.5)) == [("a", 0, 4, 0.4)]


def test_contained_hit_does_not_shrink_the_range():
    assert spans(merge_segments([hit("a", 0, 10, 0.2), hit("a", 1, 2, 0.8), hit("a", 9, 12, 0.1)])) == [("a", 0, 12, 0.8)]


def test_different_streams_and_adapters_stay_apart_sorted_by_score():
    hits = [hit("a", 0, 2, 0.2), hit("b", 1, 3, 0.7), hit("a", 1, 3, 0.5, adapter="other"), hit("a", 1, 3, 0.1)]
    merged = merge_segments(hits)
    assert [(h.stream_id, h.adapter, h.start, h.end, h.score) for h in merged] == [
        ("b", "m", 1, 3, 0.7), ("a", "other", 1, 3, 0.5), ("a", "m", 0, 3, 0.2)]
    assert merge_segments([]) == []


# ---------------------------------------------------------------- search_vectors


@pytest.fixture
def store(tmp_path) -> Store:
    s = Store(str(tmp_path / "db"))
    away = unit(axis(1) - 0.5 * axis(0))  # negative score for axis(0)
    add_clips(s, "a", [0, 2, 10], [axis(0, 0.3, 1), axis(0, 0.1, 2), away])  # [0,2] [2,4] touch
    add_clips(s, "b", [0, 5], [axis(2), axis(0, 0.2, 3)])
    add_clips(s, "a", [0], [axis(0)], adapter="xclip")
    s.record_state(StreamState("a", "file:///videos/a.mp4", Status.DONE))
    return s


def test_search_vectors_finds_the_nearest_clip_and_merges(store):
    hits = search_vectors(store, axis(0), k=3)
    assert [(h.stream_id, h.start, h.end) for h in hits] == [("a", 0.0, 4.0), ("b", 5.0, 7.0), ("b", 0.0, 2.0)]
    best = store.search_clips(axis(0), 1, adapter="meanpool")[0]
    assert (best["start"], hits[0].score) == (2.0, pytest.approx(best["score"]))
    assert hits[0].uri == "file:///videos/a.mp4" and hits[1].uri == ""  # b was never recorded
    assert hits[0].adapter == "meanpool" and hits[0].extra == {"model": SPEC}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_search_vectors_filters(store):
    assert [h.stream_id for h in search_vectors(store, axis(0), stream_ids=["b"])] == ["b", "b"]
    assert [(h.stream_id, h.start) for h in search_vectors(store, axis(0), start=9)] == [("a", 10.0)]
    assert [h.adapter for h in search_vectors(store, axis(0), adapter="xclip")] == ["xclip"]
    assert search_vectors(store, axis(0), k=0) == []


def tilted(angle: float, towards: int = 1) -> np.ndarray:
    return np.cos(angle) * axis(0) + np.sin(angle) * axis(towards)


def test_search_vectors_widens_when_grouping_leaves_too_few(tmp_path):
    s = Store(str(tmp_path / "db"))
    angles = np.linspace(0.1, 0.7, 60)  # score falls with start: the 50 best clips are one run
    add_clips(s, "long", np.arange(0, 120, 2.0), [tilted(a) for a in angles])
    add_clips(s, "other", [0], [tilted(1.0, towards=2)])
    pool = s.search_clips(axis(0), 50, adapter="meanpool")  # the first page's clip pool (k <= 12)
    margin = 0.25 * (pool[0]["score"] - pool[-1]["score"])
    # the run's best clip opens the hit; the touching clips within the margin of it widen it
    close = [r for r in s.search_clips(axis(0), 100, adapter="meanpool", stream_ids=["long"])
             if r["score"] >= pool[0]["score"] - margin]
    want_end = max(r["end"] for r in close)
    assert 4.0 < want_end < 100.0  # the margin stops the widening inside the run
    one = search_vectors(s, axis(0), k=1)
    assert [(h.stream_id, h.start, h.end) for h in one] == [("long", 0.0, want_end)]
    two = search_vectors(s, axis(0), k=2)  # the next clip not touching hit 1 opens hit 2
    assert [(h.stream_id, h.start) for h in two] == [("long", 0.0), ("long", want_end + 2.0)]
    hits = search_vectors(s, axis(0), k=12)  # past the first 50 clips: the fetch widens until "other" is grouped
    assert hits[-1].stream_id == "other" and (hits[-1].start, hits[-1].end) == (0.0, 2.0)
    spans = sorted((h.start, h.end) for h in hits if h.stream_id == "long")
    assert spans[0][0] == 0.0 and spans[-1][1] == 120.0  # the whole run, in hits that do not overlap
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# ---------------------------------------------------------------- search (text path, fakes)


class FakeAdapter:
    name = "meanpool"

    def __init__(self, model, options):
        self.model, self.options = model, options

    def encode_video(self, features, frames=None):
        raise AssertionError("search never encodes video")

    def encode_text(self, texts):
        return FakeTensor(np.stack([axis(int(t[-1])) for t in texts]).astype(np.float64))


def reverse(ctx: RerankContext, hits: list[Hit]) -> list[Hit]:
    assert isinstance(ctx.store, Store) and ctx.query == "shape 0" and isinstance(ctx.adapter, FakeAdapter)
    assert ctx.query_embedding.dtype == np.float32 and ctx.query_embedding.shape == (D,)
    return [Hit(h.stream_id, h.uri, h.start, h.end, float(i), h.adapter) for i, h in enumerate(reversed(hits))]


class FakePlugin:
    @hookimpl
    def streamvl_adapters(self):
        return [AdapterSpec("meanpool", FakeAdapter), AdapterSpec("xclip", FakeAdapter)]

    @hookimpl
    def streamvl_rerankers(self):
        return [RerankerSpec("reverse", reverse)]


@pytest.fixture
def plugins() -> Plugins:
    return Plugins(build_plugin_manager(extra=[FakePlugin()], entry_points=False))


@pytest.fixture
def loads(monkeypatch) -> list[str]:
    calls: list[str] = []

    def fake_load(spec: str):
        calls.append(spec)
        return f"loaded {spec}"

    monkeypatch.setattr(streamvl.models.loading, "load_model", fake_load)
    return calls


def test_search_uses_the_indexing_model_and_adapter(store, plugins, loads):
    hits = search("shape 0", store.uri, k=2, plugins=plugins)
    assert loads == [SPEC]
    assert [(h.stream_id, h.start, h.end) for h in hits] == [("a", 0.0, 4.0), ("b", 5.0, 7.0)]
    assert [h.stream_id for h in search("shape 2", store.uri, k=1, plugins=plugins)] == ["b"]
    assert [h.adapter for h in search("shape 0", store.uri, adapter="xclip", plugins=plugins)] == ["xclip"]
    assert [h.start for h in search("shape 0", store.uri, start=9, end=11, plugins=plugins)] == [10.0]


def test_search_reranks(store, plugins, loads):
    plain = search("shape 0", store.uri, k=3, plugins=plugins)
    reranked = search("shape 0", store.uri, k=3, rerank="reverse", plugins=plugins)
    assert [h.start for h in reranked] == [h.start for h in reversed(plain)]
    assert [h.score for h in reranked] == [0.0, 1.0, 2.0]


def test_search_model_override_warns_on_mismatch(store, plugins, loads):
    with pytest.warns(UserWarning, match="indexed with 'tiny@random:0'"):
        search("shape 0", store.uri, model="other@random:1", plugins=plugins)
    assert loads == ["other@random:1"]


def test_search_errors(tmp_path, store, plugins, loads):
    with pytest.raises(StoreError, match="records no model"):
        search("shape 0", str(tmp_path / "empty"), plugins=plugins)
    with pytest.raises(PluginError, match="no adapter 'nope'"):
        search("shape 0", store.uri, adapter="nope", plugins=plugins)
    with pytest.raises(PluginError, match="no reranker 'nope'"):
        search("shape 0", store.uri, rerank="nope", plugins=plugins)
    assert loads == []  # plugin names are checked before the model loads


class CountingAdapter(FakeAdapter):
    texts: list[str] = []

    def encode_text(self, texts):
        CountingAdapter.texts.extend(texts)
        return super().encode_text(texts)


def test_repeated_searches_reuse_the_adapter_and_text_embeddings(store, loads, tmp_path):
    class Plugin:
        @hookimpl
        def streamvl_adapters(self):
            return [AdapterSpec("meanpool", CountingAdapter, options=(Option("checkpoint", str, "", "weights"),))]

    plugins = Plugins(build_plugin_manager(extra=[Plugin()], entry_points=False))
    CountingAdapter.texts = []
    first = search("shape 0", store.uri, k=2, plugins=plugins)
    assert search("shape 0", store.uri, k=2, plugins=plugins) == first
    search("shape 2", store.uri, k=2, plugins=plugins)
    assert loads == [SPEC] and CountingAdapter.texts == ["shape 0", "shape 2"]  # one model load, one encode per text
    ckpt = tmp_path / "ckpt.safetensors"
    ckpt.write_bytes(b"v1")
    search("shape 0", store.uri, plugins=plugins, adapter_options={"checkpoint": str(ckpt)})
    assert len(loads) == 2  # other options: another adapter
    search("shape 0", store.uri, plugins=plugins, adapter_options={"checkpoint": str(ckpt)})
    assert len(loads) == 2
    ckpt.write_bytes(b"v2")
    os.utime(ckpt, ns=(0, 1))  # a rewritten checkpoint at the same path is loaded again
    search("shape 0", store.uri, plugins=plugins, adapter_options={"checkpoint": str(ckpt)})
    assert len(loads) == 3


def test_search_sees_clips_committed_after_its_first_call(store, plugins, loads):
    assert [h.stream_id for h in search("shape 3", store.uri, k=1, plugins=plugins)] != ["c"]
    add_clips(Store(store.uri), "c", [0], [axis(3)])  # another writer
    Store(store.uri).record_state(StreamState("c", "file:///videos/c.mp4", Status.DONE))
    hits = search("shape 3", store.uri, k=1, plugins=plugins)
    assert [(h.stream_id, h.uri) for h in hits] == [("c", "file:///videos/c.mp4")]
