"""Frozen frame features, extracted once and reused by training, evaluation and re-scoring.

`FeatureStore` keeps one safetensors file per clip under `<root>/<arch>-<weights sha>/`, keyed by
the clip id (a `ClipRef.id`): the same clip embedded by the same weights is never embedded twice,
and another backbone can never read these features. Each file holds `pts` [N] and `features`
[N, D] (L2-normalised image embeddings, as the `frames` table stores them) and records the clip
id and model in its metadata. Indexed streams need no store: the `frames` table is their cache
(see streamvl.pipeline.rescore).

Adapters that re-run the vision tower (needs_frames: xclip, litevl) cannot use cached features;
`load_frames` renders or decodes their clips again.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from streamvl.training.datasets import ClipRef
    from streamvl.models.loading import LoadedModel

DEFAULT_ROOT = Path(os.environ.get("STREAMVL_CACHE", Path.home() / ".cache" / "streamvl")) / "features"


@dataclass(frozen=True)
class ClipFeatures:
    """Frame times float64 [N] and frozen frame features float32 [N, D] of one clip."""

    pts: np.ndarray
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])


class FeatureStore:
    """Per-clip safetensors files of frozen frame features for one model; root None keeps them in memory."""

    def __init__(self, root: str | Path | None, model: "LoadedModel") -> None:
        self.model_key = f"{model.spec.arch}-{model.weights_sha256}"
        self.model_name = model.spec.text
        self.dir = None if root is None else Path(root) / self.model_key
        self._memory: dict[str, ClipFeatures] = {}

    def path(self, clip_id: str) -> Path | None:
        if self.dir is None:
            return None
        return self.dir / f"{hashlib.sha1(clip_id.encode()).hexdigest()[:24]}.safetensors"

    def get(self, clip_id: str) -> ClipFeatures | None:
        if clip_id in self._memory:
            return self._memory[clip_id]
        path = self.path(clip_id)
        if path is None or not path.is_file():
            return None
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            if (f.metadata() or {}).get("clip_id") != clip_id:
                return None  # a hash collision or a foreign file: recompute
            got = ClipFeatures(f.get_tensor("pts"), f.get_tensor("features"))
        self._memory[clip_id] = got
        return got

    def put(self, clip_id: str, feats: ClipFeatures) -> None:
        self._memory[clip_id] = feats
        path = self.path(clip_id)
        if path is None:
            return
        from safetensors.numpy import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        # a temporary name of this writer's own: jobs sharing the cache may store the same clip at once
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.stem}.", suffix=".tmp")
        os.close(fd)
        tmp = Path(name)
        try:
            save_file({"pts": np.ascontiguousarray(feats.pts, np.float64), "features": np.ascontiguousarray(feats.features, np.float32)},
                      str(tmp), metadata={"clip_id": clip_id, "model": self.model_name, "model_key": self.model_key})
            tmp.replace(path)  # atomic: a crashed run leaves no half-written file
        finally:
            tmp.unlink(missing_ok=True)


def embed_frames(model: "LoadedModel", frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """uint8 frames [N, H, W, 3] -> frozen image features float32 [N, D], in chunks (preprocessed chunk by chunk)."""
    return _in_chunks(model.encode_images, frames, batch, model.embed_dim)


def embed_pixels(model: "LoadedModel", pixels: "torch.Tensor", batch: int = 256) -> np.ndarray:
    """Preprocessed images [N, 3, S, S] (e.g. augmented after normalisation) -> frozen image features float32 [N, D]."""
    return _in_chunks(model.encode_pixels, pixels, batch, model.embed_dim)


def _in_chunks(encode: Callable[[Any], "torch.Tensor"], items: Any, batch: int, dim: int) -> np.ndarray:
    if not len(items):
        return np.zeros((0, dim), np.float32)
    return np.concatenate([encode(items[i : i + batch]).float().numpy() for i in range(0, len(items), batch)])


def clip_features(model: "LoadedModel", refs: Sequence["ClipRef"], store: FeatureStore,
                  progress: Callable[[int], None] | None = None, batch: int = 256) -> list[ClipFeatures]:
    """Features of every clip: from the store, or rendered/decoded and embedded once, then stored.

    Frames of several missing clips go through the model together (batches of about `batch`).
    """
    out: list[ClipFeatures | None] = [store.get(ref.id) for ref in refs]
    pending: list[tuple[int, np.ndarray, np.ndarray]] = []

    def flush() -> None:
        feats = embed_frames(model, np.concatenate([f for _, _, f in pending]), batch)
        for (i, pts, frames), part in zip(pending, np.split(feats, np.cumsum([len(f) for _, _, f in pending])[:-1])):
            out[i] = ClipFeatures(np.asarray(pts, np.float64), part)
            store.put(refs[i].id, out[i])
            if progress is not None:
                progress(1)
        pending.clear()

    for i, ref in enumerate(refs):
        if out[i] is not None:
            if progress is not None:
                progress(1)
            continue
        pts, frames = ref.source()
        pending.append((i, pts, frames))
        if sum(len(f) for _, _, f in pending) >= batch:
            flush()
    if pending:
        flush()
    return out  # type: ignore[return-value]


def load_frames(refs: Sequence["ClipRef"]) -> list[np.ndarray]:
    """uint8 frames of every clip, rendered or decoded again (for adapters that need frames)."""
    return [ref.source()[1] for ref in refs]


def segment_indices(n: int, t: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """t frame indices spread over n frames (TSN-style): one per equal segment, its middle
    (rng None, evaluation) or a random frame inside it (training). n < t repeats frames."""
    if n <= 0:
        raise ValueError("cannot sample frames from an empty clip")
    edges = np.linspace(0, n, t + 1)
    if rng is None:
        idx = (edges[:-1] + edges[1:]) / 2
    else:
        idx = edges[:-1] + rng.random(t) * (edges[1:] - edges[:-1])
    return np.clip(np.floor(idx).astype(np.int64), 0, n - 1)


def range_indices(pts: np.ndarray, start: float, end: float, t: int) -> np.ndarray:
    """t frame indices spread over the frames with start <= pts < end (at least the nearest frame)."""
    lo, hi = np.searchsorted(pts, start, "left"), np.searchsorted(pts, end, "left")
    if hi <= lo:
        lo = min(int(np.searchsorted(pts, (start + end) / 2)), len(pts) - 1)
        hi = lo + 1
    return lo + segment_indices(int(hi - lo), t)
