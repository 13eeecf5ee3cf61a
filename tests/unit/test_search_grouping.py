"""One grouping of clips into hits: `streamvl.api.search` (search_vectors) and the service's first
page return the same segments for the same query and filters (streamvl.search.grouping)."""

from __future__ import annotations

import numpy as np
import pytest

from streamvl.search.query import search_vectors
from streamvl.service.media import MediaLibrary
from streamvl.service.schemas import SearchRequest
from streamvl.service.searching import SearchEngine
from streamvl.storage.store import Store
from tests.unit.test_query import D, add_clips, unit


@pytest.fixture
def engine(tmp_path):
    """Three streams of overlapping windows (2 s, stride 1 s) whose similarity to the query drifts
    in runs, so clips group into hits of several widths."""
    db = str(tmp_path / "db")
    store = Store(db)
    rng = np.random.default_rng(5)
    for sid in ("cam1", "cam2", "lobby"):
        walk = np.cumsum(rng.standard_normal((80, D)).astype(np.float32) * 0.35, axis=0) + rng.standard_normal(D)
        add_clips(store, sid, np.arange(0, 80, 1.0), unit(walk))
    media = MediaLibrary(str(tmp_path / "cache"))
    eng = SearchEngine(db, media)
    vectors = {"q0": unit(rng.standard_normal(D)), "q1": unit(rng.standard_normal(D))}
    eng.embed = lambda text, adapter="meanpool": vectors[text]
    yield eng, store, vectors
    media.close()


def spans(hits):
    return [(h.stream_id, round(h.start, 6), round(h.end, 6), round(h.score, 6), tuple(h.peak)) for h in hits]


@pytest.mark.parametrize("q,k,filters", [
    ("q0", 10, {}), ("q1", 10, {}), ("q0", 3, {}), ("q1", 40, {}),
    ("q0", 10, {"stream": ["cam2"]}), ("q1", 5, {"start": 20.0, "end": 50.0}),
    ("q0", 8, {"stream": ["cam1", "lobby"], "start": 10.0}),
])
def test_the_service_and_api_search_return_the_same_segments(engine, q, k, filters):
    eng, store, vectors = engine
    page = eng.search(SearchRequest(q=q, k=k, **filters))
    api = search_vectors(store, vectors[q], k=k, stream_ids=filters.get("stream"), start=filters.get("start"),
                         end=filters.get("end"))
    assert 0 < len(api) <= k and spans(page.hits) == spans(api)
    widened = [h for h in api if h.end - h.start > 2.0]
    assert widened  # some hits span several clips: the grouping, not just single clips, is compared
