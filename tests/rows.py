"""Tiny Arrow rows for the storage tests: random unit vectors in frames and clips tables (no models)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from streamvl.storage.schema import clips_schema, frames_schema

D = 8
META = {"streamvl.model": "tiny@random:0", "streamvl.models.weights": "RANDOM"}
LABELS = pa.field("labels", pa.list_(pa.string()))
CONF = pa.field("confidence", pa.float32())


def unit(n: int, d: int = D, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def fsl(emb: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float32()), emb.shape[1])


def frames(sid: str, pts, emb: np.ndarray, meta=META) -> pa.Table:
    n = len(pts)
    cols = {"stream_id": [sid] * n, "pts": np.asarray(pts, np.float64), "wallclock": [None] * n,
            "embedding": fsl(emb), "model": ["tiny"] * n}
    return pa.table(cols, schema=frames_schema(emb.shape[1], meta))


def clips(sid: str, starts, emb: np.ndarray, adapter="meanpool", length=2.0, extra=True) -> pa.Table:
    n = len(starts)
    starts = np.asarray(starts, np.float64)
    cols = {"stream_id": [sid] * n, "start": starts, "end": starts + length, "adapter": [adapter] * n,
            "embedding": fsl(emb), "model": ["tiny"] * n}
    if extra:
        cols |= {"labels": [[f"l{i}"] for i in range(n)], "confidence": np.linspace(0, 1, n, dtype=np.float32)}
    return pa.table(cols, schema=clips_schema(emb.shape[1], [LABELS, CONF] if extra else [], META))


class FakeTensor:
    """Quacks like a torch tensor for the text query path (detach/cpu/float/numpy), no torch import."""

    def __init__(self, a: np.ndarray) -> None:
        self.a = a

    def detach(self):
        return self

    def cpu(self):
        return self

    def float(self):
        return self

    def numpy(self):
        return self.a
