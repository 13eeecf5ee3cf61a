"""Temporal localisation in long streams: class-agnostic proposals, then classification of each.

The two-stage recipe of Ju et al. 2022: an adapter with a proposal head scores every frame's
*actionness* (sliding windows over the stream's frozen features, overlapping predictions
averaged); runs above several thresholds become candidate segments, scored by their mean
actionness and pruned by temporal NMS; each surviving proposal is then classified with the
adapter's pooled video embedding against the class texts. A prediction's score is the
proposal score times the class probability; each proposal yields its top-k classes.

`localise_index` runs this over the `frames` table of an index (no decoding) and writes the
`segments` table. The adapter is the contract's `Localising` (its spec declares Capability.LOCALISES).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, cast

import numpy as np

from streamvl.pipeline.features import segment_indices
from streamvl.plugins.contract import Capability
from streamvl.training.metrics import temporal_iou

if TYPE_CHECKING:
    from streamvl.plugins.contract import Localising

THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


@dataclass(frozen=True)
class Proposal:
    """Frames [lo, hi) of a stream and their class-agnostic score."""

    lo: int
    hi: int
    score: float


@dataclass(frozen=True)
class Detection:
    start: float
    end: float
    label: str
    score: float


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Starts of windows covering n frames (the last one flush with the end)."""
    if n <= window:
        return [0]
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] + window < n:
        starts.append(n - window)
    return starts


def actionness_curve(adapter: "Localising", features: np.ndarray, window: int = 64, batch: int = 32) -> np.ndarray:
    """Per-frame actionness in [0, 1] of a whole stream (features [N, D]), overlapping windows averaged."""
    import torch

    n = len(features)
    starts = window_starts(n, window, max(1, window // 2))
    total, count = np.zeros(n, np.float64), np.zeros(n, np.float64)
    for i in range(0, len(starts), batch):
        chunk = starts[i : i + batch]
        x = torch.from_numpy(np.stack([features[s : s + window] for s in chunk]).astype(np.float32))
        probs = adapter.actionness(x).numpy()
        for s, p in zip(chunk, probs):
            total[s : s + len(p)] += p
            count[s : s + len(p)] += 1
    return total / np.maximum(count, 1)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[lo, hi) ranges where mask is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def temporal_nms(props: Sequence[Proposal], iou: float = 0.5) -> list[Proposal]:
    """Greedy NMS: keep the best proposal, drop those overlapping it by more than `iou`, repeat."""
    order = sorted(props, key=lambda p: -p.score)
    kept: list[Proposal] = []
    for p in order:
        if all(temporal_iou((p.lo, p.hi), (k.lo, k.hi)) <= iou for k in kept):
            kept.append(p)
    return kept


def proposals(curve: np.ndarray, thresholds: Sequence[float] = THRESHOLDS, min_frames: int = 2,
              nms_iou: float = 0.5) -> list[Proposal]:
    """Class-agnostic segments: runs of actionness above each threshold, scored by mean actionness
    inside minus the mean just outside (a run with no contrast to its surroundings scores low)."""
    found: dict[tuple[int, int], Proposal] = {}
    n = len(curve)
    for th in thresholds:
        for lo, hi in runs(curve > th):
            if hi - lo < min_frames or (lo, hi) in found:
                continue
            pad = max(1, (hi - lo) // 4)
            outside = np.concatenate([curve[max(0, lo - pad) : lo], curve[hi : min(n, hi + pad)]])
            contrast = float(curve[lo:hi].mean()) - (float(outside.mean()) if len(outside) else 0.0)
            found[(lo, hi)] = Proposal(lo, hi, max(contrast, 0.0) * float(curve[lo:hi].mean()) ** 0.5)
    return temporal_nms(list(found.values()), nms_iou)


def classify(adapter: "Localising", features: np.ndarray, props: Sequence[Proposal], texts: Sequence[str],
             frames: int = 8, batch: int = 64) -> np.ndarray:
    """Class probabilities [P, C] of each proposal: its frames pooled by the adapter vs the class texts."""
    import torch

    if not props:
        return np.zeros((0, len(texts)), np.float32)
    out = []
    with torch.no_grad():
        for i in range(0, len(props), batch):
            chunk = props[i : i + batch]
            x = torch.from_numpy(np.stack([features[p.lo + segment_indices(p.hi - p.lo, frames)] for p in chunk]))
            logits = adapter.scale() * adapter.scores(x.float(), None, list(texts))
            out.append(logits.softmax(dim=-1).numpy())
    return np.concatenate(out)


def localise(adapter: "Localising", pts: np.ndarray, features: np.ndarray, labels: Sequence[str],
             texts: Sequence[str], *, frames: int = 8, window: int = 64, top_k: int = 2,
             thresholds: Sequence[float] = THRESHOLDS) -> list[Detection]:
    """Detections in one stream (pts [N] sorted, features [N, D]): proposals, then their top-k classes.

    The caller checks the adapter's spec (Capability.LOCALISES) before building it."""
    if len(pts) == 0:
        return []
    adapter.eval()
    curve = actionness_curve(adapter, features, window)
    props = proposals(curve, thresholds)
    probs = classify(adapter, features, props, texts, frames)
    dt = float(np.median(np.diff(pts))) if len(pts) > 1 else 1.0
    out = []
    for p, row in zip(props, probs):
        for c in np.argsort(-row)[:top_k]:
            out.append(Detection(float(pts[p.lo]), float(pts[p.hi - 1] + dt), labels[c], p.score * float(row[c])))
    return out


def localise_index(db: str, adapter_name: str, options: dict[str, Any] | None = None, *,
                   labels: Sequence[str] | None = None, texts: Sequence[str] | None = None,
                   stream_ids: Sequence[str] | None = None, min_score: float = 0.0) -> dict[str, int]:
    """Localise every (or the given) indexed stream from its `frames` rows and write `segments`.

    Classes default to the ones the adapter's checkpoint was trained on. Replaces the adapter's
    earlier segments of each stream. Returns segments written per stream.
    """
    import pyarrow as pa

    from streamvl.models import loading as models
    from streamvl.plugins.manager import Plugins
    from streamvl.search.query import indexed_model
    from streamvl.storage.schema import SEGMENTS, segments_schema, sql_str
    from streamvl.storage.store import Store

    spec = Plugins().feature_adapter(adapter_name, "localisation", "use a feature-based adapter such as prompt")
    spec.require(Capability.LOCALISES, "localisation")
    store = Store(db)
    model = models.load_model(indexed_model(store))
    adapter = cast("Localising", spec.build(model, dict(options or {})))
    info = adapter.checkpoint_info
    labels = list(labels or info.get("classes") or [])
    if not labels:
        raise ValueError(f"no classes to label segments with: pass labels, or a checkpoint trained on labelled data")
    texts = list(texts or [info.get("class_texts", {}).get(c, c) for c in labels])
    written = {}
    schema = segments_schema(model.meta())
    for sid in stream_ids or [s.stream_id for s in store.stream_states()]:
        pts, feats = store.frames_of(sid)
        found = [d for d in localise(adapter, pts, feats, labels, texts) if d.score >= min_score]
        store.delete(SEGMENTS, f"adapter = {sql_str(adapter_name)} AND stream_id = {sql_str(sid)}")
        rows = pa.Table.from_pydict({
            "stream_id": [sid] * len(found), "start": [d.start for d in found], "end": [d.end for d in found],
            "label": [d.label for d in found], "score": [d.score for d in found],
            "adapter": [adapter_name] * len(found), "model": [model.name] * len(found)}, schema=schema)
        written[sid] = store.upsert(SEGMENTS, rows)
    return written
