"""Measuring an adapter on a task's test side with streamvl.training.metrics: recognition, retrieval, localisation.

Plain Python + torch (no Ray): `jobs/evaluate.py` and `streamvl evaluate` call `run_evaluation`.
Clips of an adapter whose spec declares Capability.SCORES are scored with its own
`scores(features, frames, texts)`, so methods whose similarity depends on the pair (xclip's
video-specific prompts, litevl's text-dependent pooling) are measured as their papers define
them; other adapters by the cosine of their video and text embeddings.

Recognition also reports order-pair accuracy: for clips of an action in `ORDER_PAIRS` (a clip and
its time reversal are the other action of the pair), the share scored higher for their own class
than for its pair. No single frame and no unordered set of frames tells a pair apart, so a
frame-mean model sits at chance (0.5) there.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence, cast

import numpy as np

from streamvl.plugins.contract import Capability
from streamvl.training import metrics
from streamvl.training.datasets import LOCALISATION, RECOGNITION, RETRIEVAL, TaskData
from streamvl.training.train import ClipData, View, view_tensors

if TYPE_CHECKING:
    from streamvl.models.loading import LoadedModel
    from streamvl.plugins.contract import AdapterSpec, Localising, Scoring, Trainable, VideoAdapter

Log = Callable[[str], None]


def score_matrix(spec: "AdapterSpec", adapter: "VideoAdapter", model: "LoadedModel", data: ClipData,
                 views: Sequence[View], texts: Sequence[str], frames: int = 8, batch: int = 32) -> np.ndarray:
    """Similarities [V, N] of views (T evenly spread frames each) and texts, without gradients."""
    import torch

    if spec.can(Capability.TRAINABLE):
        cast("Trainable", adapter).eval()
    scorer = cast("Scoring", adapter) if spec.can(Capability.SCORES) else None
    out = []
    with torch.no_grad():
        for i in range(0, len(views), batch):
            feats, frms = view_tensors(model, data, views[i : i + batch], frames, None)
            if scorer is not None:
                s = scorer.scores(feats, frms, list(texts))
            else:  # a plain VideoAdapter (e.g. meanpool): embeddings, then cosine
                s = adapter.encode_video(feats, frms) @ adapter.encode_text(list(texts)).t()
            out.append(s.float().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(texts)), np.float32)


def whole_views(data: ClipData) -> list[View]:
    return [View(i, 0, len(f), "") for i, f in enumerate(data.features)]


def order_pair_hits(scores: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> dict[str, list[bool]]:
    """Per order pair ('rotate_cw/rotate_ccw'): for each of its clips, whether it scored higher for
    its own class than for the class's time reverse (pairs with both classes among `classes`)."""
    from streamvl.lab.synthetic.actions import ORDER_PAIRS, reverse_action

    pair_name = {c: f"{a}/{b}" for a, b in ORDER_PAIRS for c in (a, b)}
    col = {c: j for j, c in enumerate(classes)}
    hits: dict[str, list[bool]] = {}
    for i, y in enumerate(labels):
        if y in pair_name and y in col and reverse_action(y) in col:
            hits.setdefault(pair_name[y], []).append(bool(scores[i, col[y]] > scores[i, col[reverse_action(y)]]))
    return hits


def pooled_pair_accuracy(hits: dict[str, list[bool]]) -> tuple[float, int]:
    """Share of all order-pair clips (order_pair_hits) that were hits; and how many there were."""
    flat = [h for pair in hits.values() for h in pair]
    return (float(np.mean(flat)) if flat else float("nan")), len(flat)


def order_pair_accuracy(scores: np.ndarray, labels: Sequence[str], classes: Sequence[str]) -> tuple[float, int]:
    """Share of order-pair clips scored higher for their class than for its reverse; and how many."""
    return pooled_pair_accuracy(order_pair_hits(scores, labels, classes))


def recognition(spec: "AdapterSpec", adapter: "VideoAdapter", model: "LoadedModel", task: TaskData, data: ClipData,
                frames: int = 8) -> dict[str, Any]:
    classes = list(task.test_classes)
    scores = score_matrix(spec, adapter, model, data, whole_views(data), task.texts(tuple(classes)), frames)
    labels = [r.label for r in data.refs]
    target = np.array([classes.index(y) for y in labels])
    out: dict[str, Any] = {
        "top1": metrics.topk_accuracy(scores, target, 1),
        "top5": metrics.topk_accuracy(scores, target, min(5, len(classes))),
        "chance_top1": 1.0 / len(classes),
        "classes": len(classes),
        "clips": len(labels),
        "per_class_top1": metrics.per_class_accuracy(scores, target, classes),
        "confusions": [list(c) for c in metrics.confusions(scores, target, classes)],
    }
    hits = order_pair_hits(scores, labels, classes)
    pair, n = pooled_pair_accuracy(hits)
    if n:
        out["order_pair_top1"] = pair
        out["order_pair_clips"] = n
        out["order_pair_chance"] = 0.5
        out["order_pair_top1_by_pair"] = {p: float(np.mean(h)) for p, h in hits.items()}
    return out


def any_of(sim: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows with several right columns (one sentence describing several clips): keep the best right
    one as the target and drop the other right ones, so rank = 1 + wrong columns scoring higher."""
    masked = np.where(right, sim, -np.inf)
    gt = masked.argmax(axis=1)
    others = right & (np.arange(sim.shape[1])[None, :] != gt[:, None])
    return np.where(others, -np.inf, sim), gt


def retrieval(spec: "AdapterSpec", adapter: "VideoAdapter", model: "LoadedModel", task: TaskData, data: ClipData,
              frames: int = 8) -> dict[str, Any]:
    """Text -> video with each clip's canonical (first) caption as its query; video -> text R@1 too.

    Identical captions are one query; every clip it describes is a right answer.
    """
    queries = list(dict.fromkeys(r.captions[0] for r in data.refs))
    sim = score_matrix(spec, adapter, model, data, whole_views(data), queries, frames).T  # [Q, V]
    right = np.array([[q == r.captions[0] for r in data.refs] for q in queries])
    out: dict[str, Any] = metrics.retrieval_metrics(*any_of(sim, right))
    out["video_to_text_R@1"] = metrics.retrieval_metrics(*any_of(sim.T, right.T))["R@1"]
    out["queries"] = len(queries)
    out["clips"] = len(data.refs)
    return out


def proposal_recall(preds: Sequence[tuple], gts: Sequence[tuple], threshold: float) -> float:
    """Class-agnostic: share of ground-truth segments some predicted range overlaps by tIoU >= threshold."""
    if not gts:
        return float("nan")
    hit = 0
    for video, start, end, _ in gts:
        spans = np.array([(p[1], p[2]) for p in preds if p[0] == video])
        hit += bool(len(spans)) and float(metrics.temporal_iou(np.array([[start, end]]), spans).max()) >= threshold
    return hit / len(gts)


def localisation(spec: "AdapterSpec", adapter: "VideoAdapter", model: "LoadedModel", task: TaskData, data: ClipData,
                 frames: int = 8, window: int = 64) -> dict[str, Any]:
    from streamvl.search.localisation import localise

    spec.require(Capability.LOCALISES, "localisation")
    localiser = cast("Localising", adapter)
    labels = list(task.test_classes)
    texts = task.texts(tuple(labels))
    preds, gts = [], []
    for ref, f in zip(data.refs, data.features):
        for d in localise(localiser, f.pts, f.features, labels, texts, frames=frames, window=window):
            preds.append((ref.id, d.start, d.end, d.label, d.score))
        gts += [(ref.id, s.start, s.end, s.label) for s in ref.segments]
    out: dict[str, Any] = metrics.detection_map(preds, gts)
    out["proposal_recall@0.5"] = proposal_recall(preds, gts, 0.5)
    out["streams"] = len(data.refs)
    out["ground_truth_segments"] = len(gts)
    out["predictions"] = len(preds)
    return out


def evaluate(spec: "AdapterSpec", adapter: "VideoAdapter", model: "LoadedModel", task: TaskData, data: ClipData,
             frames: int = 8) -> dict[str, Any]:
    """Metrics of the task's kind on `data` (the test side), for `adapter` built from `spec`."""
    fn = {RECOGNITION: recognition, RETRIEVAL: retrieval, LOCALISATION: localisation}[task.kind]
    return fn(spec, adapter, model, task, data, frames)


def run_evaluation(adapter_name: str, data_spec: str, *, model_spec: str = "default",
                   options: dict[str, Any] | None = None, frames: int = 8, cache: str | None = None,
                   fps: float = 2.0, shapes: Any = None, class_template: str | None = None,
                   log: Log = print) -> dict[str, Any]:
    """Everything `streamvl evaluate` does: load model, adapter (checkpoint via options) and test data; measure.

    class_template None: the one the checkpoint was trained with (none: class texts as they are)."""
    from streamvl.training.datasets import DEFAULT_CLASS_TEMPLATE, load_task
    from streamvl.pipeline.features import DEFAULT_ROOT, FeatureStore
    from streamvl.models.loading import load_model
    from streamvl.plugins.manager import Plugins
    from streamvl.training.train import prepare

    model = load_model(model_spec)
    if model.warning():
        log(f"WARNING: {model.warning()}")
    spec = Plugins().adapter(adapter_name)
    adapter = spec.build(model, dict(options or {}))
    trainable = cast("Trainable", adapter) if spec.can(Capability.TRAINABLE) else None
    if class_template is None:  # the checkpoint's, as the adapter read it (older checkpoints have none)
        info = trainable.checkpoint_info if trainable is not None else {}
        class_template = info.get("class_template", DEFAULT_CLASS_TEMPLATE)
    task = load_task(data_spec, image_size=model.image_size, fps=fps, shapes=shapes, class_template=class_template)
    store = FeatureStore(DEFAULT_ROOT if cache is None else cache, model)
    data = prepare(model, task.test, store, spec.needs_frames, log)
    t0 = time.perf_counter()
    result = evaluate(spec, adapter, model, task, data, frames)
    counts = trainable.parameter_counts() if trainable is not None else {}
    return {"adapter": adapter_name, "data": task.name, "kind": task.kind, "model": model.name,
            "checkpoint": (options or {}).get("checkpoint"), "class_template": class_template, "metrics": result,
            "parameters": counts, "seconds": round(time.perf_counter() - t0, 2)}
