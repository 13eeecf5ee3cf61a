"""Text search: text -> adapter text embedding -> filtered vector search on clips -> segments -> rerank.

`search` is the whole path for the CLI; `search_vectors` starts from a vector (no model), and
`merge_segments` joins adjacent clips of one stream into one time range.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from streamvl import models
from streamvl.adapters import RerankContext
from streamvl.errors import StoreError
from streamvl.plugins import Plugins
from streamvl.store import MODEL_KEY, Store
from streamvl.types import Hit

_ROW_FIELDS = ("stream_id", "start", "end", "adapter", "score")
_MAX_ROUNDS = 4  # candidate widenings when merging leaves fewer than k segments


def _merge_key(h: Hit) -> tuple[str, str]:
    return (h.stream_id, h.adapter)


def _merge_run(run: list[Hit], gap: float) -> list[Hit]:
    """Hits of one stream and adapter -> merged ranges; the best hit gives score, uri, extra and peak."""
    out: list[Hit] = []
    for h in sorted(run, key=lambda h: (h.start, h.end)):
        cur = out[-1] if out else None
        if cur is not None and h.start <= cur.end + gap:
            best = h if h.score > cur.score else cur
            out[-1] = replace(best, start=cur.start, end=max(cur.end, h.end))
        else:
            out.append(h)
    return out


def merge_segments(hits: list[Hit], gap: float = 0.0) -> list[Hit]:
    """Merge hits of the same stream (and adapter) whose time ranges overlap or touch
    (next.start <= cur.end + gap) into one Hit spanning min start..max end with score = max.
    Result sorted by score desc."""
    runs: dict[tuple[str, str], list[Hit]] = {}
    for h in hits:
        runs.setdefault(_merge_key(h), []).append(h)
    merged = [m for run in runs.values() for m in _merge_run(run, gap)]
    return sorted(merged, key=lambda h: (-h.score, h.stream_id, h.start))


def _to_hit(row: dict[str, Any], uris: dict[str, str]) -> Hit:
    extra = {k: v for k, v in row.items() if k not in _ROW_FIELDS}
    start, end = float(row["start"]), float(row["end"])
    return Hit(stream_id=row["stream_id"], uri=uris.get(row["stream_id"], ""), start=start, end=end,
               score=float(row["score"]), adapter=row["adapter"], extra=extra, peak=(start, end))


def search_vectors(store: Store, vector: np.ndarray, *, k: int = 10, adapter: str = "meanpool",
                   stream_ids: Sequence[str] | None = None, start: float | None = None,
                   end: float | None = None, tags: Sequence[str] | None = None) -> list[Hit]:
    """vector search on clips (fetch enough candidates, e.g. max(4k, 50), so merging still leaves k),
    fill Hit.uri from the streams table, merge_segments, return top k. tags: clips must carry all of them."""
    if k <= 0:
        return []
    uris = {s["stream_id"]: s["uri"] for s in store.streams()}
    fetch = max(4 * k, 50)
    for _ in range(_MAX_ROUNDS):
        rows = store.search_clips(vector, fetch, adapter=adapter, stream_ids=stream_ids, start=start, end=end, tags=tags)
        merged = merge_segments([_to_hit(r, uris) for r in rows])
        if len(merged) >= k or len(rows) < fetch:  # enough segments, or every matching clip fetched
            break
        fetch *= 4
    return merged[:k]


def _as_vector(x: Any) -> np.ndarray:
    """A torch tensor or array-like -> float32 numpy (no torch import needed)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def indexed_model(store: Store, model: str | None = None) -> str:
    """The model spec to embed queries with: the one that wrote the clips, unless overridden."""
    recorded = store.meta().get(MODEL_KEY)
    if model is None:
        if not recorded:
            raise StoreError(f"database {store.uri!r} records no model (empty or not a streamvl index); pass model=")
        return recorded
    if recorded and model != recorded:
        warnings.warn(f"searching with model {model!r}, but {store.uri!r} was indexed with {recorded!r}", stacklevel=3)
    return model


def search(text: str, db: str, *, k: int = 10, adapter: str = "meanpool", stream_ids: Sequence[str] | None = None,
           start: float | None = None, end: float | None = None, rerank: str | None = None,
           model: str | None = None, plugins: Plugins | None = None, tags: Sequence[str] | None = None,
           adapter_options: dict[str, Any] | None = None) -> list[Hit]:
    """Text query against the index at `db`: embed with the indexing model's adapter, search, merge, rerank.

    adapter_options: the adapter's options (e.g. {"checkpoint": ...}); use the ones the index was built with.
    tags: only clips tagged with every one of these (see `streamvl_clip_columns`, e.g. the alpro plugin).
    """
    store = Store(db)
    plugins = plugins if plugins is not None else Plugins()
    spec = indexed_model(store, model)
    adapter_spec = plugins.adapter(adapter)  # fails fast (PluginError) before loading the model
    reranker = plugins.reranker(rerank) if rerank else None
    adapter_obj = adapter_spec.factory(models.load_model(spec), dict(adapter_options or {}))
    qvec = _as_vector(adapter_obj.encode_text([text]))[0]
    hits = search_vectors(store, qvec, k=k, adapter=adapter, stream_ids=stream_ids, start=start, end=end, tags=tags)
    if reranker is None:
        return hits
    context = RerankContext(query=text, query_embedding=qvec, adapter=adapter_obj, store=store,
                            options=dict(adapter_options or {}))
    return reranker.rerank(context, hits)
