"""Metrics against hand-computed cases: perfect, random, ties, and a worked detection mAP."""

from __future__ import annotations

import numpy as np
import pytest

from streamvl.training.metrics import (
    accuracy,
    average_precision,
    confusions,
    detection_map,
    per_class_accuracy,
    per_class_ap,
    retrieval_metrics,
    retrieval_ranks,
    temporal_iou,
    topk_accuracy,
)


def test_topk_hand_case():
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.4, 0.35, 0.25]])
    labels = [1, 1, 0, 2]  # ranks of the true class: 1, 2, 3, 3
    assert accuracy(scores, labels) == pytest.approx(0.25)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(0.5)
    assert topk_accuracy(scores, labels, 3) == pytest.approx(1.0)


def test_topk_perfect_random_and_ties():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)
    assert accuracy(np.eye(10)[labels], labels) == 1.0
    assert accuracy(rng.random((5000, 10)), labels) == pytest.approx(0.1, abs=0.015)
    assert topk_accuracy(rng.random((5000, 10)), labels, 5) == pytest.approx(0.5, abs=0.03)
    # constant scores: ties go to the lowest index, so only class 0 counts as right
    assert accuracy(np.zeros((4, 4)), [0, 1, 2, 3]) == 0.25


def test_per_class_accuracy_and_confusions_hand_case():
    classes = ["cw", "ccw", "grow"]
    scores = np.array([[0.9, 0.1, 0.0],   # cw  -> cw
                       [0.2, 0.8, 0.0],   # cw  -> ccw
                       [0.1, 0.7, 0.2],   # cw  -> ccw
                       [0.6, 0.4, 0.0],   # ccw -> cw
                       [0.5, 0.5, 0.0],   # ccw -> cw (a tie goes to the lower index)
                       [0.0, 0.3, 0.3]])  # grow -> ccw (tie)
    labels = [0, 0, 0, 1, 1, 2]
    acc = per_class_accuracy(scores, labels, classes)
    assert acc == pytest.approx({"cw": 1 / 3, "ccw": 0.0, "grow": 0.0})
    assert accuracy(scores, labels) == pytest.approx(1 / 6)  # the same tie rule as top-1
    assert confusions(scores, labels, classes) == [("cw", "ccw", 2), ("ccw", "cw", 2), ("grow", "ccw", 1)]
    assert confusions(scores, labels, classes, top=1) == [("cw", "ccw", 2)]
    assert per_class_accuracy(scores[:3], labels[:3], classes) == {"cw": pytest.approx(1 / 3)}  # absent classes left out


def test_retrieval_hand_case_and_explicit_index():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.3, 0.2, 0.1]])  # diagonal ranks: 1, 2, 3
    assert list(retrieval_ranks(sim)) == [1, 2, 3]
    m = retrieval_metrics(sim, ks=(1, 2))
    assert m == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "MedR": 2.0, "MeanR": 2.0})
    # two captions per video: queries 0, 1 -> video 0; query 2 -> video 1
    sim2 = np.array([[0.9, 0.2], [0.1, 0.6], [0.3, 0.7]])
    assert list(retrieval_ranks(sim2, [0, 0, 1])) == [1, 2, 1]


def test_retrieval_perfect_and_random():
    n = 500
    perfect = retrieval_metrics(np.eye(n))
    assert perfect["R@1"] == perfect["R@10"] == 1.0 and perfect["MedR"] == 1.0
    rand = retrieval_metrics(np.random.default_rng(1).random((n, n)))
    assert rand["R@1"] < 0.02 and rand["R@10"] == pytest.approx(10 / n, abs=0.02)
    assert rand["MedR"] == pytest.approx(n / 2, rel=0.15)


def test_temporal_iou():
    assert temporal_iou([0, 10], [5, 15]) == pytest.approx(5 / 15)
    assert temporal_iou([0, 10], [0, 10]) == 1.0
    assert temporal_iou([0, 1], [2, 3]) == 0.0
    assert temporal_iou([2, 2], [2, 2]) == 0.0  # no length, no IoU
    m = temporal_iou(np.array([[0, 10], [20, 30]]), np.array([[5, 15], [0, 10], [25, 26]]))
    assert m.shape == (2, 3)
    assert m == pytest.approx(np.array([[1 / 3, 1.0, 0.0], [0.0, 0.0, 0.1]]))


def test_average_precision_interpolated():
    # tp, fp, tp with 2 GT: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3
    assert average_precision([1, 0, 1], 2) == pytest.approx(0.5 + 1 / 3)
    assert average_precision([1, 1], 2) == 1.0
    assert average_precision([0, 0], 2) == 0.0
    assert average_precision([1], 4) == pytest.approx(0.25)  # missed GTs cap recall
    assert average_precision([], 3) == 0.0


def test_detection_map_worked_example():
    gt = [("v1", 0, 10, "A"), ("v1", 20, 30, "A"), ("v1", 5, 15, "B")]
    preds = [
        ("v1", 0, 10, "A", 0.9),  # tIoU 1 with A[0,10]: TP
        ("v1", 1, 9, "A", 0.8),  # tIoU 0.8 with the same GT, already matched: FP
        ("v1", 21, 29, "A", 0.7),  # tIoU 0.8 with A[20,30]: TP
        ("v2", 0, 10, "A", 0.95),  # no GT in v2: FP, and the best-scored A
        ("v1", 5, 11, "B", 0.6),  # tIoU 6/10 = 0.6 with B: TP at 0.3 and 0.5, FP at 0.7
        ("v1", 0, 10, "C", 0.99),  # a class without GT: ignored
    ]
    # A in score order: FP, TP, FP, TP; 2 GT -> precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1
    # interpolated: 1/2 * 1/2 + 1/2 * 1/2 = 1/2 at every threshold (both matches have tIoU >= 0.8)
    ap = per_class_ap(preds, gt, 0.5)
    assert ap == pytest.approx({"A": 0.5, "B": 1.0})
    assert per_class_ap(preds, gt, 0.7) == pytest.approx({"A": 0.5, "B": 0.0})
    m = detection_map(preds, gt)
    assert m == pytest.approx({"mAP@0.3": 0.75, "mAP@0.5": 0.75, "mAP@0.7": 0.25, "mAP": 1.75 / 3})


def test_detection_gt_matched_once_and_best_iou_first():
    gt = [("v", 0, 10, "A"), ("v", 4, 14, "A")]
    # one prediction overlapping both: it takes the higher-IoU GT [4,14]; the next takes [0,10]
    preds = [("v", 4, 13, "A", 0.9), ("v", 0, 9, "A", 0.8), ("v", 0, 10, "A", 0.7)]
    assert per_class_ap(preds, gt, 0.5) == pytest.approx({"A": 1.0})
    assert detection_map([(v, s, e, c, 1.0) for v, s, e, c in gt], gt)["mAP"] == 1.0
    assert detection_map([], gt)["mAP"] == 0.0


def test_order_pair_hits_by_pair_hand_case():
    from streamvl.training.evaluate import order_pair_accuracy, order_pair_hits

    classes = ["rotate_cw", "rotate_ccw", "move_left", "move_right", "blink"]
    labels = ["rotate_cw", "rotate_ccw", "move_left", "blink", "rotate_cw"]
    scores = np.array([[0.9, 0.1, 0, 0, 0],   # cw over ccw: hit
                       [0.8, 0.2, 0, 0, 0],   # ccw clip scored cw: miss
                       [0, 0, 0.3, 0.6, 0],   # left clip scored right: miss
                       [0, 0, 0, 0, 1.0],     # blink is its own reverse: not counted
                       [0.2, 0.1, 0, 0, 0.9]])  # cw over ccw, though blink wins top-1: a hit in its pair
    assert order_pair_hits(scores, labels, classes) == {"rotate_cw/rotate_ccw": [True, False, True],
                                                        "move_left/move_right": [False]}
    assert order_pair_accuracy(scores, labels, classes) == (0.5, 4)
    assert order_pair_hits(scores[:, [0, 4]], labels, ["rotate_cw", "blink"]) == {}  # a pair needs both of its classes
