"""pluggy hook specifications: the one extension seam of streamvl.

A plugin is any module or object with `@hookimpl`-decorated functions named like these,
installed under the entry-point group ``streamvl``. No hook takes arguments and none is
firstresult: every plugin's list is collected, and names must be unique across plugins.

Call order. Each hook is called at most once per process, lazily, when the plugin registry
(`streamvl.plugins.manager.Plugins`) is first asked for what it provides:

1. `streamvl_adapters` when an indexer, trainer, evaluator or searcher resolves an adapter name
   (before its model loads); each spec's factory runs later, inside the worker, via `AdapterSpec.build`.
2. `streamvl_clip_columns` when an encoder starts (the `clips` schema is fixed before the first
   write); then each provider's compute() runs on every batch of embedded clips, of every adapter.
3. `streamvl_rerankers` when a search names a reranker (`--rerank NAME`); its rerank() runs once
   per search on the merged hits.

The types the hooks return, and the Protocols core may call on a built adapter, are in
`streamvl.plugins.contract`.
"""

from __future__ import annotations

import pluggy

from streamvl.plugins.contract import AdapterSpec, ColumnProvider, RerankerSpec

PROJECT = "streamvl"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def streamvl_adapters() -> list[AdapterSpec]:
    """Return the video adapters this plugin offers.

    Each AdapterSpec declares the adapter's options, capabilities and whether it needs frames;
    core decides from the spec what the adapter may be used for (training, localisation,
    re-scoring from stored features) without building it.
    """


@hookspec
def streamvl_clip_columns() -> list[ColumnProvider]:
    """Return providers of extra per-clip columns (labels, tags) for the `clips` table.

    Each provider's fields join the table schema; compute(batch) must return exactly those
    columns with one value per clip, for every adapter's batches (empty values where it has none).
    """


@hookspec
def streamvl_rerankers() -> list[RerankerSpec]:
    """Return named search rerankers.

    The chosen reranker receives a RerankContext (query, adapter, its spec and model, the store)
    and the merged hits, and returns them rescored and reordered.
    """
