"""Re-score an existing index with a new or retrained adapter, without decoding any video again.

The `frames` table holds every sampled frame's frozen embedding, so a feature-based adapter
(needs_frames False) can rebuild each clip window's input exactly: the frames with
start <= pts < end of a window (windows end one frame interval after their last frame). The
windows come from the adapter's own clip rows, or, for an adapter new to the index, from the
rows of the adapters already there. The adapter's old clip rows are replaced (deleted, then
the new rows upserted, with every column provider's columns recomputed).

Adapters that re-run the vision tower (xclip, litevl) need pixels the index does not keep:
re-index those with `streamvl index --adapter NAME`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from streamvl.errors import StoreError

Log = Callable[[str], None]


@dataclass(frozen=True)
class RescoreReport:
    adapter: str
    streams: int
    clips: int
    deleted: int
    seconds: float
    skipped_columns: tuple[str, ...] = ()


def unique_windows(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(start, end) windows per stream, deduplicated across adapters, sorted."""
    out: dict[str, set[tuple[float, float]]] = defaultdict(set)
    for r in rows:
        out[r["stream_id"]].add((float(r["start"]), float(r["end"])))
    return {sid: sorted(w) for sid, w in out.items()}


def window_features(pts: np.ndarray, feats: np.ndarray, windows: list[tuple[float, float]]) -> list[np.ndarray]:
    """Frame features [T, D] of each window: frames with start <= pts < end (at least one frame)."""
    out = []
    for start, end in windows:
        lo, hi = np.searchsorted(pts, start - 1e-9, "left"), np.searchsorted(pts, end - 1e-9, "left")
        out.append(feats[lo : max(hi, lo + 1)])
    return out


def embed_groups(adapter: Any, inputs: list[np.ndarray], dim: int, batch: int = 256) -> np.ndarray:
    """Adapter embeddings [N, D] of windows of varying length, grouped by length into dense batches."""
    import torch

    groups: dict[int, list[int]] = defaultdict(list)
    for i, x in enumerate(inputs):
        groups[len(x)].append(i)
    out = np.zeros((len(inputs), dim), np.float32)
    with torch.inference_mode():
        for idx in groups.values():
            for j in range(0, len(idx), batch):
                chunk = idx[j : j + batch]
                x = torch.from_numpy(np.stack([inputs[i] for i in chunk]))
                out[chunk] = adapter.encode_video(x, None).float().numpy()
    return out


def rescore(db: str, adapter_name: str, options: dict[str, Any] | None = None, *, plugins: Any = None,
            log: Log = print) -> RescoreReport:
    """Replace `adapter_name`'s clip rows in the index at `db`, computed from the frames table."""
    import pyarrow as pa

    from streamvl.models import loading as models
    from streamvl.pipeline.encode import clip_rows
    from streamvl.plugins.manager import Plugins
    from streamvl.search.query import indexed_model
    from streamvl.storage.schema import CLIPS, sql_str
    from streamvl.storage.store import Store

    t0 = time.perf_counter()
    plugins = plugins if plugins is not None else Plugins()
    store = Store(db)
    spec = plugins.feature_adapter(adapter_name, "re-scoring", f"re-index with `streamvl index --adapter {adapter_name}`")
    model = models.load_model(indexed_model(store))
    adapter = spec.build(model, dict(options or {}))
    own = store.clip_windows(adapter_name)
    windows = unique_windows(own or store.clip_windows())
    if not windows:
        raise StoreError(f"database {db!r} has no clip windows to re-score")
    table_schema = store.schema(CLIPS)
    providers, skipped = [], []
    for p in plugins.column_providers.values():
        if all(table_schema.get_field_index(f.name) >= 0 for f in p.fields):
            providers.append(p)
        else:
            skipped += [f.name for f in p.fields]
    if skipped:
        log(f"WARNING: the clips table has no column(s) {skipped} (plugin installed after indexing): left out")
    produced = {"stream_id", "start", "end", "adapter", "embedding", "model"} | {f.name for p in providers for f in p.fields}
    schema = pa.schema([f for f in table_schema if f.name in produced], metadata=table_schema.metadata)
    tables = []
    for sid, wins in windows.items():
        pts, feats = store.frames_of(sid)
        if not len(pts):
            log(f"WARNING: stream {sid} has no frames rows (indexed with store_frames off?): skipped")
            continue
        emb = embed_groups(adapter, window_features(pts, feats, wins), model.embed_dim)
        starts = np.array([w[0] for w in wins], np.float64)
        ends = np.array([w[1] for w in wins], np.float64)
        tables.append(clip_rows(schema, model.name, adapter_name, adapter, providers,
                                [sid] * len(wins), starts, ends, emb))
    new = pa.concat_tables(tables) if tables else None
    deleted = store.delete(CLIPS, f"adapter = {sql_str(adapter_name)}")
    written = store.upsert(CLIPS, new) if new is not None else 0
    report = RescoreReport(adapter_name, len(tables), written, deleted, time.perf_counter() - t0, tuple(skipped))
    log(f"re-scored {written} clips of {len(tables)} streams with {adapter_name} (replaced {deleted} rows) "
        f"in {report.seconds:.1f}s, from the frames table (no decoding)")
    return report
