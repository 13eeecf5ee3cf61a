"""The ANN default is picked from a measured recall/latency curve (bench/ann_variants.py.choose):
the fastest point that reaches the recall floor, never a faster one below it."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from ann_variants import choose  # noqa: E402


def point(variant, p50, p99, recall):
    return {"variant": variant, "p50_ms": p50, "p99_ms": p99, "recall": recall}


def test_the_fastest_point_at_the_recall_floor_wins():
    curve = [point("hnsw", 4.0, 20.0, 0.96), point("pq5", 9.0, 60.0, 1.0), point("pq10", 12.0, 40.0, 1.0),
             point("pq-norefine", 7.0, 30.0, 0.91)]
    assert choose(curve, 0.98)["variant"] == "pq5"
    assert choose(curve, 0.95)["variant"] == "hnsw"
    assert choose(curve, 0.90)["variant"] == "hnsw"


def test_ties_go_to_the_lower_tail_then_the_higher_recall_and_nothing_qualifying_is_none():
    curve = [point("a", 9.0, 60.0, 0.99), point("b", 9.0, 40.0, 0.98), point("c", 9.0, 40.0, 1.0)]
    assert choose(curve, 0.98)["variant"] == "c"
    assert choose(curve, 1.01) is None
    assert choose([], 0.5) is None
