"""The plugin contract: every type streamvl hands to or asks of a plugin, in this one file.

A plugin answers the hooks in `streamvl.plugins.hookspecs` with the specs below: `AdapterSpec`
(video adapters), `ColumnProvider` (extra `clips` columns) and `RerankerSpec` (search rerankers).
What core may call on a built adapter is the `VideoAdapter` Protocol, plus the capability
Protocols its spec declares (`Capability`): core decides from `AdapterSpec.capabilities`, never
by probing the object, and `AdapterSpec.build` checks once, when the adapter is built, that the
object implements what its spec declares. Options are declared once (`Option`) and validated
from that declaration (`streamvl.plugins.options`).

Instances are built inside each worker from plain config (the loaded model and an options
dict), never shipped across Ray. Third parties import all of this from `streamvl.plugins`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from streamvl.errors import PluginError

if TYPE_CHECKING:
    from pathlib import Path

    import pyarrow as pa
    import torch

    from streamvl.models.loading import LoadedModel
    from streamvl.types import Hit


class Capability(str, Enum):
    """What an adapter can do beyond embedding clips and texts; each names one Protocol below."""

    SCORES = "scores"  # Scoring: its own clip-text similarity (may depend on the pair)
    TRAINABLE = "trainable"  # Trainable: trains on labelled clips and saves checkpoints (implies scores)
    LOCALISES = "localises"  # Localising: class-agnostic actionness for temporal localisation (implies trainable)


IMPLIES: dict[Capability, frozenset[Capability]] = {
    Capability.TRAINABLE: frozenset({Capability.SCORES}),
    Capability.LOCALISES: frozenset({Capability.TRAINABLE}),
}


@dataclass(frozen=True)
class Option:
    """One adapter option: its name, type (what pydantic validates, e.g. `int`, `float | None`,
    `list[str]`), default and a one-line doc. Declared once, on the AdapterSpec."""

    name: str
    type: Any
    default: Any
    doc: str


@dataclass
class TrainBatch:
    """One training step's inputs: B clips against N texts (what `Trainable.training_loss` gets).

    features [B, T, D] frozen frame embeddings; frames [B, T, 3, S, S] preprocessed (only for
    adapters that need frames); positives bool [B, N]: clip b matches text n. class_texts: the
    texts are the task's class names (recognition), not one caption per clip (retrieval).
    """

    features: "torch.Tensor"
    frames: "torch.Tensor | None"
    texts: list[str]
    positives: "torch.Tensor"
    class_texts: bool = False


# ---------------------------------------------------------------- what core calls on a built adapter


@runtime_checkable
class VideoAdapter(Protocol):
    """Every adapter: frozen frame features -> video embeddings, texts -> text embeddings.

    Both outputs are L2-normalised and live in one space, so cosine similarity ranks clips.
    Called without gradients, while indexing (encode_video) and searching (encode_text).
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


@runtime_checkable
class Scoring(Protocol):
    """Capability.SCORES: the adapter's own similarity of clips and texts.

    Evaluation, localisation and the frame-reading rerankers use it instead of the cosine of
    encode_video and encode_text, so methods whose similarity depends on the pair (text-dependent
    pooling, video-specific prompts) are measured as their papers define them.
    """

    def scores(self, features: "torch.Tensor | None", frames: "torch.Tensor | None",
               texts: Sequence[str]) -> "torch.Tensor":
        """Similarities [B, N] of B clips (features [B, T, D] and/or frames) and N texts."""
        ...

    def scale(self) -> "torch.Tensor":
        """The inverse temperature (a scalar) that turns scores into logits."""
        ...


@runtime_checkable
class Trainable(Scoring, Protocol):
    """Capability.TRAINABLE: trained by `streamvl train` on labelled clips; checkpoints are safetensors + JSON.

    Call order of a run: build (with options, maybe a checkpoint) -> parameter_counts ->
    param_groups -> train() -> per step training_loss, clip_gradients -> eval() ->
    parameter_counts -> save. The frozen backbone must not change (checked around the run).
    """

    backbone: "LoadedModel"  # the frozen model it adapts
    checkpoint_info: dict[str, Any]  # the JSON config of the checkpoint it was loaded from ({} if none)

    def train(self, mode: bool = True) -> Any:
        """Training mode (dropout on); returns self."""
        ...

    def eval(self) -> Any:
        """Inference mode; returns self."""
        ...

    def training_loss(self, batch: TrainBatch) -> "tuple[torch.Tensor, dict[str, float]]":
        """The loss of one batch (with gradients) and named parts of it to log."""
        ...

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups (only trainable parameters) at base learning rate lr."""
        ...

    def clip_gradients(self, max_norm: float) -> None:
        """Clip the trainable parameters' gradients, after backward and before the optimiser step."""
        ...

    def parameter_counts(self) -> dict[str, int]:
        """Counts with at least `trainable`, `backbone` and `total`."""
        ...

    def save(self, path: "str | Path", extra: dict[str, Any] | None = None) -> "Path":
        """Write weights (.safetensors) and the JSON config beside them (extra merged into it); the weights path."""
        ...


@runtime_checkable
class Localising(Trainable, Protocol):
    """Capability.LOCALISES: a class-agnostic proposal head, for temporal localisation in long streams.

    Localisation slides windows of frozen features over a stream (actionness), turns runs into
    proposals, then classifies each with `scores`; training on segment data adds proposal_loss.
    """

    def actionness(self, features: "torch.Tensor") -> "torch.Tensor":
        """Per-frame actionness probabilities [B, W] of windows of frozen features [B, W, D]."""
        ...

    def proposal_loss(self, features: "torch.Tensor", targets: "torch.Tensor") -> "torch.Tensor":
        """Loss of per-frame actionness against inside-a-segment targets [B, W] (with gradients)."""
        ...


PROTOCOLS: dict[Capability, type] = {
    Capability.SCORES: Scoring,
    Capability.TRAINABLE: Trainable,
    Capability.LOCALISES: Localising,
}

# ---------------------------------------------------------------- what the hooks return

AdapterFactory = Callable[["LoadedModel", dict[str, Any]], VideoAdapter]


def closure(capabilities: Iterable[Capability | str]) -> frozenset[Capability]:
    """The capabilities with everything they imply (trainable -> scores, localises -> trainable)."""
    out: set[Capability] = set()
    todo = [Capability(c) for c in capabilities]
    while todo:
        c = todo.pop()
        if c not in out:
            out.add(c)
            todo.extend(IMPLIES.get(c, ()))
    return frozenset(out)


@dataclass(frozen=True)
class AdapterSpec:
    """A named adapter a plugin offers; core reads what it can do from here, before building it.

    factory(model, options) builds it inside a worker (use `build`, which validates the options
    against `options` first). needs_frames: encode_video wants the preprocessed frames too (it
    re-runs the vision tower), so it cannot be re-scored or localised from stored features.
    text_queries: encode_text uses only the model's text tower, so a query process may build the
    adapter on a model without its image tower (streamvl.models.textonly; less memory per server).
    capabilities: the Protocols the built object implements beyond VideoAdapter (implied ones added).
    """

    name: str
    factory: AdapterFactory
    description: str = ""
    needs_frames: bool = False
    capabilities: frozenset[Capability] = frozenset()
    options: tuple[Option, ...] = ()
    text_queries: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "capabilities", closure(self.capabilities))
        object.__setattr__(self, "options", tuple(self.options))
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            raise ValueError(f"adapter {self.name!r} declares an option twice: {sorted(names)}")

    def can(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, capability: Capability, task: str) -> None:
        """A PluginError naming the task unless the spec declares `capability`."""
        if capability not in self.capabilities:
            have = ", ".join(sorted(c.value for c in self.capabilities)) or "none"
            raise PluginError(f"adapter {self.name!r} cannot be used for {task}: it is not {capability.value!r} "
                              f"(its capabilities: {have})", plugin=self.name)

    def build(self, model: "LoadedModel", options: dict[str, Any] | None = None) -> VideoAdapter:
        """The adapter for `model`: options validated against the declaration, then the factory,
        then a check that the object implements VideoAdapter and every declared capability."""
        from streamvl.plugins.options import validate_options

        adapter = self.factory(model, validate_options(self.name, self.options, dict(options or {})))
        self.check(adapter)
        return adapter

    def check(self, adapter: object) -> None:
        """A PluginError unless `adapter` implements the Protocols this spec promises."""
        wanted = [VideoAdapter] + [PROTOCOLS[c] for c in sorted(self.capabilities, key=lambda c: c.value)]
        missing = [p.__name__ for p in wanted if not isinstance(adapter, p)]
        if missing:
            raise PluginError(f"adapter {self.name!r} built a {type(adapter).__name__} that does not implement "
                              f"{', '.join(missing)} (streamvl.plugins.contract), which its spec promises",
                              plugin=self.name)


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

    fields fixes the Arrow schema up front, so tables stay readable without streamvl. compute is
    called for every batch of every adapter; a provider writes empty values for clips it has
    nothing to say about (a tag provider, for another adapter's clips).
    """

    name: str
    fields: Sequence["pa.Field"]
    compute: Callable[[ClipBatch], dict[str, Sequence[Any]]]


@dataclass(frozen=True)
class RerankContext:
    """What a reranker sees: the query, its embedding, the adapter (with its spec and model), the store."""

    query: str
    query_embedding: np.ndarray
    adapter: VideoAdapter
    spec: AdapterSpec
    model: "LoadedModel"
    store: Any  # streamvl.storage.store.Store, read-only use
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RerankerSpec:
    """A named reranker: rerank(context, hits) returns hits in a new order with new scores."""

    name: str
    rerank: Callable[[RerankContext, list["Hit"]], list["Hit"]]
    description: str = ""
