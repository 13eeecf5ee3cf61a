"""`streamvl demo`: ground truth helpers (fast) and the whole demo on a local Ray (integration)."""

from __future__ import annotations

import pytest

from streamvl.lab.demo import DemoConfig, absent_combo, present_combos, query_text, run_demo, visible_ranges
from streamvl.lab.synthetic import TEST, sample_stream

STREAM = dict(seed=3, seconds=40.0)


def test_query_text_and_ground_truth_ranges():
    assert query_text("circle", "orange") == "an orange circle" and query_text("star", "red") == "a red star"
    spec = sample_stream(STREAM["seed"], STREAM["seconds"], domain=TEST, width=32, height=32)
    present = present_combos(spec)
    assert present
    for combo in present:
        ranges = visible_ranges(spec, combo)
        assert ranges and all(0.0 <= s < e <= spec.duration + 1e-9 for s, e in ranges)
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:]))  # disjoint and sorted
    shape, colour = absent_combo(spec, present)
    assert shape not in {s for s, _ in present} and colour not in {c for _, c in present}
    assert visible_ranges(spec, (shape, colour)) == []


DEMO_SEEDS = range(6)  # the first six test-domain streams, 60 s each (not chosen by outcome)


@pytest.mark.integration
def test_demo_static_queries_find_the_objects(ray_local, tmp_path):
    """Over six generated streams, the top hit's best window of "a {colour} {shape}" is centred on
    the time that object is visible far more often than a random window would be."""
    reports = [run_demo(DemoConfig(seed=seed, seconds=60.0), tmp_path / str(seed)) for seed in DEMO_SEEDS]
    queries = [q for r in reports for q in r.queries]
    assert all(r.model == "streamvl-shapes@v1" for r in reports) and len(queries) >= 10
    assert all(q.hits for q in queries)
    hit_rate = sum(q.top_in_truth for q in queries) / len(queries)
    chance = sum(q.coverage for q in queries) / len(queries)
    misses = [(q.text, q.hits[0].peak, q.truth) for q in queries if not q.top_in_truth]
    assert hit_rate >= 0.75 and hit_rate >= chance + 0.2, (hit_rate, chance, misses)
    for r in reports:  # objects that are there outscore one that never appears
        assert all(q.hits[0].score > r.absent.hits[0].score for q in r.queries), r.video
