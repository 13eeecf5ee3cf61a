"""Zero-shot evaluation: what it builds, and the shipped model's static bar on a small held-out sample."""

from __future__ import annotations

from streamvl.models import load_model
from streamvl.synthetic import HELD_OUT_COMBOS, ORDER_PAIRS
from streamvl.zeroshot import STATIC_ACTIONS, EvalConfig, actor, evaluate_order, evaluate_static, heldout_clips


def test_heldout_clips_are_test_domain_one_object_odd_seeds():
    specs = heldout_clips(STATIC_ACTIONS, 3, 64, EvalConfig())
    assert len(specs) == 3 * len(STATIC_ACTIONS) and "change_colour" not in STATIC_ACTIONS
    for spec in specs:
        assert spec.domain == "test" and spec.seed % 2 == 1 and len(spec.objects) == 1
        assert (spec.width, spec.height) == (64, 64)
        assert actor(spec).combo in HELD_OUT_COMBOS


def test_order_eval_reports_every_pair():
    result = evaluate_order(load_model("streamvl-tiny@random:0"), EvalConfig(per_order_action=1))
    assert set(result["by_pair"]) == {f"{a}/{b}" for a, b in ORDER_PAIRS}
    assert result["n_clips"] == 2 * len(ORDER_PAIRS) and 0.0 <= result["top1"] <= 1.0


def test_shipped_model_meets_the_static_bar_on_heldout_clips():
    """The real bar (>= 0.90 shape and colour top-1) on 60 held-out clips; the full numbers come from
    jobs/evaluate_zeroshot.py (600 clips)."""
    result = evaluate_static(load_model("default"), EvalConfig(per_action=5))
    assert result["n_clips"] == 60
    assert result["shape_top1"] >= 0.90, result
    assert result["colour_top1"] >= 0.90, result


def test_random_model_is_near_chance():
    result = evaluate_static(load_model("streamvl-tiny@random:0"), EvalConfig(per_action=2))
    assert result["combined_top1"] < 0.2
