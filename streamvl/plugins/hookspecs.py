"""pluggy hook specifications: the one extension seam of streamvl.

A plugin is any module or object with `@hookimpl`-decorated functions named like these,
installed under the entry-point group ``streamvl``. Hooks are called once per process when
the plugin registry (`streamvl.plugins.manager.Plugins`) is first asked for what they provide; results
of all plugins are collected (no hook is firstresult), and names must be unique across plugins.
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

    Called when an indexer, trainer or searcher resolves adapter names. Each spec's factory is
    called later, inside the worker that runs it, with the loaded model and adapter options.
    """


@hookspec
def streamvl_clip_columns() -> list[ColumnProvider]:
    """Return providers of extra per-clip columns (labels, tags) for the `clips` table.

    Called when the store schema is built (before the first write) and when an encoder starts.
    Each provider's compute() is then called on every batch of embedded clips, for every adapter.
    """


@hookspec
def streamvl_rerankers() -> list[RerankerSpec]:
    """Return named search rerankers.

    Called when a search names a reranker (`--rerank NAME`). The chosen reranker receives the
    merged hits and returns them rescored and reordered.
    """
