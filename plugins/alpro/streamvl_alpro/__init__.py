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
  --tag car` filters on them. The vocabulary is the user's: the `entities` option (a list, a
  comma-separated string, or a text file with one entity per line), e.g. in the index config
  `[adapter_options.alpro] entities = "person, car, dog"`. With none given, no tags are written
  (empty lists). A checkpoint records the vocabulary it was trained with.
- PEM (prompting entity modelling), where it fits: as in the paper the prompter is a separately
  trained VTC model, frozen. Train alpro once (VTC), then again with `prompter=<that checkpoint>`:
  an entity head on the video embedding then learns the prompter's soft labels over the
  vocabulary (soft cross-entropy, weight `pem_weight`) alongside VTC. Without `entities` the
  student takes the vocabulary the prompter's checkpoint records.

Feature-based: indexing, tags and re-scoring need only frozen frame features.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.blocks import TemporalTransformer, TorchAdapter, read_checkpoint_config, symmetric_nce
from streamvl.plugins import AdapterSpec, ClipBatch, ColumnProvider, Option, TrainBatch, hookimpl

TAGS, TAG_SCORES = "tags", "tag_scores"
VOCABULARY_FILES = {".txt", ".csv", ".lst", ".vocab"}


def read_entities(value: str | Sequence[str] | None) -> list[str]:
    """The vocabulary an `entities` option names: a list, a comma-separated string, or the path of a
    text file with one entity per line ('#' starts a comment). None or '' is no vocabulary.

    Entities are trimmed, inner whitespace collapsed, blanks and repeats dropped (first kept)."""
    if value is None:
        return []
    if isinstance(value, str):
        path = Path(value).expanduser()
        if os.path.isfile(path):  # (False for a long comma list, where Path.is_file raises)
            try:
                items = [line.split("#", 1)[0] for line in path.read_text().splitlines()]
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read alpro entities file {value!r}: {exc}") from exc
        elif "," not in value and (path.suffix.lower() in VOCABULARY_FILES or os.sep in value):
            raise ValueError(f"alpro entities file {value!r} does not exist (give a file with one entity per line, "
                             "or the entities themselves, comma-separated)")
        else:
            items = value.split(",")
    else:
        items = list(value)
    return list(dict.fromkeys(e for e in (" ".join(str(i).split()) for i in items) if e))


def identity_linear(dim: int) -> nn.Linear:
    layer = nn.Linear(dim, dim)
    with torch.no_grad():
        layer.weight.copy_(torch.eye(dim))
        layer.bias.zero_()
    return layer


class AlproAdapter(TorchAdapter):
    """VTC projections over frozen features, plus an entity prompter that tags clips."""

    name = "alpro"
    declared_options = (
        Option("depth", int, 1, "temporal Transformer layers"),
        Option("heads", int, 8, "attention heads of the temporal Transformer"),
        Option("dropout", float, 0.1, "dropout in the temporal Transformer"),
        Option("centre", bool, True, "the temporal blocks see frames relative to the clip mean (TemporalTransformer.pool)"),
        Option("entities", str | list[str] | None, None,
               "tag vocabulary: a list, 'a, b, c', or a file with one entity per line; none: no tags"),
        Option("entity_templates", list[str], ["a video of a {}"], "entity prompts, averaged (a prompt ensemble)"),
        Option("tag_threshold", float, 0.3, "probability mass an entity (or a word of entities) needs to become a tag"),
        Option("prompter", str | Path | None, None, "a trained alpro checkpoint to distil entity labels from (PEM)"),
        Option("pem_weight", float, 1.0, "weight of the PEM loss next to VTC"),
    )

    def build(self) -> None:
        o, dim = self.options, self.embed_dim
        self.temporal = TemporalTransformer(dim, o["depth"], o["heads"], o["max_frames"], o["dropout"])
        self.video_proj = identity_linear(dim)
        self.text_proj = identity_linear(dim)
        entities = read_entities(o["entities"])
        if not entities and o["prompter"]:  # PEM: the vocabulary the prompter was trained with
            entities = read_entities(read_checkpoint_config(o["prompter"]).get("options", {}).get("entities"))
        o["entities"] = self.entities = entities  # the resolved vocabulary is what a checkpoint records
        self.entity_head = nn.Linear(dim, len(entities)) if entities else None  # PEM's head, for training only
        self._prompter: AlproAdapter | None = None

    def fit_checkpoint(self, state: dict[str, torch.Tensor]) -> None:
        """The PEM head keeps the size it was trained with (tags come from the entity prompts, not from it),
        so a checkpoint loads whatever vocabulary it is now given, or none."""
        weight = state.get("entity_head.weight")
        rows = None if weight is None else int(weight.shape[0])
        if rows != (None if self.entity_head is None else self.entity_head.out_features):
            self.entity_head = None if rows is None else nn.Linear(self.embed_dim, rows)

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
        reaches tag_threshold (a word's mass sums the entities containing it), best first.
        No vocabulary: no tags."""
        if not self.entities:
            return [[] for _ in range(len(video))], [[] for _ in range(len(video))]
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
        if self._prompter is None:  # scoring this adapter's vocabulary, whatever the checkpoint recorded
            prompter = AlproAdapter(self.backbone, {"checkpoint": path, "entities": self.entities})
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
        if self.entity_head is None or self.entity_head.out_features != len(self.entities):
            raise ValueError(f"alpro PEM learns the prompter's labels over the entity vocabulary: give `entities` "
                             f"(now {len(self.entities)}) matching the entity head ({self.entity_head})")
        with torch.no_grad():
            target = prompter.entity_probs(prompter.video_embed(batch.features, batch.frames))
        pem = -(target * self.entity_head(video).log_softmax(dim=-1)).sum(dim=-1).mean()
        logs["pem"] = float(pem.detach())
        return vtc + self.options["pem_weight"] * pem, logs


def tag_columns(batch: ClipBatch) -> dict[str, list[Any]]:
    """`tags` / `tag_scores` of a batch of clips: the prompter's entity labels for alpro's clips,
    empty lists for other adapters' clips (and for alpro's when it has no vocabulary)."""
    if not isinstance(batch.adapter, AlproAdapter):
        return {TAGS: [[] for _ in range(len(batch))], TAG_SCORES: [[] for _ in range(len(batch))]}
    tags, scores = batch.adapter.entity_tags(batch.embeddings)
    return {TAGS: tags, TAG_SCORES: scores}


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [AlproAdapter.spec("video-text contrastive projections over frozen frame features + entity prompter "
                              "(Li et al. 2022)")]


@hookimpl
def streamvl_clip_columns() -> list[ColumnProvider]:
    fields = [pa.field(TAGS, pa.list_(pa.string())), pa.field(TAG_SCORES, pa.list_(pa.float32()))]
    return [ColumnProvider("alpro-tags", fields, tag_columns)]
