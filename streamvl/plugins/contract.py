"""What a plugin provides: video adapters, per-clip column providers, search rerankers.

These are the contracts behind the hooks in `streamvl.plugins.hookspecs`. Instances are built inside
each worker from plain config (a factory and the loaded model), never shipped across Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

    from streamvl.models.loading import LoadedModel
    from streamvl.types import Hit


@runtime_checkable
class VideoAdapter(Protocol):
    """Turns frozen frame features into video embeddings and texts into text embeddings.

    Both outputs are L2-normalised and live in one space, so cosine similarity ranks clips.
    """

    name: str

    def encode_video(self, features: "torch.Tensor", frames: "torch.Tensor | None" = None) -> "torch.Tensor":
        """features [B, T, D] frozen frame embeddings -> [B, D] video embeddings.

        frames [B, T, 3, H, W] (preprocessed) is passed only to adapters whose spec sets
        needs_frames, for methods that re-run the vision tower.
        """
        ...

    def encode_text(self, texts: Sequence[str]) -> "torch.Tensor":
        """N texts -> [N, D] text embeddings."""
        ...


AdapterFactory = Callable[["LoadedModel", dict[str, Any]], VideoAdapter]


@dataclass(frozen=True)
class AdapterSpec:
    """A named adapter a plugin offers. factory(model, options) builds it inside a worker."""

    name: str
    factory: AdapterFactory
    description: str = ""
    needs_frames: bool = False


@dataclass(frozen=True)
class ClipBatch:
    """Clips of one adapter just embedded, handed to column providers before they are stored."""

    adapter_name: str
    adapter: VideoAdapter
    stream_ids: list[str]
    starts: np.ndarray  # float64 [B]
    ends: np.ndarray  # float64 [B]
    embeddings: np.ndarray  # float32 [B, D], L2-normalised

    def __len__(self) -> int:
        return len(self.stream_ids)


@dataclass(frozen=True)
class ColumnProvider:
    """Adds columns to the `clips` table. compute(batch) returns {field name: B values}.

    fields fixes the Arrow schema up front, so tables stay readable without streamvl.
    """

    name: str
    fields: Sequence["pa.Field"]
    compute: Callable[[ClipBatch], dict[str, Sequence[Any]]]


@dataclass(frozen=True)
class RerankContext:
    """What a reranker sees: the query, its embedding, the adapter, and the store to read from."""

    query: str
    query_embedding: np.ndarray
    adapter: VideoAdapter
    store: Any  # streamvl.storage.store.Store, read-only use
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RerankerSpec:
    """A named reranker: rerank(context, hits) returns hits in a new order with new scores."""

    name: str
    rerank: Callable[[RerankContext, list["Hit"]], list["Hit"]]
    description: str = ""
