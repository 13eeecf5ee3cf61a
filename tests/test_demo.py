"""`streamvl demo`: ground truth helpers (fast) and the whole demo on a local Ray (integration)."""

from __future__ import annotations

import pytest

from streamvl.demo import DemoConfig, absent_combo, present_combos, query_text, run_demo, visible_ranges
from streamvl.synthetic import TEST, sample_stream

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


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()
