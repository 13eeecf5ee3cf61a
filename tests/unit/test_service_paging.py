"""The service's paged search (streamvl.service.paging) on synthetic clip rankings: no database."""

import math

import numpy as np
import pytest

from streamvl.service.paging import (Cursor, CursorError, Grouping, POOL_MIN, group_until, query_digest, score_page,
                                     time_page)


def ranking(n_streams=5, clips=80, seed=0, window=4.0, stride=2.0):
    """Rows like Store.search_clips returns, best first: overlapping windows, random scores."""
    rng = np.random.default_rng(seed)
    rows = [{"stream_id": f"s{s}", "start": i * stride, "end": i * stride + window, "adapter": "meanpool",
             "score": float(x)} for s in range(n_streams) for i, x in enumerate(rng.uniform(0, 1, clips))]
    return sorted(rows, key=lambda r: (-r["score"], r["stream_id"], r["start"]))


class Fetch:
    """n -> the n best rows; counts the sizes asked for."""

    def __init__(self, rows):
        self.rows, self.sizes = rows, []

    def __call__(self, n):
        self.sizes.append(n)
        return self.rows[:n]


def every_page(fetch, k, margin, order="score", threshold=None):
    pages, after = [], None
    for _ in range(10_000):
        if order == "score":
            page, state, before = score_page(fetch, k, after, margin)
        else:
            page, state, before = time_page(fetch, k, threshold, after, margin)
        assert before == (after.h if after else 0)
        pages.append(page)
        if state is None:
            return pages
        after = state.model_copy(update={"o": order, "q": "x"})
    raise AssertionError("paging never ended")


@pytest.mark.parametrize("k,margin", [(1, 0.0), (7, 0.1), (24, 0.3), (50, math.inf)])
def test_paging_in_score_order_returns_every_hit_exactly_once(k, margin):
    rows = ranking()
    pages = every_page(Fetch(rows), k, margin)
    served = [(h.stream_id, h.peak, h.start, h.end) for page in pages for h in page]
    assert all(len(p) == k for p in pages[:-1]) and 1 <= len(pages[-1]) <= k
    assert len(set(served)) == len(served)  # no hit twice
    whole, used = group_until(rows, math.inf, margin, page=k)  # the whole list at once
    assert used == len(rows)
    assert served == [(h.stream_id, h.peak, h.start, h.end) for h in whole.hits]  # none missing, same order and ranges
    members = [m for h in whole.hits for m in h.members]
    assert sorted(members) == sorted((r["stream_id"], r["start"]) for r in rows)  # each clip in exactly one hit
    scores = [h.score for page in pages for h in page]
    assert scores == sorted(scores, reverse=True)  # scores never rise down the pages
    for h in whole.hits:  # a hit's score is its best clip's and its peak lies inside it
        assert h.score == max(r["score"] for r in rows if (r["stream_id"], r["start"]) in set(h.members))
        assert h.start <= h.peak[0] and h.peak[1] <= h.end
    by_stream = {}
    for h in whole.hits:
        by_stream.setdefault(h.stream_id, []).append((h.start, h.end))
    for spans in by_stream.values():  # no two hits of a stream overlap
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))


def test_a_hit_stops_widening_when_its_page_ends():
    rows = [{"stream_id": "a", "start": 0.0, "end": 2.0, "score": 0.9},  # hit 0 (page 1 of k=1)
            {"stream_id": "b", "start": 0.0, "end": 2.0, "score": 0.89},  # hit 1 opens page 2
            {"stream_id": "a", "start": 2.0, "end": 4.0, "score": 0.88}]  # would widen hit 0
    paged, _ = group_until(rows, math.inf, margin=0.1, page=1)
    assert [(h.stream_id, h.start, h.end) for h in paged.hits] == [("a", 0.0, 2.0), ("b", 0.0, 2.0)]
    assert paged.hits[0].members == [("a", 0.0), ("a", 2.0)]  # still its clip
    whole, _ = group_until(rows, math.inf, margin=0.1, page=2)
    assert (whole.hits[0].start, whole.hits[0].end) == (0.0, 4.0)


def test_deep_pages_widen_the_fetch_without_a_cap():
    rows = ranking(n_streams=8, clips=200)
    fetch = Fetch(rows)
    pages = every_page(fetch, 5, 0.1)
    assert sum(len(p) for p in pages) > 100
    assert max(fetch.sizes) >= len(rows)  # the last pages fetched past any fixed pool
    assert min(fetch.sizes) == POOL_MIN


def test_margin_limits_how_far_a_hit_widens():
    rows = [{"stream_id": "a", "start": float(i), "end": i + 2.0, "score": s}
            for i, s in enumerate([0.5, 0.9, 0.88, 0.3, 0.87, 0.86])]
    rows.sort(key=lambda r: -r["score"])
    g = Grouping(margin=0.05)
    for r in rows:
        g.add(r)
    assert [(h.start, h.end) for h in g.hits] == [(1.0, 7.0)]  # 0.88, 0.87, 0.86 widen it; 0.5 and 0.3 only join
    assert len(g.hits[0].members) == 6
    wide = Grouping(margin=math.inf)
    for r in rows:
        wide.add(r)
    assert [(h.start, h.end) for h in wide.hits] == [(0.0, 7.0)]


def test_a_clip_touching_two_hits_joins_the_better_without_merging_them():
    rows = [{"stream_id": "a", "start": 0.0, "end": 2.0, "score": 0.9},
            {"stream_id": "a", "start": 4.0, "end": 6.0, "score": 0.8},
            {"stream_id": "a", "start": 2.0, "end": 4.0, "score": 0.79}]
    g, used = group_until(rows, 5, margin=1.0)
    assert used == 3 and [(h.start, h.end) for h in g.hits] == [(0.0, 2.0), (4.0, 6.0)]
    assert g.hits[0].members == [("a", 0.0), ("a", 2.0)]


def test_time_order_pages_every_hit_above_the_threshold_once_earliest_first():
    rows = ranking(seed=5)
    threshold = 0.6
    pages = every_page(Fetch(rows), 6, 0.1, order="time", threshold=threshold)
    hits = [h for p in pages for h in p]
    assert [(h.start, h.stream_id) for h in hits] == sorted((h.start, h.stream_id) for h in hits)
    above = [r for r in rows if r["score"] >= threshold]
    assert sorted(m for h in hits for m in h.members) == sorted((r["stream_id"], r["start"]) for r in above)
    assert len({(h.stream_id, h.peak) for h in hits}) == len(hits)


def test_cursor_round_trips_and_is_refused_for_another_query():
    digest = query_digest({"q": "a red car", "stream": None})
    c = Cursor(o="score", q=digest, h=24, n=130, d=0.04)
    assert Cursor.decode(c.encode(), "score", digest) == c
    with pytest.raises(CursorError, match="another query"):
        Cursor.decode(c.encode(), "score", query_digest({"q": "a blue car", "stream": None}))
    with pytest.raises(CursorError, match="another query"):
        Cursor.decode(c.encode(), "time", digest)
    for bad in ("garbage!", "e30", c.encode()[:-3]):
        with pytest.raises(CursorError):
            Cursor.decode(bad, "score", digest)
    forged = Cursor(o="score", q=digest, h=-1).encode()
    with pytest.raises(CursorError, match="out of range"):
        Cursor.decode(forged, "score", digest)


def test_an_empty_ranking_is_one_empty_last_page():
    page, state, before = score_page(Fetch([]), 10, None, 0.0)
    assert page == [] and state is None and before == 0
