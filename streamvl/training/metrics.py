"""Evaluation metrics shared by every adapter: recognition, retrieval, temporal localisation.

numpy only. Conventions: scores are "higher is better"; ties are broken by index (as a stable
sort of -score would), so a constant score matrix is not rewarded; ranks are 1-based; rates
are fractions in [0, 1] (multiply by 100 for the papers' percentages).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Hashable, Sequence

import numpy as np

DETECTION_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)

Prediction = tuple[Hashable, float, float, Hashable, float]  # (video, start, end, label, score)
GroundTruth = tuple[Hashable, float, float, Hashable]  # (video, start, end, label)


def _target_ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """1-based rank of column target[i] in row i: higher scores first, ties broken by lower index."""
    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must be [N, C], got shape {scores.shape}")
    target = np.asarray(target, np.int64)
    if target.shape != (scores.shape[0],):
        raise ValueError(f"need one target per row: {target.shape} vs {scores.shape[0]} rows")
    cols = np.arange(scores.shape[1])[None, :]
    out = np.empty(scores.shape[0], np.int64)
    for lo in range(0, scores.shape[0], 1024):  # row chunks keep memory bounded for 10k x 10k similarities
        s, t = scores[lo : lo + 1024], target[lo : lo + 1024]
        own = s[np.arange(len(t)), t][:, None]
        out[lo : lo + len(t)] = ((s > own) | ((s == own) & (cols < t[:, None]))).sum(axis=1) + 1
    return out


def topk_accuracy(scores: np.ndarray, labels: Sequence[int] | np.ndarray, k: int = 1) -> float:
    """Fraction of rows of scores [N, C] whose true class (labels [N]) is among the k best."""
    return float(np.mean(_target_ranks(scores, np.asarray(labels)) <= k))


def accuracy(scores: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """Top-1 accuracy."""
    return topk_accuracy(scores, labels, 1)


def per_class_accuracy(scores: np.ndarray, labels: Sequence[int] | np.ndarray, classes: Sequence[str]) -> dict[str, float]:
    """Top-1 accuracy of each class that has rows (ties to the lower index, as in topk_accuracy)."""
    labels = np.asarray(labels)
    hit = _target_ranks(scores, labels) == 1
    return {c: float(np.mean(hit[labels == j])) for j, c in enumerate(classes) if np.any(labels == j)}


def confusions(scores: np.ndarray, labels: Sequence[int] | np.ndarray, classes: Sequence[str],
               top: int = 5) -> list[tuple[str, str, int]]:
    """The `top` most frequent (true class, predicted class, count) mistakes, most frequent first."""
    labels = np.asarray(labels)
    pred = np.argmax(np.asarray(scores, np.float64), axis=1)  # the first maximum: ties to the lower index
    pairs: dict[tuple[int, int], int] = defaultdict(int)
    for t, q in zip(labels.tolist(), pred.tolist()):
        if t != q:
            pairs[(t, q)] += 1
    ranked = sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [(classes[t], classes[q], n) for (t, q), n in ranked]


def retrieval_ranks(similarity: np.ndarray, gt: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
    """1-based rank of the right item per query; similarity [Q, V], gt [Q] (default: the diagonal)."""
    similarity = np.asarray(similarity)
    gt = np.arange(similarity.shape[0]) if gt is None else np.asarray(gt)
    return _target_ranks(similarity, gt)


def retrieval_metrics(
    similarity: np.ndarray, gt: Sequence[int] | np.ndarray | None = None, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Text -> video retrieval: {"R@1", "R@5", "R@10", "MedR", "MeanR"} from similarity [Q, V].

    Row q is one query (caption), column v one video; gt[q] is the right video (default q).
    """
    ranks = retrieval_ranks(similarity, gt)
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MedR"] = float(np.median(ranks))
    out["MeanR"] = float(np.mean(ranks))
    return out


def temporal_iou(a: np.ndarray | Sequence[float], b: np.ndarray | Sequence[float]) -> np.ndarray | float:
    """Temporal IoU of [start, end] segments: a [N, 2] x b [M, 2] -> [N, M]; two single segments -> float.

    Segments with no length and no overlap have IoU 0.
    """
    a_arr, b_arr = np.asarray(a, np.float64), np.asarray(b, np.float64)
    single = a_arr.ndim == 1 and b_arr.ndim == 1
    a2, b2 = np.atleast_2d(a_arr), np.atleast_2d(b_arr)
    inter = np.clip(np.minimum(a2[:, None, 1], b2[None, :, 1]) - np.maximum(a2[:, None, 0], b2[None, :, 0]), 0, None)
    union = (a2[:, 1] - a2[:, 0])[:, None] + (b2[:, 1] - b2[:, 0])[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return float(iou[0, 0]) if single else iou


def average_precision(tp: Sequence[bool] | np.ndarray, n_gt: int) -> float:
    """ActivityNet interpolated AP from true-positive flags of score-sorted predictions.

    Precision is made monotone (max over higher recall) and summed over recall steps.
    """
    if n_gt <= 0:
        return 0.0
    tp_arr = np.asarray(tp, np.float64)
    if tp_arr.size == 0:
        return 0.0
    ctp = np.cumsum(tp_arr)
    recall = ctp / n_gt
    precision = ctp / np.arange(1, tp_arr.size + 1)
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mprec = np.maximum.accumulate(mprec[::-1])[::-1]
    steps = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mprec[steps]))


def _match(preds: list[Prediction], gts: list[GroundTruth], threshold: float) -> np.ndarray:
    """TP flags of one class's predictions in score order; each GT is matched at most once.

    A prediction takes the unmatched GT of its video with the highest tIoU >= threshold.
    """
    by_video: dict[Hashable, list[int]] = defaultdict(list)
    for j, g in enumerate(gts):
        by_video[g[0]].append(j)
    used = np.zeros(len(gts), bool)
    tp = np.zeros(len(preds), bool)
    for i, (video, start, end, _, _) in enumerate(preds):
        idx = by_video.get(video, [])
        if not idx:
            continue
        ious = temporal_iou(np.array([[start, end]]), np.array([[gts[j][1], gts[j][2]] for j in idx]))[0]
        for pos in np.argsort(-ious, kind="stable"):
            if ious[pos] < threshold:
                break
            if not used[idx[pos]]:
                used[idx[pos]] = tp[i] = True
                break
    return tp


def per_class_ap(predictions: Sequence[Prediction], ground_truth: Sequence[GroundTruth], threshold: float) -> dict[Hashable, float]:
    """AP per class present in the ground truth at one tIoU threshold (predictions sorted by score)."""
    gts_by: dict[Hashable, list[GroundTruth]] = defaultdict(list)
    for g in ground_truth:
        gts_by[g[3]].append(g)
    preds_by: dict[Hashable, list[Prediction]] = defaultdict(list)
    for p in predictions:
        preds_by[p[3]].append(p)
    out = {}
    for label, gts in gts_by.items():
        preds = sorted(preds_by.get(label, []), key=lambda p: -p[4])  # stable: ties keep input order
        out[label] = average_precision(_match(preds, gts, threshold), len(gts))
    return out


def detection_map(
    predictions: Sequence[Prediction],
    ground_truth: Sequence[GroundTruth],
    thresholds: Sequence[float] = DETECTION_THRESHOLDS,
) -> dict[str, float]:
    """ActivityNet-style detection mAP: {"mAP@0.3", "mAP@0.5", "mAP@0.7", "mAP"} (mAP = mean over thresholds).

    Mean over the classes present in the ground truth; predictions of other classes are ignored.
    """
    out = {}
    for t in thresholds:
        aps = per_class_ap(predictions, ground_truth, t)
        out[f"mAP@{t:g}"] = float(np.mean(list(aps.values()))) if aps else 0.0
    out["mAP"] = float(np.mean([out[f"mAP@{t:g}"] for t in thresholds])) if thresholds else 0.0
    return out
