"""alpro: "Align and Prompt: Video-and-Language Pre-training with Entity Prompts" (Li et al., CVPR 2022).

Over a frozen image-language backbone:
- VTC (video-text contrastive): a video projection (a light temporal Transformer over frozen
  frame features, mean pooling, a linear projection; `centre` as in prompt) and a text projection over the frozen text
  tower, trained with a symmetric contrastive loss and a learnable temperature. Both
  projections start at the identity, so the untrained adapter is the frame-mean baseline.
- Prompter: each clip is scored against an entity vocabulary through entity prompts
  ("a video of a {entity}", averaged over `entity_templates`); a softmax over entities gives
  soft entity labels. `streamvl_clip_columns` stores them as `tags` (entities, and the words of
  entities, whose probability mass reaches `tag_threshold`) with `tag_scores`; `streamvl search
  --tag red` filters on them. The default vocabulary is the shapes world's colour-shape pairs.
- PEM (prompting entity modelling), where it fits: as in the paper the prompter is a separately
  trained VTC model, frozen. Train alpro once (VTC), then again with `prompter=<that checkpoint>`:
  an entity head on the video embedding then learns the prompter's soft labels (soft
  cross-entropy, weight `pem_weight`) alongside VTC.

Feature-based: indexing, tags and re-scoring need only frozen frame features.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from streamvl.plugins.contract import AdapterSpec, ClipBatch, ColumnProvider
from streamvl.adapters.blocks import TemporalTransformer, TorchAdapter, TrainBatch, symmetric_nce
from streamvl.plugins.hookspecs import hookimpl

TAGS, TAG_SCORES = "tags", "tag_scores"


def default_entities() -> list[str]:
    """Colour-shape pairs of the shapes world ('red circle', ...)."""
    from streamvl.lab.synthetic.world import COLOURS, SHAPES

    return [f"{c} {s}" for s in SHAPES for c in COLOURS]


def identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


class AlproAdapter(TorchAdapter):
    """VTC projections over frozen features, plus an entity prompter that tags clips."""

    name = "alpro"
    defaults: dict[str, Any] = {
        "depth": 1,
        "heads": 8,
        "dropout": 0.1,
        "centre": True,  # the temporal blocks see frames relative to the clip mean (TemporalTransformer.pool)
        "entities": None,  # None: the shapes world's colour-shape pairs
        "entity_templates": ["a video of a {}"],
        "tag_threshold": 0.3,
        "prompter": None,  # a trained alpro checkpoint to distil entity labels from (PEM)
        "pem_weight": 1.0,
    }

    def build(self) -> None:
        o, dim = self.options, self.embed_dim
        self.temporal = TemporalTransformer(dim, o["depth"], o["heads"], o["max_frames"], o["dropout"])
        self.video_proj = identity_linear(dim)
        self.text_proj = identity_linear(dim)
        self.entities: list[str] = list(o["entities"] or default_entities())
        self.entity_head = nn.Linear(dim, len(self.entities))
        self._prompter: AlproAdapter | None = None

    # -- VTC

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.temporal.pool(features.float(), self.options["centre"])
        return F.normalize(self.video_proj(pooled), dim=-1)

    def text_embed(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.embed_dim)
        return F.normalize(self.text_proj(self.frozen_text(texts)), dim=-1)

    # -- prompter

    def entity_prompts(self) -> torch.Tensor:
        """[E, D] entity prompt embeddings, averaged over the templates (a prompt ensemble)."""
        per = [self.text_embed([t.format(e) for e in self.entities]) for t in self.options["entity_templates"]]
        return F.normalize(torch.stack(per).mean(dim=0), dim=-1)

    def entity_probs(self, video: torch.Tensor) -> torch.Tensor:
        """Soft entity labels [B, E]: softmax over entities of scale * cos(video, entity prompt)."""
        return (self.scale() * video @ self.entity_prompts().t()).softmax(dim=-1)

    def entity_tags(self, video: np.ndarray | torch.Tensor) -> tuple[list[list[str]], list[list[float]]]:
        """Tags per clip from its embedding: entities and entity words whose probability mass
        reaches tag_threshold (a word's mass sums the entities containing it), best first."""
        with torch.no_grad():
            probs = self.entity_probs(torch.as_tensor(np.asarray(video), dtype=torch.float32)).numpy()
        words = sorted({w for e in self.entities for w in e.split()} - set(self.entities))
        member = np.array([[w in e.split() for e in self.entities] for w in words], np.float32)  # [W, E]
        names = self.entities + words
        mass = np.concatenate([probs, probs @ member.T], axis=1) if words else probs
        tags, scores = [], []
        for row in mass:
            keep = [j for j in np.argsort(-row) if row[j] >= self.options["tag_threshold"]]
            tags.append([names[j] for j in keep])
            scores.append([float(row[j]) for j in keep])
        return tags, scores

    # -- PEM

    def prompter_model(self) -> "AlproAdapter | None":
        """The frozen prompter (a separately trained alpro checkpoint), loaded on first use."""
        path = self.options.get("prompter")
        if not path:
            return None
        if self._prompter is None:
            prompter = AlproAdapter(self.backbone, {"checkpoint": path})
            prompter.requires_grad_(False)
            object.__setattr__(self, "_prompter", prompter)  # not a submodule: never trained, never saved
        return self._prompter

    def training_loss(self, batch: TrainBatch) -> tuple[torch.Tensor, dict[str, float]]:
        video = self.video_embed(batch.features, batch.frames)
        logits = self.scale() * video @ self.text_embed(batch.texts).t()
        vtc = symmetric_nce(logits, batch.positives)
        logs = {"vtc": float(vtc.detach())}
        prompter = self.prompter_model()
        if prompter is None:
            return vtc, logs
        with torch.no_grad():
            target = prompter.entity_probs(prompter.video_embed(batch.features, batch.frames))
        pem = -(target * self.entity_head(video).log_softmax(dim=-1)).sum(dim=-1).mean()
        logs["pem"] = float(pem.detach())
        return vtc + self.options["pem_weight"] * pem, logs


def tag_columns(batch: ClipBatch) -> dict[str, list[Any]]:
    """`tags` / `tag_scores` of a batch of clips: the prompter's entity labels for alpro clips,
    empty lists for adapters without a prompter."""
    if not hasattr(batch.adapter, "entity_tags"):
        return {TAGS: [[] for _ in range(len(batch))], TAG_SCORES: [[] for _ in range(len(batch))]}
    tags, scores = batch.adapter.entity_tags(batch.embeddings)
    return {TAGS: tags, TAG_SCORES: scores}


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [AdapterSpec("alpro", AlproAdapter,
                        "video-text contrastive projections over frozen frame features + entity prompter (Li et al. 2022)")]


@hookimpl
def streamvl_clip_columns() -> list[ColumnProvider]:
    fields = [pa.field(TAGS, pa.list_(pa.string())), pa.field(TAG_SCORES, pa.list_(pa.float32()))]
    return [ColumnProvider("alpro-tags", fields, tag_columns)]
