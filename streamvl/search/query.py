"""Text search: text -> adapter text embedding -> filtered vector search on clips -> segments -> rerank.

`search` is the whole path for the CLI; `search_vectors` starts from a vector (no model) and groups
the best clips into hits with streamvl.search.grouping, the grouping the service pages with;
`merge_segments` (kept for callers that want plain unions) joins touching clips of one stream.

A process that searches many times (a server, a notebook, bench/bench_queries.py) keeps per
process: one Store per database (its connection, table handles and LanceDB's index cache stay
warm; reads still see other processes' commits), the default plugin manager, the adapter built
for (adapter, model, options), and the last text embeddings of each adapter.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections import OrderedDict
from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from streamvl.models import loading as models
from streamvl.models import textonly
from streamvl.plugins.contract import AdapterSpec, RerankContext
from streamvl.errors import PluginError, StoreError
from streamvl.plugins.manager import Plugins
from streamvl.search.grouping import FetchRows, Segment, merge_margin, top_hits
from streamvl.storage.reader import REFINE_CANDIDATES
from streamvl.storage.schema import MODEL_KEY
from streamvl.storage.store import Store
from streamvl.types import Hit

_ROW_FIELDS = ("stream_id", "start", "end", "adapter", "score")
TEXT_CACHE_SIZE = 1024  # text embeddings kept per adapter (512-d: 2 KiB each)


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


def clip_fetcher(store: Store, vector: np.ndarray, *, adapter: str = "meanpool",
                 stream_ids: Sequence[str] | None = None, start: float | None = None, end: float | None = None,
                 tags: Sequence[str] | None = None) -> FetchRows:
    """n -> the n best clips under these filters (the vector search's prefilter), best first.

    A widened fetch keeps the first fetch's exact re-rank budget instead of growing it too: the top
    hits come from the best clips, which the first budget already ranks exactly (with an ANN index;
    see Store.search_clips)."""
    first: int | None = None

    def fetch(n: int) -> list[dict[str, Any]]:
        nonlocal first
        first = first or n
        return store.search_clips(vector, n, adapter=adapter, stream_ids=stream_ids, start=start, end=end, tags=tags,
                                  candidates=max(n, REFINE_CANDIDATES * first))
    return fetch


def hits_of(fetch: FetchRows, k: int) -> list[Segment]:
    """The top k hits (streamvl.search.grouping) of the clips `fetch` ranks: what the service's first page shows."""
    return top_hits(fetch, k, merge_margin(fetch, k))[0]


def search_vectors(store: Store, vector: np.ndarray, *, k: int = 10, adapter: str = "meanpool",
                   stream_ids: Sequence[str] | None = None, start: float | None = None,
                   end: float | None = None, tags: Sequence[str] | None = None) -> list[Hit]:
    """The top k hits for a query vector: the best clips under the filters (tags: clips must carry all
    of them) grouped into hits (streamvl.search.grouping, as the service's pages are), with Hit.uri
    from the streams table. A hit's score, extra fields and peak are its best clip's."""
    if k <= 0:
        return []
    segments = hits_of(memo(clip_fetcher(store, vector, adapter=adapter, stream_ids=stream_ids, start=start, end=end,
                                         tags=tags)), k)
    uris = store.stream_uris({s.stream_id for s in segments})  # only the streams shown, not the whole table
    return [replace(_to_hit(s.best, uris), start=s.start, end=s.end) for s in segments]


def memo(fetch: FetchRows) -> FetchRows:
    """One search per fetch size: the margin and the page ask for the same size more than once."""
    seen: dict[int, list[dict[str, Any]]] = {}

    def cached(n: int) -> list[dict[str, Any]]:
        if n not in seen:
            seen[n] = fetch(n)
        return seen[n]
    return cached


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


@functools.lru_cache(maxsize=8)
def open_store(db: str) -> Store:
    """The process's Store for `db`: one connection, so table handles and LanceDB's index cache
    stay warm across searches (read_consistency_s=0: every read still sees the latest commit)."""
    return Store(db)


@functools.lru_cache(maxsize=1)
def _default_plugins() -> Plugins:
    return Plugins()


def _options_key(options: dict[str, Any]) -> str:
    """A cache key for adapter options; a file they name (a checkpoint) counts with its mtime."""
    def stamp(v: Any) -> Any:
        if isinstance(v, str) and os.path.isfile(v):
            return [v, os.stat(v).st_mtime_ns]
        return v

    return json.dumps({k: stamp(v) for k, v in options.items()}, sort_keys=True, default=repr)


class _QueryEncoder:
    """An adapter built once for (adapter, model, options), with an LRU of its text embeddings."""

    def __init__(self, adapter: Any, spec: AdapterSpec, model: Any) -> None:
        self.adapter, self.spec, self.model = adapter, spec, model  # spec and model: what a reranker is handed
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def encode(self, text: str) -> np.ndarray:
        vec = self._cache.get(text)
        if vec is None:
            vec = _as_vector(self.adapter.encode_text([text]))[0]
            vec.setflags(write=False)  # shared between calls
            self._cache[text] = vec
            if len(self._cache) > TEXT_CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(text)
        return vec

    def encode_many(self, texts: list[str]) -> list[np.ndarray]:
        """Like encode, for several texts: the ones not cached go through the adapter in one call."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vec in zip(missing, _as_vector(self.adapter.encode_text(missing))):
                vec = vec.copy()
                vec.setflags(write=False)
                self._cache[text] = vec
            while len(self._cache) > max(TEXT_CACHE_SIZE, len(missing)):
                self._cache.popitem(last=False)
        return [self.encode(t) for t in texts]  # all cached now: moves them to the recent end


_ENCODERS: OrderedDict[tuple[Any, ...], _QueryEncoder] = OrderedDict()
_MAX_ENCODERS = 8


def _model_for(adapter_spec: AdapterSpec, spec: str, full_model: bool) -> Any:
    """The model a query encoder is built on: without the image tower when the adapter's text side
    needs only the text tower (AdapterSpec.text_queries) and nobody asked for the whole model."""
    if adapter_spec.text_queries and not full_model:
        return textonly.load_text_model(spec)
    return models.load_model(spec)


def _encoder(plugins: Plugins, adapter: str, spec: str, options: dict[str, Any],
             full_model: bool = False) -> _QueryEncoder:
    """The cached adapter (and its text cache) for these plugins, adapter name, model and options.
    full_model: build it on the whole model (a reranker may re-run the image tower)."""
    adapter_spec = plugins.adapter(adapter)
    full_model = full_model or not adapter_spec.text_queries
    key = (plugins, adapter, spec, _options_key(options), full_model)
    encoder = _ENCODERS.get(key)
    if encoder is None:
        model = _model_for(adapter_spec, spec, full_model)
        try:
            built = adapter_spec.build(model, dict(options))
        except PluginError:
            raise
        except ValueError as exc:  # a checkpoint that does not fit the model: a plugin load failure
            raise PluginError(f"building adapter {adapter!r} failed: {exc}", plugin=adapter) from exc
        encoder = _QueryEncoder(built, adapter_spec, model)
        _ENCODERS[key] = encoder
        if len(_ENCODERS) > _MAX_ENCODERS:
            _ENCODERS.popitem(last=False)
    else:
        _ENCODERS.move_to_end(key)
    return encoder


def query_vector(text: str, db: str, *, adapter: str = "meanpool", model: str | None = None,
                 plugins: Plugins | None = None, adapter_options: dict[str, Any] | None = None) -> np.ndarray:
    """The query embedding of `text` for the index at `db` (read-only float32 [D]): the indexing
    model's adapter, built once per process, and its cache of recent texts (as `search` uses them)."""
    plugins = plugins if plugins is not None else _default_plugins()
    spec = indexed_model(open_store(str(db)), model)
    plugins.adapter(adapter)  # fails fast (PluginError) before loading the model
    return _encoder(plugins, adapter, spec, dict(adapter_options or {})).encode(text)


def search(text: str, db: str, *, k: int = 10, adapter: str = "meanpool", stream_ids: Sequence[str] | None = None,
           start: float | None = None, end: float | None = None, rerank: str | None = None,
           model: str | None = None, plugins: Plugins | None = None, tags: Sequence[str] | None = None,
           adapter_options: dict[str, Any] | None = None) -> list[Hit]:
    """Text query against the index at `db`: embed with the indexing model's adapter, search, merge, rerank.

    adapter_options: the adapter's options (e.g. {"checkpoint": ...}); use the ones the index was built with.
    tags: only clips tagged with every one of these (see `streamvl_clip_columns`, e.g. the alpro plugin).
    Repeated calls in one process reuse the store, the adapter and recent text embeddings (module doc).
    """
    store = open_store(str(db))
    plugins = plugins if plugins is not None else _default_plugins()
    spec = indexed_model(store, model)
    plugins.adapter(adapter)  # fails fast (PluginError) before loading the model
    reranker = plugins.reranker(rerank) if rerank else None
    encoder = _encoder(plugins, adapter, spec, dict(adapter_options or {}), full_model=reranker is not None)
    qvec = encoder.encode(text)
    hits = search_vectors(store, qvec, k=k, adapter=adapter, stream_ids=stream_ids, start=start, end=end, tags=tags)
    if reranker is None:
        return hits
    context = RerankContext(query=text, query_embedding=qvec, adapter=encoder.adapter, spec=encoder.spec,
                            model=encoder.model, store=store, options=dict(adapter_options or {}))
    return reranker.rerank(context, hits)
