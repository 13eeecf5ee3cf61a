"""prompt: "Prompting Visual-Language Models for Efficient Video Understanding" (Ju et al., ECCV 2022).

- Text: learnable continuous prompt vectors, `prefix` before and `postfix` after the tokenised
  class name or sentence, shared across classes, run through the frozen text transformer
  (gradients flow through it into the vectors only); the feature is read at the shifted
  end-of-text position.
- Video: a light temporal Transformer (`depth` layers, learnable temporal position embeddings)
  over frozen frame features, then mean pooling. With `centre` (default) the blocks see each
  frame relative to the clip's mean frame and the mean is added back after pooling: a
  re-parameterisation (not in the paper) that lets them see motion next to appearance.
- Options for unseen class names (open set), not in the paper: `prefix_words` starts the prefix
  vectors from a template's token embeddings (CoOp's initialisation), `identity_init` starts the
  temporal blocks as the identity (TemporalTransformer), and `difference` adds that multiple of
  the frozen features' change from the first sampled frame to the last to the pooled embedding
  (`streamvl.adapters.blocks.frame_difference`). Together the untrained adapter reads unseen actions
  the way the frozen towers do, and training on the seen classes starts from there.
- Loss: symmetric NCE between clips and texts (the TorchAdapter default).
- Localisation (two-stage, as in the paper): a class-agnostic proposal head scores per-frame
  actionness over sliding windows of a stream's frozen features (trained on streams with
  ground-truth segments); proposals are then classified with the pooled video embedding (see
  streamvl.search.localisation).

Feature-based: indexing, re-scoring and localisation need only frozen frame features.

`prompt-exposure` (not in the paper) is prompt plus the clip's *exposure*: the recency blend of
its frames (`streamvl.adapters.blocks.exposure_stills`), embedded by the frozen image tower and added
to the pooled video embedding with a learnable weight (1 at the start) through a
zero-initialised linear map. A tower pretrained on exposures (streamvl-shapes@v2, @v3) reads an
action from that still with no training, in the space the text tower shares, which is what a
class never trained on needs. It re-reads frames (needs_frames), so it cannot be re-scored from
the `frames` table or localise from it.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from streamvl.adapters.blocks import (
    TemporalTransformer,
    TorchAdapter,
    add_difference,
    clip_module,
    exposure_stills,
    prompted_text_features,
    word_embeddings,
)
from streamvl.adapters.ensembles import ensemble_spec
from streamvl.plugins import AdapterSpec, Capability, Option, hookimpl


class ProposalHead(nn.Module):
    """Class-agnostic actionness per frame from the frame and its change since the previous frame.

    Inputs per frame: LayerNorm(f_t), LayerNorm(f_t - f_{t-1}) and log |f_t - f_{t-1}|; frame-to-frame
    changes of frozen features are small, so they are normalised rather than left to a linear
    layer to discover. Then a temporal Transformer over the window and a per-frame logit.
    """

    def __init__(self, dim: int, depth: int, heads: int, window: int, dropout: float) -> None:
        super().__init__()
        self.frame_norm = nn.LayerNorm(dim)
        self.diff_norm = nn.LayerNorm(dim)
        self.inp = nn.Linear(2 * dim + 1, dim)
        self.temporal = TemporalTransformer(dim, depth, heads, window, dropout, final_norm=True)
        self.out = nn.Linear(dim, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, W, D] -> actionness logits [B, W]."""
        diff = torch.cat([torch.zeros_like(features[:, :1]), features[:, 1:] - features[:, :-1]], dim=1)
        size = torch.log(diff.norm(dim=-1, keepdim=True) + 1e-4)
        x = self.inp(torch.cat([self.frame_norm(features), self.diff_norm(diff), size], dim=-1))
        return self.out(self.temporal(x)).squeeze(-1)


class PromptAdapter(TorchAdapter):
    """Learned prompts + temporal Transformer + mean pooling over frozen frame features."""

    name = "prompt"
    capabilities = TorchAdapter.capabilities | {Capability.LOCALISES}
    declared_options = (
        Option("prefix", int, 4, "prompt vectors before the text (the paper uses up to 16 in all; context here is 32 tokens)"),
        Option("postfix", int, 4, "prompt vectors after the text"),
        Option("depth", int, 2, "temporal Transformer layers"),
        Option("heads", int, 8, "attention heads of the temporal and proposal Transformers"),
        Option("dropout", float, 0.1, "dropout in the temporal and proposal Transformers"),
        Option("centre", bool, True, "the temporal blocks see frames relative to the clip mean (TemporalTransformer.pool)"),
        Option("prefix_words", str, "", "start the prefix vectors from these words' token embeddings (sets their number)"),
        Option("identity_init", bool, False, "the temporal blocks start as the identity (TemporalTransformer)"),
        Option("difference", float, 0.0, "x (last - first frame's features) added to the pooled embedding"),
        Option("proposal_depth", int, 2, "layers of the class-agnostic proposal head"),
        Option("proposal_window", int, 64, "frames per actionness window"),
    )

    def build(self) -> None:
        clip = clip_module(self.backbone)
        width = clip.token_embedding.weight.shape[1]
        o = self.options
        if o["prefix_words"]:
            self.prefix = nn.Parameter(word_embeddings(self.backbone, o["prefix_words"]))
        else:
            self.prefix = nn.Parameter(torch.randn(o["prefix"], width) * 0.02) if o["prefix"] else None
        self.postfix = nn.Parameter(torch.randn(o["postfix"], width) * 0.02) if o["postfix"] else None
        self.temporal = TemporalTransformer(self.embed_dim, o["depth"], o["heads"], o["max_frames"], o["dropout"],
                                            identity_init=o["identity_init"])
        self.difference = float(o["difference"])
        self.proposal = ProposalHead(self.embed_dim, o["proposal_depth"], o["heads"], o["proposal_window"], o["dropout"])
        self._tokens: dict[str, torch.Tensor] = {}

    def tokens(self, texts: Sequence[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self._tokens]
        if missing:
            with torch.inference_mode(False):  # cached ids must stay usable by a later training step
                ids = self.backbone.tokenizer([self.options["template"].format(t) for t in missing])
            self._tokens.update(zip(missing, ids))
        return torch.stack([self._tokens[t] for t in texts])

    def text_embed(self, texts: Sequence[str]) -> torch.Tensor:
        if not texts:
            return torch.zeros(0, self.embed_dim)
        feats = prompted_text_features(self.clip, self.tokens(texts), self.prefix, self.postfix)
        return F.normalize(feats.float(), dim=-1)

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        x = features.float()
        return F.normalize(add_difference(self.temporal.pool(x, self.options["centre"]), x, self.difference), dim=-1)

    # -- localisation: class-agnostic proposals

    def actionness(self, features: torch.Tensor) -> torch.Tensor:
        """Per-frame actionness probabilities [B, W] of windows of frozen features [B, W, D]."""
        with torch.no_grad():
            return torch.sigmoid(self.proposal(features.float()))

    def proposal_loss(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Balanced binary cross-entropy of per-frame actionness against inside-a-segment targets."""
        logits = self.proposal(features.float())
        pos = targets.mean().clamp(0.05, 0.95)
        weight = torch.where(targets > 0.5, 0.5 / pos, 0.5 / (1 - pos))
        return F.binary_cross_entropy_with_logits(logits, targets, weight=weight)


class PromptExposureAdapter(PromptAdapter):
    """prompt + the frozen embedding of the clip's exposure, added to the pooled video embedding."""

    name = "prompt-exposure"
    needs_frames = True

    def build(self) -> None:
        super().build()
        self.exposure_weight = nn.Parameter(torch.tensor(1.0))
        self.exposure_proj = nn.Linear(self.embed_dim, self.embed_dim)
        nn.init.zeros_(self.exposure_proj.weight)
        nn.init.zeros_(self.exposure_proj.bias)

    def exposure(self, frames: torch.Tensor) -> torch.Tensor:
        """Normalised frozen embeddings [B, D] of the clips' exposures (no gradient into the tower)."""
        with torch.no_grad():
            return F.normalize(self.clip.encode_image(exposure_stills(frames.float())).float(), dim=-1)

    def video_embed(self, features: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        if frames is None:
            raise ValueError("prompt-exposure blends each clip's frames into one still: it needs frames (needs_frames=True)")
        still = self.exposure(frames)
        mixed = super().video_embed(features) + self.exposure_weight * (still + self.exposure_proj(still))
        return F.normalize(mixed, dim=-1)


@hookimpl
def streamvl_adapters() -> list[AdapterSpec]:
    return [ensemble_spec(PromptAdapter,
                          "learned text prompts + temporal Transformer over frozen frame features (Ju et al. 2022)"),
            ensemble_spec(PromptExposureAdapter,
                          "prompt + the frozen embedding of each clip's exposure (a blend of its frames; not in the paper)")]
